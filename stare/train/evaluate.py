"""Held-out evaluation: avg@n (mean accuracy over n samples per prompt) and unbiased pass@k.

pass@k for a prompt with n samples of which c are correct is 1 - C(n - c, k) / C(n, k) (Chen et al.,
arXiv 2107.03374), the probability that k samples drawn without replacement contain a correct one;
averaged over prompts. It is unbiased for the pass@k of the sampling policy and uses all n samples,
so it has less variance than scoring only the first k; estimates that resample k of the n with
replacement (verl's former best@k) are biased low (docs/methods.md §E.5).
"""

from __future__ import annotations

from math import comb
from typing import Sequence

__all__ = ["pass_at_k", "summarize", "summarize_by_source"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (requires 1 <= k <= n)."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def summarize(correct: Sequence[Sequence[float]], ks: Sequence[int] | None = None) -> dict[str, float]:
    """``correct[i]`` holds the 0/1 accuracies of prompt i's samples (all prompts the same n).

    Returns ``acc/mean@n`` and ``pass@k`` for k in ``ks`` (default every k from 1 to min(n, 16), then
    32, 64, ... up to n, and n).
    """
    if not correct:
        return {}
    n = len(correct[0])
    if any(len(c) != n for c in correct):
        raise ValueError("every prompt needs the same number of samples")
    ks = ks or sorted({k for k in range(1, min(n, 16) + 1)} | {k for k in (32, 64, 128) if k <= n} | {n})
    out = {f"acc/mean@{n}": sum(sum(c) for c in correct) / (n * len(correct))}
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(n, int(round(sum(c))), k) for c in correct) / len(correct)
    return out


def summarize_by_source(correct: Sequence[Sequence[float]], sources: Sequence[str],
                        ks: Sequence[int] | None = None) -> dict[str, float]:
    """``summarize`` over all prompts, plus ``<source>/<metric>`` for each distinct source tag when
    there is more than one (e.g. ``aime24/acc/mean@32`` next to ``math500/acc/mean@32``)."""
    if len(sources) != len(correct):
        raise ValueError(f"{len(sources)} source tags for {len(correct)} prompts")
    out = summarize(correct, ks)
    tags = sorted(set(sources))
    if len(tags) > 1:
        for tag in tags:
            part = [c for c, s in zip(correct, sources) if s == tag]
            out.update({f"{tag or 'untagged'}/{k}": v for k, v in summarize(part, ks).items()})
    return out

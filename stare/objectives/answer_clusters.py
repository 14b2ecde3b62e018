"""Answer clusters of one group of responses: the shared piece of TTRL, EMPO and SEED-GRPO.

Those methods reward or weight a response by how many responses of its group reach the *same* final
answer. The official code decides "same" with a math-equivalence checker (math_verify in EMPO, its own
checker in TTRL). The core may not import the environment wing (``stare.env``), so this module works
on the answer strings the verifier already extracted (``StepData.preds``, the ``preds`` of a
``group_rewards`` call) and compares them in a light normal form written here:

* math delimiters (``$..$``, ``\\(..\\)``, ``\\[..\\]``), one surrounding ``\\boxed{..}`` or ``\\text{..}``,
  ``\\left``/``\\right``, spacing commands and all whitespace are removed; ``\\dfrac`` and ``\\tfrac``
  are written ``\\frac``; a trailing period is dropped;
* a plain decimal number is written canonically (``007`` -> ``7``, ``2.50`` -> ``2.5``, ``-0`` -> ``0``,
  ``1,000`` -> ``1000``).

So ``\\boxed{\\dfrac{1}{2}}`` and ``\\frac{1}{2}`` match, ``0.5`` and ``\\frac{1}{2}`` do not (a checker
would match them). No model output is ever evaluated. A missing answer (None or empty after
normalising) has no key and joins no cluster.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Sequence

__all__ = ["answer_key", "cluster_ids", "cluster_sizes", "cluster_entropy"]

_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_WRAPPERS = ("\\boxed{", "\\text{", "\\mathrm{")
_SPACES = re.compile(r"\\(?:[,;:! ]|q?quad(?![a-zA-Z])|displaystyle(?![a-zA-Z])|left(?![a-zA-Z])|right(?![a-zA-Z]))"
                     r"|\s+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")


def _unwrap(text: str) -> str:
    """Drop one wrapper ``\\boxed{...}`` (or ``\\text{...}``) that encloses the whole string."""
    for head in _WRAPPERS:
        if text.startswith(head) and text.endswith("}"):
            depth = 0
            for i, ch in enumerate(text[len(head) - 1:], start=len(head) - 1):
                depth += ch == "{"
                depth -= ch == "}"
                if depth == 0:
                    if i == len(text) - 1:  # the brace that opened the wrapper closes at the very end
                        return text[len(head):-1]
                    break
    return text


def answer_key(answer: str | None) -> str | None:
    """The normal form two answers are compared in (module docstring); None for no answer."""
    if answer is None:
        return None
    text = answer.strip()
    for left, right in _DELIMITERS:
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left): len(text) - len(right)].strip()
            break
    text = _SPACES.sub("", text).rstrip(".")
    text = _unwrap(text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if _NUMBER.fullmatch(text):
        try:
            value = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            return text or None
        text = "0" if value == 0 else format(value.normalize(), "f")
    return text or None


def cluster_ids(answers: Sequence[str | None]) -> list[int | None]:
    """Cluster index of each answer (first appearance order: 0, 1, ...); None for a missing answer."""
    seen: dict[str, int] = {}
    out: list[int | None] = []
    for a in answers:
        key = answer_key(a)
        out.append(None if key is None else seen.setdefault(key, len(seen)))
    return out


def cluster_sizes(ids: Sequence[int | None]) -> list[int]:
    """Size of each cluster, by index."""
    sizes = [0] * (1 + max((i for i in ids if i is not None), default=-1))
    for i in ids:
        if i is not None:
            sizes[i] += 1
    return sizes


def cluster_entropy(ids: Sequence[int | None]) -> float:
    """Entropy (nats) of the cluster frequencies p(c) = |c| / G over all G responses, each missing answer
    counted as a cluster of its own (as EMPO's code does: its checker never equates two empty answers).
    0 for an empty group."""
    g = len(ids)
    if g == 0:
        return 0.0
    sizes = cluster_sizes(ids) + [1] * sum(i is None for i in ids)
    return -sum(s / g * math.log(s / g) for s in sizes if s)

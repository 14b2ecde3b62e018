"""80/20 high-entropy "forking" tokens (Wang et al., "Beyond the 80/20 Rule", arXiv 2506.01939).

docs/methods.md §7. Only the top rho (20%) of tokens by entropy keep their policy gradient; the rest are
masked. Two public implementations differ, both offered here and named:

* ``threshold="topk", denominator="kept"``: the verl re-implementation (CarlanLark/Lp-Reg-dev,
  ``compute_policy_loss_8020_split``): k = max(1, int(rho * n_valid)) tokens by entropy, and the
  token-mean divides by the number of *kept* tokens (the response mask itself is reduced).
* ``threshold="quantile", denominator="all"``: TRL (``GRPOConfig.top_entropy_quantile``): keep
  H >= quantile_{1 - rho}(H) over the valid tokens, the mask multiplies the loss and the denominator is
  unchanged (masked tokens still count).

The kept denominator is implemented as a weight n_valid / n_kept on the kept tokens (equal to dividing
by n_kept under token-mean). The entropy ranked is the current forward's (micro scope) or the old
policy's (global scope). Base surrogate: DAPO's (clip 0.2 / 0.28, dual clip 10), the paper's base.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_choice, check_fraction
from ..metrics import mean_stat
from ..selection import apply_topk, fit_quantile, fit_topk, floor_fraction, masked_count
from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import ClipParams, Terms, clip_inert_knobs
from .registry import Objective, register_objective

THRESHOLDS = ("topk", "quantile")
DENOMINATORS = ("kept", "all")


@dataclass(frozen=True)
class ForkingParams(ClipParams):
    """top_entropy_ratio: rho = 0.2 (paper; TRL docs). threshold / denominator: see the module docstring."""

    clip_ratio_high: float = 0.28
    clip_ratio_c: float | None = 10.0
    top_entropy_ratio: float = 0.2
    threshold: str = "topk"
    denominator: str = "kept"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("top_entropy_ratio", self.top_entropy_ratio)
        check_choice("threshold", self.threshold, THRESHOLDS)
        check_choice("denominator", self.denominator, DENOMINATORS)


def _keep(view, plan, p: ForkingParams) -> torch.Tensor:
    if p.threshold == "topk":
        return apply_topk(view.entropy, view.valid, view.ids, plan["topk"])
    return view.valid & (view.entropy.to(torch.float64) >= plan["quantile"])


def forking_fit(view, p: ForkingParams, state, group):
    plan = {"n_valid": masked_count(view.valid, group)}
    if p.threshold == "topk":
        plan["topk"] = fit_topk(view.entropy, view.valid, view.ids, floor_fraction(p.top_entropy_ratio), group)
    elif p.top_entropy_ratio > 0:
        plan["quantile"] = fit_quantile(view.entropy, view.valid, 1.0 - p.top_entropy_ratio, group)
    else:
        plan["quantile"] = torch.tensor(float("inf"), dtype=torch.float64, device=view.valid.device)
    plan["n_kept"] = masked_count(_keep(view, plan, p), group)
    return plan


def forking_terms(batch, view, p: ForkingParams, state, plan) -> Terms:
    """80/20: policy gradient only on the top-rho highest-entropy tokens (verl or TRL denominator)."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    keep = _keep(view, plan, p)
    weights = keep.to(s.loss.dtype)
    if p.denominator == "kept":
        weights = weights * (plan["n_valid"].to(s.loss.dtype) / plan["n_kept"].clamp(min=1).to(s.loss.dtype))
    stats = surrogate_stats(s, batch.valid)
    stats["forking/kept_frac"] = mean_stat(keep, view.valid)
    return Terms(pg_loss=s.loss * weights, weights=weights, stats=stats)


FORKING = register_objective(Objective(
    "forking", params=ForkingParams, terms=forking_terms, fit=forking_fit, needs=("entropy",),
    acts_at=("MASK",), inert_on_policy=clip_inert_knobs, aliases=("80_20",),
))

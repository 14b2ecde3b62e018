"""STAPO: silencing rare spurious tokens.

Paper: Liu et al., arXiv 2602.15620. No official code was found (docs/methods.md §5), so the thresholds
below are **inferred** from the abstract and a third-party summary and are configurable.

A spurious token is a rare token sampled at a confident position inside a correct answer: it inherits
the full positive advantage and its per-token gradient is abnormally large.

    spurious = valid & (A > 0) & (pi_old(o_t) < tau_p) & (H_old(t) < tau_h)
    keep     = valid & ~spurious
    loss     = sum(per_tok * keep) / sum(keep)                   (masked, then renormalised)

tau_p = ``prob_threshold`` (0.01 [unverified]); tau_h = ``entropy_threshold`` if given, else the
``entropy_quantile`` (0.05 [unverified]) quantile of the old entropy over the scope's valid tokens.
The renormalisation is implemented as a weight n_valid / n_kept on the kept tokens of the scope, which
under token-mean equals dividing by the number of kept tokens, and composes with the mini-batch
normaliser. The base surrogate is the DAPO one (clip 0.2 / 0.28, dual clip 10) [unverified].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_fraction
from ..metrics import mean_stat
from ..selection import fit_quantile, masked_count
from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import ClipParams, Terms, clip_inert_knobs
from .registry import Objective, register_objective


@dataclass(frozen=True)
class StapoParams(ClipParams):
    """See the module docstring; every threshold here is inferred, not taken from official code."""

    clip_ratio_high: float = 0.28
    clip_ratio_c: float | None = 10.0
    prob_threshold: float = 0.01
    entropy_quantile: float = 0.05
    entropy_threshold: float | None = None
    renormalize: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("prob_threshold", self.prob_threshold)
        check_fraction("entropy_quantile", self.entropy_quantile)
        if self.entropy_threshold is not None and self.entropy_threshold < 0:
            raise ValueError(f"entropy_threshold must be >= 0, got {self.entropy_threshold}")


def _spurious(view, tau_h, p: StapoParams) -> torch.Tensor:
    rare = view.old_log_prob.exp() < p.prob_threshold
    confident = view.old_entropy < tau_h
    return view.valid & (view.advantages > 0) & rare & confident


def stapo_fit(view, p: StapoParams, state, group):
    if p.entropy_threshold is not None:
        tau_h = torch.tensor(p.entropy_threshold, dtype=torch.float64, device=view.valid.device)
    else:
        tau_h = fit_quantile(view.old_entropy, view.valid, p.entropy_quantile, group)
    spur = _spurious(view, tau_h, p)
    return {
        "tau_h": tau_h,
        "n_valid": masked_count(view.valid, group),
        "n_kept": masked_count(view.valid & ~spur, group),
    }


def stapo_terms(batch, view, p: StapoParams, state, plan) -> Terms:
    """STAPO: mask positive-advantage tokens that are rare at low-entropy positions, renormalise over the rest."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    spur = _spurious(view, plan["tau_h"], p)
    keep = (view.valid & ~spur).to(s.loss.dtype)
    if p.renormalize:
        scale = plan["n_valid"].to(s.loss.dtype) / plan["n_kept"].clamp(min=1).to(s.loss.dtype)
        weights = keep * scale
    else:
        weights = keep
    stats = surrogate_stats(s, batch.valid)
    stats["stapo/spurious_frac"] = mean_stat(spur, view.valid)
    stats["stapo/spurious_prob"] = mean_stat(view.old_log_prob.exp(), spur)
    stats["stapo/spurious_entropy"] = mean_stat(view.old_entropy, spur)
    return Terms(pg_loss=s.loss * weights, weights=weights, stats=stats)


STAPO = register_objective(Objective(
    "stapo", params=StapoParams, terms=stapo_terms, fit=stapo_fit, needs=("old_entropy",),
    acts_at=("MASK", "AGG"), inert_on_policy=clip_inert_knobs,
))

"""ASPO: Asymmetric Importance Sampling Policy Optimization (Wang et al., arXiv 2510.06062; Archer2.0).

Official code: wizard-III/Archer2.0, ``verl/trainer/ppo/core_algos.py`` (``compute_policy_loss_archer``,
called from ``verl/workers/actor/dp_actor.py`` with ``use_archer_policy_loss=True``); script
``scripts/train/run_archer2.0_qwen2.5_1.5b_math.sh``. docs/methods.md §10.2.

For positive-advantage tokens the PPO ratio favours tokens that are already likely; ASPO flips that
weight (pi_old / pi instead of pi / pi_old) and replaces the hard cap beyond a bound by a soft,
log-prob-based dual clip. Bounds are wider for the high-entropy tokens of each response:

    r = exp(clamp(log pi - log pi_old, +-20));   low = H <= the row's q-quantile of H (detached)
    eps = eps_low_entropy on low tokens, eps_high_entropy on the others
    A < 0:  r_n = max(r, 1 - eps);  loss = -A r_n;            if r_n > c_neg:    loss = -A c_neg log pi
    A > 0:  r_p = min(r, 1 + eps);  loss = -A r_p / sg(r_p)^2 (value -A / r_p, gradient -A grad(log pi) / r)
                                                               if 1/r_p > c_pos:  loss = -A c_pos log pi

so inside its bound a positive token's gradient is weighted 1/r instead of r. The soft dual clip keeps a
gradient (-A c grad log pi) where a hard one would stop it; its value is -A c log pi. H is the current
forward's entropy in micro scope (the official code), the old one in global scope.

Deviation: Archer adds a KL loss to the reference on low-entropy tokens only (``kl_loss_coef`` 0.001);
our ``kl_coef`` acts on every token, so it is off by default. The quantile of a row without valid tokens
is undefined and selects nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checks import check_fraction
from ..metrics import mean_stat
from ..surrogate import LOG_RATIO_CLAMP, Surrogate, surrogate_stats
from .contract import LossParams, Terms
from .registry import Objective, register_objective

__all__ = ["AspoParams", "aspo_terms", "low_entropy_mask"]


@dataclass(frozen=True)
class AspoParams(LossParams):
    """Defaults: the call site of ``compute_policy_loss_archer`` (bounds and c are hard-coded there) and
    the Archer2.0 1.5B script (``token_entropy_quantile`` 0.8).

    eps_low_entropy / eps_high_entropy: bound width for tokens at or below / above the quantile (0.2 / 0.4).
    dual_clip_neg / dual_clip_pos: c of the soft dual clip on each side (3.0 / 3.0).
    entropy_quantile: q, per response (0.8).
    """

    eps_low_entropy: float = 0.2
    eps_high_entropy: float = 0.4
    dual_clip_neg: float = 3.0
    dual_clip_pos: float = 3.0
    entropy_quantile: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("eps_low_entropy", "eps_high_entropy"):
            check_fraction(key, getattr(self, key))
        for key in ("dual_clip_neg", "dual_clip_pos"):
            if not getattr(self, key) > 1:
                raise ValueError(f"{key} must be > 1, got {getattr(self, key)}")
        check_fraction("entropy_quantile", self.entropy_quantile)


def low_entropy_mask(entropy: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """bool [B, T]: valid tokens at or below their row's q-quantile of entropy (linear interpolation)."""
    thr = torch.nanquantile(entropy.masked_fill(~valid, math.nan), q, dim=-1, keepdim=True)
    return valid & (entropy <= thr)


def aspo_terms(batch, view, p: AspoParams, state, plan) -> Terms:
    """ASPO: flipped (1/r) weight on positive tokens, entropy-split bounds, soft log-prob dual clip."""
    lp = batch.log_prob
    adv = batch.token_advantages
    log_ratio = torch.clamp(lp - batch.ratio_denominator, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    r = torch.exp(log_ratio)
    low = low_entropy_mask(view.entropy, view.valid, p.entropy_quantile)
    eps = torch.where(low, p.eps_low_entropy, p.eps_high_entropy).to(lp.dtype)
    r_n = torch.maximum(r, 1.0 - eps)
    r_p = torch.minimum(r, 1.0 + eps)
    neg_loss = -adv * r_n
    soft_neg = r_n.detach() > p.dual_clip_neg
    neg_loss = torch.where(soft_neg, -adv * p.dual_clip_neg * lp, neg_loss)
    rp = r_p.detach()
    pos_loss = -adv * (r_p / rp) / rp
    soft_pos = 1.0 / rp > p.dual_clip_pos
    pos_loss = torch.where(soft_pos, -adv * p.dual_clip_pos * lp, pos_loss)
    zero = torch.zeros((), dtype=lp.dtype, device=lp.device)
    loss = torch.where(adv < 0, neg_loss, torch.where(adv > 0, pos_loss, zero * lp))
    clipped = ((adv < 0) & (r < 1.0 - eps)) | ((adv > 0) & (r > 1.0 + eps))
    dual = ((adv < 0) & soft_neg) | ((adv > 0) & soft_pos)
    stats = surrogate_stats(Surrogate(loss, r, log_ratio, clipped, dual), batch.valid)
    stats["aspo/low_entropy_frac"] = mean_stat(low, view.valid)
    return Terms(pg_loss=loss, stats=stats)


def _inert(p: AspoParams) -> list[tuple[str, str]]:
    return [("bounds", f"eps_low_entropy={p.eps_low_entropy} / eps_high_entropy={p.eps_high_entropy} and the soft "
             "dual clip have no effect on-policy: the ratio is 1 (ASPO is then plain -A log pi)")]


ASPO = register_objective(Objective(
    "aspo", params=AspoParams, terms=aspo_terms, needs=("entropy",), acts_at=("LOSS",), inert_on_policy=_inert,
))

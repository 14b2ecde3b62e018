"""Clip-Cov and KL-Cov (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617).

Official code: PRIME-RL/Entropy-Mechanism-of-RL, merged into verl as ``compute_policy_loss_clip_cov`` /
``compute_policy_loss_kl_cov`` (policy losses ``clip_cov`` / ``kl_cov``). docs/methods.md §6.

Both rank tokens by the token-level covariance between advantage and log-prob, the batch proxy of the
term that drives entropy down (§2.2):

    cov_t = (A_t - mean(A)) * (log pi_t - mean(log pi)),   means over the valid tokens of the scope

Clip-Cov: among valid tokens that are not already clipped and have lb < cov < ub, a uniformly random
subset of size max(1, int(r * n_valid)) gets its loss term (and gradient) zeroed; they stay in the
token-mean denominator. No dual clip. KL-Cov: the unclipped -A r everywhere, plus beta |log pi - log
pi_old| on the top max(1, int(k * n_valid)) tokens by covariance.

Deviations: the random subset is drawn with a counter-based hash of (seed, token id) instead of
``torch.randperm``: the same distribution (uniform without replacement), but reproducible and
independent of the micro-batch split, which the global scope needs. Clip-Cov's controller
(``ClipCovSeed``) draws a new seed each step from the run's seed and the step index. KL-Cov clamps the log-ratio to [-20, 20] as the vanilla
loss does before exp. Unit pitfall: the original repo's ``k_percent`` is a percentage, verl's
``kl_cov_ratio`` (ours) a fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..checks import check_fraction
from ..metrics import mean_stat
from ..selection import apply_topk, fit_topk, floor_fraction, hash_uniform, masked_count, masked_sum
from ..surrogate import LOG_RATIO_CLAMP, clipped_surrogate, surrogate_stats
from .contract import ClipParams, ControllerState, LossParams, StepData, Terms, clip_inert_knobs
from .registry import Objective, register_objective


def _means(view, group):
    n = masked_count(view.valid, group).to(torch.float64).clamp(min=1)
    return masked_sum(view.advantages, view.valid, group) / n, masked_sum(view.log_prob, view.valid, group) / n


def token_covariance(view, mean_adv, mean_logp) -> torch.Tensor:
    """(A - mean A) (log pi - mean log pi) per token (float64, detached)."""
    return (view.advantages.to(torch.float64) - mean_adv) * (view.log_prob.to(torch.float64) - mean_logp)


# -------------------------------------------------------------------------------------------- Clip-Cov


@dataclass(frozen=True)
class ClipCovParams(ClipParams):
    """Defaults: verl code and recipe/entropy/7b_clip_cov.sh (r = 2e-4, bounds 1 and 5, clip 1 / 1, no dual clip)."""

    clip_ratio_low: float = 1.0
    clip_ratio_high: float = 1.0
    clip_ratio_c: float | None = None
    clip_cov_ratio: float = 2e-4
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("clip_cov_ratio", self.clip_cov_ratio)
        if not self.clip_cov_lb < self.clip_cov_ub:
            raise ValueError(f"need clip_cov_lb < clip_cov_ub, got {self.clip_cov_lb}, {self.clip_cov_ub}")


@dataclass
class ClipCovSeed(ControllerState):
    """A fresh random subset each step: ``seed = run seed * 1_000_003 + step`` (any step-unique value
    would do; this one keeps runs with different seeds apart)."""

    params: ClipCovParams = field(default_factory=ClipCovParams)
    seed: int = 0

    def update(self, data: StepData) -> None:
        self.seed = int(data.seed) * 1_000_003 + int(data.step)

    def state(self) -> dict:
        return {"seed": self.seed}

    def metrics(self) -> dict[str, float]:
        return {}


def _view_clipped(view, p: ClipCovParams) -> torch.Tensor:
    """Tokens whose clip is already active, judged from the view (never, in global scope: ratio 1)."""
    ratio = torch.exp(torch.clamp(view.log_prob - view.old_log_prob, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    a = view.advantages
    return -a * torch.clamp(ratio, 1 - p.clip_ratio_low, 1 + p.clip_ratio_high) > -a * ratio


def _clip_cov_candidates(view, p: ClipCovParams, mean_adv, mean_logp) -> torch.Tensor:
    cov = token_covariance(view, mean_adv, mean_logp)
    return view.valid & ~_view_clipped(view, p) & (cov > p.clip_cov_lb) & (cov < p.clip_cov_ub)


def clip_cov_fit(view, p: ClipCovParams, state, group):
    mean_adv, mean_logp = _means(view, group)
    cand = _clip_cov_candidates(view, p, mean_adv, mean_logp)
    priority = hash_uniform(view.ids, int(state["seed"]))
    k_of = floor_fraction(p.clip_cov_ratio, of=masked_count(view.valid, group))
    return {"mean_adv": mean_adv, "mean_logp": mean_logp, "topk": fit_topk(priority, cand, view.ids, k_of, group)}


def clip_cov_terms(batch, view, p: ClipCovParams, state, plan) -> Terms:
    """Clip-Cov: zero the loss of a random few tokens whose advantage-logprob covariance lies in (lb, ub)."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    cand = _clip_cov_candidates(view, p, plan["mean_adv"], plan["mean_logp"])
    priority = hash_uniform(view.ids, int(state["seed"]))
    detached = apply_topk(priority, cand, view.ids, plan["topk"])
    weights = (~detached).to(s.loss.dtype)
    stats = surrogate_stats(s, batch.valid)
    stats["clip_cov/candidate_frac"] = mean_stat(cand, view.valid)
    stats["clip_cov/detached_frac"] = mean_stat(detached, view.valid)
    return Terms(pg_loss=s.loss * weights, weights=weights, stats=stats)


# ---------------------------------------------------------------------------------------------- KL-Cov


@dataclass(frozen=True)
class KLCovParams(LossParams):
    """Defaults: recipe/entropy/7b_kl_cov.sh (k = 2e-3, i.e. the original 0.2 percent; verl's code default
    is 2e-4, the 32B recipe's value) and ppo_kl_coef = 1 (both recipes)."""

    kl_cov_ratio: float = 2e-3
    ppo_kl_coef: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("kl_cov_ratio", self.kl_cov_ratio)
        if self.ppo_kl_coef < 0:
            raise ValueError(f"ppo_kl_coef must be >= 0, got {self.ppo_kl_coef}")


def kl_cov_fit(view, p: KLCovParams, state, group):
    mean_adv, mean_logp = _means(view, group)
    cov = token_covariance(view, mean_adv, mean_logp)
    k_of = floor_fraction(p.kl_cov_ratio)
    return {"mean_adv": mean_adv, "mean_logp": mean_logp, "topk": fit_topk(cov, view.valid, view.ids, k_of, group)}


def _kl_cov_inert(p: KLCovParams) -> list[tuple[str, str]]:
    return [("kl_cov", f"kl_cov_ratio={p.kl_cov_ratio} / ppo_kl_coef={p.ppo_kl_coef} have no effect on-policy: "
             "|log pi - log pi_old| is identically 0 when the ratio is 1")]


def kl_cov_terms(batch, view, p: KLCovParams, state, plan) -> Terms:
    """KL-Cov: unclipped -A r, plus beta |log pi - log pi_old| on the top-k tokens by covariance."""
    log_ratio = torch.clamp(batch.log_prob - batch.ratio_denominator, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    adv = batch.token_advantages
    pg = -adv * torch.exp(log_ratio)
    cov = token_covariance(view, plan["mean_adv"], plan["mean_logp"])
    sel = apply_topk(cov, view.valid, view.ids, plan["topk"])
    abs_kl = log_ratio.abs()
    pg = pg + torch.where(sel, p.ppo_kl_coef * abs_kl, torch.zeros_like(abs_kl))
    stats = {
        "ppo_kl": mean_stat(abs_kl, batch.valid),  # the official KL-Cov reports mean |log ratio|
        "kl_cov/selected_frac": mean_stat(sel, view.valid),
        "pg_clipfrac": mean_stat(torch.zeros_like(sel), batch.valid),
    }
    return Terms(pg_loss=pg, stats=stats)


CLIP_COV = register_objective(Objective(
    "clip_cov", params=ClipCovParams, terms=clip_cov_terms, fit=clip_cov_fit, controller=ClipCovSeed,
    acts_at=("MASK",), inert_on_policy=clip_inert_knobs,
))


KL_COV = register_objective(Objective(
    "kl_cov", params=KLCovParams, terms=kl_cov_terms, fit=kl_cov_fit, acts_at=("LOSS-TERM",),
    inert_on_policy=_kl_cov_inert,
))

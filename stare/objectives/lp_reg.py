"""Lp-Reg: low-probability regularisation (Huang et al., arXiv 2510.03222).

Official code: CarlanLark/Lp-Reg-dev (verl fork), ``verl/trainer/ppo/core_algos.py``
(``compute_policy_loss_lp_reg``), the proxy filter in ``verl/workers/actor/dp_actor.py`` (``apply_min_p``)
and its old pass (``compute_minp_log_prob``, ``minp_old_log_prob=True``). docs/methods.md §9.1.

Rare tokens in wrong answers ("reasoning sparks") are pushed down hardest by the policy gradient, and
with them goes the entropy. Lp-Reg keeps those among them that a denoised version of the old policy
would still consider plausible:

    proxy(.|s) = pi_old(.|s) restricted to {v : pi_old(v) >= kappa max_u pi_old(u)}, renormalised (min-p)
    C = valid tokens with A < 0;  k = max(1, floor(rho |C|));  only if k > 1:
    S = the k tokens of C with the lowest log-prob;   R = S & (log pi < log proxy)
    loss_t = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))            off R
    loss_t = -A r + beta KL_est(log pi, log proxy)                         on R (unclipped, pulled up)

R holds only tokens that survived the filter: a filtered token's proxy log-prob is -1e4, below any
log-prob, so noise tokens get the ordinary update. The same rule may run on A > 0 tokens (``rho_pos``,
off by default). The proxy is a statistic of the old pass's full logits (``logit_stats``), so Lp-Reg
needs the stare trainer; S ranks the current log-prob (micro scope, as the official code) or the old one
(global scope); R compares the current log-prob with the proxy in both.

Temperature. The official filter runs on the raw logits, before the division by the rollout
temperature T; our logit statistics see logits already divided by T. min-p on the raw logits keeps
z_v - z_max >= ln(kappa) / T in temperature-scaled logits z, so the filter takes T as a parameter
(``minp_temperature``): set it to the rollout temperature to reproduce the official filter at T != 1. At
T = 1 (every official script, and the testbed) it makes no difference; left at 1 under T < 1 the filter
keeps fewer tokens than the official one (min-p with kappa on the sharpened distribution equals min-p
with kappa^T on the raw one). The proxy log-prob itself is renormalised at T, as in the official code.

Deviations: the ratio's log is clamped to +-20 as everywhere in this library (the official loss does
not clamp; identical unless |log r| > 20); ties in log-prob go to the lower token id; the logged
``ppo_kl`` is verl's usual mean of -log r (the official loss logs a low-variance KL estimate there).
Not implemented: ``minp_soft``, ``regular_type="fixed"``, ``minp_ref_dist`` and the per-micro-batch proxy
from the current model (``minp_old_log_prob=False``), all off in the official scripts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checks import check_choice, check_fraction
from ..metrics import mean_stat
from ..selection import apply_topk, fit_topk, floor_fraction
from ..surrogate import KL_ESTIMATORS, clipped_surrogate, kl_penalty, surrogate_stats
from .contract import ClipParams, Terms, clip_inert_knobs
from .registry import Objective, register_objective

__all__ = ["PROXY", "FILTERED_LOG_PROB", "LpRegParams", "lp_reg_fit", "lp_reg_terms", "minp_proxy_log_prob"]

PROXY = "lp_reg_proxy_log_prob"  # the aux input: log proxy(o_t | s_t) from the old pass
FILTERED_LOG_PROB = -1.0e4  # proxy log-prob of a token the min-p filter removed (the official fill value)


@dataclass(frozen=True)
class LpRegParams(ClipParams):
    """Defaults from CarlanLark/Lp-Reg-dev ``recipe/lp_reg/Qwen3_14b_lp_reg_onpolicy_64gpu.sh`` (the
    14B on-policy run of the paper's main table) and ``compute_policy_loss_lp_reg``.

    minp_kappa: kappa, the min-p fraction of the top probability (0.02, the scripts; the yaml's
        ``minp_p_threshold`` default is 0.1, which the scripts override).
    minp_temperature: the temperature kappa refers to: the rollout temperature reproduces the official
        filter on raw logits (1.0, the scripts' T; module docstring).
    rho_neg: fraction of the negative-advantage tokens examined (0.01, the 14B script; 0.005 for 32B;
        a fraction, although the code calls it ``logp_neg_k_percent``).
    rho_pos: the same for positive-advantage tokens (0, the scripts).
    beta: weight of the KL pull toward the proxy (1, ``ppo_kl_coef``).
    proxy_kl_estimator: its estimator (``low_var_kl``, verl's k3 clamped to +-10).
    Clip: 1.0 / 9.0 (the scripts: ratio bounds [0, 10], clipping nearly off); no dual clip (the scripts
        set clip_ratio_c = 10, which this loss never reads).
    """

    clip_ratio_low: float = 1.0
    clip_ratio_high: float = 9.0
    clip_ratio_c: float | None = None
    minp_kappa: float = 0.02
    minp_temperature: float = 1.0
    rho_neg: float = 0.01
    rho_pos: float = 0.0
    beta: float = 1.0
    proxy_kl_estimator: str = "low_var_kl"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("minp_kappa", self.minp_kappa, low_open=True)
        if not self.minp_temperature > 0:
            raise ValueError(f"minp_temperature must be > 0, got {self.minp_temperature}")
        check_fraction("rho_neg", self.rho_neg)
        check_fraction("rho_pos", self.rho_pos)
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        check_choice("proxy_kl_estimator", self.proxy_kl_estimator, KL_ESTIMATORS)


def minp_proxy_log_prob(kappa: float, temperature: float = 1.0):
    """LogitStat: log-prob of the sampled token under the min-p proxy of the distribution.

    ``z`` are logits divided by the rollout temperature; a token is kept when
    z_v - max z >= ln(kappa) / ``temperature`` (min-p with ``kappa`` on the logits before that division).
    The proxy renormalises softmax(z) over the kept tokens; removed tokens get ``FILTERED_LOG_PROB``.
    """
    threshold = math.log(kappa) / temperature

    def stat(z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        keep = z - z.amax(-1, keepdim=True) >= threshold
        log_norm = torch.logsumexp(z.masked_fill(~keep, -math.inf), -1)
        sampled = z.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        kept = keep.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return torch.where(kept, sampled - log_norm, torch.full_like(sampled, FILTERED_LOG_PROB))

    return stat


def _sides(view, p: LpRegParams):
    return {"neg": (view.valid & (view.advantages < 0), p.rho_neg),
            "pos": (view.valid & (view.advantages > 0), p.rho_pos)}


def lp_reg_fit(view, p: LpRegParams, state, group):
    """The k lowest log-probs of each advantage side (as the k highest surprisals)."""
    return {side: fit_topk(view.surprisal, cand, view.ids, floor_fraction(rho), group)
            for side, (cand, rho) in _sides(view, p).items()}


def lp_reg_terms(batch, view, p: LpRegParams, state, plan) -> Terms:
    """Lp-Reg: unclipped loss plus a KL pull toward the min-p proxy on the lowest-probability tokens."""
    s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low,
                          p.clip_ratio_high, p.clip_ratio_c)
    adv = batch.token_advantages
    proxy = batch.aux[PROXY].to(batch.log_prob.dtype)
    below_proxy = batch.log_prob.detach() < proxy
    stats = surrogate_stats(s, batch.valid)
    regularised = torch.zeros_like(batch.valid)
    for side, (cand, rho) in _sides(view, p).items():
        fit = plan[side]
        lowest = apply_topk(view.surprisal, cand, view.ids, fit) & (fit.k > 1)  # the official k > 1 rule
        r_side = lowest & below_proxy
        regularised = regularised | r_side
        if rho > 0:
            stats[f"lp_reg/{side}_lowest_frac"] = mean_stat(lowest, view.valid)
            stats[f"lp_reg/{side}_regularised_frac"] = mean_stat(r_side, view.valid)
    kl = kl_penalty(batch.log_prob, proxy, p.proxy_kl_estimator)
    loss = torch.where(regularised, -adv * s.ratio + p.beta * kl, s.loss)
    stats["lp_reg/proxy_kl"] = mean_stat(kl.detach(), regularised)
    stats["lp_reg/filtered_frac"] = mean_stat(proxy <= FILTERED_LOG_PROB, batch.valid)
    return Terms(pg_loss=loss, stats=stats)


LP_REG = register_objective(Objective(
    "lp_reg", params=LpRegParams, terms=lp_reg_terms, fit=lp_reg_fit, needs=(PROXY,),
    logit_stats=lambda p: {PROXY: minp_proxy_log_prob(p.minp_kappa, p.minp_temperature)},
    acts_at=("LOSS", "LOSS-TERM"), inert_on_policy=clip_inert_knobs,
))

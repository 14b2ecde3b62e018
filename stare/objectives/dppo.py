"""DPPO: Divergence Proximal Policy Optimization, binary variants (arXiv 2602.04879).

Official code: sail-sg/Stable-RL, ``verl/trainer/ppo/core_algos.py`` (``compute_policy_loss_with_mask``,
``_compute_token_mask_for_policy_loss``; loss modes ``dppo_binary_tv``, ``dppo_binary_kl`` and their
``*_recompute`` forms). docs/methods.md §10.3.

Instead of clipping the ratio, DPPO drops a token from the gradient when the policy has moved too far
from the one that produced it, measured on the sampled token's probability p = pi(o_t) against p0:

    binary TV:  invalid = p - p0 > delta_high  (A > 0),   p - p0 < -delta_low  (A <= 0)
    binary KL:  kl = p0 log(p0 / p) + (1 - p0) log((1 - p0) / (1 - p))   (Bernoulli KL of the token)
                invalid = kl > delta and p moved in A's direction (up for A > 0, down for A < 0)
    loss = -A sg(min(exp(log p - log p0), c)) (1 - invalid) log p

a REINFORCE term with a truncated, detached importance weight. p0 is the old pass's probability (the
official ``*_recompute`` modes); the official default modes use the inference engine's own
probability, which the stare trainer records as ``aux["rollout_log_prob"]`` but this loss does not read.

Deltas reuse ``clip_ratio_low`` / ``clip_ratio_high``, as the official code does; the values of the
paper's runs were not found, so the defaults are verl's 0.2 / 0.2 (ours). For the KL variant, which of the
two deltas applies was not recorded: we use delta_high for A > 0 and delta_low for A < 0, as in TV.
On-policy p = p0: nothing is dropped, the weight is 1, and the gradient is PPO's (-A grad log pi); the
loss value differs (-A log pi instead of -A). 1 - p is floored at 1e-12 in the KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_choice
from ..metrics import mean_stat
from ..surrogate import LOG_RATIO_CLAMP, Surrogate, surrogate_stats
from .contract import ClipParams, Terms
from .registry import Objective, register_objective

__all__ = ["DIVERGENCES", "DppoParams", "dppo_invalid", "dppo_terms"]

DIVERGENCES = ("tv", "kl")
FLOOR = 1e-12


@dataclass(frozen=True)
class DppoParams(ClipParams):
    """divergence: ``tv`` or ``kl`` (binary variants; ``tv`` first in the official list of modes).
    clip_ratio_low / clip_ratio_high: the deltas (0.2 / 0.2: verl's defaults, which the official code reads).
    clip_ratio_c: c, the cap on the detached importance weight (10, the official default).
    """

    clip_ratio_c: float | None = 10.0
    divergence: str = "tv"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("divergence", self.divergence, DIVERGENCES)


def dppo_invalid(log_prob, old_log_prob, adv, p: DppoParams) -> torch.Tensor:
    """bool [B, T]: tokens whose probability moved beyond the trust region in the direction of A."""
    prob, prob0 = log_prob.detach().exp(), old_log_prob.exp()
    up = adv > 0
    if p.divergence == "tv":
        return torch.where(up, prob - prob0 > p.clip_ratio_high, prob - prob0 < -p.clip_ratio_low)
    q, q0 = (1 - prob).clamp(min=FLOOR), (1 - prob0).clamp(min=FLOOR)
    kl = prob0 * (old_log_prob - log_prob.detach()) + q0 * (torch.log(q0) - torch.log(q))
    delta = torch.where(up, p.clip_ratio_high, p.clip_ratio_low)
    moved = torch.where(up, prob > prob0, prob < prob0)
    return (kl > delta) & moved & (adv != 0)


def dppo_terms(batch, view, p: DppoParams, state, plan) -> Terms:
    """DPPO: REINFORCE with a truncated detached ratio, tokens beyond a TV / KL trust region dropped."""
    lp, old, adv = batch.log_prob, batch.ratio_denominator, batch.token_advantages
    log_ratio = torch.clamp(lp.detach() - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    weight = ratio if p.clip_ratio_c is None else torch.clamp(ratio, max=p.clip_ratio_c)
    invalid = dppo_invalid(lp, old, adv, p)
    keep = (~invalid).to(lp.dtype)
    loss = -adv * weight * keep * lp
    capped = ratio > weight
    stats = surrogate_stats(Surrogate(loss, ratio, log_ratio, invalid, capped), batch.valid)
    stats["dppo/masked_frac"] = mean_stat(invalid, batch.valid)
    return Terms(pg_loss=loss, weights=keep, stats=stats)


def _inert(p: DppoParams) -> list[tuple[str, str]]:
    return [("trust_region", f"the {p.divergence} trust region (deltas {p.clip_ratio_low} / {p.clip_ratio_high}) and "
             f"clip_ratio_c={p.clip_ratio_c} have no effect on-policy: p = p0, nothing is dropped and the weight is 1")]


DPPO = register_objective(Objective(
    "dppo", params=DppoParams, terms=dppo_terms, acts_at=("LOSS", "MASK"), inert_on_policy=_inert,
))

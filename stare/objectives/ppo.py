"""Vanilla PPO/GRPO clipped surrogate: the baseline every other objective reduces to.

docs/methods.md §1.2; verl's ``vanilla`` policy loss (``compute_policy_loss_vanilla``). With
``clip_ratio_high=0.28, clip_ratio_c=10`` and token-mean this is the loss of DAPO and of the STARE
paper's GRPO-ds baseline; with ``loss_agg_mode="seq-mean-token-sum-norm"`` (and unnormalised
advantages, see ``stare.advantages``) it is Dr.GRPO. Defaults: verl's actor config.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import ClipParams, Terms, clip_inert_knobs
from .registry import Objective, register_objective


@dataclass(frozen=True)
class PPOParams(ClipParams):
    """verl defaults: clip_ratio_low = clip_ratio_high = 0.2, clip_ratio_c = 3.0, token-mean."""


def ppo_terms(batch, view, p: PPOParams, state, plan) -> Terms:
    """PPO clipped surrogate with decoupled bounds and dual clip (GRPO, GRPO-ds, DAPO, Dr.GRPO)."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    return Terms(pg_loss=s.loss, stats=surrogate_stats(s, batch.valid))


PPO = register_objective(Objective(
    "ppo", params=PPOParams, terms=ppo_terms, acts_at=("LOSS",), inert_on_policy=clip_inert_knobs,
    aliases=("grpo", "vanilla"),
))

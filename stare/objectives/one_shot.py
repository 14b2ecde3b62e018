"""The entropy loss of 1-shot RLVR (Wang et al., arXiv 2504.20571).

Official code: ypwang61/One-Shot-RLVR, ``verl/workers/actor/dp_actor.py``; defaults in
``verl/trainer/config/ppo_trainer.yaml``; script ``scripts/train/training_1.5b_pi1_r128.sh``.
docs/methods.md §10.5.

    loss = pg_coef * L_pg - c * AGG(H)

with H the current policy's full-vocabulary entropy, differentiated through, aggregated like the policy
loss (token-mean in the recipe), and L_pg verl's dual-clipped surrogate. ``pg_coef = 0`` is the paper's
entropy-only ablation (training with no reward signal at all); ``pg_coef = 1`` is the static entropy
bonus (``entropy_bonus``) bit for bit. The recipe also uses a KL loss of 0.001 (``low_var_kl``) to the
initial policy: ``kl_coef=0.001`` reproduces it (off by default: it makes the trainer keep a reference).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import ClipParams, Terms, clip_inert_knobs
from .registry import Objective, register_objective

__all__ = ["OneShotEntropyParams", "one_shot_entropy_terms"]


@dataclass(frozen=True)
class OneShotEntropyParams(ClipParams):
    """entropy_coeff: c (0.001, the repo's ppo_trainer.yaml). pg_coef: weight of the policy loss (1.0,
    ``pg_loss_coeff``; 0 for the entropy-only ablation). Clip: verl's 0.2 / 0.2, dual clip 3."""

    entropy_coeff: float = 0.001
    pg_coef: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.entropy_coeff >= 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")
        if not self.pg_coef >= 0:
            raise ValueError(f"pg_coef must be >= 0, got {self.pg_coef}")


def one_shot_entropy_terms(batch, view, p: OneShotEntropyParams, state, plan) -> Terms:
    """1-shot RLVR: pg_coef times the clipped surrogate, minus c times the aggregated token entropy."""
    s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low,
                          p.clip_ratio_high, p.clip_ratio_c)
    loss = s.loss if p.pg_coef == 1.0 else p.pg_coef * s.loss
    extra = {"entropy_bonus": -p.entropy_coeff * batch.entropy} if p.entropy_coeff != 0 else {}
    return Terms(pg_loss=loss, extra=extra, stats=surrogate_stats(s, batch.valid))


ONE_SHOT_ENTROPY = register_objective(Objective(
    "one_shot_entropy", params=OneShotEntropyParams, terms=one_shot_entropy_terms, needs=("entropy_grad",),
    acts_at=("LOSS-TERM",), inert_on_policy=clip_inert_knobs,
))

"""EntroAdv: entropy-based advantage shaping (Cheng et al., "Reasoning with Exploration: An Entropy
Perspective", arXiv 2506.14758). A baseline in the STARE paper's table. docs/methods.md §9.9.

    A'_t = A_t + min(alpha * H_t (detached), |A_t| / kappa)

The clip of the bonus at |A| / kappa (kappa > 1) keeps the sign of A, and A = 0 stays 0. H is the
current forward's entropy in micro scope, the old policy's in global scope. alpha = 0.4, kappa = 2 are
[unverified] (docs/methods.md): configurable. Clip: verl defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics import mean_stat
from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import ClipParams, Terms, clip_inert_knobs
from .registry import Objective, register_objective


@dataclass(frozen=True)
class EntroAdvParams(ClipParams):
    entropy_adv_alpha: float = 0.4
    entropy_adv_kappa: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.entropy_adv_alpha < 0:
            raise ValueError(f"entropy_adv_alpha must be >= 0, got {self.entropy_adv_alpha}")
        if not self.entropy_adv_kappa > 1:
            raise ValueError(f"entropy_adv_kappa must be > 1 to keep the sign of A, got {self.entropy_adv_kappa}")


def entroadv_terms(batch, view, p: EntroAdvParams, state, plan) -> Terms:
    """EntroAdv: add a clipped entropy bonus min(alpha H, |A| / kappa) to each token's advantage."""
    adv = batch.token_advantages
    bonus = torch.minimum(p.entropy_adv_alpha * view.entropy.to(adv.dtype), adv.abs() / p.entropy_adv_kappa)
    shaped = adv + bonus
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, shaped, p.clip_ratio_low, p.clip_ratio_high, p.clip_ratio_c
    )
    stats = surrogate_stats(s, batch.valid)
    stats["entroadv/bonus_mean"] = mean_stat(bonus, batch.valid)
    return Terms(pg_loss=s.loss, stats=stats)


ENTROADV = register_objective(Objective(
    "entroadv", params=EntroAdvParams, terms=entroadv_terms, needs=("entropy",), acts_at=("ADV",),
    inert_on_policy=clip_inert_knobs,
))

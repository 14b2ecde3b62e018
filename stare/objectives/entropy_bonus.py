"""Entropy bonus (entropy regularisation), static or with a target-adaptive coefficient.

methods.md §8. ``loss = L_pg - c * AGG(H)``, with H the full-vocabulary entropy of the current policy,
differentiated through (compute it with ``stare.stats`` under autograd; the computation stays chunked).
The adaptive coefficient of Skywork-OR1 (arXiv 2505.22312; TRL ``use_adaptive_entropy``) lives in
``stare.control.AdaptiveEntropyCoef``; its ``state()`` passes the coefficient to apply this step (0 while
entropy is above the target) as ``state["entropy_coeff"]``.

Known failure mode: above a small, model-dependent coefficient a global bonus inflates the whole tail
of the vocabulary and entropy explodes; below it the bonus does nothing (SIREN, Cui et al.). The default
0.001 is verl's former GRPO-example default, removed there for that reason (verl PR #781); it is kept as
a visible starting point, not a recommendation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..surrogate import clipped_surrogate, surrogate_stats
from .base import ClipParams, Terms, clip_inert_knobs, register_objective


@dataclass(frozen=True)
class EntropyBonusParams(ClipParams):
    """entropy_coeff: c (0.001, verl's former default). Clip: verl defaults."""

    entropy_coeff: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.entropy_coeff < 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")


@register_objective(
    "entropy_bonus",
    params=EntropyBonusParams,
    needs=("entropy_grad",),
    state_keys=("entropy_coeff",),
    acts_at=("LOSS-TERM", "CTRL"),
    inert_on_policy=clip_inert_knobs,
)
def entropy_bonus_terms(batch, view, p: EntropyBonusParams, state, plan) -> Terms:
    """Entropy bonus: clipped surrogate minus c times the aggregated token entropy (c may come from a controller)."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    coeff = float(state.get("entropy_coeff", p.entropy_coeff))
    extra = {"entropy_bonus": -coeff * batch.entropy} if coeff != 0 else {}
    return Terms(pg_loss=s.loss, extra=extra, stats=surrogate_stats(s, batch.valid))

"""Entropy bonus (entropy regularisation), static or with a target-adaptive coefficient.

docs/methods.md §8. ``loss = L_pg - c * AGG(H)``, with H the full-vocabulary entropy of the current
policy, differentiated through (compute it with ``stare.stats`` under autograd; the computation stays
chunked). The coefficient c reaches the loss through the controller's state (``entropy_coeff``):

* static (default): c = ``entropy_coeff`` every step;
* adaptive (``adaptive=True``; Skywork-OR1, arXiv 2505.22312; TRL ``use_adaptive_entropy``): starting
  from ``entropy_coeff``, c += delta (capped at c_max) when the batch entropy H <= target, else
  c -= delta (floored at c_min), and the bonus is applied only while H <= target.

Deviation from TRL: TRL applies the coefficient from the previous optimizer step's entropy; here, like
STARE's gate, it is updated from the current step's batch before the update (same step).

Known failure mode: above a small, model-dependent coefficient a global bonus inflates the whole tail
of the vocabulary and entropy explodes; below it the bonus does nothing (SIREN, Cui et al.). The default
0.001 is verl's former GRPO-example default (its examples now set 0, verl PR #781); it is kept as a
visible starting point, not a recommendation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import (ClipParams, ControllerState, StepData, Terms, check_entropy_target, clip_inert_knobs, finite_entropy,
                       initial_target, resolve_target)
from .registry import Objective, register_objective

__all__ = ["DEFAULT_TARGET_ENTROPY", "EntropyBonusController", "EntropyBonusParams", "entropy_bonus_terms"]

DEFAULT_TARGET_ENTROPY = 0.2  # nats; TRL GRPOConfig.entropy_target


@dataclass(frozen=True)
class EntropyBonusParams(ClipParams):
    """entropy_coeff: c, or the adaptive schedule's starting value (0.001, verl's former default).
    Clip: verl defaults. The adaptive schedule, defaults from TRL's GRPOConfig:
    adaptive: off. target_entropy: None means 0.2 nats (TRL; its docs warn this "almost never
        triggers": set it near the entropy seen early in training), unless target_entropy_ratio is set.
    target_entropy_ratio: target = ratio x the first step's batch entropy (ours; None: off).
    coef_delta / coef_min / coef_max: step and bounds of c (0.005 / 0 / 1).
    """

    entropy_coeff: float = 0.001
    adaptive: bool = False
    target_entropy: float | None = None
    target_entropy_ratio: float | None = None
    coef_delta: float = 0.005
    coef_min: float = 0.0
    coef_max: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.entropy_coeff < 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")
        check_entropy_target(self.target_entropy, self.target_entropy_ratio)
        if not (0 <= self.coef_min <= self.coef_max):
            raise ValueError(f"need 0 <= coef_min <= coef_max, got {self.coef_min}, {self.coef_max}")
        if self.coef_delta < 0:
            raise ValueError(f"coef_delta must be >= 0, got {self.coef_delta}")


@dataclass
class EntropyBonusController(ControllerState):
    """The coefficient to apply this step: constant, or target-adaptive (module docstring)."""

    params: EntropyBonusParams = field(default_factory=EntropyBonusParams)
    coef: float = math.nan
    active: bool = False  # adaptive: H <= target at the last update
    target_entropy: float = math.nan
    last_entropy: float = math.nan
    skipped_updates: int = 0

    def __post_init__(self) -> None:
        p = self.params
        if math.isnan(self.coef):
            self.coef = p.entropy_coeff
        if math.isnan(self.target_entropy):
            self.target_entropy = initial_target(p.target_entropy, p.target_entropy_ratio, DEFAULT_TARGET_ENTROPY)

    def update(self, data: StepData) -> None:
        h = finite_entropy(self, data)
        if h is None:
            return
        self.last_entropy = h
        p = self.params
        if not p.adaptive:
            return
        self.target_entropy = resolve_target(self.target_entropy, p.target_entropy_ratio, h)
        self.active = h <= self.target_entropy
        step = p.coef_delta if self.active else -p.coef_delta
        self.coef = min(max(self.coef + step, p.coef_min), p.coef_max)

    @property
    def applied(self) -> float:
        return self.coef if (self.active or not self.params.adaptive) else 0.0

    def state(self) -> dict:
        return {"entropy_coeff": self.applied}

    def metrics(self) -> dict[str, float]:
        out = {"actor/entropy_coeff": self.applied}
        if self.params.adaptive:
            out["actor/entropy_target"] = self.target_entropy
        return out


def entropy_bonus_terms(batch, view, p: EntropyBonusParams, state, plan) -> Terms:
    """Entropy bonus: clipped surrogate minus c times the aggregated token entropy (c from the controller)."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    coeff = float(state["entropy_coeff"])
    extra = {"entropy_bonus": -coeff * batch.entropy} if coeff != 0 else {}
    return Terms(pg_loss=s.loss, extra=extra, stats=surrogate_stats(s, batch.valid))


ENTROPY_BONUS = register_objective(Objective(
    "entropy_bonus", params=EntropyBonusParams, terms=entropy_bonus_terms, controller=EntropyBonusController,
    needs=("entropy_grad",), acts_at=("LOSS-TERM", "CTRL"), inert_on_policy=clip_inert_knobs,
))

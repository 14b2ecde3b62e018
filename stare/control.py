"""Cross-step controllers: STARE's target-entropy gate with its adaptive W/M schedule, and the
Skywork-OR1 adaptive entropy coefficient. Both are host-side, updated once per training step from the
step's batch entropy, and checkpointable (``state_dict`` / ``load_state_dict``).

``StareController`` follows hp-luo/STARE ``STAREController`` (methods.md §3.3):

    update(H):  if H is NaN/Inf: keep everything as it is (and say so)
                gate_on = H < H_tgt                                  (strict)
                if adaptive: d = sign(H_tgt - H);  W = clip(W + alpha d, 1, W_max);  M = clip(M - alpha d, M_min, 1)

H is the token-mean entropy of the *whole* training batch of this step (after dynamic-sampling
filtering), from the no-grad old-log-prob pass at the rollout temperature; the gate decided from
step k's batch is used for step k's update (no lag). Before the first update the gate is on.

``AdaptiveEntropyCoef`` follows TRL's ``use_adaptive_entropy`` (Skywork-OR1, arXiv 2505.22312):
c += delta (capped at c_max) when H <= target, else c -= delta (floored at c_min), and the bonus is
applied only while H <= target. Deviation from TRL: TRL applies the coefficient from the previous
optimizer step's entropy; here, like the STARE gate, it is updated from the current step's batch
before the update (same-step).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields

from torch import Tensor

__all__ = ["StareController", "AdaptiveEntropyCoef"]


def _as_float(value: float | Tensor) -> float:
    return float(value.detach().cpu()) if isinstance(value, Tensor) else float(value)


def _load(obj, state: dict, name: str) -> None:
    valid = {f.name for f in fields(obj)}
    unknown = set(state) - valid
    missing = valid - set(state)
    if unknown or missing:
        raise ValueError(f"{name}.load_state_dict: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    for key, value in state.items():
        setattr(obj, key, value)


@dataclass
class StareController:
    """STARE's closed-loop gate. Defaults: hp-luo/STARE (H_tgt 0.3, W 1.1, M 0.9; adaptive off,
    alpha 0.01, W_max 1.5, M_min 0.5; the trainer's alpha default, the class's own is 0)."""

    target_entropy: float = 0.3
    reweight_w: float = 1.1
    reweight_m: float = 0.9
    adaptive: bool = False
    alpha: float = 0.01
    w_max: float = 1.5
    m_min: float = 0.5
    gate_on: bool = True
    last_entropy: float = math.nan
    skipped_updates: int = 0

    def __post_init__(self) -> None:
        if not self.target_entropy >= 0:
            raise ValueError(f"target_entropy must be >= 0, got {self.target_entropy}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if not (self.w_max >= 1 and 0 < self.m_min <= 1):
            raise ValueError(f"need w_max >= 1 and 0 < m_min <= 1, got {self.w_max}, {self.m_min}")

    def update(self, batch_entropy: float | Tensor) -> bool:
        """Update from this step's batch entropy. Returns the gate. NaN/Inf leaves the state unchanged."""
        h = _as_float(batch_entropy)
        if not math.isfinite(h):
            self.skipped_updates += 1
            warnings.warn(f"StareController: batch entropy is {h}; gate and weights left unchanged", RuntimeWarning)
            return self.gate_on
        self.last_entropy = h
        self.gate_on = h < self.target_entropy
        if self.adaptive and self.alpha != 0:
            d = (self.target_entropy > h) - (self.target_entropy < h)  # sign(H_tgt - H)
            self.reweight_w = min(max(self.reweight_w + self.alpha * d, 1.0), self.w_max)
            self.reweight_m = min(max(self.reweight_m - self.alpha * d, self.m_min), 1.0)
        return self.gate_on

    def state(self) -> dict:
        """What the ``stare`` objective reads this step."""
        return {"gate_on": self.gate_on, "reweight_w": self.reweight_w, "reweight_m": self.reweight_m}

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        _load(self, state, "StareController")


@dataclass
class AdaptiveEntropyCoef:
    """Target-adaptive entropy coefficient. Defaults: TRL GRPOConfig (entropy_target 0.2, delta 0.005,
    min 0, max 1). TRL's docs warn that 0.2 nats "almost never triggers": set the target near the
    entropy seen early in training."""

    target_entropy: float = 0.2
    coef: float = 0.0
    delta: float = 0.005
    coef_min: float = 0.0
    coef_max: float = 1.0
    active: bool = False
    last_entropy: float = math.nan
    skipped_updates: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.coef_min <= self.coef_max):
            raise ValueError(f"need 0 <= coef_min <= coef_max, got {self.coef_min}, {self.coef_max}")
        if self.delta < 0:
            raise ValueError(f"delta must be >= 0, got {self.delta}")

    def update(self, batch_entropy: float | Tensor) -> float:
        """Update from this step's batch entropy; returns the coefficient to apply now."""
        h = _as_float(batch_entropy)
        if not math.isfinite(h):
            self.skipped_updates += 1
            warnings.warn(f"AdaptiveEntropyCoef: batch entropy is {h}; coefficient left unchanged", RuntimeWarning)
            return self.applied
        self.last_entropy = h
        self.active = h <= self.target_entropy
        step = self.delta if self.active else -self.delta
        self.coef = min(max(self.coef + step, self.coef_min), self.coef_max)
        return self.applied

    @property
    def applied(self) -> float:
        return self.coef if self.active else 0.0

    def state(self) -> dict:
        """What the ``entropy_bonus`` objective reads this step."""
        return {"entropy_coeff": self.applied}

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        _load(self, state, "AdaptiveEntropyCoef")

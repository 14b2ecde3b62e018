"""STEER: Stabilizing Token-level Entropy-changE via Reweighting.

Paper: Hao et al., arXiv 2510.10150. Official code: zz-haooo/STEER (verl 0.4.1 fork),
``verl/trainer/ppo/core_algos.py`` (``compute_token_weights``, loss mode ``entropy_control``).
docs/methods.md §4.

Each token gets an estimate of its own entropy change and tokens predicted to move entropy most are
damped:

    x = pi(o_t) (current, clamped to [1e-8, 1 - 1e-8]),  x_old = pi_old(o_t),  H = old-policy entropy
    Omega = (A / x_old) x (1 - x) (log x + H)             ("code" form, as implemented officially)
    a = |Omega| (non-finite -> 0);  lo, hi = min, max of a over the valid tokens of the scope
    linear: w = w_max - (a - lo)(w_max - w_min)/(hi - lo)  (all equal: (w_min + w_max)/2), clamped
    exp:    w = clamp(exp(-k a), w_min, w_max),  k = -ln(w_min) / max(hi, 0.02)

The loss is the token-mean of w times the dual-clipped PPO loss; weights are not renormalised.

Deviation (optional, ``omega="first_order"``): the first-order derivation of docs/methods.md §2.2 with the
per-state constant approximated by pi_o^2 (log pi_o + H) has one more factor x; the official code omits
it. Since only |Omega| normalised by its min/max is used, the code form is the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checks import check_choice
from ..metrics import max_stat
from ..selection import masked_min_max
from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import ClipParams, Terms, clip_inert_knobs
from .registry import Objective, register_objective

MAPPINGS = ("linear", "exp")
OMEGA_FORMS = ("code", "first_order")


@dataclass(frozen=True)
class SteerParams(ClipParams):
    """Defaults from zz-haooo/STEER run/run_exp.sh (exp mapping, w in [0.8, 1.0]).

    mapping: "exp" (paper's main form) or "linear" (run_linear.sh).
    token_weight_min: w_min (0.8 in both scripts).
    token_weight_max: w_max; None means 1.0 for exp and 1.2 for linear (the scripts' values).
    exp_floor: lower bound on max|Omega| in k (0.02, official code).
    omega: "code" or "first_order" (see the module docstring).
    Clip: 0.2 / 0.28, dual clip 10 (the scripts).
    """

    clip_ratio_high: float = 0.28
    clip_ratio_c: float | None = 10.0
    mapping: str = "exp"
    token_weight_min: float = 0.8
    token_weight_max: float | None = None
    exp_floor: float = 0.02
    omega: str = "code"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("mapping", self.mapping, MAPPINGS)
        check_choice("omega", self.omega, OMEGA_FORMS)
        w_max = self.w_max
        if not 0 < self.token_weight_min <= w_max:
            raise ValueError(f"need 0 < token_weight_min <= token_weight_max, got {self.token_weight_min}, {w_max}")
        if self.mapping == "exp" and self.token_weight_min >= 1:
            raise ValueError("the exp mapping needs token_weight_min < 1 (k = -ln(w_min) / max|Omega|)")
        if not self.exp_floor > 0:
            raise ValueError(f"exp_floor must be > 0, got {self.exp_floor}")

    @property
    def w_max(self) -> float:
        if self.token_weight_max is not None:
            return self.token_weight_max
        return 1.0 if self.mapping == "exp" else 1.2


def omega_abs(view, p: SteerParams) -> torch.Tensor:
    """|Omega| per token from the selection view (current vs old probabilities, old entropy)."""
    x = view.log_prob.exp().clamp(1e-8, 1 - 1e-8)
    x_old = view.old_log_prob.exp().clamp(1e-8, 1.0)
    omega = (view.advantages / x_old) * x * (1 - x) * (torch.log(x) + view.old_entropy)
    if p.omega == "first_order":
        omega = omega * x
    a = omega.abs()
    return torch.where(torch.isfinite(a), a, torch.zeros_like(a))


def steer_fit(view, p: SteerParams, state, group):
    lo, hi = masked_min_max(omega_abs(view, p), view.valid, group)
    return {"lo": lo, "hi": hi}


def steer_weights(a: torch.Tensor, valid: torch.Tensor, lo, hi, p: SteerParams) -> torch.Tensor:
    w_min, w_max = p.token_weight_min, p.w_max
    if p.mapping == "linear":
        span = hi - lo
        scaled = w_max - (a - lo) * (w_max - w_min) / torch.where(span > 0, span, torch.ones_like(span))
        w = torch.where(span > 0, scaled, torch.full_like(a, (w_min + w_max) / 2))
    else:
        k = -math.log(w_min) / torch.clamp(hi, min=p.exp_floor)
        w = torch.exp(-k * a)
    w = w.clamp(w_min, w_max)
    return torch.where(valid, w, torch.zeros_like(w))


def steer_terms(batch, view, p: SteerParams, state, plan) -> Terms:
    """STEER: damp tokens by their estimated entropy change |Omega|, min-max mapped to [w_min, w_max]."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    a = omega_abs(view, p)
    weights = steer_weights(a.to(s.loss.dtype), view.valid, plan["lo"].to(s.loss.dtype), plan["hi"].to(s.loss.dtype), p)
    stats = surrogate_stats(s, batch.valid)
    stats["steer/omega_abs_max"] = max_stat(a, view.valid)
    return Terms(pg_loss=s.loss * weights, weights=weights, stats=stats)


STEER = register_objective(Objective(
    "steer", params=SteerParams, terms=steer_terms, fit=steer_fit, needs=("old_entropy",),
    acts_at=("WEIGHT",), inert_on_policy=clip_inert_knobs,
))

"""STARE: Surprisal-guided Token-level Advantage Reweighting for policy Entropy stability.

Paper: Luo et al., arXiv 2606.19236. Official code: hp-luo/STARE (verl 0.7 fork),
``verl/trainer/ppo/core_algos.py`` (``compute_stare_token_weights``, ``compute_policy_loss_stare``).
docs/methods.md §3.

Inside the clipped (and dual-clipped) surrogate each token's loss is multiplied by a weight w:

    T+ = valid tokens with A > 0,  T- = valid tokens with A < 0      (A == 0 is in neither)
    L+ = the top ceil(P |T+|) tokens of T+ by surprisal -log pi(o_t)  (at least one if T+ is non-empty)
    L- = the same within T-                                            (variant C2 only)
    w = W on L+,  M on L- (C2),  1 elsewhere      -- only while the gate is on

By the first-order entropy change -eta A S(o) (stare.theory), rare tokens in correct answers (L+) are
the ones whose reinforcement raises entropy; W > 1 strengthens them, M < 1 weakens the entropy-lowering
penalty on rare tokens in wrong answers. The weights are not renormalised, and w > 0 multiplies an
already-clipped loss, so clip decisions and gradient signs are unchanged. W = M = 1, P = 0 or a closed
gate give GRPO-ds (``ppo`` with the same clip bounds) bit for bit.

The controller (``StareController``, hp-luo/STARE ``STAREController``, docs/methods.md §3.3):

    update(H):  if H is NaN/Inf: keep everything as it is (and say so)
                gate_on = H < H_tgt                                  (strict)
                if adaptive: d = sign(H_tgt - H);  W = clip(W + alpha d, 1, W_max);  M = clip(M - alpha d, M_min, 1)

H is the token-mean entropy of the *whole* training batch of this step (after dynamic-sampling
filtering), from the no-grad old-log-prob pass at the rollout temperature; the gate decided from step
k's batch is used for step k's update (no lag). Before the first update the gate is on and W, M are the
parameters'. Its state is what ``stare_terms`` reads: ``gate_on``, ``reweight_w``, ``reweight_m`` (W
and M reach the loss only through the state; their defaults live in ``StareParams`` alone).
``target_entropy_ratio`` (ours) sets H_tgt to a fraction of the first step's batch entropy, for models
whose entropy scale is unknown.

Deviations from the official code: none in micro scope, except that ties in surprisal go to the lower
token id instead of ``torch.topk``'s arbitrary order. ``selection_scope="global"`` (ours) ranks the
old-policy surprisal over the whole mini-batch and all ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..checks import check_choice, check_fraction
from ..metrics import mean_stat
from ..selection import apply_topk, ceil_fraction, fit_topk
from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import (ClipParams, ControllerState, StepData, Terms, check_entropy_target, clip_inert_knobs, finite_entropy,
                       initial_target, resolve_target)
from .registry import Objective, register_objective

__all__ = ["DEFAULT_TARGET_ENTROPY", "StareController", "StareParams", "stare_fit", "stare_terms"]

VARIANTS = ("O1", "C2")
DEFAULT_TARGET_ENTROPY = 0.3  # nats; hp-luo/STARE trainer default (target_entropy)


@dataclass(frozen=True)
class StareParams(ClipParams):
    """Defaults from hp-luo/STARE recipe/STARE/scripts/run_short_cot_qwen2.5_math_7b_STARE.sh and its
    trainer (docs/methods.md §3.5).

    variant: "O1" (amplify L+ only) or "C2" (also attenuate L-).
    top_p_ratio: P, the fraction of each advantage-sign subset selected by surprisal (0.1).
    reweight_w: W on L+ (1.1; the README advises 1.05 for 14B/32B models).
    reweight_m: M on L- in C2 (0.9; 0.95 for 14B/32B).
    Clip: 0.2 / 0.28 with dual clip 10 (the script's GRPO-ds base).
    The gate (``StareController``):
    target_entropy: H_tgt in nats; None means 0.3 (the trainer's default) unless
        ``target_entropy_ratio`` is set. Set one of the two.
    target_entropy_ratio: H_tgt = ratio x the first step's batch entropy (ours; None: off).
    adaptive: the adaptive W/M schedule (official default off).
    alpha: its step per training step (0.01, the trainer's default).
    w_max / m_min: its bounds on W and M (1.5 / 0.5).
    """

    clip_ratio_high: float = 0.28
    clip_ratio_c: float | None = 10.0
    variant: str = "O1"
    top_p_ratio: float = 0.1
    reweight_w: float = 1.1
    reweight_m: float = 0.9
    target_entropy: float | None = None
    target_entropy_ratio: float | None = None
    adaptive: bool = False
    alpha: float = 0.01
    w_max: float = 1.5
    m_min: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("variant", self.variant, VARIANTS)
        check_fraction("top_p_ratio", self.top_p_ratio)
        if not self.reweight_w > 0 or not self.reweight_m > 0:
            raise ValueError(f"reweight_w and reweight_m must be > 0, got {self.reweight_w}, {self.reweight_m}")
        check_entropy_target(self.target_entropy, self.target_entropy_ratio)
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if not (self.w_max >= 1 and 0 < self.m_min <= 1):
            raise ValueError(f"need w_max >= 1 and 0 < m_min <= 1, got {self.w_max}, {self.m_min}")


@dataclass
class StareController(ControllerState):
    """STARE's closed-loop gate and adaptive W/M schedule (module docstring). Build it from the
    parameters: ``StareController(StareParams(target_entropy=0.3))``."""

    params: StareParams = field(default_factory=StareParams)
    target_entropy: float = math.nan  # resolved: the parameter, or the ratio x the first batch entropy
    gate_on: bool = True
    reweight_w: float = math.nan
    reweight_m: float = math.nan
    last_entropy: float = math.nan
    skipped_updates: int = 0

    def __post_init__(self) -> None:
        p = self.params
        if math.isnan(self.reweight_w):
            self.reweight_w, self.reweight_m = p.reweight_w, p.reweight_m
        if math.isnan(self.target_entropy):
            self.target_entropy = initial_target(p.target_entropy, p.target_entropy_ratio, DEFAULT_TARGET_ENTROPY)

    def update(self, data: StepData) -> None:
        h = finite_entropy(self, data)
        if h is None:
            return
        self.target_entropy = resolve_target(self.target_entropy, self.params.target_entropy_ratio, h)
        self.last_entropy = h
        self.gate_on = h < self.target_entropy
        p = self.params
        if p.adaptive and p.alpha != 0:
            d = (self.target_entropy > h) - (self.target_entropy < h)  # sign(H_tgt - H)
            self.reweight_w = min(max(self.reweight_w + p.alpha * d, 1.0), p.w_max)
            self.reweight_m = min(max(self.reweight_m - p.alpha * d, p.m_min), 1.0)

    def state(self) -> dict:
        return {"gate_on": self.gate_on, "reweight_w": self.reweight_w, "reweight_m": self.reweight_m}

    def metrics(self) -> dict[str, float]:
        """The trainer-level statistics of the STARE reference trainer (docs/methods.md §3.7)."""
        return {"stare/gate_on": float(self.gate_on), "stare/target_entropy": self.target_entropy,
                "stare/reweight_w": self.reweight_w, "stare/reweight_m": self.reweight_m,
                "stare/batch_entropy": self.last_entropy}


def _candidates(view):
    return view.valid & (view.advantages > 0), view.valid & (view.advantages < 0)


def stare_fit(view, p: StareParams, state, group):
    pos, neg = _candidates(view)
    k_of = ceil_fraction(p.top_p_ratio)
    plan = {"pos": fit_topk(view.surprisal, pos, view.ids, k_of, group)}
    if p.variant == "C2":
        plan["neg"] = fit_topk(view.surprisal, neg, view.ids, k_of, group)
    return plan


def stare_terms(batch, view, p: StareParams, state, plan) -> Terms:
    """STARE: surprisal-ranked token weights W (A > 0) and M (A < 0, C2) on the clipped surrogate, gated."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    pos, neg = _candidates(view)
    l_plus = apply_topk(view.surprisal, pos, view.ids, plan["pos"])
    l_minus = apply_topk(view.surprisal, neg, view.ids, plan["neg"]) if p.variant == "C2" else torch.zeros_like(pos)
    gate_on = bool(state["gate_on"])
    weights = torch.ones_like(s.loss.detach())
    if gate_on:
        weights = torch.where(l_plus, float(state["reweight_w"]), weights)
        if p.variant == "C2":
            weights = torch.where(l_minus, float(state["reweight_m"]), weights)
    stats = surrogate_stats(s, batch.valid)
    v = view.valid
    stats.update({
        "stare/pos_candidate_frac": mean_stat(pos, v),
        "stare/neg_candidate_frac": mean_stat(neg, v),
        "stare/pos_selected_frac": mean_stat(l_plus, v),
        "stare/neg_selected_frac": mean_stat(l_minus, v),
        "stare/pos_reweighted_frac": mean_stat(l_plus & gate_on, v),
        "stare/neg_reweighted_frac": mean_stat(l_minus & gate_on, v),
    })
    return Terms(pg_loss=s.loss * weights, weights=weights, stats=stats)


STARE = register_objective(Objective(
    "stare", params=StareParams, terms=stare_terms, fit=stare_fit, controller=StareController,
    acts_at=("WEIGHT", "CTRL"), inert_on_policy=clip_inert_knobs,
))

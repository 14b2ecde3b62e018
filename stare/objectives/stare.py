"""STARE: Surprisal-guided Token-level Advantage Reweighting for policy Entropy stability.

Paper: Luo et al., arXiv 2606.19236. Official code: hp-luo/STARE (verl 0.7 fork),
``verl/trainer/ppo/core_algos.py`` (``compute_stare_token_weights``, ``compute_policy_loss_stare``).
methods.md §3.

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

State (from ``stare.control.StareController.state()``): ``gate_on`` (default True, the official
controller's value before its first update), ``reweight_w`` / ``reweight_m`` (the adaptive schedule's
current W, M; default: the parameters).

Deviations from the official code: none in micro scope, except that ties in surprisal go to the lower
token id instead of ``torch.topk``'s arbitrary order. ``selection_scope="global"`` (ours) ranks the
old-policy surprisal over the whole mini-batch and all ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_choice, check_fraction
from ..metrics import mean_stat
from ..selection import apply_topk, ceil_fraction, fit_topk
from ..surrogate import clipped_surrogate, surrogate_stats
from .base import ClipParams, Terms, clip_inert_knobs, register_objective

VARIANTS = ("O1", "C2")


@dataclass(frozen=True)
class StareParams(ClipParams):
    """Defaults from hp-luo/STARE recipe/STARE/scripts/run_short_cot_qwen2.5_math_7b_STARE.sh.

    variant: "O1" (amplify L+ only) or "C2" (also attenuate L-).
    top_p_ratio: P, the fraction of each advantage-sign subset selected by surprisal (0.1).
    reweight_w: W on L+ (1.1; the README advises 1.05 for 14B/32B models).
    reweight_m: M on L- in C2 (0.9; 0.95 for 14B/32B).
    Clip: 0.2 / 0.28 with dual clip 10 (the script's GRPO-ds base).
    """

    clip_ratio_high: float = 0.28
    clip_ratio_c: float | None = 10.0
    variant: str = "O1"
    top_p_ratio: float = 0.1
    reweight_w: float = 1.1
    reweight_m: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("variant", self.variant, VARIANTS)
        check_fraction("top_p_ratio", self.top_p_ratio)
        if not self.reweight_w > 0 or not self.reweight_m > 0:
            raise ValueError(f"reweight_w and reweight_m must be > 0, got {self.reweight_w}, {self.reweight_m}")


def _candidates(view):
    return view.valid & (view.advantages > 0), view.valid & (view.advantages < 0)


def stare_fit(view, p: StareParams, state, group):
    pos, neg = _candidates(view)
    k_of = ceil_fraction(p.top_p_ratio)
    plan = {"pos": fit_topk(view.surprisal, pos, view.ids, k_of, group)}
    if p.variant == "C2":
        plan["neg"] = fit_topk(view.surprisal, neg, view.ids, k_of, group)
    return plan


@register_objective(
    "stare",
    params=StareParams,
    fit=stare_fit,
    state_keys=("gate_on", "reweight_w", "reweight_m"),
    acts_at=("WEIGHT", "CTRL"),
    inert_on_policy=clip_inert_knobs,
)
def stare_terms(batch, view, p: StareParams, state, plan) -> Terms:
    """STARE: surprisal-ranked token weights W (A > 0) and M (A < 0, C2) on the clipped surrogate, gated."""
    s = clipped_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low, p.clip_ratio_high,
        p.clip_ratio_c,
    )
    pos, neg = _candidates(view)
    l_plus = apply_topk(view.surprisal, pos, view.ids, plan["pos"])
    l_minus = apply_topk(view.surprisal, neg, view.ids, plan["neg"]) if p.variant == "C2" else torch.zeros_like(pos)
    gate_on = bool(state.get("gate_on", True))
    w_pos = float(state.get("reweight_w", p.reweight_w))
    w_neg = float(state.get("reweight_m", p.reweight_m))
    weights = torch.ones_like(s.loss.detach())
    if gate_on:
        weights = torch.where(l_plus, w_pos, weights)
        if p.variant == "C2":
            weights = torch.where(l_minus, w_neg, weights)
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

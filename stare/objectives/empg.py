"""EMPG: Entropy-Modulated Policy Gradients (arXiv 2509.09265). docs/methods.md §9.5.

A method for agents: the outcome advantage of a trajectory is re-weighted per *step* (one assistant
turn) by how certain the policy was in that step, and a step is credited for leading to a clear next
step. With H_s the old policy's mean token entropy over the loss tokens of step s:

    Hn_s  = (H_s - min H) / (max H - min H + 1e-8)       min / max over every step of the batch
    g_s   = exp(-k Hn_s) / (mean over steps of exp(-k Hn) + 1e-8)     confidence scaling, batch mean 1
    f_s   = exp(-k_f Hn_s)                                          clarity of step s
    A_s   = g_s A_traj + zeta f_{next step of the same trajectory}   (no bonus on a trajectory's last step)
    A'_s  = A_s - mean over steps of A_s                             (``center``)

and A'_s goes to every loss token of step s. Confident steps get more of the outcome's credit or blame,
uncertain ones less; ``Hn``, the mean of ``g`` and the centring run over the whole batch (all groups).

Steps come from ``aux["segment_ids"]`` (tool episodes: 0 for the first turn, k from the k-th tool
output on; tool-output tokens are masked and belong to no step). Without segment ids, or on a
single-turn task, each response is one step, the clarity bonus cannot act (an ``InertKnobWarning``
says so) and EMPG is a per-response confidence weighting of the GRPO advantage.

Sources. There is no official repository. The project page (empgseed-seed.github.io) gives pseudo-code
for Hn, g and f with k = k_f = 1 and zeta = 0.1, and delimits steps by Qwen's chat-template markers
(we use the trainer's segment ids instead). The second half of that pseudo-code (the bonus from the next
step, the final centring) is readable only in a third-party copy: **[secondary]**. That copy also
scales the whole batch by each step's g and centres over tokens; we follow the equations as stated
above (per step, over steps). Only the advantages change; the loss is the clipped surrogate (``ppo``).
It needs the stare trainer: the verl and TRL plug-ins refuse it (they have no advantage hook).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..inert import warn_inert
from .contract import ClipParams, StepData, Terms, clip_inert_knobs
from .ppo import ppo_terms
from .registry import Objective, register_objective

__all__ = ["EmpgParams", "empg_advantages", "empg_step_advantages", "empg_terms"]

EPS = 1e-8  # the project page's epsilon in Hn and in g's normaliser


@dataclass(frozen=True)
class EmpgParams(ClipParams):
    """Defaults from the EMPG project page's pseudo-code (``compute_empg_advantage``).

    confidence_k: k in g = exp(-k Hn) / mean(exp(-k Hn)) (1.0). 0 switches the confidence scaling off.
    clarity_k: k_f in the clarity f = exp(-k_f Hn) (1.0).
    clarity_bonus: zeta, the weight of the next step's clarity (0.1; a third-party variant uses 0.05).
    center: subtract the batch mean over steps of the modulated advantages (True) **[secondary]**.
    Clip: verl's defaults (the paper's baselines are verl's GRPO and DAPO; the ``empg`` preset uses DAPO's).
    """

    confidence_k: float = 1.0
    clarity_k: float = 1.0
    clarity_bonus: float = 0.1
    center: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.confidence_k < 0 or self.clarity_k < 0:
            raise ValueError(f"confidence_k and clarity_k must be >= 0, got {self.confidence_k}, {self.clarity_k}")


def empg_advantages(advantages: Tensor, old_entropy: Tensor, mask: Tensor, segment_ids: Tensor | None = None, *,
                    confidence_k: float = 1.0, clarity_k: float = 1.0, clarity_bonus: float = 0.1,
                    center: bool = True) -> tuple[Tensor, dict[str, float]]:
    """Per-token EMPG advantages [B, T] (module docstring) and the step's diagnostics.

    Args:
        advantages: [B] outcome advantages of the trajectories (GRPO's).
        old_entropy: [B, T] old-policy entropy per token.  mask: [B, T] loss tokens.
        segment_ids: [B, T] step index of each token (None: one step per row).
    """
    b, t = mask.shape
    valid = mask.bool()
    seg = torch.zeros(b, t, dtype=torch.long, device=mask.device) if segment_ids is None else \
        segment_ids.round().to(torch.long).clamp(min=0)
    width = int(seg.max()) + 1 if seg.numel() else 1
    step_of = torch.arange(b, device=mask.device).unsqueeze(1) * width + seg  # [B, T] flat step index
    h = old_entropy.detach().to(torch.float64)
    at, h_valid = step_of[valid], h[valid]
    count = torch.zeros(b * width, dtype=torch.float64, device=mask.device).index_add_(0, at, torch.ones_like(h_valid))
    total = torch.zeros_like(count).index_add_(0, at, h_valid)
    steps = (count > 0).nonzero().squeeze(1)  # ascending: by row, then by segment
    if steps.numel() == 0:
        return torch.zeros_like(mask, dtype=advantages.dtype), {"empg/steps": 0.0}
    h_step = total[steps] / count[steps]
    hn = (h_step - h_step.min()) / (h_step.max() - h_step.min() + EPS)
    g_raw = torch.exp(-confidence_k * hn)
    g = g_raw / (g_raw.mean() + EPS)
    f = torch.exp(-clarity_k * hn)
    row = steps // width
    has_next = torch.cat([row[1:] == row[:-1], row.new_zeros(1, dtype=torch.bool)])
    f_next = torch.where(has_next, torch.cat([f[1:], f.new_zeros(1)]), 0.0)
    a_step = g * advantages.detach().to(torch.float64)[row] + clarity_bonus * f_next
    if center:
        a_step = a_step - a_step.mean()
    per_step = torch.zeros_like(count)
    per_step[steps] = a_step
    out = (per_step[step_of] * valid).to(advantages.dtype if advantages.is_floating_point() else torch.float32)
    steps_per_row = torch.bincount(row, minlength=b)
    diag = {
        "empg/steps": float(steps.numel()),
        "empg/steps_per_trajectory_max": float(steps_per_row.max()),
        "empg/step_entropy_min": float(h_step.min()),
        "empg/step_entropy_max": float(h_step.max()),
        "empg/scale_min": float(g.min()),
        "empg/scale_max": float(g.max()),
        "empg/bonus_mean": float((clarity_bonus * f_next)[has_next].mean()) if bool(has_next.any()) else 0.0,
    }
    return out, diag


def _compute(data: StepData, p: EmpgParams) -> tuple[Tensor, dict[str, float]]:
    return empg_advantages(data.advantages, data.old_entropy, data.mask, data.aux.get("segment_ids"),
                           confidence_k=p.confidence_k, clarity_k=p.clarity_k, clarity_bonus=p.clarity_bonus,
                           center=p.center)


def empg_step_advantages(data: StepData, p: EmpgParams, state) -> tuple[Tensor, dict[str, float]]:
    """The advantage hook: EMPG's per-token advantages for the whole step, and its diagnostics (logged)."""
    data.require("empg", "advantages", "old_entropy", "mask")
    adv, diag = _compute(data, p)
    if p.clarity_bonus != 0 and diag.get("empg/steps_per_trajectory_max", 0.0) <= 1:
        warn_inert("empg.clarity_bonus", f"[empg] clarity_bonus={p.clarity_bonus} (and clarity_k={p.clarity_k}) has no "
                   "effect: every trajectory of this step is a single step (single-turn responses, or no segment_ids); "
                   "the bonus credits a step with the clarity of the next step of the same trajectory")
    return adv, diag


def empg_terms(batch, view, p: EmpgParams, state, plan) -> Terms:
    """EMPG: outcome advantages re-weighted per step (turn) by its entropy, plus a next-step clarity bonus."""
    return ppo_terms(batch, view, p, state, plan)


EMPG = register_objective(Objective(
    "empg", params=EmpgParams, terms=empg_terms, advantages=empg_step_advantages,
    acts_at=("ADV",), inert_on_policy=clip_inert_knobs,
))

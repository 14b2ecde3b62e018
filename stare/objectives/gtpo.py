"""GTPO and GRPO-S: entropy-shaped token and sequence rewards (Tan et al., arXiv 2508.04349, ICML 2026).
docs/methods.md §9.10.

The outcome reward is redistributed by the old policy's entropy before normalisation. In a group, O+
are the responses with reward above ``positive_threshold`` and O- the rest; H_{i,t} is the old policy's
entropy (detached), and a position t is active for response i where its loss mask is 1.

GTPO (per token), with d_t / h_t the number of O+ / O- responses active at t:

    r+_{i,t} = a1 r_i + a2 d_t H_{i,t} / sum_{k in O+, active at t} H_{k,t}                  i in O+
    r-_{j,t} = -a1    - a2 h_t (1/H_{j,t}) / sum_{k in O-, active at t} (1/H_{k,t})          j in O-

so among correct responses the high-entropy tokens (forks) get more reward, among wrong ones the
confident (low-entropy) tokens get more penalty. GRPO-S does the same per response with its mean
token entropy and counts |O+|, |O-|. Then each of the two shaped rewards is normalised into an
advantage, per group:

    A+ = (r+ - mean(R+)) / (std(R+) + eps),   A- = (r- - mean(R-)) / (std(R-) + eps)

and a token of an O+ response takes A+, of an O- response A-. The loss is the clipped surrogate
(``ppo``). Entropies are floored at ``entropy_floor`` before 1/H.

What R+ is decides everything, and the sources differ (``normalization``):

* ``zero_filled`` (ours, the default): R+ holds r+ on the active tokens of O+ responses and 0 on those
  of O- responses (the paper defines r+ as 0 outside O+), R- likewise; mean and population std over
  the group's active tokens. With a2 = 0 this is exactly the token-level group average of the binary
  outcome (HAPO's estimator without its fallback; for GRPO-S, GRPO with the population std): correct
  tokens positive, wrong ones negative, and a2 only redistributes within each side.
* ``within_set``: R+ holds only the O+ tokens, R- only the O- ones (the reading of the third-party
  re-implementations the spec cites). Then A+ has zero mean over O+: half of the correct tokens are
  pushed down and the outcome itself no longer reaches the loss (``tests/methods/test_gtpo.py`` shows
  it); we keep it for comparison only.

Sources. No official code. The formulas, and a1 = 1, a2 = 0.1, come from third-party
re-implementations that agree with each other **[secondary]**; the paper's own values were not found,
nor whether its normalisation is per group or per batch (ours: per group, like GRPO). It needs the
stare trainer: the verl and TRL plug-ins refuse it (no advantage hook).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..advantages import group_index
from ..checks import check_choice
from .contract import ClipParams, StepData, Terms, clip_inert_knobs
from .ppo import ppo_terms
from .registry import Objective, register_objective

__all__ = ["GrpoSParams", "gtpo_step_metrics", "GtpoParams", "grpo_s_advantages", "gtpo_advantages", "gtpo_step_advantages"]

NORMALIZATIONS = ("zero_filled", "within_set")


@dataclass(frozen=True)
class GtpoParams(ClipParams):
    """Defaults: a1 = 1, a2 = 0.1 from third-party re-implementations **[secondary]**; the rest ours.

    reward_weight: a1, weight of the outcome reward (1.0).
    entropy_weight: a2, weight of the entropy share (0.1). 0 gives the token-level group average.
    positive_threshold: O+ = responses with reward > this (0.0: correct under 0/1 and -1/+1 rewards).
    normalization: ``zero_filled`` (ours) or ``within_set`` (module docstring).
    entropy_floor: entropies are clamped to at least this before 1/H (1e-6 nats; ours).
    eps: added to the std (1e-6, verl's GRPO epsilon).
    Clip: verl's defaults (the ``gtpo`` / ``grpo_s`` presets use DAPO's, the paper's baseline).
    """

    reward_weight: float = 1.0
    entropy_weight: float = 0.1
    positive_threshold: float = 0.0
    normalization: str = "zero_filled"
    entropy_floor: float = 1e-6
    eps: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        if self.reward_weight < 0 or self.entropy_weight < 0:
            raise ValueError("reward_weight and entropy_weight must be >= 0, got "
                             f"{self.reward_weight}, {self.entropy_weight}")
        if not self.entropy_floor > 0:
            raise ValueError(f"entropy_floor must be > 0, got {self.entropy_floor}")


@dataclass(frozen=True)
class GrpoSParams(GtpoParams):
    """GRPO-S: GTPO's parameters, applied per response with its mean token entropy."""


def _by_group(values: Tensor, onehot: Tensor) -> Tensor:
    """Sum of ``values`` [B, ...] within each row's group, returned per row [B, ...]."""
    return onehot.T @ (onehot @ values.reshape(values.shape[0], -1))


def _normalise(shaped: Tensor, members: Tensor, over: Tensor, onehot: Tensor, eps: float) -> Tensor:
    """(shaped - mean) / (std + eps) with mean and population std of ``shaped * members`` over the ``over``
    entries of each row's group (rows [B], columns shared)."""
    x = torch.where(members, shaped, 0.0) * over
    n = _by_group(over.to(x.dtype), onehot).sum(-1, keepdim=True)
    mean = _by_group(x, onehot).sum(-1, keepdim=True) / n.clamp(min=1)
    sq = _by_group(((x - mean) * over) ** 2, onehot).sum(-1, keepdim=True)
    std = torch.sqrt(sq / n.clamp(min=1))
    return (shaped - mean) / (std + eps)


def _groups(rewards: Tensor, group_ids: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    idx = group_index(group_ids).to(rewards.device)
    onehot = torch.nn.functional.one_hot(idx).T.to(torch.float64)  # [G, B]
    return onehot, rewards.to(torch.float64) > threshold


def gtpo_advantages(rewards: Tensor, group_ids: Tensor, old_entropy: Tensor, mask: Tensor, *,
                    reward_weight: float = 1.0, entropy_weight: float = 0.1, positive_threshold: float = 0.0,
                    normalization: str = "zero_filled", entropy_floor: float = 1e-6, eps: float = 1e-6) -> Tensor:
    """GTPO's per-token advantages [B, T] (module docstring); 0 on inactive tokens."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    if rewards.numel() == 0:
        return torch.zeros_like(mask, dtype=torch.float32)
    onehot, pos = _groups(rewards, group_ids, positive_threshold)
    active = mask.to(torch.float64)
    h = old_entropy.detach().to(torch.float64).clamp(min=entropy_floor)
    p = pos.unsqueeze(1).to(torch.float64) * active  # active O+ tokens
    q = (~pos).unsqueeze(1).to(torch.float64) * active  # active O- tokens
    d, hh = _by_group(p, onehot), _by_group(q, onehot)  # [B, T] per position: d_t, h_t of the row's group
    share_pos = h * p / _by_group(h * p, onehot).clamp(min=1e-300)
    share_neg = (1 / h) * q / _by_group((1 / h) * q, onehot).clamp(min=1e-300)
    r = rewards.to(torch.float64).unsqueeze(1)
    r_pos = reward_weight * r + entropy_weight * share_pos * d
    r_neg = -reward_weight - entropy_weight * share_neg * hh
    return _combine(r_pos, r_neg, pos.unsqueeze(1).expand_as(p), active, onehot, normalization, eps).to(torch.float32)


def grpo_s_advantages(rewards: Tensor, group_ids: Tensor, old_entropy: Tensor, mask: Tensor, *,
                      reward_weight: float = 1.0, entropy_weight: float = 0.1, positive_threshold: float = 0.0,
                      normalization: str = "zero_filled", entropy_floor: float = 1e-6, eps: float = 1e-6) -> Tensor:
    """GRPO-S's per-response advantages [B]: GTPO with each response's mean entropy and response counts.
    A response without loss tokens takes no part (advantage 0)."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    if rewards.numel() == 0:
        return torch.zeros_like(rewards, dtype=torch.float32)
    onehot, pos = _groups(rewards, group_ids, positive_threshold)
    m = mask.to(torch.float64)
    length = m.sum(-1)
    active = (length > 0).to(torch.float64).unsqueeze(1)  # [B, 1]: the response takes part
    h_bar = ((old_entropy.detach().to(torch.float64) * m).sum(-1) / length.clamp(min=1)).clamp(min=entropy_floor)
    h_bar = h_bar.unsqueeze(1)
    p = pos.unsqueeze(1).to(torch.float64) * active
    q = (~pos).unsqueeze(1).to(torch.float64) * active
    share_pos = h_bar * p / _by_group(h_bar * p, onehot).clamp(min=1e-300)
    share_neg = (1 / h_bar) * q / _by_group((1 / h_bar) * q, onehot).clamp(min=1e-300)
    r = rewards.to(torch.float64).unsqueeze(1)
    r_pos = reward_weight * r + entropy_weight * share_pos * _by_group(p, onehot)
    r_neg = -reward_weight - entropy_weight * share_neg * _by_group(q, onehot)
    out = _combine(r_pos, r_neg, pos.unsqueeze(1), active, onehot, normalization, eps)
    return out.squeeze(1).to(torch.float32)


def _combine(r_pos: Tensor, r_neg: Tensor, pos: Tensor, active: Tensor, onehot: Tensor, normalization: str,
             eps: float) -> Tensor:
    """A+ on O+ entries, A- on O- entries, 0 where inactive (normalisation per ``normalization``)."""
    if normalization == "zero_filled":
        a_pos = _normalise(r_pos, pos, active, onehot, eps)
        a_neg = _normalise(r_neg, ~pos, active, onehot, eps)
    else:
        a_pos = _normalise(r_pos, pos, active * pos, onehot, eps)
        a_neg = _normalise(r_neg, ~pos, active * ~pos, onehot, eps)
    return torch.where(pos, a_pos, a_neg) * active


def _compute(data: StepData, p: GtpoParams) -> Tensor:
    fn = grpo_s_advantages if isinstance(p, GrpoSParams) else gtpo_advantages
    return fn(data.rewards.to(data.mask.device), data.group_ids.to(data.mask.device), data.old_entropy, data.mask,
              reward_weight=p.reward_weight, entropy_weight=p.entropy_weight, positive_threshold=p.positive_threshold,
              normalization=p.normalization, entropy_floor=p.entropy_floor, eps=p.eps)


def gtpo_step_advantages(data: StepData, p: GtpoParams, state) -> Tensor:
    """The advantage hook: GTPO's [B, T] (or GRPO-S's [B]) advantages for the whole step."""
    data.require("gtpo", "rewards", "group_ids", "old_entropy", "mask")
    return _compute(data, p)


def gtpo_step_metrics(data: StepData, p: GtpoParams, state) -> dict[str, float]:
    """The share of loss tokens in O+ and, for GTPO, the spread the entropy shaping adds within responses
    (the range of each response's token advantages, averaged)."""
    name = "grpo_s" if isinstance(p, GrpoSParams) else "gtpo"
    adv, m = data.advantages, data.mask.bool()
    pos = (data.rewards.to(m.device) > p.positive_threshold).unsqueeze(1) & m
    out = {f"{name}/pos_token_frac": float(pos.sum()) / max(1, int(m.sum()))}
    if adv.dim() == 2 and bool(m.any()):
        adv = adv[:, : m.shape[1]].to(m.device)
        hi = torch.where(m, adv, -torch.inf).amax(-1)
        lo = torch.where(m, adv, torch.inf).amin(-1)
        rows = m.any(-1)
        out[f"{name}/adv_spread_mean"] = float((hi - lo)[rows].mean())
    return out


def gtpo_terms(batch, view, p: GtpoParams, state, plan) -> Terms:
    """GTPO: token rewards shaped by entropy (more to forks in correct answers, to confident tokens in wrong ones)."""
    return ppo_terms(batch, view, p, state, plan)


def grpo_s_terms(batch, view, p: GrpoSParams, state, plan) -> Terms:
    """GRPO-S: response rewards shaped by mean entropy (GTPO at the sequence level)."""
    return ppo_terms(batch, view, p, state, plan)


GTPO = register_objective(Objective(
    "gtpo", params=GtpoParams, terms=gtpo_terms, advantages=gtpo_step_advantages, step_metrics=gtpo_step_metrics,
    acts_at=("ADV",), inert_on_policy=clip_inert_knobs,
))
GRPO_S = register_objective(Objective(
    "grpo_s", params=GrpoSParams, terms=grpo_s_terms, advantages=gtpo_step_advantages, step_metrics=gtpo_step_metrics,
    acts_at=("ADV",), inert_on_policy=clip_inert_knobs,
))

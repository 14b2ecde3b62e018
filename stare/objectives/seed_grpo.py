"""SEED-GRPO: semantic-entropy-scaled advantages (Chen et al., arXiv 2505.12346). docs/methods.md §10.9.

A prompt whose responses disagree in meaning is one the policy is unsure of; SEED-GRPO shrinks the
update on it. Per group of G responses, with SE the semantic entropy of the group's final answers and
SE_max = log G its largest value:

    A'_i = A_i f(alpha SE / SE_max),   f(x) = max(0, 1 - x) ("linear") or exp(-x) ("exp")

where A_i are the trainer's default (GRPO) advantages. f(0) = 1: a prompt whose answers all agree keeps
its advantages; alpha = 0 gives GRPO exactly.

Sources. No official code was found. The form A f(alpha SE / SE_max) and the three shapes of f the
paper names (linear, exponential, focal) come from a third-party summary **[secondary]**; the exact f,
alpha, and how SE weighs the clusters are **[unverified]**. The summary estimates SE from the clusters'
summed sequence probabilities; we use the discrete estimate from cluster frequencies, p(c) = |c| / G,
SE = -sum p(c) log p(c), whose maximum is log G (each missing answer its own cluster, clusters by the
light normal form of ``answer_clusters``). ``alpha`` = 1 with the linear f is our choice; the focal
shape is not implemented. It needs the stare trainer: the verl and TRL plug-ins refuse it (advantage
hook).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..advantages import group_index
from ..checks import check_choice
from .answer_clusters import cluster_entropy, cluster_ids
from .contract import ClipParams, StepData, Terms, clip_inert_knobs
from .ppo import ppo_terms
from .registry import Objective, register_objective

__all__ = ["SeedGrpoParams", "semantic_entropy_scales", "seed_grpo_advantages"]

SHAPES = ("linear", "exp")


@dataclass(frozen=True)
class SeedGrpoParams(ClipParams):
    """alpha: sensitivity to the normalised semantic entropy (1.0, **[unverified]**, ours). 0 is GRPO.
    modulation: f, ``linear`` (max(0, 1 - x), ours) or ``exp`` (exp(-x)) **[unverified]**.
    Clip: verl's defaults."""

    alpha: float = 1.0
    modulation: str = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("modulation", self.modulation, SHAPES)
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")


def semantic_entropy_scales(preds, group_ids: Tensor, alpha: float = 1.0,
                            modulation: str = "linear") -> tuple[Tensor, Tensor]:
    """(scale per row [B], semantic entropy per row [B]) from the rows' answers and groups."""
    check_choice("modulation", modulation, SHAPES)
    idx = group_index(group_ids).tolist()
    members: dict[int, list[int]] = {}
    for row, g in enumerate(idx):
        members.setdefault(g, []).append(row)
    se = torch.zeros(len(idx), dtype=torch.float64)
    scale = torch.ones(len(idx), dtype=torch.float64)
    for rows in members.values():
        h = cluster_entropy(cluster_ids([preds[r] for r in rows]))
        x = alpha * h / math.log(len(rows)) if len(rows) > 1 else 0.0
        f = max(0.0, 1.0 - x) if modulation == "linear" else math.exp(-x)
        se[rows], scale[rows] = h, f
    return scale, se


def seed_grpo_advantages(data: StepData, p: SeedGrpoParams, state) -> tuple[Tensor, dict[str, float]]:
    """The advantage hook: the default advantages scaled per group by f(alpha SE / log G), and the step's
    mean semantic entropy and mean scale (logged)."""
    data.require("seed_grpo", "advantages", "group_ids", "preds")
    scale, se = semantic_entropy_scales(data.preds, data.group_ids, p.alpha, p.modulation)
    metrics = {"seed_grpo/semantic_entropy_mean": float(se.mean()), "seed_grpo/scale_mean": float(scale.mean())}
    return data.advantages * scale.to(data.advantages.device, data.advantages.dtype), metrics


def seed_grpo_terms(batch, view, p: SeedGrpoParams, state, plan) -> Terms:
    """SEED-GRPO: GRPO advantages shrunk on prompts whose answers disagree (semantic entropy)."""
    return ppo_terms(batch, view, p, state, plan)


SEED_GRPO = register_objective(Objective(
    "seed_grpo", params=SeedGrpoParams, terms=seed_grpo_terms, advantages=seed_grpo_advantages, acts_at=("ADV",), inert_on_policy=clip_inert_knobs,
))

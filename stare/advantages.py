"""Outcome advantages for group-sampled RLVR: GRPO (std on/off), Dr.GRPO, batch-level std.

For a group g of responses to one prompt with scalar rewards r (docs/methods.md §1.1):

    A_i = (r_i - mean_g) / (std_g + eps)   GRPO (norm_by_std=True, std_scope="group")
    A_i =  r_i - mean_g                    Dr.GRPO (norm_by_std=False)
    A_i = (r_i - mean_g) / (std_B + eps)   batch-level std (TRL scale_rewards="batch", std over all rewards)

std is Bessel-corrected (N - 1), as torch.std in verl and TRL. Edge cases follow verl: a group of size 1
has mean 0 and std 1 (its advantage is its raw reward, then divided by 1 + eps); a group whose rewards
are all equal has std 0 and therefore advantage 0 on every member. eps defaults to verl's 1e-6 (TRL
uses 1e-4). Batch std over a batch of one reward is taken as 1.

All groups are computed at once with scatter-adds: no Python loop over groups, no host sync.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .checks import check_choice

__all__ = ["group_advantages", "grpo_advantages", "dr_grpo_advantages", "expand_to_tokens", "group_index"]

STD_SCOPES = ("group", "batch")


def group_index(group_ids: Tensor | Sequence) -> Tensor:
    """Dense int64 group index [N] from any ids (a tensor, or a list of hashables such as prompt uids)."""
    if isinstance(group_ids, Tensor):
        return torch.unique(group_ids, return_inverse=True)[1].reshape(-1)
    lookup: dict = {}
    return torch.tensor([lookup.setdefault(g, len(lookup)) for g in group_ids], dtype=torch.int64)


def group_advantages(
    rewards: Tensor,
    group_ids: Tensor | Sequence,
    *,
    norm_by_std: bool = True,
    std_scope: str = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Per-response advantages [N] from rewards [N] and group ids [N] (see the module docstring)."""
    check_choice("std_scope", std_scope, STD_SCOPES)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be [num_responses], got shape {tuple(rewards.shape)}")
    idx = group_index(group_ids).to(rewards.device)
    if idx.shape != rewards.shape:
        raise ValueError(f"group_ids has {idx.numel()} entries but rewards has {rewards.numel()}")
    if rewards.numel() == 0:
        return rewards.clone()
    r = rewards.to(torch.float64)
    n_groups = int(idx.max()) + 1 if idx.numel() else 0  # host value from an index built on the host side
    count = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, idx, torch.ones_like(r))
    total = torch.zeros_like(count).index_add_(0, idx, r)
    mean = total / count
    dev = r - mean[idx]
    sq = torch.zeros_like(count).index_add_(0, idx, dev * dev)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))
    single = count[idx] == 1
    mean_i = torch.where(single, 0.0, mean[idx])
    std_i = torch.where(single, 1.0, std[idx])
    centred = r - mean_i
    if not norm_by_std:
        return centred.to(rewards.dtype)
    if std_scope == "batch":
        std_i = r.std() if r.numel() > 1 else torch.ones((), dtype=r.dtype, device=r.device)
    return (centred / (std_i + eps)).to(rewards.dtype)


def grpo_advantages(rewards: Tensor, group_ids: Tensor | Sequence, eps: float = 1e-6) -> Tensor:
    """GRPO (DeepSeekMath): group-mean baseline, divided by the group std."""
    return group_advantages(rewards, group_ids, norm_by_std=True, eps=eps)


def dr_grpo_advantages(rewards: Tensor, group_ids: Tensor | Sequence) -> Tensor:
    """Dr.GRPO (arXiv 2503.20783): group-mean baseline, no std division."""
    return group_advantages(rewards, group_ids, norm_by_std=False)


def expand_to_tokens(advantages: Tensor, mask: Tensor) -> Tensor:
    """Broadcast per-response advantages [B] over the response tokens: A[B, T] = A_i * mask."""
    return advantages.unsqueeze(-1).to(torch.float32 if not advantages.is_floating_point() else advantages.dtype) * mask

"""Token-selection statistics (top-k, quantile, min/max, mean) with a selection scope, implemented once.

STARE, STEER, STAPO, Clip-Cov, KL-Cov and 80/20 all pick tokens, or normalise token scores, by a
statistic of a *set* of tokens. Which set is a real choice (docs/methods.md §0):

* ``micro``: the tokens of one call of the loss, i.e. one micro-batch on one GPU. This is what every
  official verl-based implementation does, so it is the reproduction default; the result depends on
  how the batch is split.
* ``global``: the whole mini-batch (one optimizer step), and all ranks when distributed. The
  statistic is *fitted* once on the mini-batch (``fit_*``, which may all-gather across ranks) and then
  *applied* to each micro-batch (``apply_*``), so any split into micro-batches yields the same tokens.

Both scopes run the same code: micro scope is "fit on this tensor, apply to this tensor".

Ties. ``torch.topk`` breaks ties arbitrarily, which would make a split-invariant selection impossible.
Here every token carries an int64 id (row in the mini-batch << 32 | position) and ties in the score
go to the lower id, so exactly k tokens are chosen and the same ones whatever the split.

Nothing in ``apply_*`` or in the micro-scope ``fit_*`` synchronises with the host (no ``.item()``,
``nonzero`` or boolean indexing); counts such as k stay on the device. Only the distributed gather in
a global fit reads sizes on the host, once per mini-batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "SCOPES",
    "TopK",
    "token_ids",
    "fit_topk",
    "apply_topk",
    "fit_quantile",
    "masked_count",
    "masked_sum",
    "masked_min_max",
    "hash_uniform",
    "ceil_fraction",
    "floor_fraction",
]

SCOPES = ("micro", "global")
_ROW_SHIFT = 32
_M32 = 0xFFFFFFFF


def token_ids(shape: torch.Size | tuple[int, int], row_ids: Tensor | None, device: torch.device) -> Tensor:
    """int64 [B, T] ids: (row id << 32) | position. ``row_ids`` [B] = each row's index in the mini-batch."""
    b, t = shape
    rows = torch.arange(b, device=device) if row_ids is None else row_ids.to(device=device, dtype=torch.int64)
    return (rows.unsqueeze(1) << _ROW_SHIFT) | torch.arange(t, device=device).unsqueeze(0)


def _dist_group_size(group) -> int:
    import torch.distributed as dist

    if group is None or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group if group is not True else None)


def _all_gather_flat(x: Tensor, fill, group) -> Tensor:
    """Concatenate a 1-D tensor from every rank (sizes may differ; padded with ``fill`` then dropped)."""
    import torch.distributed as dist

    pg = None if group is True else group
    n = torch.tensor([x.numel()], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size(pg))]
    dist.all_gather(sizes, n, group=pg)
    sizes_host = [int(s.item()) for s in sizes]  # once per mini-batch, in the fit phase only
    width = max(sizes_host)
    padded = torch.full((width,), fill, dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x
    parts = [torch.empty_like(padded) for _ in sizes_host]
    dist.all_gather(parts, padded, group=pg)
    return torch.cat([p[:s] for p, s in zip(parts, sizes_host)])


def _all_reduce(x: Tensor, op: str, group) -> Tensor:
    import torch.distributed as dist

    if _dist_group_size(group) == 1:
        return x
    pg = None if group is True else group
    x = x.clone()
    dist.all_reduce(x, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op], group=pg)
    return x


@dataclass(frozen=True)
class TopK:
    """A fitted top-k: the k-th largest (score, -id) pair. ``k == 0`` selects nothing."""

    value: Tensor  # 0-d, score of the k-th selected token
    token_id: Tensor  # 0-d int64, its id
    k: Tensor  # 0-d int64, number selected
    n: Tensor  # 0-d int64, number of candidates


def ceil_fraction(fraction: float) -> Callable[[Tensor], Tensor]:
    """k = min(n, max(1, ceil(fraction * n))), ceil as in hp-luo/STARE: int(n * P + 0.999999); 0 if n == 0.

    The official rounding treats fractional parts below 1e-6 as zero (so 30 * 0.1 selects 3 tokens, not
    4 as a float ceil of 3.0000000000000004 would); we keep it for bit-level reproduction.
    """

    def k_of(n: Tensor) -> Tensor:
        if fraction <= 0:
            return torch.zeros_like(n)
        k = torch.floor(n.to(torch.float64) * fraction + 0.999999).to(torch.int64)
        return torch.minimum(k.clamp(min=1), n)

    return k_of


def floor_fraction(fraction: float, of: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    """k = min(n, max(1, int(fraction * m))), m = ``of`` (e.g. all valid tokens) or n; 0 if n == 0.

    This is the rounding of Clip-Cov, KL-Cov and the verl 80/20 re-implementation.
    """

    def k_of(n: Tensor) -> Tensor:
        if fraction <= 0:
            return torch.zeros_like(n)
        m = n if of is None else of
        k = torch.floor(m.to(torch.float64) * fraction).to(torch.int64).clamp(min=1)
        return torch.minimum(k, n)

    return k_of


def fit_topk(score: Tensor, candidates: Tensor, ids: Tensor, k_of: Callable[[Tensor], Tensor], group=None) -> TopK:
    """Fit a top-k over the candidate tokens: the k largest scores, ties to the lower id.

    Args:
        score: float [...] (finite on candidates).
        candidates: bool [...], the tokens that may be selected.
        ids: int64 [...] unique token ids (``token_ids``).
        k_of: maps the candidate count n (0-d int64 tensor) to k, e.g. ``ceil_fraction(0.1)``.
        group: ``None`` for this tensor only; a process group (or ``True`` for the default group) to fit
            over the union of all ranks' tensors.
    """
    s = torch.where(candidates, score, -math.inf).reshape(-1).to(torch.float64)
    i = ids.reshape(-1)
    if _dist_group_size(group) > 1:
        s = _all_gather_flat(s, -math.inf, group)
        i = _all_gather_flat(i, -1, group)
        n = _all_reduce(candidates.sum().to(torch.int64), "sum", group)
    else:
        n = candidates.sum().to(torch.int64)
    # Order by id, then stable sort by score descending: equal scores keep ascending-id order.
    by_id = torch.argsort(i)
    s, i = s[by_id], i[by_id]
    order = torch.sort(s, descending=True, stable=True).indices
    k = k_of(n)
    at = (k - 1).clamp(min=0).reshape(1)
    pos = order.index_select(0, at) if order.numel() else at
    value = s.index_select(0, pos).reshape(()) if s.numel() else s.new_tensor(-math.inf)
    tid = i.index_select(0, pos).reshape(()) if i.numel() else i.new_tensor(-1)
    return TopK(value=value, token_id=tid, k=k, n=n)


def apply_topk(score: Tensor, candidates: Tensor, ids: Tensor, fit: TopK) -> Tensor:
    """bool [...]: the candidates ranked at or above the fitted k-th (score, id)."""
    s = score.to(torch.float64)
    above = (s > fit.value) | ((s == fit.value) & (ids <= fit.token_id))
    return candidates & above & (fit.k > 0)


def fit_quantile(values: Tensor, valid: Tensor, q: float, group=None) -> Tensor:
    """Quantile q of ``values`` over ``valid`` tokens with linear interpolation (as ``torch.quantile``).

    Returns +inf when there is no valid token, so ``values >= threshold`` selects nothing.
    """
    v = torch.where(valid, values, math.inf).reshape(-1).to(torch.float64)
    if _dist_group_size(group) > 1:
        v = _all_gather_flat(v, math.inf, group)
    n = torch.isfinite(v).sum() if _dist_group_size(group) > 1 else valid.sum()
    srt = torch.sort(v).values
    if srt.numel() == 0:
        return srt.new_tensor(math.inf)
    pos = (n.to(torch.float64) - 1).clamp(min=0) * q
    lo = pos.floor().to(torch.int64).reshape(1)
    hi = pos.ceil().to(torch.int64).reshape(1)
    a, b = srt.index_select(0, lo).reshape(()), srt.index_select(0, hi).reshape(())
    frac = pos - pos.floor()
    thr = torch.where(a == b, a, a + (b - a) * frac)  # avoids inf - inf when both are +inf
    return torch.where(n > 0, thr, srt.new_tensor(math.inf))


def masked_count(mask: Tensor, group=None) -> Tensor:
    return _all_reduce(mask.sum().to(torch.int64), "sum", group)


def masked_sum(values: Tensor, mask: Tensor, group=None) -> Tensor:
    return _all_reduce(torch.where(mask, values.to(torch.float64), 0.0).sum(), "sum", group)


def masked_min_max(values: Tensor, mask: Tensor, group=None) -> tuple[Tensor, Tensor]:
    """(min, max) of ``values`` over ``mask``; (+inf, -inf) when the mask is empty."""
    v = values.to(torch.float64)
    lo = torch.where(mask, v, math.inf).amin() if v.numel() else v.new_tensor(math.inf)
    hi = torch.where(mask, v, -math.inf).amax() if v.numel() else v.new_tensor(-math.inf)
    return _all_reduce(lo, "min", group), _all_reduce(hi, "max", group)


def _mix32(x: Tensor) -> Tensor:
    # A 32-bit integer finaliser (xor-shift / multiply). The multiplier is below 2**27, so every product
    # of a 32-bit value fits in int64 and no overflow behaviour is relied on.
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def hash_uniform(ids: Tensor, seed: int) -> Tensor:
    """A pseudo-random float64 in [0, 1) per token id: the same id and seed give the same number.

    Used instead of ``torch.randperm`` where a random subset must not depend on how a batch is split.
    """
    s = _mix32(torch.tensor(seed & _M32, dtype=torch.int64, device=ids.device))
    hi = _mix32(((ids >> _ROW_SHIFT) & _M32) ^ s)
    h = _mix32(hi ^ (ids & _M32))
    return h.to(torch.float64) / float(1 << 32)

"""Statistics that merge exactly across micro-batches and ranks.

A mean over tokens reported by each micro-batch and then averaged is a mean of means, not the token
mean of the batch (a bug users found in several frameworks). Objectives here therefore report each
statistic as a ``Stat``: a (sum, count) pair for means, or an extreme for min/max, kept as tensors so
that nothing synchronises with the host until ``StatAccumulator.result()`` is called once per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import torch
from torch import Tensor

Reduce = Literal["mean", "sum", "min", "max"]

__all__ = ["Stat", "mean_stat", "min_stat", "max_stat", "sum_stat", "StatAccumulator"]


@dataclass(frozen=True)
class Stat:
    """One statistic. ``mean``: value = sum of items, count = number of items. Others: count unused."""

    value: Tensor
    count: Tensor
    reduce: Reduce = "mean"

    def merge(self, other: "Stat") -> "Stat":
        if other.reduce != self.reduce:
            raise ValueError(f"cannot merge a '{self.reduce}' statistic with a '{other.reduce}' one")
        if self.reduce in ("mean", "sum"):
            return Stat(self.value + other.value, self.count + other.count, self.reduce)
        op = torch.minimum if self.reduce == "min" else torch.maximum
        return Stat(op(self.value, other.value), self.count + other.count, self.reduce)


def _f(x: Tensor) -> Tensor:
    return x.detach().to(torch.float64)


def mean_stat(values: Tensor, mask: Tensor) -> Stat:
    """Token-weighted mean of ``values`` over ``mask`` (bool or 0/1)."""
    m = mask.to(torch.float64)
    return Stat((_f(values) * m).sum(), m.sum(), "mean")


def sum_stat(values: Tensor) -> Stat:
    v = _f(values).sum()
    return Stat(v, torch.ones_like(v), "sum")


def min_stat(values: Tensor, mask: Tensor) -> Stat:
    v = torch.where(mask.bool(), _f(values), math.inf).amin() if values.numel() else _f(values).new_tensor(math.inf)
    return Stat(v, mask.to(torch.float64).sum(), "min")


def max_stat(values: Tensor, mask: Tensor) -> Stat:
    v = torch.where(mask.bool(), _f(values), -math.inf).amax() if values.numel() else _f(values).new_tensor(-math.inf)
    return Stat(v, mask.to(torch.float64).sum(), "max")


class StatAccumulator:
    """Merges ``Stat`` dicts from many micro-batches (and ranks) and reads them out once."""

    def __init__(self) -> None:
        self._stats: dict[str, Stat] = {}

    def add(self, stats: Mapping[str, Stat], prefix: str = "") -> None:
        for key, stat in stats.items():
            name = prefix + key
            self._stats[name] = stat if name not in self._stats else self._stats[name].merge(stat)

    def all_reduce(self, group=None) -> None:
        """Combine the statistics of every rank (call on all ranks with the same keys, in the same order)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for name in sorted(self._stats):
            s = self._stats[name]
            pair = torch.stack([s.value, s.count])
            if s.reduce in ("mean", "sum"):
                dist.all_reduce(pair, op=dist.ReduceOp.SUM, group=group)
            else:
                op = dist.ReduceOp.MIN if s.reduce == "min" else dist.ReduceOp.MAX
                dist.all_reduce(pair[:1], op=op, group=group)
                dist.all_reduce(pair[1:], op=dist.ReduceOp.SUM, group=group)
            self._stats[name] = Stat(pair[0], pair[1], s.reduce)

    def result(self) -> dict[str, float]:
        """Final values (one host synchronisation). Empty means and extremes read as NaN."""
        if not self._stats:
            return {}
        names = sorted(self._stats)
        vals = torch.stack([self._stats[n].value.cpu() for n in names]).tolist()
        cnts = torch.stack([self._stats[n].count.cpu() for n in names]).tolist()
        out: dict[str, float] = {}
        for name, v, c in zip(names, vals, cnts):
            kind = self._stats[name].reduce
            if kind == "mean":
                out[name] = v / c if c > 0 else math.nan
            elif kind == "sum":
                out[name] = v
            else:
                out[name] = v if c > 0 else math.nan
        return out

    def clear(self) -> None:
        self._stats.clear()

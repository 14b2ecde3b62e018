"""BAPO: Balanced Policy Optimization with Adaptive Clipping (Xi et al., arXiv 2510.18927).

Official code: WooooDyy/BAPO, ``recipe/bapo/policy_loss.py`` (``compute_policy_loss_bapo``),
``recipe/bapo/config.py``, ``recipe/bapo/config/bapo_trainer.yaml``, ``recipe/bapo/run_bapo_example.sh``.
docs/methods.md §10.1.

Off-policy, negative-advantage tokens dominate the gradient and a fixed clip blocks the updates that
would raise entropy. BAPO widens the ratio bounds [c_lo, c_hi] (explicit ratio bounds, not 1 +- eps), per
loss call, until positive tokens carry enough of the loss:

    eff(c_lo, c_hi) = A min(r, c_hi) (A >= 0),  A max(r, c_lo) (A < 0),   valid tokens only
    rho = sum(eff > 0) / sum(-eff < 0)       (inf when the negative sum is 0)
    c_lo: from lower_start up by lower_step (at most lower_max) while rho < target   (c_hi = upper_start)
    c_hi: then from upper_start up by upper_step (at most upper_max) while rho < target
    loss = dual-clipped PPO with clamp(r, c_lo, c_hi)

Both searches are evaluated on the whole grid of candidate bounds at once and the first bound that
reaches the target is picked with tensor operations, so the loss issues no host synchronisation (the
official loop recomputes rho per candidate). The bounds are refitted on every call from its current
ratios, so only the micro scope exists (the official code sums rho's parts over data-parallel ranks; a
single process is that with one rank).

Observation (from the code): clipped tokens count at their clipped value, so raising c_lo only adds
negative mass and never raises rho; only c_hi can. On-policy (r = 1) rho does not depend on the bounds,
the searches run to their maxima whenever the positive mass is short, and the bounds cannot act.

Defaults: the repository's own files disagree (config.py, the trainer yaml, the example script and the
README give three sets). We take the example script, the one that runs the method (docs/methods.md
§10.1 lists the others). Its target 0.5 is a ratio pos/neg, i.e. a positive share of 1/3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..metrics import mean_stat
from ..surrogate import LOG_RATIO_CLAMP, clipped_surrogate, surrogate_stats
from .contract import ClipParams, Terms
from .registry import Objective, register_objective

__all__ = ["BapoParams", "bapo_bounds", "bapo_terms", "bound_grid"]


@dataclass(frozen=True)
class BapoParams(ClipParams):
    """Defaults from WooooDyy/BAPO ``recipe/bapo/run_bapo_example.sh``.

    target: rho's target, positive over negative loss mass (0.5; config.py 1.0, the yaml 1).
    lower_start / lower_max / lower_step: c_lo's search (0.8 / 0.95 / 0.05; the yaml 0.6 / 0.8 / 0.05).
    upper_start / upper_max / upper_step: c_hi's search (1.2 / 2.0 / 0.1; the yaml 1.2 / 2.0 / 0.05).
    clip_ratio_c: dual clip (3.0, verl's default, which the recipe keeps). ``clip_ratio_low/high`` are
    not read: the bounds come from the search.
    """

    target: float = 0.5
    lower_start: float = 0.8
    lower_max: float = 0.95
    lower_step: float = 0.05
    upper_start: float = 1.2
    upper_max: float = 2.0
    upper_step: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target > 0:
            raise ValueError(f"target must be > 0, got {self.target}")
        if not (0 < self.lower_start <= self.lower_max <= 1 and self.lower_step > 0):
            raise ValueError(f"need 0 < lower_start <= lower_max <= 1 and lower_step > 0, got "
                             f"{self.lower_start}, {self.lower_max}, {self.lower_step}")
        if not (1 <= self.upper_start <= self.upper_max and self.upper_step > 0):
            raise ValueError(f"need 1 <= upper_start <= upper_max and upper_step > 0, got "
                             f"{self.upper_start}, {self.upper_max}, {self.upper_step}")


def bound_grid(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... capped at stop, as the official loop visits them (stop always last)."""
    out = [start]
    while out[-1] < stop:
        out.append(min(out[-1] + step, stop))
    return out


def _rho(ratio, adv, valid, c_lo, c_hi):
    """rho for each pair of candidate bounds [g]: positive over negative effective loss mass."""
    r, a = ratio.unsqueeze(0), adv.unsqueeze(0)
    lo, hi = c_lo.view(-1, 1, 1), c_hi.view(-1, 1, 1)
    eff = torch.where(a >= 0, torch.minimum(r, hi), torch.maximum(r, lo)) * a * valid.unsqueeze(0)
    pos = eff.clamp(min=0).sum((1, 2))
    neg = (-eff).clamp(min=0).sum((1, 2))
    return torch.where(neg > 0, pos / neg.clamp(min=torch.finfo(neg.dtype).tiny), torch.full_like(pos, math.inf))


def _first_reaching(rho, target):
    ok = rho >= target
    return torch.where(ok.any(), torch.argmax(ok.to(torch.int64)), torch.tensor(rho.numel() - 1, device=rho.device))


def bapo_bounds(ratio, adv, valid, p: BapoParams):
    """(c_lo, c_hi, rho at them) as 0-d tensors, from the two sequential searches."""
    r = ratio.detach().to(torch.float64)
    a = adv.detach().to(torch.float64)
    v = valid.to(torch.float64)
    lows = torch.tensor(bound_grid(p.lower_start, p.lower_max, p.lower_step), dtype=torch.float64, device=r.device)
    highs = torch.tensor(bound_grid(p.upper_start, p.upper_max, p.upper_step), dtype=torch.float64, device=r.device)
    rho_lo = _rho(r, a, v, lows, torch.full_like(lows, p.upper_start))
    c_lo = lows.index_select(0, _first_reaching(rho_lo, p.target).reshape(1)).reshape(())
    rho_hi = _rho(r, a, v, c_lo.expand_as(highs), highs)
    j = _first_reaching(rho_hi, p.target).reshape(1)
    return c_lo, highs.index_select(0, j).reshape(()), rho_hi.index_select(0, j).reshape(())


def bapo_terms(batch, view, p: BapoParams, state, plan) -> Terms:
    """BAPO: dual-clipped PPO with ratio bounds widened per call until positive tokens carry enough loss."""
    adv = batch.token_advantages
    ratio = torch.exp(torch.clamp(batch.log_prob.detach() - batch.ratio_denominator, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    c_lo, c_hi, rho = bapo_bounds(ratio, adv, batch.valid, p)
    dtype = batch.log_prob.dtype
    s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, adv, (1.0 - c_lo).to(dtype), (c_hi - 1.0).to(dtype),
                          p.clip_ratio_c)
    one = torch.ones(1, dtype=torch.bool, device=adv.device)
    stats = surrogate_stats(s, batch.valid)
    stats["bapo/clip_lower"] = mean_stat(c_lo.reshape(1), one)
    stats["bapo/clip_upper"] = mean_stat(c_hi.reshape(1), one)
    stats["bapo/pos_share"] = mean_stat((rho / (1 + rho)).nan_to_num(1.0).reshape(1), one)  # rho = inf: share 1
    return Terms(pg_loss=s.loss, stats=stats)


def _inert(p: BapoParams) -> list[tuple[str, str]]:
    out = [("bounds", f"bapo's bounds (target={p.target}, lower {p.lower_start}-{p.lower_max}, upper "
            f"{p.upper_start}-{p.upper_max}) have no effect on-policy: the ratio is 1, so neither the clip nor rho "
            "depends on them")]
    if p.clip_ratio_c is not None:
        out.append(("clip_ratio_c", f"clip_ratio_c={p.clip_ratio_c} (dual clip) has no effect on-policy"))
    return out


BAPO = register_objective(Objective(
    "bapo", params=BapoParams, terms=bapo_terms, acts_at=("LOSS",), inert_on_policy=_inert,
))

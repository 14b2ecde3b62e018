"""SIREN: selective entropy regularisation (Jiang et al., arXiv 2509.25133).

Official code: Linn3a/siren (verl fork), ``verl/verl/workers/actor/dp_actor.py`` (the top-p entropy
``efficient_top_p_sampling``, ``mask_by_quantile``, the loss of ``experiment_type="siren"``), the anchor
in ``verl/verl/trainer/ppo/ray_trainer.py``; script ``exp_scripts/siren.sh``. docs/methods.md §9.2.

A plain entropy bonus on a large vocabulary lifts the whole tail and entropy explodes. SIREN narrows the
entropy it regularises twice, and keeps it near its starting value instead of maximising it:

    nucleus(t)  = the most probable tokens whose cumulative probability (inclusive) stays below P; the
                  token that crosses P is left out (so p_max >= P gives an empty nucleus and H = 0)
    H_topp(t)   = entropy of pi(.|s_t) renormalised on its nucleus, with gradient (all logits)
    peak(i, t)  = H_topp(i, t) > the q-quantile of H_topp over row i's valid tokens   (q = 0.8: top 20%)
    H_sel       = seq-mean-token-mean of H_topp over the peak positions
    loss        = L_pg + c (H_sel - anchor)^2,   anchor = H_sel of the first step's old pass, then fixed

H_topp is computed in the training forward (``train_stats``, chunked and checkpointed), and in the old
pass without gradient for the anchor (``logit_stats``); the controller (``SirenAnchor``) fixes the anchor
from the first step's whole batch and holds it (checkpointed). The penalty is a per-call scalar
(``Terms.scalar``): per micro-batch, as in the official code, where it is not the square of a
mini-batch quantity.

Deviations: under a mini-batch normaliser the micro-batch penalties are weighted by their share of the
mini-batch tokens (the official code weights micro-batches equally, through verl's gradient
accumulation factor); the two agree when the micro-batches hold equal token counts, and with one
micro-batch. A row with no peak position (all its H_topp equal, e.g. all 0) leaves the sequence mean,
where the official ``seq-mean-token-mean`` would divide 0 by 0. Before the controller has set an anchor
(a loss called on its own) there is no penalty; the official trainer falls back to an anchor of 0.
The top-K pre-truncation (K = 10000) is kept; on a vocabulary smaller than K it is the whole vocabulary.
Not implemented: the upper quantile (``mask_ratio_upper``, unset in the script) and the ablations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..checks import check_choice, check_fraction
from ..metrics import mean_stat
from ..surrogate import aggregate, clipped_surrogate, surrogate_stats
from .contract import ClipParams, ControllerState, StepData, Terms, clip_inert_knobs
from .registry import Objective, register_objective

__all__ = ["NUCLEUS_ENTROPY", "OLD_NUCLEUS_ENTROPY", "SirenAnchor", "SirenParams", "nucleus_entropy", "peak_mask",
           "selected_entropy", "siren_terms"]

NUCLEUS_ENTROPY = "siren_topp_entropy"  # training forward, with gradient
OLD_NUCLEUS_ENTROPY = "siren_old_topp_entropy"  # old pass, for the anchor
ENTROPY_AGG_MODES = ("seq-mean-token-mean", "token-mean")
EPS = 1e-12  # the official code's guard in the renormalisation and the log


@dataclass(frozen=True)
class SirenParams(ClipParams):
    """Defaults from Linn3a/siren ``exp_scripts/siren.sh`` and the ``dp_actor`` code defaults.

    entropy_coeff: c, weight of the squared deviation (0.005, the script).
    top_p: P, the nucleus mass (0.8, code default; the script defines but does not pass it).
    top_k: K, the pre-truncation before the cumulative sum (10000, code default).
    peak_quantile: q, per-sequence quantile above which positions are kept (0.8: ``mask_ratio``).
    entropy_agg_mode: aggregation of the selected entropy (``seq-mean-token-mean``, the script).
    anchor: a fixed anchor in nats instead of the first step's value (ours; None: the official rule).
    Base: Dr.GRPO-style, symmetric clip 0.28 (the script), dual clip 3.0 (verl's default, not overridden),
    ``seq-mean-token-sum-norm`` (the script; the preset also turns off the std division).
    """

    clip_ratio_low: float = 0.28
    clip_ratio_high: float = 0.28
    loss_agg_mode: str = "seq-mean-token-sum-norm"
    entropy_coeff: float = 0.005
    top_p: float = 0.8
    top_k: int = 10000
    peak_quantile: float = 0.8
    entropy_agg_mode: str = "seq-mean-token-mean"
    anchor: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.entropy_coeff >= 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")
        check_fraction("top_p", self.top_p, low_open=True)
        if not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k}")
        check_fraction("peak_quantile", self.peak_quantile)
        check_choice("entropy_agg_mode", self.entropy_agg_mode, ENTROPY_AGG_MODES)
        if self.anchor is not None and not self.anchor >= 0:
            raise ValueError(f"anchor must be >= 0 nats (or null), got {self.anchor}")


def nucleus_entropy(top_p: float, top_k: int):
    """LogitStat: entropy of the distribution renormalised on its top-p nucleus, crossing token excluded."""

    def stat(z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(z, -1)
        idx = torch.topk(z, min(top_k, z.shape[-1]), dim=-1).indices  # descending
        ps = p.gather(-1, idx)
        inside = torch.cumsum(ps.detach(), -1) < top_p  # = positions before searchsorted(c, P, left)
        q = ps * inside
        q = q / (q.sum(-1, keepdim=True) + EPS)
        return -(q * torch.log(q + EPS)).sum(-1)

    return stat


def peak_mask(h: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """bool [B, T]: valid positions whose value is strictly above their row's q-quantile (linear
    interpolation over the row's valid positions; a row without valid positions selects nothing)."""
    h = h.detach()
    thr = torch.nanquantile(h.masked_fill(~valid, math.nan), q, dim=-1, keepdim=True)
    return valid & (h > thr)


def selected_entropy(h: torch.Tensor, valid: torch.Tensor, p: SirenParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(H_sel, peak mask): the aggregated nucleus entropy over each row's peak positions."""
    peak = peak_mask(h, valid, p.peak_quantile)
    return aggregate(h, peak, p.entropy_agg_mode), peak


@dataclass
class SirenAnchor(ControllerState):
    """The anchor: H_sel of the first step's whole batch (old pass), then held fixed."""

    params: SirenParams = field(default_factory=SirenParams)
    anchor: float = math.nan

    def __post_init__(self) -> None:
        if math.isnan(self.anchor) and self.params.anchor is not None:
            self.anchor = float(self.params.anchor)

    def update(self, data: StepData) -> None:
        if not math.isnan(self.anchor):
            return
        data.require("SIREN's anchor", "mask", OLD_NUCLEUS_ENTROPY)
        h_sel, _ = selected_entropy(data.aux[OLD_NUCLEUS_ENTROPY].float(), data.mask.bool(), self.params)
        value = float(h_sel)
        if math.isfinite(value):
            self.anchor = value

    def state(self) -> dict:
        return {"anchor": self.anchor}

    def metrics(self) -> dict[str, float]:
        return {"siren/entropy_anchor": self.anchor}


def siren_terms(batch, view, p: SirenParams, state, plan) -> Terms:
    """SIREN: clipped surrogate plus c (H_sel - anchor)^2 on the peak positions' top-p entropy."""
    s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low,
                          p.clip_ratio_high, p.clip_ratio_c)
    h = batch.aux[NUCLEUS_ENTROPY]
    h_sel, peak = selected_entropy(h, batch.valid, p)
    stats = surrogate_stats(s, batch.valid)
    stats["siren/peak_frac"] = mean_stat(peak, batch.valid)
    stats["siren/topp_entropy"] = mean_stat(h.detach(), batch.valid)
    stats["siren/selected_entropy"] = mean_stat(h_sel.detach().reshape(1), torch.ones(1, dtype=torch.bool))
    anchor = float(state["anchor"])
    scalar = {}
    if not math.isnan(anchor) and p.entropy_coeff != 0:
        scalar["siren_penalty"] = p.entropy_coeff * (h_sel - anchor) ** 2
    return Terms(pg_loss=s.loss, scalar=scalar, stats=stats)


SIREN = register_objective(Objective(
    "siren", params=SirenParams, terms=siren_terms, controller=SirenAnchor, needs=(NUCLEUS_ENTROPY,),
    train_stats=lambda p: {NUCLEUS_ENTROPY: nucleus_entropy(p.top_p, p.top_k)},
    logit_stats=lambda p: {OLD_NUCLEUS_ENTROPY: nucleus_entropy(p.top_p, p.top_k)},
    acts_at=("LOSS-TERM", "CTRL"), inert_on_policy=clip_inert_knobs,
))

"""GSPO: Group Sequence Policy Optimization (Zheng et al., arXiv 2507.18071). docs/methods.md §9.8.

The importance ratio is the length-normalised sequence ratio s_i = exp(mean_t log(pi/pi_old)), used per
token in the form sg[s_i] * pi_t / sg[pi_t] so that every token of a sequence shares one clip decision.
The loss is ``seq-mean-token-mean`` (verl forces it; other modes are rejected here). Clip range
3e-4 / 4e-4 from verl's example (examples/gspo_trainer/run_qwen30b_gspo.sh). No dual clip.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..surrogate import gspo_surrogate, surrogate_stats
from .contract import LossParams, Terms
from .registry import Objective, register_objective


@dataclass(frozen=True)
class GspoParams(LossParams):
    loss_agg_mode: str = "seq-mean-token-mean"
    clip_ratio_low: float = 3e-4
    clip_ratio_high: float = 4e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_agg_mode != "seq-mean-token-mean":
            raise ValueError(f"GSPO is defined with loss_agg_mode='seq-mean-token-mean', got '{self.loss_agg_mode}'")
        if not (0 <= self.clip_ratio_low <= 1 and self.clip_ratio_high >= 0):
            raise ValueError("need 0 <= clip_ratio_low <= 1 and clip_ratio_high >= 0")


def _gspo_inert(p: GspoParams) -> list[tuple[str, str]]:
    return [("clip_ratio", "GSPO's clip range has no effect on-policy: the sequence ratio is identically 1")]


def gspo_terms(batch, view, p: GspoParams, state, plan) -> Terms:
    """GSPO: clipped surrogate on the length-normalised sequence ratio, seq-mean-token-mean."""
    s = gspo_surrogate(
        batch.log_prob, batch.ratio_denominator, batch.token_advantages, batch.mask, p.clip_ratio_low,
        p.clip_ratio_high,
    )
    return Terms(pg_loss=s.loss, stats=surrogate_stats(s, batch.valid))


GSPO = register_objective(Objective(
    "gspo", params=GspoParams, terms=gspo_terms, acts_at=("LOSS", "AGG"), inert_on_policy=_gspo_inert,
))

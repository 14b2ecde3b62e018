"""The one signature behind every objective, its registry, and the driver ``policy_loss``.

An *objective* is a pure tensor function plus a parameter dataclass, registered by name:

    terms(batch: PolicyBatch, view: SelectionView, params, state: Mapping, plan) -> Terms
    fit(view: SelectionView, params, state: Mapping, group) -> plan          (only if it selects tokens)

* ``PolicyBatch`` carries the per-token inputs ([B, T]): current log-probs (with grad), old log-probs,
  advantages, the response mask, and the current / old entropies when the caller has them.
* ``SelectionView`` holds the detached numbers a token selection may read. In ``micro`` scope these
  are the current forward's (as in the official verl code); in ``global`` scope they are the old
  policy's, fixed for the whole mini-batch, so the selection does not depend on the micro-batch split.
* ``fit`` computes the selection statistics (top-k thresholds, quantiles, min/max, means) over the
  scope; ``terms`` applies them and returns the per-token loss, the per-token weights that were
  applied, extra per-token loss terms (entropy bonus) and raw statistics.
* ``state`` is the controller's output for this step (e.g. STARE's gate and current W, M), a plain
  dict so that it can travel through a verl config or a checkpoint.

``policy_loss`` validates, fits the plan when none is given (micro scope, or global scope over the
tensors passed in), calls ``terms``, aggregates with the loss mode and, if given, the mini-batch
``LossNormalizer``, and adds the statistics every objective reports (weights, quadrants).
``fit_plan`` is the global-scope entry point: call it once per mini-batch, then pass the plan to every
micro-batch's ``policy_loss``.

Room to grow: advantage shaping (Lopti, EMPG, HAPO) fits ``terms`` (it may rewrite advantages before the
surrogate), extra loss terms (Lp-Reg, SIREN) go in ``Terms.extra``, and rollout-side methods (AEPO, CURE)
are not objectives at all but trainer hooks; ``Objective.acts_at`` records where each method acts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..checks import check_choice, check_shapes, check_values, unknown_name_error
from ..inert import warn_inert
from ..metrics import Stat, max_stat, mean_stat, min_stat
from ..selection import SCOPES, token_ids
from ..surrogate import AGG_MODES, LossNormalizer, aggregate

__all__ = [
    "PolicyBatch",
    "SelectionView",
    "Terms",
    "PolicyLoss",
    "Objective",
    "LossParams",
    "ClipParams",
    "register_objective",
    "get_objective",
    "list_objectives",
    "make_params",
    "selection_view",
    "policy_loss",
    "fit_plan",
]


# --------------------------------------------------------------------------------------------------
# Inputs and outputs


@dataclass(frozen=True)
class PolicyBatch:
    """Per-token inputs of one loss call. All tensors are [B, T] (``advantages`` may be [B]).

    Attributes:
        log_prob: log pi_theta(o_t | s_t) of the sampled tokens, from the forward with gradients.
        advantages: per-token (or per-sequence) advantages.
        mask: 1 on response tokens (EOS included), 0 on padding; bool or 0/1 float.
        old_log_prob: log-probs of the policy that produced/re-scored the rollout (no grad). ``None``
            means on-policy.
        entropy: current-policy entropy per token; keep its graph for an entropy bonus.
        old_entropy: old-policy entropy per token (from the no-grad old-log-prob pass).
        on_policy: ``True`` uses ``log_prob.detach()`` as the ratio's denominator (ratio == 1), as verl
            does with one mini-batch and one epoch, even when ``old_log_prob`` is given (it then only
            feeds global-scope selection). Default: on-policy iff ``old_log_prob`` is None.
        row_ids: [B] int64 index of each row in the mini-batch; makes ties split-invariant in global
            scope (default: 0..B-1).
    """

    log_prob: Tensor
    advantages: Tensor
    mask: Tensor
    old_log_prob: Tensor | None = None
    entropy: Tensor | None = None
    old_entropy: Tensor | None = None
    on_policy: bool | None = None
    row_ids: Tensor | None = None

    @property
    def is_on_policy(self) -> bool:
        return self.old_log_prob is None if self.on_policy is None else self.on_policy

    @property
    def valid(self) -> Tensor:
        return self.mask.bool()

    @property
    def token_advantages(self) -> Tensor:
        a = self.advantages
        return a.unsqueeze(-1).expand_as(self.log_prob) if a.dim() == 1 else a

    @property
    def ratio_denominator(self) -> Tensor:
        """The log-prob the importance ratio divides by."""
        return self.log_prob.detach() if self.is_on_policy else self.old_log_prob


@dataclass(frozen=True)
class SelectionView:
    """Detached per-token numbers a token selection may read (see the module docstring)."""

    log_prob: Tensor
    old_log_prob: Tensor
    entropy: Tensor | None
    old_entropy: Tensor | None
    advantages: Tensor
    valid: Tensor
    ids: Tensor

    @property
    def surprisal(self) -> Tensor:
        return -self.log_prob


@dataclass
class Terms:
    """What an objective returns for one call."""

    pg_loss: Tensor  # [B, T] per-token policy-gradient loss, weights already applied
    weights: Tensor | None = None  # [B, T] per-token multiplier that was applied (None: all ones)
    extra: dict[str, Tensor] = field(default_factory=dict)  # per-token additive loss terms
    stats: dict[str, Stat] = field(default_factory=dict)


@dataclass
class PolicyLoss:
    """Result of ``policy_loss``."""

    loss: Tensor  # scalar to backpropagate (policy-gradient part + extra terms)
    pg_loss: Tensor  # scalar, aggregated policy-gradient part
    extra_losses: dict[str, Tensor]  # scalar, each aggregated extra term
    per_token_loss: Tensor  # [B, T] detached policy-gradient loss per token, before aggregation
    weights: Tensor  # [B, T] per-token weights (1 where the objective does not reweight)
    stats: dict[str, Stat]  # raw statistics; merge with StatAccumulator
    plan: Any  # the fitted selection statistics that were used


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class LossParams:
    """Parameters every objective has.

    loss_agg_mode: one of ``surrogate.AGG_MODES``; token-mean is DAPO's token-level loss, the default
        of every recipe in methods.md.
    loss_scale_factor: the constant C of ``seq-mean-token-sum-norm`` (Dr.GRPO: max response length).
    selection_scope: ``micro`` (official verl behaviour, the reproduction default) or ``global``.
    """

    loss_agg_mode: str = "token-mean"
    loss_scale_factor: float | None = None
    selection_scope: str = "micro"

    def __post_init__(self) -> None:
        check_choice("loss_agg_mode", self.loss_agg_mode, AGG_MODES)
        check_choice("selection_scope", self.selection_scope, SCOPES)
        if self.loss_scale_factor is not None and not self.loss_scale_factor > 0:
            raise ValueError(f"loss_scale_factor must be > 0, got {self.loss_scale_factor}")


@dataclass(frozen=True)
class ClipParams(LossParams):
    """PPO clip bounds. Defaults are verl's (clip_ratio 0.2 both sides, clip_ratio_c 3.0).

    clip_ratio_c: dual-clip constant (> 1), or None for no dual clip.
    """

    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float | None = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.clip_ratio_low <= 1:
            raise ValueError(f"clip_ratio_low must be in [0, 1], got {self.clip_ratio_low}")
        if not self.clip_ratio_high >= 0:
            raise ValueError(f"clip_ratio_high must be >= 0, got {self.clip_ratio_high}")
        if self.clip_ratio_c is not None and not self.clip_ratio_c > 1:
            raise ValueError(f"clip_ratio_c must be > 1 (or None to disable dual clip), got {self.clip_ratio_c}")


def clip_inert_knobs(p: ClipParams) -> list[tuple[str, str]]:
    """Knobs of ``ClipParams`` that cannot act on-policy (ratio == 1)."""
    out = [("clip_ratio", f"clip_ratio_low={p.clip_ratio_low} / clip_ratio_high={p.clip_ratio_high} have no "
            "effect on-policy: the importance ratio is identically 1, so the clip never triggers")]
    if p.clip_ratio_c is not None:
        out.append(("clip_ratio_c", f"clip_ratio_c={p.clip_ratio_c} (dual clip) has no effect on-policy"))
    return out


# --------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Objective:
    """A registered objective. ``needs`` names inputs it cannot run without."""

    name: str
    params: type
    terms: Callable[..., Terms]
    fit: Callable[..., Any] | None = None
    needs: frozenset[str] = frozenset()  # subset of {"entropy", "old_entropy", "entropy_grad"}
    state_keys: frozenset[str] = frozenset()
    acts_at: tuple[str, ...] = ()
    inert_on_policy: Callable[[Any], list[tuple[str, str]]] | None = None

    @property
    def summary(self) -> str:
        return (self.terms.__doc__ or "").strip().splitlines()[0] if self.terms.__doc__ else ""


_REGISTRY: dict[str, Objective] = {}
_ALIASES: dict[str, str] = {}


def register_objective(
    name: str,
    *,
    params: type,
    fit: Callable[..., Any] | None = None,
    needs: tuple[str, ...] = (),
    state_keys: tuple[str, ...] = (),
    acts_at: tuple[str, ...] = (),
    inert_on_policy: Callable[[Any], list[tuple[str, str]]] | None = None,
    aliases: tuple[str, ...] = (),
) -> Callable[[Callable[..., Terms]], Callable[..., Terms]]:
    """Decorator registering ``terms`` under ``name``. Re-registering a name with another function fails."""
    unknown_needs = set(needs) - {"entropy", "old_entropy", "entropy_grad"}
    if unknown_needs:
        raise ValueError(f"unknown needs {sorted(unknown_needs)} for objective '{name}'")

    def deco(fn: Callable[..., Terms]) -> Callable[..., Terms]:
        obj = Objective(name, params, fn, fit, frozenset(needs), frozenset(state_keys), acts_at, inert_on_policy)
        for key in (name, *aliases):
            existing = _REGISTRY.get(_ALIASES.get(key, key))
            if existing is not None and existing.terms is not fn:
                raise ValueError(f"objective name '{key}' is already registered to {existing.terms.__qualname__}")
        _REGISTRY[name] = obj
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return deco


def get_objective(name: str | Objective) -> Objective:
    if isinstance(name, Objective):
        return name
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise unknown_name_error("objective", name, list(_REGISTRY) + list(_ALIASES))
    return _REGISTRY[key]


def list_objectives() -> list[str]:
    return sorted(_REGISTRY)


def make_params(objective: str | Objective, params: Any = None) -> Any:
    """The objective's parameter dataclass from None (defaults), a dict of overrides, or an instance."""
    obj = get_objective(objective)
    if params is None:
        return obj.params()
    if isinstance(params, obj.params):
        return params
    if isinstance(params, Mapping):
        valid = [f.name for f in dataclasses.fields(obj.params)]
        for key in params:
            if key not in valid:
                raise unknown_name_error(f"parameter of objective '{obj.name}'", str(key), valid)
        return obj.params(**params)
    raise TypeError(f"params for '{obj.name}' must be None, a dict or {obj.params.__name__}, got {type(params).__name__}")


def _check_state(obj: Objective, state: Mapping | None) -> Mapping:
    if state is None:
        return {}
    for key in state:
        if key not in obj.state_keys:
            raise unknown_name_error(f"state key of objective '{obj.name}'", str(key), obj.state_keys or ["(none)"])
    return state


# --------------------------------------------------------------------------------------------------
# Driver


def selection_view(batch: PolicyBatch, scope: str) -> SelectionView:
    """The detached inputs a selection reads: current forward (micro) or old policy (global)."""
    check_choice("selection_scope", scope, SCOPES)
    cur = batch.log_prob.detach()
    cur_ent = None if batch.entropy is None else batch.entropy.detach()
    old_ent = batch.old_entropy.detach() if batch.old_entropy is not None else (cur_ent if batch.is_on_policy else None)
    if scope == "micro":
        log_prob = cur
        old = cur if batch.is_on_policy else batch.old_log_prob.detach()
        ent = cur_ent if cur_ent is not None else old_ent
    else:
        log_prob = old = cur if batch.old_log_prob is None else batch.old_log_prob.detach()
        ent = old_ent if old_ent is not None else cur_ent
    adv = batch.token_advantages.detach()
    return SelectionView(log_prob, old, ent, old_ent, adv, batch.valid, token_ids(cur.shape, batch.row_ids, cur.device))


def _check_batch(obj: Objective, batch: PolicyBatch, validate: bool) -> None:
    if not isinstance(batch, PolicyBatch):
        raise TypeError(f"batch must be a PolicyBatch, got {type(batch).__name__}")
    tensors = {
        "log_prob": batch.log_prob,
        "advantages": batch.advantages,
        "mask": batch.mask,
        "old_log_prob": batch.old_log_prob,
        "entropy": batch.entropy,
        "old_entropy": batch.old_entropy,
    }
    check_shapes("log_prob", tensors, allow_rows=("advantages",))
    if batch.mask.is_floating_point() is False and batch.mask.dtype not in (torch.bool, torch.int64, torch.int32, torch.uint8):
        raise TypeError(f"mask must be bool, integer or float 0/1, got {batch.mask.dtype}")
    if batch.row_ids is not None and batch.row_ids.shape != batch.log_prob.shape[:1]:
        raise ValueError(f"row_ids has shape {tuple(batch.row_ids.shape)}; need ({batch.log_prob.shape[0]},)")
    if batch.on_policy is False and batch.old_log_prob is None:
        raise ValueError("on_policy=False needs old_log_prob")
    on = batch.is_on_policy
    have_ent = batch.entropy is not None
    have_old_ent = batch.old_entropy is not None or (on and have_ent)
    if "entropy" in obj.needs and not (have_ent or batch.old_entropy is not None):
        raise ValueError(f"objective '{obj.name}' needs per-token entropy: pass entropy= (or old_entropy=)")
    if "old_entropy" in obj.needs and not have_old_ent:
        raise ValueError(
            f"objective '{obj.name}' needs the old policy's per-token entropy: pass old_entropy= "
            "(on-policy, entropy= is accepted as the same quantity)"
        )
    if "entropy_grad" in obj.needs:
        if not have_ent:
            raise ValueError(f"objective '{obj.name}' trains through the entropy: pass entropy= with its graph")
        if batch.log_prob.requires_grad and not batch.entropy.requires_grad:
            raise ValueError(
                f"objective '{obj.name}' trains through the entropy, but entropy does not require grad: "
                "compute it under autograd (token_stats_from_hidden / _from_logits)"
            )
    if validate:
        check_values(tensors)


def _quadrant_stats(view: SelectionView) -> dict[str, Stat]:
    """sign(A) x (surprisal above / at-or-below the position's entropy), as fractions of valid tokens."""
    if view.entropy is None:
        return {}
    high = view.surprisal > view.entropy
    pos, neg = view.advantages > 0, view.advantages < 0
    v = view.valid
    return {
        "quadrant/pos_high_surprisal": mean_stat(pos & high, v),  # entropy-raising (STARE's L+ region)
        "quadrant/pos_low_surprisal": mean_stat(pos & ~high, v),  # entropy-lowering
        "quadrant/neg_high_surprisal": mean_stat(neg & high, v),  # entropy-lowering (STARE's L- region)
        "quadrant/neg_low_surprisal": mean_stat(neg & ~high, v),  # entropy-raising
    }


def policy_loss(
    objective: str | Objective,
    batch: PolicyBatch,
    params: Any = None,
    *,
    state: Mapping | None = None,
    plan: Any = None,
    normalizer: LossNormalizer | None = None,
    validate: bool = True,
) -> PolicyLoss:
    """Compute an objective's loss on one (micro-)batch.

    Args:
        objective: registered name (``list_objectives()``) or an ``Objective``.
        batch: the per-token inputs.
        params: None (defaults), a dict of overrides, or the objective's parameter dataclass.
        state: controller output for this step (e.g. ``StareController.state()``).
        plan: selection statistics from ``fit_plan`` over the whole mini-batch (global scope). When
            None, they are fitted on this batch: the micro scope, or the global scope if this batch is
            the whole mini-batch.
        normalizer: mini-batch denominators for an exact loss across micro-batches; None divides by
            this batch's own token / sequence counts.
        validate: also check values (finite, binary mask); one host sync. Shapes are always checked.
    """
    obj = get_objective(objective)
    p = make_params(obj, params)
    state = _check_state(obj, state)
    _check_batch(obj, batch, validate)
    if batch.is_on_policy and obj.inert_on_policy is not None:
        for key, message in obj.inert_on_policy(p):
            warn_inert(f"{obj.name}.{key}", f"[{obj.name}] {message}")
    view = selection_view(batch, p.selection_scope)
    if obj.fit is not None and plan is None:
        plan = obj.fit(view, p, state, None)
    terms = obj.terms(batch, view, p, state, plan)

    valid = batch.valid
    pg = aggregate(terms.pg_loss, valid, p.loss_agg_mode, normalizer, p.loss_scale_factor)
    loss, extra_losses = pg, {}
    for name, per_token in terms.extra.items():
        extra_losses[name] = aggregate(per_token, valid, p.loss_agg_mode, normalizer, p.loss_scale_factor)
        loss = loss + extra_losses[name]

    weights = terms.weights if terms.weights is not None else torch.ones_like(terms.pg_loss.detach())
    stats = dict(terms.stats)
    stats["weight/mean"] = mean_stat(weights, valid)
    stats["weight/min"] = min_stat(weights, valid)
    stats["weight/max"] = max_stat(weights, valid)
    stats["surprisal/mean"] = mean_stat(-batch.log_prob.detach(), valid)
    if view.entropy is not None:
        stats["entropy/mean"] = mean_stat(view.entropy, valid)
    stats.update(_quadrant_stats(view))
    return PolicyLoss(loss, pg, extra_losses, terms.pg_loss.detach(), weights.detach(), stats, plan)


def fit_plan(
    objective: str | Objective,
    batch: PolicyBatch,
    params: Any = None,
    *,
    state: Mapping | None = None,
    group=None,
    validate: bool = True,
) -> Any:
    """Fit an objective's selection statistics over a whole mini-batch (global scope).

    ``batch`` holds the mini-batch's old-policy inputs (``old_log_prob``, ``old_entropy``; ``log_prob``
    may be the same old values since no gradient is taken). ``group`` is a process group, or ``True``
    for the default group, to include every rank's share. Returns None for objectives without selection.
    """
    obj = get_objective(objective)
    p = make_params(obj, params)
    state = _check_state(obj, state)
    _check_batch(obj, batch, validate)
    if obj.fit is None:
        return None
    return obj.fit(selection_view(batch, "global"), p, state, group)

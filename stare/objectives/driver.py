"""The loss driver: ``policy_loss`` runs any registered objective on one (micro-)batch.

    policy_loss(name, batch, params, state=..., plan=..., normalizer=...) -> PolicyLoss

It validates the inputs, fits the selection plan when none is given (micro scope, or global scope over
the tensors passed in), calls the objective's ``terms``, aggregates the per-token loss with the loss
mode and, if given, the mini-batch ``LossNormalizer``, adds the per-token extra terms, the KL term to
the reference model (``kl_coef``) and the per-call scalar terms, and adds the statistics every objective
reports (weights, surprisal, entropy, the advantage x surprisal quadrants of ``stare.theory``).
``fit_plan`` is the global-scope entry point: call it once per mini-batch, then pass the plan to every
micro-batch's ``policy_loss``. Without ``state`` the method's initial controller state is used (e.g.
STARE's gate open and W, M from its parameters), so a loss called on its own behaves as the method does
before its controller's first update.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..checks import check_choice, check_shapes, check_values, unknown_name_error
from ..inert import warn_inert
from ..metrics import Stat, max_stat, mean_stat, min_stat
from ..selection import SCOPES, token_ids
from ..surrogate import LossNormalizer, aggregate, kl_penalty
from ..theory import QUADRANTS, quadrant
from .contract import PolicyBatch, PolicyLoss, SelectionView, detach_aux
from .registry import Objective, get_objective, initial_state, make_params

__all__ = ["fit_plan", "policy_loss", "selection_view"]


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
    ids = token_ids(cur.shape, batch.row_ids, cur.device)
    return SelectionView(log_prob, old, ent, old_ent, adv, batch.valid, ids, detach_aux(batch.aux))


def _resolve_state(obj: Objective, params: Any, state: Mapping | None) -> Mapping:
    """The controller state over the method's initial one (keys not given keep their initial value);
    keys the method's controller does not have are an error."""
    default = initial_state(obj, params)
    if not state:
        return default
    valid = set(default)
    if obj.schedule is not None:  # each pass of an update schedule adds its own keys
        valid.update(k for overlay in obj.schedule(params) for k in overlay)
    for key in state:
        if key not in valid:
            raise unknown_name_error(f"state key of objective '{obj.name}'", str(key), valid or ["(none)"])
    return {**default, **state}


def _check_batch(obj: Objective, p: Any, batch: PolicyBatch, validate: bool, loss: bool = True) -> None:
    if not isinstance(batch, PolicyBatch):
        raise TypeError(f"batch must be a PolicyBatch, got {type(batch).__name__}")
    tensors = {
        "log_prob": batch.log_prob,
        "advantages": batch.advantages,
        "mask": batch.mask,
        "old_log_prob": batch.old_log_prob,
        "entropy": batch.entropy,
        "old_entropy": batch.old_entropy,
        "ref_log_prob": batch.ref_log_prob,
    }
    check_shapes("log_prob", tensors, allow_rows=("advantages",))
    if batch.mask.is_floating_point() is False and batch.mask.dtype not in (torch.bool, torch.int64, torch.int32, torch.uint8):
        raise TypeError(f"mask must be bool, integer or float 0/1, got {batch.mask.dtype}")
    if batch.row_ids is not None and batch.row_ids.shape != batch.log_prob.shape[:1]:
        raise ValueError(f"row_ids has shape {tuple(batch.row_ids.shape)}; need ({batch.log_prob.shape[0]},)")
    for name, value in batch.aux.items():
        if not isinstance(value, torch.Tensor) or value.shape[:2] != batch.log_prob.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"aux['{name}'] must be a tensor of shape [B, T] or [B, T, k] like log_prob "
                             f"{tuple(batch.log_prob.shape)}, got {shape}")
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
    if loss and (p.kl_coef > 0 or "ref_log_prob" in obj.needs) and batch.ref_log_prob is None:
        raise ValueError(f"objective '{obj.name}' with kl_coef={p.kl_coef} needs the reference model's log-probs: "
                         "pass ref_log_prob=")
    missing = sorted(obj.aux_needs - set(batch.aux))
    if missing:
        raise ValueError(f"objective '{obj.name}' needs aux inputs {missing}; the batch has {sorted(batch.aux) or 'none'}")
    if validate:
        check_values(tensors)


def _quadrant_stats(view: SelectionView) -> dict[str, Stat]:
    """Fractions of valid tokens in each advantage-sign x surprisal-vs-entropy quadrant (``stare.theory``)."""
    if view.entropy is None:
        return {}
    q = quadrant(view.advantages, view.surprisal, view.entropy)
    return {f"quadrant/{name}": mean_stat(q == i, view.valid) for i, name in enumerate(QUADRANTS)}


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
        state: the controller's state for this step (``controller.state()``); None: its initial state.
        plan: selection statistics from ``fit_plan`` over the whole mini-batch (global scope). When
            None, they are fitted on this batch: the micro scope, or the global scope if this batch is
            the whole mini-batch.
        normalizer: mini-batch denominators for an exact loss across micro-batches; None divides by
            this batch's own token / sequence counts.
        validate: also check values (finite, binary mask); one host sync. Shapes are always checked.
    """
    obj = get_objective(objective)
    p = make_params(obj, params)
    state = _resolve_state(obj, p, state)
    _check_batch(obj, p, batch, validate)
    if batch.is_on_policy and obj.inert_on_policy is not None:
        for key, message in obj.inert_on_policy(p):
            warn_inert(f"{obj.name}.{key}", f"[{obj.name}] {message}")
    view = selection_view(batch, p.selection_scope)
    if obj.fit is not None and plan is None:
        plan = obj.fit(view, p, state, None)
    terms = obj.terms(batch, view, p, state, plan)

    valid = batch.valid
    pg = aggregate(terms.pg_loss, valid, p.loss_agg_mode, normalizer, p.loss_scale_factor)
    extra = dict(terms.extra)
    stats = dict(terms.stats)
    if p.kl_coef > 0:
        kl = kl_penalty(batch.log_prob, batch.ref_log_prob, p.kl_estimator)
        extra["kl"] = p.kl_coef * kl
        stats["kl_loss"] = mean_stat(kl.detach(), valid)  # verl's actor/kl_loss: the mean estimate, unweighted
    loss, extra_losses = pg, {}
    for name, per_token in extra.items():
        extra_losses[name] = aggregate(per_token, valid, p.loss_agg_mode, normalizer, p.loss_scale_factor)
        loss = loss + extra_losses[name]
    if terms.scalar:
        share = 1.0
        if normalizer is not None:  # this call's share of the mini-batch tokens (see contract.Terms)
            share = valid.sum().to(torch.float64) / normalizer.num_tokens.clamp(min=1) * normalizer.grad_scale
        for name, value in terms.scalar.items():
            extra_losses[name] = value * share.to(value.dtype) if torch.is_tensor(share) else value
            loss = loss + extra_losses[name]

    weights = terms.weights if terms.weights is not None else torch.ones_like(terms.pg_loss.detach())
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
    state = _resolve_state(obj, p, state)
    _check_batch(obj, p, batch, validate, loss=False)
    if obj.fit is None:
        return None
    return obj.fit(selection_view(batch, "global"), p, state, group)

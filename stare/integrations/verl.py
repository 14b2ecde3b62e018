"""verl plug-in: the objectives of ``stare.objectives`` as verl policy losses.

Importing this module (verl does it through the ``verl.plugins`` entry point on ``import verl``)
registers one policy loss per registered objective with ``verl.trainer.ppo.core_algos.register_policy_loss``
under the names of ``VERL_LOSS_NAMES`` (the objective's own name; ``stare_<name>`` for the algorithms
verl also ships: PPO, GSPO, Clip-Cov, KL-Cov, 80/20); ``actor_rollout_ref.actor.policy_loss.loss_mode=stare``
selects one. A method defined after ``import verl`` (a file of your own) is registered by calling
``register_losses()`` after importing it; in Ray workers, load that file with verl's
``actor_rollout_ref.model.external_lib``. Objectives whose hooks only the stare trainer runs
(rollout, rewards, advantages, update schedule) are registered too, and say so when selected. Each loss converts verl's inputs into a ``PolicyBatch``, calls ``stare.policy_loss`` and
maps the statistics onto verl's ``actor/`` names (``VERL_METRIC_NAMES``). The companion module
``stare.integrations.verl_trainer`` holds the trainer that runs the STARE gate.

Configuration (``StarePolicyLossConfig``, a ``PolicyLossConfig`` subclass that verl's Hydra config
instantiates through ``policy_loss._target_``):

* ``policy_loss.params``: the objective's own parameters, its controller's included (``stare
  objectives`` lists them), e.g. ``variant``, ``top_p_ratio``, ``reweight_w``, ``selection_scope``,
  ``target_entropy``, ``adaptive``; the controller runs on the driver (``verl_trainer``).
* verl's own keys keep their meaning: ``actor.clip_ratio_low`` / ``clip_ratio_high`` / ``clip_ratio_c``
  (clip and dual clip), ``actor.loss_agg_mode``, ``actor.loss_scale_factor``, and for Clip-Cov / KL-Cov
  ``policy_loss.clip_cov_ratio`` / ``clip_cov_lb`` / ``clip_cov_ub`` / ``kl_cov_ratio`` / ``ppo_kl_coef``
  (with verl's defaults). Setting one of them again in ``params`` is an error.

What a verl policy loss cannot see (docs/methods.md §E.1) -- per-token entropies, the controller state,
the global selection plan, row ids -- reaches it through ``loss_inputs``, a context that
``stare_ppo_loss`` (the worker-side loss function the trainer installs with ``set_loss_fn``) fills
from verl's own micro-batch: the current entropy from the model output (``calculate_entropy``), the
old-policy entropy that verl's V1 trainer stores with the batch (field ``entropy``), and the state and
plan that the trainer puts in the batch's ``extra_info``. Called without that context (e.g. directly
through ``get_policy_loss_fn``), a loss runs with the gate open and W, M from ``params`` (the
official controller's state before its first update), and objectives that need entropy say so.

Where it deviates from verl's own losses:

* ``loss_agg_mode="token-sum"`` and rollout-correction weights (``rollout_is_weights``) are refused.
* Our Clip-Cov draws its random subset with a hash of (step, token id), not ``torch.randperm``; both
  Clip-Cov and KL-Cov break ties by token id (stare.objectives.cov). With
  ``selection_scope="global"`` they select over the whole training batch of the step, all ranks
  included, instead of per micro-batch and GPU (docs/methods.md §E.1).
* verl averages a policy loss's metrics over micro-batches and ranks (a mean of means); ours are
  reported per micro-batch the same way, so under verl ``actor/stare/...`` are means of micro-batch
  fractions, and ``actor/token_weight/min`` / ``max`` means of micro-batch extremes.
* The entropy bonus is not registered: verl adds ``entropy_coeff`` itself. The KL term to a reference
  model is verl's too (``actor.use_kl_loss``, ``kl_loss_coef``); ``kl_coef`` in ``params`` is refused.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss
from verl.workers.config import PolicyLossConfig

from ..metrics import StatAccumulator
from ..objectives import PolicyBatch, list_objectives, policy_loss
from ..surrogate import LossNormalizer
from . import as_mapping, build_params, check_loss_side

__all__ = [
    "VERL_LOSS_NAMES",
    "VERL_METRIC_NAMES",
    "StarePolicyLossConfig",
    "loss_inputs",
    "objective_of",
    "params_from_config",
    "register_losses",
    "stare_ppo_loss",
    "verl_metric_name",
]

#: Objectives whose algorithm verl also ships (PPO as ``vanilla``, GSPO, Clip-Cov, KL-Cov, the 80/20
#: mask) are registered as ``stare_<name>``, so that verl's own stay reachable and untouched.
PREFIXED = ("ppo", "gspo", "clip_cov", "kl_cov", "forking")
#: Objectives not registered: verl adds the entropy bonus itself (``actor.entropy_coeff``).
NOT_REGISTERED = ("entropy_bonus",)
#: Our objective -> its verl ``loss_mode``, filled by ``register_losses``.
VERL_LOSS_NAMES: dict[str, str] = {}

#: Raw statistic names -> verl metric names (``None``: not reported). Others get ``actor/`` in front.
#: ``entropy/mean`` is dropped because verl's trainer already reports ``actor/entropy``.
VERL_METRIC_NAMES: dict[str, str | None] = {
    "entropy/mean": None,
    "surprisal/mean": "actor/surprisal",
    "weight/mean": "actor/token_weight/mean",
    "weight/min": "actor/token_weight/min",
    "weight/max": "actor/token_weight/max",
}


def verl_metric_name(raw: str) -> str | None:
    """verl's name for one of our statistics: ``pg_clipfrac`` -> ``actor/pg_clipfrac``, ..."""
    return VERL_METRIC_NAMES.get(raw, f"actor/{raw}")


def verl_loss_name(objective: str) -> str:
    return f"stare_{objective}" if objective in PREFIXED else objective


def objective_of(loss_mode: str) -> str:
    """Our objective behind a registered verl ``loss_mode``."""
    for name, mode in VERL_LOSS_NAMES.items():
        if mode == loss_mode:
            return name
    from ..checks import unknown_name_error

    raise unknown_name_error("stare loss_mode", loss_mode, VERL_LOSS_NAMES.values())


@dataclass
class StarePolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus the objective's parameters (its controller's included).

    Select it with ``actor_rollout_ref.actor.policy_loss._target_=stare.integrations.verl.StarePolicyLossConfig``
    (the example in ``configs/verl/`` does). Default: empty, i.e. the objective's own defaults
    (``stare.get_objective(name).params``, each citing its source).
    """

    params: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# What the loss cannot see through verl's signature

_INPUTS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("stare_verl_loss_inputs", default=None)


@contextmanager
def loss_inputs(*, entropy=None, old_entropy=None, state=None, plan=None, row_ids=None):
    """Make per-token entropies, the controller state, a fitted plan and row ids visible to the stare
    losses called inside (tensors [B, T] like the loss's own, ``row_ids`` [B])."""
    token = _INPUTS.set({"entropy": entropy, "old_entropy": old_entropy, "state": state, "plan": plan,
                         "row_ids": row_ids})
    try:
        yield
    finally:
        _INPUTS.reset(token)


def _config_get(config, key, default=None):
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


def params_from_config(objective: str, config, loss_agg_mode: str):
    """The objective's parameters from verl's actor config (``ActorConfig`` or its ``DictConfig``)."""
    obj = check_loss_side(objective, "verl")
    pl = config.policy_loss
    user = as_mapping(_config_get(pl, "params", {}), "actor.policy_loss.params")
    if user.get("kl_coef"):
        raise ValueError("actor.policy_loss.params.kl_coef: verl adds the KL term to the reference itself; set "
                         "actor_rollout_ref.actor.use_kl_loss=true and kl_loss_coef / kl_loss_type instead")
    clip = _config_get(config, "clip_ratio", 0.2)
    info = _config_get(config, "global_batch_info", {})
    owned = {
        "clip_ratio_low": _config_get(config, "clip_ratio_low", clip),
        "clip_ratio_high": _config_get(config, "clip_ratio_high", clip),
        "clip_ratio_c": _config_get(config, "clip_ratio_c", 3.0),
        "loss_agg_mode": loss_agg_mode,
        "loss_scale_factor": info.get("loss_scale_factor") or _config_get(config, "loss_scale_factor"),
    }
    where = {k: f"actor_rollout_ref.actor.{k}" for k in owned}
    where["loss_agg_mode"] = "actor_rollout_ref.actor.loss_agg_mode"
    if obj.name == "clip_cov":
        del owned["clip_ratio_c"]  # verl's Clip-Cov has no dual clip
        for key in ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub"):
            owned[key] = _config_get(pl, key)
    if obj.name == "kl_cov":
        for key in ("kl_cov_ratio", "ppo_kl_coef"):
            owned[key] = _config_get(pl, key)
    for key in ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "kl_cov_ratio", "ppo_kl_coef"):
        where[key] = f"actor_rollout_ref.actor.policy_loss.{key}"
    return build_params(obj.name, user, {k: v for k, v in owned.items() if v is not None}, where)


def _normalizer(info, mask: torch.Tensor) -> LossNormalizer | None:
    """verl's global batch info (``agg_loss`` keyword arguments) as our mini-batch denominators."""
    if not info or all(info.get(k) is None for k in ("dp_size", "batch_num_tokens", "global_batch_size")):
        return None
    tokens, seqs = info.get("batch_num_tokens"), info.get("global_batch_size")
    local_tokens = mask.sum().to(torch.float64)
    local_seqs = (mask.sum(-1) > 0).sum().to(torch.float64)
    return LossNormalizer(
        num_tokens=local_tokens if tokens is None else torch.as_tensor(tokens, dtype=torch.float64, device=mask.device),
        num_seqs=local_seqs if seqs is None else torch.as_tensor(seqs, dtype=torch.float64, device=mask.device),
        max_len=int(mask.shape[-1]),
        grad_scale=float(info.get("dp_size") or 1),
    )


def _make_loss(objective: str):
    def loss_fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                rollout_is_weights=None):
        if config is None:
            raise ValueError(f"stare loss '{VERL_LOSS_NAMES[objective]}' needs verl's actor config (config=...)")
        if rollout_is_weights is not None:
            raise NotImplementedError(
                "stare losses do not apply rollout-correction weights; disable algorithm.rollout_correction"
            )
        extra = _INPUTS.get() or {}
        params = params_from_config(objective, config, loss_agg_mode)
        batch = PolicyBatch(
            log_prob, advantages, response_mask, old_log_prob=old_log_prob, entropy=extra.get("entropy"),
            old_entropy=extra.get("old_entropy"), row_ids=extra.get("row_ids"),
        )
        out = policy_loss(
            objective, batch, params, state=extra.get("state"), plan=extra.get("plan"),
            normalizer=_normalizer(_config_get(config, "global_batch_info", {}), response_mask.bool()),
            validate=False,
        )
        acc = StatAccumulator()
        acc.add(out.stats)
        metrics = {}
        for raw, value in acc.result().items():
            name = verl_metric_name(raw)
            if name is not None:
                metrics[name] = value
        return out.loss, metrics

    loss_fn.__name__ = f"stare_{objective}_policy_loss"
    loss_fn.__doc__ = f"verl policy loss running stare objective '{objective}' (stare.integrations.verl)."
    return loss_fn


def register_losses() -> dict[str, str]:
    """Register every objective of the registry not yet known to verl (idempotent); returns
    ``VERL_LOSS_NAMES``. Call it again after defining a method of your own."""
    for objective in list_objectives():
        if objective in NOT_REGISTERED or objective in VERL_LOSS_NAMES:
            continue
        mode = verl_loss_name(objective)
        existing = POLICY_LOSS_REGISTRY.get(mode)
        if existing is not None and getattr(existing, "__module__", None) != __name__:
            raise ValueError(f"verl already has a policy loss '{mode}' ({existing.__module__}); refusing to replace it")
        if existing is None:
            register_policy_loss(mode)(_make_loss(objective))
        VERL_LOSS_NAMES[objective] = mode
    return VERL_LOSS_NAMES


register_losses()


# ---------------------------------------------------------------------------------------------------
# The worker-side loss function


def stare_ppo_loss(config, model_output, data, dp_group=None):
    """verl's ``ppo_loss`` with the stare extras in context (install with ``set_loss_fn``).

    Reads, from verl's own micro-batch: the current per-token entropy (``model_output["entropy"]``,
    present when ``calculate_entropy``), the old policy's (field ``entropy``, written by the V1
    trainer's old-log-prob pass), row ids (field ``stare_row_ids``) and the controller state and plan
    (non-tensor ``stare_state`` / ``stare_plan``, from ``batch.extra_info``). Then calls ``ppo_loss``.
    """
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    entropy = model_output.get("entropy", None)
    if entropy is not None:
        entropy = no_padding_2_padding(entropy, data)
    keys = set(data.keys())
    old_entropy = data.select("entropy").to_padded_tensor()["entropy"] if "entropy" in keys else None
    row_ids = data["stare_row_ids"] if "stare_row_ids" in keys else None
    state = tu.get_non_tensor_data(data=data, key="stare_state", default=None)
    plan = tu.get_non_tensor_data(data=data, key="stare_plan", default=None)
    with loss_inputs(entropy=entropy, old_entropy=old_entropy, state=state, plan=plan, row_ids=row_ids):
        return ppo_loss(config, model_output, data, dp_group)

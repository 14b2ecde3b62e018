"""Plug-ins that run the objectives of ``stare.objectives`` inside other training frameworks.

* ``stare.integrations.verl``: policy losses registered with verl's ``register_policy_loss`` (loaded
  through the ``verl.plugins`` entry point), a loss-function wrapper that hands verl's per-token
  entropies and the controller state to them, and a V1 trainer (``trainer.v1.trainer_mode=stare_sync``)
  that runs the STARE gate on the driver.
* ``stare.integrations.trl``: ``StareGRPOTrainer``, a ``trl.GRPOTrainer`` subclass that computes its
  loss with any registered objective and keeps the controller in its checkpoints.

Neither framework is imported by ``import stare`` or by this package: each adapter imports its
framework when the adapter module itself is imported. The helpers below are shared by both adapters
and import nothing outside the standard library and ``stare``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ..objectives import get_objective, make_params
from ..objectives.registry import Objective

__all__ = ["CONTROLLER_FILE", "as_mapping", "build_params", "check_loss_side"]

#: The controller's state in an engine's checkpoint folder (``stare.objectives.save_controller``).
CONTROLLER_FILE = "stare_controller.pt"


def as_mapping(value: Any, key: str) -> dict:
    """A dict from a dict-like value or a JSON object string (command lines); ``None`` is empty."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"{key} must be a JSON object, got {value!r}: {err}") from None
    if not isinstance(value, Mapping):
        raise TypeError(f"{key} must be a mapping (or a JSON object string), got {type(value).__name__}")
    return dict(value)


def build_params(objective: str, user: Mapping, owned: Mapping, where: Mapping[str, str]) -> Any:
    """The objective's parameters: the user's keys plus the keys the framework owns.

    ``owned`` holds values taken from the framework's own configuration (clip bounds, aggregation mode);
    a user key that is also owned is an error naming the framework key to set instead (``where``).
    Keys the objective does not have are dropped from ``owned`` (e.g. KL-Cov has no clip bounds).
    """
    obj = get_objective(objective)
    fields = set(obj.params.__dataclass_fields__)
    for key in user:
        if key in owned and key in fields:
            raise ValueError(
                f"parameter '{key}' of objective '{obj.name}' comes from {where[key]}; set it there, "
                "not in the objective's parameters"
            )
    merged = {k: v for k, v in owned.items() if k in fields}
    merged.update(user)
    return make_params(obj, merged)


def check_loss_side(objective: str | Objective, engine: str) -> Objective:
    """The objective, if the engine can run it: its loss, controller and built-in inputs. Methods with
    step-level hooks (rollout, rewards, advantages, update schedule, logit statistics) or extra per-token
    inputs need the stare trainer; say so by name instead of running them half-way."""
    obj = get_objective(objective)
    if obj.step_hooks or obj.aux_needs:
        what = ", ".join([*obj.step_hooks, *(f"input '{n}'" for n in sorted(obj.aux_needs))])
        raise ValueError(f"objective '{obj.name}' acts at {', '.join(obj.acts_at)} through {what}, which only the "
                         f"stare trainer runs (`stare train`); the {engine} plug-in runs loss-side methods")
    return obj

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

from ..checks import unknown_name_error
from ..control import StareController
from ..objectives import get_objective, make_params

__all__ = ["as_mapping", "build_params", "build_controller", "CONTROLLER_KEYS"]

#: Controller settings a user may configure; W and M start from the objective's ``reweight_w`` /
#: ``reweight_m`` so that there is one source for each number.
CONTROLLER_KEYS = ("target_entropy", "adaptive", "alpha", "w_max", "m_min")


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


def build_controller(params: Any, settings: Mapping) -> StareController:
    """A ``StareController`` whose W and M start at the objective's ``reweight_w`` / ``reweight_m``."""
    for key in settings:
        if key not in CONTROLLER_KEYS:
            raise unknown_name_error("controller setting", str(key), CONTROLLER_KEYS)
    start = {k: getattr(params, k) for k in ("reweight_w", "reweight_m") if hasattr(params, k)}
    return StareController(**start, **dict(settings))

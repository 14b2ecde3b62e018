"""The objective registry: every method on one signature (see ``base`` for the contract).

Importing this package registers all built-in objectives. ``list_objectives()`` names them;
``get_objective(name).params`` is each one's parameter dataclass with cited defaults.
"""

from . import cov, entroadv, entropy_bonus, forking, gspo, ppo, stapo, stare, steer  # noqa: F401  (registration)
from .base import (
    ClipParams,
    LossParams,
    Objective,
    PolicyBatch,
    PolicyLoss,
    SelectionView,
    Terms,
    fit_plan,
    get_objective,
    list_objectives,
    make_params,
    policy_loss,
    register_objective,
    selection_view,
)

__all__ = [
    "ClipParams",
    "LossParams",
    "Objective",
    "PolicyBatch",
    "PolicyLoss",
    "SelectionView",
    "Terms",
    "fit_plan",
    "get_objective",
    "list_objectives",
    "make_params",
    "policy_loss",
    "register_objective",
    "selection_view",
]

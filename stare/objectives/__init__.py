"""Every method on one API: the contract (``contract``), the registry (``registry``), the loss driver
(``driver``), and one file per method holding its parameters, its functions and its controller.

Importing this package registers the built-in methods. ``list_objectives()`` names them;
``get_objective(name)`` is the record (parameter dataclass with cited defaults, controller, hooks).
"""

from . import cov, entroadv, entropy_bonus, forking, gspo, ppo, stapo, stare, steer  # noqa: F401  (registration)
from . import aepo_agentic, aspo, bapo, dppo, lopti, lp_reg, one_shot, siren  # noqa: F401  (registration: issue 13, part A)
from . import cure, empg, empo, gtpo, hapo, seed_grpo, ttrl  # noqa: F401  (registration: step-hook methods)
from .contract import (
    ACTS_AT,
    ClipParams,
    Controller,
    ControllerState,
    Generation,
    LossParams,
    PolicyBatch,
    PolicyLoss,
    RolloutRequest,
    RolloutRow,
    Sampler,
    SelectionView,
    StepData,
    Terms,
    load_controller,
    save_controller,
)
from .driver import fit_plan, policy_loss, selection_view
from .entropy_bonus import EntropyBonusController, EntropyBonusParams
from .registry import (
    Objective,
    get_objective,
    initial_state,
    list_objectives,
    make_controller,
    make_params,
    register_objective,
    unregister_objective,
)
from .stare import StareController, StareParams

__all__ = [
    "ACTS_AT",
    "ClipParams",
    "Controller",
    "ControllerState",
    "EntropyBonusController",
    "EntropyBonusParams",
    "Generation",
    "LossParams",
    "Objective",
    "PolicyBatch",
    "PolicyLoss",
    "RolloutRequest",
    "RolloutRow",
    "Sampler",
    "SelectionView",
    "StareController",
    "StareParams",
    "StepData",
    "Terms",
    "fit_plan",
    "get_objective",
    "initial_state",
    "list_objectives",
    "load_controller",
    "make_controller",
    "make_params",
    "policy_loss",
    "register_objective",
    "save_controller",
    "selection_view",
    "unregister_objective",
]

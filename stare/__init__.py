"""stare: entropy-stable RLVR for language models.

The core, importable without anything but torch:

* ``stare.stats``       token statistics (log-prob, entropy, surprisal), chunked, differentiable
* ``stare.advantages``  GRPO / Dr.GRPO / batch-std advantages
* ``stare.surrogate``   clipped, dual-clipped and GSPO surrogates; loss aggregation modes
* ``stare.objectives``  every method behind one registry: its parameters, loss, controller and hooks
* ``stare.selection``   top-k / quantile / min-max statistics with a micro or global scope
* ``stare.theory``      first-order entropy sensitivity and the advantage x surprisal quadrants
* ``stare.lm``          the packed prompt + response layout and token statistics of a causal LM

Around it, each importing the core and never the reverse: ``stare.env`` (tasks, verifiers, tools,
data, the testbed), ``stare.train`` (the trainer), ``stare.report`` (reads run folders),
``stare.integrations`` (verl and TRL plug-ins).
"""

from .advantages import dr_grpo_advantages, expand_to_tokens, group_advantages, grpo_advantages
from .inert import InertKnobWarning
from .metrics import Stat, StatAccumulator
from .objectives import (
    EntropyBonusController,
    PolicyBatch,
    PolicyLoss,
    StareController,
    StareParams,
    StepData,
    fit_plan,
    get_objective,
    list_objectives,
    make_controller,
    make_params,
    policy_loss,
)
from .stats import TokenStats, token_stats_from_hidden, token_stats_from_logits
from .surrogate import LossNormalizer, aggregate

__version__ = "0.1.0"

__all__ = [
    "EntropyBonusController",
    "InertKnobWarning",
    "LossNormalizer",
    "PolicyBatch",
    "PolicyLoss",
    "Stat",
    "StatAccumulator",
    "StareController",
    "StareParams",
    "StepData",
    "TokenStats",
    "aggregate",
    "dr_grpo_advantages",
    "expand_to_tokens",
    "fit_plan",
    "get_objective",
    "group_advantages",
    "grpo_advantages",
    "list_objectives",
    "make_controller",
    "make_params",
    "policy_loss",
    "token_stats_from_hidden",
    "token_stats_from_logits",
]

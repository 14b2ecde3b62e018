"""stare: entropy-stable RLVR for language models.

The core, importable without anything but torch:

* ``stare.stats``       token statistics (log-prob, entropy, surprisal), chunked, differentiable
* ``stare.advantages``  GRPO / Dr.GRPO / batch-std advantages
* ``stare.surrogate``   clipped, dual-clipped and GSPO surrogates; loss aggregation modes
* ``stare.objectives``  STARE and its peers behind one registry and one signature
* ``stare.selection``   top-k / quantile / min-max statistics with a micro or global scope
* ``stare.control``     STARE's entropy gate and the adaptive entropy coefficient
* ``stare.theory``      first-order entropy sensitivity and the advantage x surprisal quadrants
"""

from .advantages import dr_grpo_advantages, expand_to_tokens, group_advantages, grpo_advantages
from .control import AdaptiveEntropyCoef, StareController
from .inert import InertKnobWarning
from .metrics import Stat, StatAccumulator
from .objectives import PolicyBatch, PolicyLoss, fit_plan, get_objective, list_objectives, make_params, policy_loss
from .stats import TokenStats, token_stats_from_hidden, token_stats_from_logits
from .surrogate import LossNormalizer, aggregate

__version__ = "0.1.0"

__all__ = [
    "AdaptiveEntropyCoef",
    "InertKnobWarning",
    "LossNormalizer",
    "PolicyBatch",
    "PolicyLoss",
    "Stat",
    "StatAccumulator",
    "StareController",
    "TokenStats",
    "aggregate",
    "dr_grpo_advantages",
    "expand_to_tokens",
    "fit_plan",
    "get_objective",
    "group_advantages",
    "grpo_advantages",
    "list_objectives",
    "make_params",
    "policy_loss",
    "token_stats_from_hidden",
    "token_stats_from_logits",
]

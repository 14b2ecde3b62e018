"""The registry: every method by name, with everything that belongs to it.

An ``Objective`` record names a method's parameter dataclass, its loss functions, its controller class
and its step-level hooks (contract.py says when each runs). The trainer and the plug-ins look a method
up here and build, step, checkpoint and log its controller through ``make_controller`` and the
``Controller`` interface, with no method-specific code. ``stare objectives`` prints the registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..checks import unknown_name_error
from .contract import ACTS_AT, Controller, Terms

__all__ = [
    "BUILTIN_INPUTS",
    "Objective",
    "get_objective",
    "initial_state",
    "list_objectives",
    "make_controller",
    "make_params",
    "register_objective",
]

#: Inputs ``needs`` may name besides ``aux`` entries: the per-token entropies (``entropy_grad``: the
#: current entropy with its graph, for terms that train through it) and the reference log-probs.
BUILTIN_INPUTS = ("entropy", "old_entropy", "entropy_grad", "ref_log_prob")

#: Hooks only the stare trainer can run (the plug-ins refuse objectives that have them), and the
#: ``acts_at`` kind each implies.
STEP_HOOKS = {
    "rollout": "ROLLOUT",
    "group_rewards": "UNSUPERVISED-REWARD",
    "shape_rewards": "REWARD-SHAPING",
    "advantages": "ADV",
    "schedule": "UPDATE-SCHEDULE",
    "logit_stats": None,
    "train_stats": None,
}


@dataclass(frozen=True)
class Objective:
    """A registered method. Only ``name``, ``params`` and ``terms`` are required.

    params: frozen dataclass (a ``LossParams`` subclass) whose docstring cites every default.
    terms / fit: the loss (``terms(batch, view, params, state, plan) -> Terms``) and, for methods that
        select tokens, its selection statistics (``fit(view, params, state, group) -> plan``).
    controller: a class built as ``controller(params)`` that satisfies ``contract.Controller``.
    needs: inputs the loss cannot run without: names from ``BUILTIN_INPUTS`` or ``aux`` keys.
    logit_stats / train_stats: ``params -> {name: LogitStat}``, statistics of the full logits computed
        in the old-policy pass (no gradient) or in the training forward (with gradient); each lands in
        ``aux[name]``.
    shape_rewards, advantages, group_rewards, rollout, schedule: the step-level hooks (contract.py).
    step_metrics: ``(data, params, state) -> {name: number}``, what the method did this step, logged with
        it (the trainer calls it once rewards and advantages are final; engines without it skip it).
    acts_at: kinds from ``ACTS_AT``; the kinds implied by the hooks present are added.
    inert_on_policy: ``params -> [(knob, message)]`` of knobs that cannot act when the ratio is 1.
    """

    name: str
    params: type
    terms: Callable[..., Terms]
    fit: Callable[..., Any] | None = None
    controller: type | None = None
    needs: frozenset[str] = frozenset()
    logit_stats: Callable[[Any], Mapping[str, Callable]] | None = None
    train_stats: Callable[[Any], Mapping[str, Callable]] | None = None
    shape_rewards: Callable[..., Any] | None = None
    advantages: Callable[..., Any] | None = None
    group_rewards: Callable[..., Any] | None = None
    rollout: Callable[..., Any] | None = None
    schedule: Callable[[Any], Any] | None = None
    step_metrics: Callable[..., Mapping[str, float]] | None = None
    acts_at: tuple[str, ...] = ()
    inert_on_policy: Callable[[Any], list[tuple[str, str]]] | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (dataclasses.is_dataclass(self.params) and isinstance(self.params, type)):
            raise TypeError(f"objective '{self.name}': params must be a dataclass type")
        object.__setattr__(self, "needs", frozenset(self.needs))
        kinds = list(self.acts_at)
        for hook, kind in STEP_HOOKS.items():
            if kind is not None and getattr(self, hook) is not None and kind not in kinds:
                kinds.append(kind)
        for kind in kinds:
            if kind not in ACTS_AT:
                raise unknown_name_error(f"acts_at kind of objective '{self.name}'", kind, ACTS_AT)
        object.__setattr__(self, "acts_at", tuple(kinds))

    @property
    def summary(self) -> str:
        doc = (self.terms.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def step_hooks(self) -> tuple[str, ...]:
        """The hooks this method has that only the stare trainer runs."""
        return tuple(h for h in STEP_HOOKS if getattr(self, h) is not None)

    @property
    def aux_needs(self) -> frozenset[str]:
        """``needs`` that are ``aux`` keys (provided by the trainer: logit statistics, rollout values)."""
        return self.needs - frozenset(BUILTIN_INPUTS)


_REGISTRY: dict[str, Objective] = {}
_ALIASES: dict[str, str] = {}


def register_objective(objective: Objective) -> Objective:
    """Add ``objective`` to the registry (returns it). Re-registering a name with another record fails,
    so two methods cannot silently shadow each other; registering the same record again is a no-op."""
    for key in (objective.name, *objective.aliases):
        existing = _REGISTRY.get(_ALIASES.get(key, key))
        if existing is not None and existing != objective:
            raise ValueError(f"objective name '{key}' is already registered (to {existing.terms.__qualname__})")
    _REGISTRY[objective.name] = objective
    for alias in objective.aliases:
        _ALIASES[alias] = objective.name
    return objective


def unregister_objective(name: str) -> None:
    """Remove a method and its aliases (tests that register a throwaway method clean up with it)."""
    obj = _REGISTRY.pop(name, None)
    if obj is not None:
        for alias in obj.aliases:
            _ALIASES.pop(alias, None)


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


def make_controller(objective: str | Objective, params: Any = None) -> Controller | None:
    """The method's controller built from its parameters, or None for methods without one."""
    obj = get_objective(objective)
    if obj.controller is None:
        return None
    return obj.controller(make_params(obj, params))


def initial_state(objective: str | Objective, params: Any = None) -> dict:
    """The state a method's functions read before its controller's first update ({} without one)."""
    controller = make_controller(objective, params)
    return {} if controller is None else controller.state()

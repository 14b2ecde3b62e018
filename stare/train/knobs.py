"""Strength knobs of the methods and the objective that holds a knob at an entropy band (docs/results.md).

``KNOBS`` is the table: one entry per method preset, naming the parameter that sets its strength, the
range it may take, the direction in which the parameter raises entropy, and the source of the range. A new
method joins the equal-entropy comparison with one line here.

``register_tuned(objective, knob)`` registers ``tune.<objective>``: the method with its knob driven by
``KnobTuner``, an integral controller in log space. From the first step the batch entropy H reaches the
target (the step at which STARE's gate engages under the same target), each step

    log v <- clamp(log v + direction * rate * clip((target - H) / target, -1, 1), log lo, log hi)

and the method's loss runs with that v; the target is ``tune_target_ratio`` (0.5, as STARE's presets) times
the first step's batch entropy. The method's own controller (Clip-Cov's seed, STARE's gate) keeps running
inside. ``band_preset(method)`` is the preset ``<method>_band`` (``stare methods``): the method's preset
with its knob so held. This controller is ours, not the methods' authors': the integral law is the one
STARE's adaptive W and the Skywork-OR1 entropy coefficient use (a fixed step towards the target), here
proportional to the relative error and in log space, since the knobs span orders of magnitude; the rate
(0.3 per step at a relative error of 1) was chosen so that a knob can cross its range within about 50 steps.

Methods that hold a target by their own controller (STARE's gate, the adaptive entropy bonus) have
``own_controller`` entries: their band is their target.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..objectives import Objective, get_objective, register_objective
from ..objectives.contract import ControllerState, StepData, check_entropy_target, finite_entropy, resolve_target

__all__ = ["BAND_SUFFIX", "KNOBS", "Knob", "KnobTuner", "band_preset", "register_tuned", "tuned_name"]

TUNE_PREFIX = "tune."
BAND_SUFFIX = "_band"
DEFAULT_RATE = 0.3


@dataclass(frozen=True)
class Knob:
    """A method's strength: ``param`` of its objective, searched in [lo, hi] (log scale); ``direction``
    +1 if a larger value raises entropy, -1 if a smaller one does; ``start`` None: the method's default.
    ``own_controller``: the method holds a target itself (``param`` is its target ratio); no search."""

    param: str
    lo: float = 0.0
    hi: float = 0.0
    direction: int = 1
    start: float | None = None
    own_controller: bool = False
    note: str = ""


#: method preset -> its knob. Ranges: from the method's default up to where it acts on most tokens.
KNOBS: dict[str, Knob] = {
    "stare_o1": Knob("target_entropy_ratio", own_controller=True, note="the gate holds the target; W set per "
                     "testbed (docs/testbed.md)"),
    "stare_c2": Knob("target_entropy_ratio", own_controller=True, note="as stare_o1"),
    "adaptive_entropy": Knob("target_entropy_ratio", own_controller=True, note="Skywork-OR1 adaptive coefficient"),
    "entropy_bonus": Knob("entropy_coeff", 1e-4, 1.0, +1, note="verl's former default 1e-3 to 1"),
    "clip_cov": Knob("clip_cov_ratio", 2e-4, 0.5, +1, note="verl's 2e-4 up to half of the tokens"),
    "kl_cov": Knob("kl_cov_ratio", 2e-3, 1.0, +1, note="the 7B recipe's 2e-3 up to every token; inert on-policy"),
    "steer": Knob("token_weight_min", 0.005, 0.8, -1, note="the scripts' floor 0.8 down to 0.005"),
    "forking": Knob("top_entropy_ratio", 0.005, 1.0, -1, note="the paper's 20% down to 0.5% of the tokens"),
    "lp_reg": Knob("rho_neg", 0.01, 1.0, +1, note="the 14B script's 1% of the negative tokens up to all of them"),
    "siren": Knob("entropy_coeff", 0.005, 5.0, +1, note="the script's 0.005 up to 1000x; the penalty pulls toward "
                  "the first step's selective entropy, so it raises entropy only while below it"),
}

# Not in the table: methods whose strength acts through a step-level hook (the advantage hooks of EMPG, GTPO,
# GRPO-S, HAPO, SEED-GRPO; the rollouts of CURE and AEPO), which register_tuned refuses, and methods whose knob
# has no single entropy direction (AR's and Lopti's probability reweighting, AEPO's entropy-scaled advantages,
# the clip-range methods BAPO, ASPO, DPPO).

def tuned_name(objective: str) -> str:
    return TUNE_PREFIX + get_objective(objective).name


# ---------------------------------------------------------------------------------- the tuning objective


@dataclass
class KnobTuner(ControllerState):
    """The knob's integral controller around the method's own controller (module docstring).
    ``tune_engage_step``: also engage from this step when the entropy has not reached the target."""

    params: Any = None
    value: float = math.nan
    target_entropy: float = math.nan
    engaged: bool = False
    last_entropy: float = math.nan
    skipped_updates: int = 0
    inner_state: dict = field(default_factory=dict)  # the wrapped controller's state_dict

    def __post_init__(self) -> None:
        p = self.params
        if math.isnan(self.value):
            self.value = float(getattr(p, p.tune_knob))
        if math.isnan(self.target_entropy) and p.tune_target_ratio is None:
            self.target_entropy = p.tune_target
        self._inner = _inner_controller(p, self.value)

    def update(self, data: StepData) -> None:
        if self._inner is not None:
            self._inner.update(data)
        h = finite_entropy(self, data)
        if h is None:
            return
        p = self.params
        self.last_entropy = h
        self.target_entropy = resolve_target(self.target_entropy, p.tune_target_ratio, h)
        self.engaged = self.engaged or h <= self.target_entropy or (
            p.tune_engage_step is not None and data.step >= p.tune_engage_step)
        if self.engaged and self.target_entropy > 0:
            err = max(-1.0, min(1.0, (self.target_entropy - h) / self.target_entropy))
            log_v = math.log(self.value) + p.tune_direction * p.tune_rate * err
            self.value = math.exp(min(math.log(p.tune_hi), max(math.log(p.tune_lo), log_v)))

    def state(self) -> dict:
        p = self.params
        inner = {} if self._inner is None else dict(self._inner.state())
        if p.tune_knob in inner:  # a knob the inner controller carries in its state (W, the entropy coefficient)
            inner[p.tune_knob] = self.value
        return {**inner, "tune_value": self.value}

    def metrics(self) -> dict[str, float]:
        out = {} if self._inner is None else dict(self._inner.metrics())
        return {**out, "tune/value": self.value, "tune/target_entropy": self.target_entropy,
                "tune/engaged": float(self.engaged)}

    def state_dict(self) -> dict:
        d = super().state_dict()
        d["inner_state"] = {} if self._inner is None else self._inner.state_dict()
        return d

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self._inner is not None:
            self._inner.load_state_dict(self.inner_state)


def _inner_params(p, value: float | None = None):
    """The wrapped method's parameters, with the knob at ``value`` (default: the parameter's)."""
    inner = get_objective(p.tune_inner)
    kw = {f.name: getattr(p, f.name) for f in dataclasses.fields(inner.params)}
    if value is not None:
        kw[p.tune_knob] = value
    return inner.params(**kw)


def _inner_controller(p, value: float):
    inner = get_objective(p.tune_inner)
    return None if inner.controller is None else inner.controller(_inner_params(p, value))


def _split(state: dict):
    return float(state["tune_value"]), {k: v for k, v in state.items() if k != "tune_value"}


def register_tuned(objective: str, knob: Knob) -> Objective:
    """Register (once) ``tune.<objective>``: the method with its knob under ``KnobTuner`` (module
    docstring); ``knob`` gives the defaults of the tuning parameters. Step-level hooks other than the
    loss's are refused: their knob could not follow."""
    inner = get_objective(objective)
    name = TUNE_PREFIX + inner.name
    try:
        return get_objective(name)
    except ValueError:
        pass
    hooks = [h for h in inner.step_hooks if h not in ("logit_stats", "train_stats")]
    if hooks:
        raise ValueError(f"objective '{inner.name}' has step-level hooks {hooks}; its knob cannot be tuned online "
                         "(calibrate it with fixed-strength runs instead)")

    def check(self) -> None:
        inner.params.__post_init__(self)
        if self.tune_knob not in {f.name for f in dataclasses.fields(inner.params)}:
            raise ValueError(f"tune_knob '{self.tune_knob}' is not a parameter of '{inner.name}'")
        check_entropy_target(self.tune_target, self.tune_target_ratio)
        if not 0 < self.tune_lo <= self.tune_hi:
            raise ValueError(f"need 0 < tune_lo <= tune_hi, got {self.tune_lo}, {self.tune_hi}")
        if self.tune_direction not in (1, -1):
            raise ValueError(f"tune_direction must be 1 or -1, got {self.tune_direction}")

    params = dataclasses.make_dataclass(
        f"Tuned{inner.params.__name__}",
        [("tune_inner", str, field(default=inner.name)), ("tune_knob", str, field(default=knob.param)),
         ("tune_lo", float, field(default=knob.lo)), ("tune_hi", float, field(default=knob.hi)),
         ("tune_direction", int, field(default=knob.direction)), ("tune_rate", float, field(default=DEFAULT_RATE)),
         ("tune_target", float | None, field(default=None)), ("tune_target_ratio", float | None, field(default=0.5)),
         ("tune_engage_step", int | None, field(default=None))],
        bases=(inner.params,), frozen=True, namespace={"__post_init__": check,
                                                       "__doc__": f"{inner.params.__name__} with a tuned knob "
                                                                  "(stare.train.calibrate)."})

    def terms(batch, view, p, state, plan):
        value, inner_state = _split(state)
        return inner.terms(batch, view, _inner_params(p, value), inner_state, plan)

    terms.__doc__ = f"{inner.name} with its knob tuned online to an entropy target (stare.train.calibrate)."

    def fit(view, p, state, group):
        value, inner_state = _split(state)
        return inner.fit(view, _inner_params(p, value), inner_state, group)

    inert = None
    if inner.inert_on_policy is not None:
        def inert(p):
            return inner.inert_on_policy(_inner_params(p))

    return register_objective(Objective(
        name, params=params, terms=terms, fit=None if inner.fit is None else fit, controller=KnobTuner,
        needs=inner.needs, logit_stats=inner.logit_stats, train_stats=inner.train_stats,
        acts_at=tuple(dict.fromkeys((*inner.acts_at, "CTRL"))), inert_on_policy=inert))


def band_preset(method: str, base: dict) -> dict:
    """The preset ``<method>_band`` from ``method``'s preset ``base``: its objective wrapped in
    ``tune.<objective>`` with the knob of ``KNOBS[method]`` held at the band (the objective is registered)."""
    import copy

    knob = KNOBS[method]
    preset = copy.deepcopy(base)
    objective = preset["algorithm"]["objective"]
    register_tuned(objective, knob)
    preset["algorithm"]["objective"] = tuned_name(objective)
    preset["algorithm"]["params"] = {**preset["algorithm"].get("params", {}), "tune_knob": knob.param,
                                     "tune_lo": knob.lo, "tune_hi": knob.hi, "tune_direction": knob.direction,
                                     "tune_rate": DEFAULT_RATE, "tune_target_ratio": 0.5}
    return preset

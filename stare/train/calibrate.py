"""Equal-entropy calibration: the strength of each method's knob that holds the same entropy band.

    stare calibrate CONFIG.yaml --methods clip_cov steer forking --out runs/cal [key=value ...]
    stare compare runs/cal/calibrated.yaml --methods grpo_ds stare_o1 adaptive_entropy clip_cov ...

``KNOBS`` is the table: one entry per method preset, naming the parameter that sets its strength, the
range searched, the direction in which the parameter raises entropy, and the source of the range. A new
method joins the comparison with one line here.

The search is one closed-loop *tuning run* per method (the comparison's config, seed 0): the method is
wrapped in the objective ``tune.<objective>``, whose controller moves the knob in log space, as an
integral controller does. From the first step the batch entropy H reaches the target (as STARE's gate
engages at that step), each step

    log v <- clamp(log v + direction * rate * clip((target - H) / target, -1, 1), log lo, log hi)

and the method's loss runs with that v. The target is STARE's band: ``target_entropy_ratio`` (0.5) times
the first step's batch entropy. The calibrated strength is the geometric mean of v over the last
``tail`` (half) of the run; the comparison then runs each method at that *fixed* value, so what is
compared is the published method at one strength, not our controller. A knob that sits at a bound of
its range for most of that tail cannot reach the band (``reached: false`` in ``calibration.json``).

Methods that hold a band by their own controller need no search: STARE's gate and the adaptive entropy
bonus take the same ``target_entropy_ratio`` (``KNOBS`` entries with ``own_controller``).

This is our procedure, not a published one; the integral law is the one STARE's adaptive W and the
Skywork-OR1 entropy coefficient use (a fixed step towards the target, here proportional to the relative
error and in log space, since the knobs span orders of magnitude).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..objectives import Objective, get_objective, register_objective
from ..objectives.contract import ControllerState, StepData, check_entropy_target, finite_entropy, resolve_target

__all__ = ["KNOBS", "Knob", "calibrate", "calibrated_value", "register_tuned", "tuned_name"]


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
}

TUNE_PREFIX = "tune."


def tuned_name(objective: str) -> str:
    return TUNE_PREFIX + get_objective(objective).name


# ---------------------------------------------------------------------------------- the tuning objective


@dataclass
class KnobTuner(ControllerState):
    """The knob's integral controller around the method's own controller (module docstring)."""

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
        self.engaged = self.engaged or h <= self.target_entropy
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
         ("tune_direction", int, field(default=knob.direction)), ("tune_rate", float, field(default=0.05)),
         ("tune_target", float | None, field(default=None)), ("tune_target_ratio", float | None, field(default=0.5))],
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


# -------------------------------------------------------------------------------------------- search


def tune_overrides(method: str, config_path: str | None, overrides: Sequence[str] = ()) -> list[str]:
    """The overrides that turn ``method``'s run into its tuning run (the objective is registered)."""
    from .config import load_config

    if method not in KNOBS:
        raise ValueError(f"no knob for method '{method}' in stare.train.calibrate.KNOBS; known: {', '.join(KNOBS)}")
    knob = KNOBS[method]
    if knob.own_controller:
        raise ValueError(f"method '{method}' holds its target with its own controller; it needs no tuning run")
    cfg = load_config(config_path, [o for o in overrides if "tune_" not in o] + [f"method={method}"])
    register_tuned(cfg.algorithm.objective, knob)
    out = [f"algorithm.objective={tuned_name(cfg.algorithm.objective)}", f"algorithm.params.tune_knob={knob.param}",
           f"algorithm.params.tune_lo={knob.lo}", f"algorithm.params.tune_hi={knob.hi}",
           f"algorithm.params.tune_direction={knob.direction}"]
    if knob.start is not None:
        out.append(f"algorithm.params.{knob.param}={knob.start}")
    return out


def _tune_one(config_path: str | None, overrides: list[str], spec_json: str) -> None:
    """Process target of ``run_grid`` for a tuning run: register the wrapper, then train as usual."""
    from .scheduler import _run_one

    spec = json.loads(spec_json)
    extra = tune_overrides(spec["method"], config_path, overrides)
    _run_one(config_path, list(overrides) + extra, spec_json)


def calibrated_value(records: Sequence[dict], knob: Knob, tail: float = 0.5) -> dict:
    """The calibrated strength from a tuning run's records: the geometric mean of the knob over the last
    ``tail`` of the steps, whether the tuner engaged, the share of those steps at a bound of the range,
    and the mean batch entropy over them against the target."""
    rows = [r for r in records if r.get("tune/value") is not None]
    if not rows:
        raise ValueError("no 'tune/value' in the records: not a tuning run")
    part = rows[int(len(rows) * (1 - tail)):]
    values = [r["tune/value"] for r in part]
    geo = math.exp(sum(math.log(v) for v in values) / len(values))
    at_bound = sum(v <= knob.lo * 1.001 or v >= knob.hi * 0.999 for v in values) / len(values)
    entropy = [r["actor/entropy"] for r in part if r.get("actor/entropy") is not None]
    target = part[-1].get("tune/target_entropy")
    engaged = any(r.get("tune/engaged") for r in rows)
    mean_h = sum(entropy) / len(entropy) if entropy else math.nan
    return {"param": knob.param, "value": geo, "engaged": engaged, "at_bound_frac": at_bound,
            "reached": bool(engaged and at_bound < 0.5), "tail_mean_entropy": mean_h, "target_entropy": target,
            "tail_entropy_over_target": mean_h / target if target else math.nan, "tail_steps": len(part)}


def calibrate(config_path: str, methods: Sequence[str], out: str | Path, overrides: Sequence[str] = (), *,
              seed: int = 0, workers: int | None = None, tail: float = 0.5, target_ratio: float = 0.5,
              console=None) -> dict:
    """Tuning runs of ``methods`` (seed ``seed``) under ``out/tune``, then ``out/calibration.json`` and
    ``out/calibrated.yaml``: the config with each reached method's knob fixed at its calibrated value
    (``method_overrides``), and every own-controller method's target at the tuning target."""
    import yaml

    from ..report.runs import plan_runs, read_metrics
    from .config import load_config
    from .scheduler import run_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tuned = [m for m in methods if not KNOBS.get(m, Knob("")).own_controller]
    for m in methods:
        if m not in KNOBS:
            raise ValueError(f"no knob for method '{m}' in stare.train.calibrate.KNOBS; known: {', '.join(KNOBS)}")
    for m in tuned:
        tune_overrides(m, config_path, overrides)  # validates before any compute
    specs = plan_runs(out / "tune", tuned, [seed])
    overrides = [*overrides, f"algorithm.params.tune_target_ratio={target_ratio}"] if tuned else list(overrides)
    steps = load_config(config_path, [o for o in overrides if "tune_" not in o]).trainer.steps
    t0 = time.time()
    failed = run_grid(config_path, specs, list(overrides), workers=workers, total_steps=steps, console=console,
                      target=_tune_one)
    if failed:
        raise RuntimeError(f"tuning runs failed: {[s.method for s in failed]}; see their folders under {out / 'tune'}")
    base_overrides = [o for o in overrides if "tune_" not in o]
    result: dict = {"config": str(config_path), "overrides": base_overrides, "seed": seed, "tail": tail,
                    "target_entropy_ratio": target_ratio,
                    "seconds": time.time() - t0, "methods": {}}
    for spec in specs:
        knob = KNOBS[spec.method]
        cal = calibrated_value(read_metrics(spec.out_dir / "metrics.jsonl"), knob, tail)
        result["methods"][spec.method] = {**cal, "lo": knob.lo, "hi": knob.hi, "direction": knob.direction,
                                          "note": knob.note}
    for m in methods:
        if KNOBS[m].own_controller:
            result["methods"][m] = {"param": KNOBS[m].param, "own_controller": True, "note": KNOBS[m].note}
    (out / "calibration.json").write_text(json.dumps(result, indent=1))
    data = yaml.safe_load(Path(config_path).read_text()) or {}
    for k, v in _override_dict(base_overrides).items():
        data = _merge(data, k, v)
    per = data.setdefault("method_overrides", {})
    for m, cal in result["methods"].items():
        params = per.setdefault(m, {}).setdefault("algorithm", {}).setdefault("params", {})
        if cal.get("own_controller"):
            params[cal["param"]] = target_ratio
        elif cal["reached"]:
            params[cal["param"]] = float(f"{cal['value']:.4g}")
    header = (f"# Equal-entropy calibration of {', '.join(methods)} (stare calibrate, seed {seed}); see calibration.json.\n"
              f"# Base config: {config_path}; overrides: {' '.join(base_overrides) or 'none'}\n")
    (out / "calibrated.yaml").write_text(header + yaml.safe_dump(data, sort_keys=False))
    return result


def _override_dict(items: Sequence[str]) -> dict:
    return dict(item.split("=", 1) for item in items)


def _merge(data: dict, dotted: str, raw: str) -> dict:
    import yaml

    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(raw)
    return data

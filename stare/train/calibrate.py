"""Equal-entropy calibration: the fixed strength of each method's knob that holds STARE's entropy band.

    stare calibrate CONFIG.yaml --methods clip_cov steer forking --seeds 0 --out runs/cmp [key=value ...]
    stare compare runs/cmp/calibrated.yaml --methods clip_cov steer forking --seeds 0 1 2 --out runs/cmp/fixed

For each method it trains the preset ``<method>_band`` (``stare.train.knobs``: the method with its knob held
at the band by an integral controller) on the given seeds, in ``OUT/<method>_band/seed_<s>``, the layout of
``stare compare`` (runs already there are reused, so pointing ``--out`` at a comparison that includes the
band presets costs nothing more). The calibrated strength of a run is the geometric mean of its knob over
the last ``tail`` (a third) of the steps; over seeds, the geometric mean of those. A knob that sits at a
bound of its range for half of that tail, or whose controller never engaged (the method keeps entropy
above the band at its default), did not reach the band (``reached: false``). Writes
``OUT/calibration.json`` and ``OUT/calibrated.yaml``: the config with each reached method's knob fixed at
its calibrated value (``method_overrides``).

This is our procedure, not a published one: it answers "which fixed strength would have held the band",
read off the controlled runs; whether that fixed strength does hold it is checked by training at it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

from .knobs import BAND_SUFFIX, KNOBS, Knob

__all__ = ["calibrate", "calibrated_value"]


def calibrated_value(records: Sequence[dict], knob: Knob, tail: float = 1 / 3) -> dict:
    """The calibrated strength from a band run's records: the geometric mean of the knob over the last
    ``tail`` of the steps, whether the controller engaged, the share of those steps at a bound of the
    range, and the mean batch entropy over them against the target."""
    rows = [r for r in records if r.get("tune/value") is not None]
    if not rows:
        raise ValueError("no 'tune/value' in the records: not a run of a <method>_band preset")
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
              seeds: Sequence[int] = (0,), workers: int | None = None, tail: float = 1 / 3, console=None) -> dict:
    """Band runs of ``methods`` on ``seeds`` under ``out`` (reused when present), then
    ``out/calibration.json`` and ``out/calibrated.yaml`` (module docstring)."""
    import yaml

    from ..report.runs import plan_runs, read_metrics
    from .config import load_config
    from .scheduler import run_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for m in methods:
        if m not in KNOBS:
            raise ValueError(f"no knob for method '{m}' in stare.train.knobs.KNOBS; known: {', '.join(KNOBS)}")
        if KNOBS[m].own_controller:
            raise ValueError(f"method '{m}' holds its target with its own controller; it needs no calibration")
        load_config(config_path, list(overrides) + [f"method={m}{BAND_SUFFIX}"])  # validates before any compute
    specs = plan_runs(out, [m + BAND_SUFFIX for m in methods], seeds)
    steps = load_config(config_path, list(overrides)).trainer.steps
    t0 = time.time()
    failed = run_grid(config_path, specs, list(overrides), workers=workers, total_steps=steps, console=console)
    if failed:
        raise RuntimeError(f"band runs failed: {[f'{s.method}/seed_{s.seed}' for s in failed]}; see their folders")
    result: dict = {"config": _shown(config_path), "overrides": list(overrides), "seeds": list(seeds), "tail": tail,
                    "seconds": time.time() - t0, "methods": {}}
    for m in methods:
        knob = KNOBS[m]
        runs = {s.seed: calibrated_value(read_metrics(s.out_dir / "metrics.jsonl"), knob, tail)
                for s in specs if s.method == m + BAND_SUFFIX}
        values = [r["value"] for r in runs.values()]
        result["methods"][m] = {
            "param": knob.param, "value": math.exp(sum(math.log(v) for v in values) / len(values)),
            "reached": all(r["reached"] for r in runs.values()), "lo": knob.lo, "hi": knob.hi,
            "direction": knob.direction, "note": knob.note, "per_seed": runs}
    (out / "calibration.json").write_text(json.dumps(result, indent=1))
    data = yaml.safe_load(Path(config_path).read_text()) or {}
    for item in overrides:
        key, raw = item.split("=", 1)
        node = data
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[key.split(".")[-1]] = yaml.safe_load(raw)
    per = data.setdefault("method_overrides", {})
    for m, cal in result["methods"].items():
        if cal["reached"]:
            per.setdefault(m, {}).setdefault("algorithm", {}).setdefault("params", {})[cal["param"]] = float(
                f"{cal['value']:.4g}")
    header = (f"# Fixed strengths read off the <method>_band runs of {', '.join(methods)} (stare calibrate, seeds "
              f"{', '.join(map(str, seeds))}); see calibration.json.\n"
              f"# Base config: {_shown(config_path)}; overrides: {' '.join(overrides) or 'none'}\n")
    (out / "calibrated.yaml").write_text(header + yaml.safe_dump(data, sort_keys=False))
    return result


def _shown(path) -> str:
    """A config's path as the docs name it: relative to the repository for a packaged config, else as given."""
    p = Path(path).resolve()
    root = Path(__file__).resolve().parents[2]
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(path)

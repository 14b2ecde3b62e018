"""``stare compare``: run methods x seeds, then aggregate them honestly.

Running. Each (method, seed) trains in its own process (one torch thread; as many at once as
``workers``, default the number of cores) into ``OUT/<method>/seed_<s>``. A finished run leaves a
``DONE`` file and is skipped next time; an unfinished one resumes from its last checkpoint, so an
interrupted comparison continues where it stopped.

Aggregating (reads only ``metrics.jsonl`` files). Per method and step: the mean over seeds and a 95%
confidence band (Student t with n - 1 degrees of freedom). Per run, final values: batch entropy averaged
over the last ``tail`` steps, the last held-out evaluation (accuracy, pass@k), response length. Per
method against the baseline: Welch's t-test on the per-seed final values (two-sided; with three seeds it
only flags large effects, and says nothing when it does not).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["RunSpec", "plan_runs", "run_grid", "aggregate", "band_adherence", "FINAL_METRICS"]

CURVE_METRICS = ("actor/entropy", "critic/acc/mean", "critic/score/mean", "response_length/mean",
                 "batch/full_solve_ratio", "batch/zero_solve_ratio", "batch/reflection_per_response", "stare/gate_on",
                 "val/acc/mean@", "val/pass@1", "val/pass@max", "stare/target_entropy", "diag/predicted_dH", "diag/predicted_dH_param", "diag/realised_dH",
                 "diag/quadrant/pos_high_surprisal/frac", "diag/quadrant/pos_low_surprisal/frac",
                 "diag/quadrant/neg_high_surprisal/frac", "diag/quadrant/neg_low_surprisal/frac")
FINAL_METRICS = ("final_entropy", "heldout_acc", "response_length", "entropy_ratio")


@dataclass(frozen=True)
class RunSpec:
    method: str
    seed: int
    out_dir: Path

    @property
    def done(self) -> bool:
        return (self.out_dir / "DONE").exists()


def plan_runs(out: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[RunSpec]:
    return [RunSpec(m, s, Path(out) / m / f"seed_{s}") for m in methods for s in seeds]


def _run_one(config_path: str | None, overrides: list[str], spec_json: str) -> None:
    import warnings

    from ..inert import InertKnobWarning
    from ..train.config import load_config
    from ..train.trainer import Trainer

    warnings.simplefilter("ignore", InertKnobWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    spec = json.loads(spec_json)
    cfg = load_config(config_path, list(overrides) + [
        f"method={spec['method']}", f"seed={spec['seed']}", f"output_dir={spec['out_dir']}", "trainer.threads=1",
        "trainer.resume=true", "logging.progress=false"])
    Trainer(cfg, log=lambda m: None).train()
    (Path(spec["out_dir"]) / "DONE").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))


def _lines(path: Path) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def run_grid(config_path: str | None, specs: Sequence[RunSpec], overrides: Sequence[str] = (), workers: int | None = None,
             total_steps: int | None = None, console=None) -> list[RunSpec]:
    """Train every unfinished run; returns the runs that failed (their folders keep their logs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    workers = workers or max(1, os.cpu_count() or 1)
    todo = [s for s in specs if not s.done]
    ctx = mp.get_context("spawn")
    failed: list[RunSpec] = []
    running: dict[RunSpec, mp.Process] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False) as progress:
        overall = progress.add_task(f"{len(specs)} runs ({len(specs) - len(todo)} already done)", total=len(specs),
                                    completed=len(specs) - len(todo))
        bars = {}
        while todo or running:
            while todo and len(running) < workers:
                spec = todo.pop(0)
                spec.out_dir.mkdir(parents=True, exist_ok=True)
                p = ctx.Process(target=_run_one, args=(config_path, list(overrides), json.dumps(
                    {"method": spec.method, "seed": spec.seed, "out_dir": str(spec.out_dir)})))
                p.start()
                running[spec] = p
                bars[spec] = progress.add_task(f"  {spec.method} seed {spec.seed}", total=total_steps)
            for spec, p in list(running.items()):
                progress.update(bars[spec], completed=_lines(spec.out_dir / "metrics.jsonl"))
                if not p.is_alive():
                    p.join()
                    if p.exitcode != 0 or not spec.done:
                        failed.append(spec)
                    progress.update(overall, advance=1)
                    progress.remove_task(bars[spec])
                    del running[spec]
            time.sleep(0.5)
    return failed


# ------------------------------------------------------------------------------------------ aggregation


def _read(path: Path) -> list[dict]:
    from ..train.logging import read_metrics

    return read_metrics(path) if path.exists() else []


def _series(records: list[dict], key: str) -> dict[int, float]:
    """``{step: value}``; a key ending in ``@`` matches the metric with that prefix (``val/acc/mean@``),
    ``val/pass@max`` the pass@k with the largest k of each record."""
    out = {}
    for r in records:
        if key == "val/pass@max":
            ks = [n for n in r if n.startswith("val/pass@")]
            k = max(ks, key=lambda n: int(n.rsplit("@", 1)[1])) if ks else None
        elif key.endswith("@"):
            k = next((n for n in r if n.startswith(key)), None)
        else:
            k = key
        if k is not None and r.get(k) is not None:
            out[r["step"]] = float(r[k])
    return out


def _smooth(series: dict[int, float], window: int) -> dict[int, float]:
    """Trailing moving average over the last ``window`` points (per seed, before averaging seeds)."""
    steps = sorted(series)
    vals = [series[s] for s in steps]
    out = {}
    for i, s in enumerate(steps):
        part = vals[max(0, i - window + 1): i + 1]
        out[s] = sum(part) / len(part)
    return out


def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def band_adherence(records: list[dict], band: float = 0.35, window: int = 10) -> dict[str, float]:
    """How well a gated run holds its target: from the first step the gate is on to the end, the share
    of steps whose batch entropy lies within ``target * (1 +- band)``, the largest relative deviation of
    a single step, and that of the ``window``-step moving average. Empty when the run has no gate or it
    never engaged."""
    rows = [r for r in records if r.get("stare/gate_on") is not None and r.get("stare/target_entropy")
            and r.get("actor/entropy") is not None]
    first = next((i for i, r in enumerate(rows) if r["stare/gate_on"] > 0), None)
    if first is None:
        return {}
    dev = [r["actor/entropy"] / r["stare/target_entropy"] - 1.0 for r in rows[first:]]
    smooth = [sum(dev[max(0, i - window + 1): i + 1]) / len(dev[max(0, i - window + 1): i + 1])
              for i in range(len(dev))]
    return {"gate_first_step": float(rows[first]["step"]) if "step" in rows[first] else float(first + 1),
            "band_frac": sum(abs(d) <= band for d in dev) / len(dev),
            "band_max_dev": max(abs(d) for d in dev),
            "band_max_dev_smoothed": max(abs(d) for d in smooth)}


def final_values(records: list[dict], tail: int = 10) -> dict[str, float]:
    ent = [r["actor/entropy"] for r in records if r.get("actor/entropy") is not None]
    out: dict[str, float] = {}
    if ent:
        out["initial_entropy"] = ent[0]
        out["final_entropy"] = sum(ent[-tail:]) / len(ent[-tail:])
        out["entropy_ratio"] = ent[0] / out["final_entropy"] if out["final_entropy"] > 0 else math.inf
    out.update(band_adherence(records))
    lengths = [r["response_length/mean"] for r in records if r.get("response_length/mean") is not None]
    if lengths:
        out["response_length"] = sum(lengths[-tail:]) / len(lengths[-tail:])
    pairs = [(r["diag/predicted_dH"], r["diag/realised_dH"]) for r in records
             if r.get("diag/predicted_dH") is not None and r.get("diag/realised_dH") is not None]
    if len(pairs) >= 3:
        out["pred_real_corr"] = _pearson([p for p, _ in pairs], [q for _, q in pairs])
    pairs = [(r["diag/predicted_dH_param"], r["diag/realised_dH"]) for r in records
             if r.get("diag/predicted_dH_param") is not None and r.get("diag/realised_dH") is not None]
    if len(pairs) >= 3:
        out["pred_param_real_corr"] = _pearson([p for p, _ in pairs], [q for _, q in pairs])
    evals = [r for r in records if any(k.startswith("val/acc/mean@") for k in r)]
    if evals:
        last = evals[-1]
        for k, v in last.items():
            if k.startswith("val/acc/mean@"):
                out["heldout_acc"] = v
            elif k.startswith("val/pass@"):
                out[k[4:]] = v
    return out


def aggregate(specs: Sequence[RunSpec], baseline: str | None = None, tail: int = 10, smooth: int = 10) -> dict:
    """Curves (mean, CI per step), final values per run, and per-method summaries with Welch tests.

    Per-step curves are smoothed per seed with a ``smooth``-step trailing moving average before the mean
    and band over seeds are taken (held-out evaluations and the gate state are not smoothed); final
    values use the raw records."""
    from scipy import stats

    by_method: dict[str, list[RunSpec]] = {}
    for s in specs:
        by_method.setdefault(s.method, []).append(s)
    result = {"methods": list(by_method), "baseline": baseline, "smooth": smooth, "curves": {}, "runs": {},
              "summary": {}}
    for method, runs in by_method.items():
        records = {r.seed: _read(r.out_dir / "metrics.jsonl") for r in runs}
        records = {k: v for k, v in records.items() if v}
        result["runs"][method] = {seed: final_values(recs, tail) for seed, recs in records.items()}
        curves = {}
        for key in CURVE_METRICS:
            per_seed = [_series(recs, key) for recs in records.values()]
            if smooth > 1 and not key.startswith(("val/", "stare/")):
                per_seed = [_smooth(ps, smooth) for ps in per_seed]
            steps = sorted(set().union(*[set(s) for s in per_seed])) if per_seed else []
            rows = []
            for st in steps:
                vals = [s[st] for s in per_seed if st in s]
                m, ci = _mean_ci(vals)
                rows.append((st, m, ci, len(vals)))
            if rows:
                curves[key] = rows
        result["curves"][method] = curves
    for method, runs in result["runs"].items():
        summary = {}
        keys = sorted({k for v in runs.values() for k in v})
        for k in keys:
            vals = [v[k] for v in runs.values() if k in v and math.isfinite(v[k])]
            if not vals:
                continue
            m, ci = _mean_ci(vals)
            entry = {"mean": m, "ci95": ci, "n": len(vals), "values": vals}
            if baseline and method != baseline and baseline in result["runs"]:
                base = [v[k] for v in result["runs"][baseline].values() if k in v and math.isfinite(v[k])]
                if len(vals) >= 2 and len(base) >= 2:
                    test = stats.ttest_ind(vals, base, equal_var=False)
                    entry["p_vs_baseline"] = float(test.pvalue) if math.isfinite(test.pvalue) else None
            summary[k] = entry
        result["summary"][method] = summary
    return result

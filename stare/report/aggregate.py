"""Aggregating runs honestly: per-step curves over seeds, final values per run, tests against a baseline.

Reads only ``metrics.jsonl`` files (``stare.report.runs``). Per method and step: the mean over seeds and a
95% confidence band (Student t with n - 1 degrees of freedom), after a per-seed trailing moving
average. Per run, final values: batch entropy averaged over the last ``tail`` steps, the last held-out
evaluation (accuracy, pass@k), response length, band adherence of gated runs, predicted vs realised
entropy change of diagnostics runs. Per method against the baseline: Welch's t-test on the per-seed
final values (two-sided; with three seeds it only flags large effects, and says nothing when it does not).
"""

from __future__ import annotations

import math
from typing import Sequence

from .runs import RunSpec, read_metrics, series

__all__ = ["CURVE_METRICS", "FINAL_METRICS", "aggregate", "band_adherence", "final_values", "mean_ci", "pass_at_k_curves",
           "pearson", "sources_of"]

CURVE_METRICS = ("actor/entropy", "critic/acc/mean", "critic/score/mean", "response_length/mean",
                 "batch/full_solve_ratio", "batch/zero_solve_ratio", "batch/reflection_per_response", "stare/gate_on",
                 "val/acc/mean@", "val/pass@1", "val/pass@max", "stare/target_entropy", "diag/predicted_dH", "diag/predicted_dH_param", "diag/realised_dH",
                 "diag/quadrant/pos_high_surprisal/frac", "diag/quadrant/pos_low_surprisal/frac",
                 "diag/quadrant/neg_high_surprisal/frac", "diag/quadrant/neg_low_surprisal/frac")
FINAL_METRICS = ("final_entropy", "heldout_acc", "response_length", "entropy_ratio")


def _smooth(series: dict[int, float], window: int) -> dict[int, float]:
    """Trailing moving average over the last ``window`` points (per seed, before averaging seeds)."""
    steps = sorted(series)
    vals = [series[s] for s in steps]
    out = {}
    for i, s in enumerate(steps):
        part = vals[max(0, i - window + 1): i + 1]
        out[s] = sum(part) / len(part)
    return out


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
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
        out["pred_real_corr"] = pearson([p for p, _ in pairs], [q for _, q in pairs])
    pairs = [(r["diag/predicted_dH_param"], r["diag/realised_dH"]) for r in records
             if r.get("diag/predicted_dH_param") is not None and r.get("diag/realised_dH") is not None]
    if len(pairs) >= 3:
        out["pred_param_real_corr"] = pearson([p for p, _ in pairs], [q for _, q in pairs])
    evals = [r for r in records if any(k.startswith("val/acc/mean@") for k in r)]
    if evals:
        last = evals[-1]
        for k, v in last.items():
            if k.startswith("val/acc/mean@"):
                out["heldout_acc"] = v
            elif k.startswith("val/pass@"):
                out[k[4:]] = v
            elif k.startswith("val/") and k.count("/") >= 2:  # per data source: val/<source>/<metric>
                source, metric = k[4:].split("/", 1)
                if metric.startswith("acc/mean@"):
                    out[f"{source}/heldout_acc"] = v
                elif metric.startswith("pass@") and metric[5:].isdigit():
                    out[f"{source}/{metric}"] = v
    return out


def sources_of(keys) -> list[str]:
    """The data sources named by per-source keys (``<source>/heldout_acc``, ``<source>/pass@k``), sorted."""
    return sorted({k.split("/", 1)[0] for k in keys if "/" in k and k.split("/", 1)[1].startswith(("heldout_acc", "pass@"))})


def pass_at_k_curves(summary: dict) -> dict:
    """``{source: {method: [(k, mean, ci95, n), ...]}}`` from per-method summaries (``aggregate``'s
    ``summary``); source ``all`` is every held-out prompt, the others each ``Example.source``."""
    out: dict = {}
    for method, entries in summary.items():
        for key, e in entries.items():
            head, _, tail = key.rpartition("pass@")
            if not tail.isdigit() or (head and not head.endswith("/")):
                continue
            source = head[:-1] if head else "all"
            out.setdefault(source, {}).setdefault(method, []).append((int(tail), e["mean"], e["ci95"], e["n"]))
    for per in out.values():
        for rows in per.values():
            rows.sort()
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
        records = {r.seed: read_metrics(r.out_dir / "metrics.jsonl", missing_ok=True) for r in runs}
        records = {k: v for k, v in records.items() if v}
        result["runs"][method] = {seed: final_values(recs, tail) for seed, recs in records.items()}
        curves = {}
        sources = sources_of({k for v in result["runs"][method].values() for k in v})
        per_source = [f"val/{s}/{m}" for s in sources for m in ("acc/mean@", "pass@1", "pass@max")]
        for key in (*CURVE_METRICS, *per_source):
            per_seed = [series(recs, key) for recs in records.values()]
            if smooth > 1 and not key.startswith(("val/", "stare/")):
                per_seed = [_smooth(ps, smooth) for ps in per_seed]
            steps = sorted(set().union(*[set(s) for s in per_seed])) if per_seed else []
            rows = []
            for st in steps:
                vals = [s[st] for s in per_seed if st in s]
                m, ci = mean_ci(vals)
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
            m, ci = mean_ci(vals)
            entry = {"mean": m, "ci95": ci, "n": len(vals), "values": vals}
            if baseline and method != baseline and baseline in result["runs"]:
                base = [v[k] for v in result["runs"][baseline].values() if k in v and math.isfinite(v[k])]
                if len(vals) >= 2 and len(base) >= 2:
                    test = stats.ttest_ind(vals, base, equal_var=False)
                    entry["p_vs_baseline"] = float(test.pvalue) if math.isfinite(test.pvalue) else None
            summary[k] = entry
        result["summary"][method] = summary
    result["pass_at_k"] = pass_at_k_curves(result["summary"])
    return result

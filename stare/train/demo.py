"""``stare demo``: GRPO-ds against STARE-O1 on a CPU testbed, same seed, side by side, with the base model.

1. Builds (or loads from the cache) the testbed base model and evaluates it once (cached).
2. Trains GRPO-ds and STARE-O1 from it with the same seed: in two processes when two cores are
   available (one torch thread each), else one after the other; rich progress bars with ETA. Held-out
   evaluation a few times during training, so held-out accuracy is a curve over steps.
3. Prints a table (batch entropy, held-out accuracy and pass@k per data source, the base model's row
   first) and writes, under the run folder, ``curves.png`` (entropy with STARE's target band, held-out
   accuracy and pass@n per split from the base model at step 0, response length, gate), ``pass_at_k.png``
   (pass@k against k per split at the end, base model dashed), ``summary.json``, and each run's
   ``metrics.jsonl``, ``config.yaml`` and TensorBoard logs.

The embedded default is the packaged exploration testbed ``stare/configs/explore.yaml`` (docs/testbed.md:
its hard split shows what collapse costs in pass@k against the base model; docs/results.md measures
whether held entropy pays there); any key can be overridden on the command line (``stare demo
trainer.steps=100 seed=1``), and ``--config`` runs another config (``stare/configs/testbed.yaml``, the
addition testbed, where every path is valid).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .config import load_config

__all__ = ["DEMO_CONFIG", "DEMO_METHODS", "DEMO_OVERRIDES", "run_demo"]

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The embedded default: the exploration testbed configuration shipped in the package (docs/testbed.md).
DEMO_CONFIG = CONFIGS / "explore.yaml"
DEMO_METHODS = ("grpo_ds", "stare_o1")
# The demo's cut of the default run, to finish within 10 minutes on 2 cores on a fresh machine (measured
# 6 min 43 s from an empty cache, of which the base model's SFT 105 s): evaluations every 50 steps for the
# held-out curves (docs/testbed.md, timing).
DEMO_OVERRIDES = ("trainer.steps=200", "trainer.eval_every=50", "trainer.save_every=0")
SHOWN_K = (1, 4, 16, 64)  # pass@k columns of the table (those up to eval_n)


def run_demo(overrides: list[str] | None = None, out_dir: str | None = None, config: str | Path | None = None) -> dict:
    from rich.table import Table

    from ..env.testbed import load_or_build
    from ..report.aggregate import final_values, sources_of
    from ..report.plots import plot_pass_at_k, plot_runs
    from ..report.runs import plan_runs, read_metrics
    from ..report.tables import table_console
    from .scheduler import BASE, run_grid

    console = table_console()
    config = Path(config or DEMO_CONFIG)
    overrides = [*DEMO_OVERRIDES, *(overrides or [])]
    root = Path(out_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    root.mkdir(parents=True, exist_ok=True)
    first = load_config(config, overrides + [f"method={DEMO_METHODS[0]}"])  # validates the overrides
    parallel = (os.cpu_count() or 1) >= 2
    t0 = time.time()

    # 1. the base model (built once here so that the runs load it from the cache)
    if first.model.name_or_path == "testbed":
        load_or_build(first.model.testbed_config(), log=lambda m: console.print(m))
    t_base = time.time() - t0

    # 2. the base model's evaluation and the two runs, side by side when two cores are available
    specs = plan_runs(root, (BASE, *DEMO_METHODS), [first.seed])
    steps = first.trainer.steps
    failed = run_grid(str(config), specs, overrides, workers=2 if parallel else 1, total_steps=steps, console=console)
    if failed:
        raise RuntimeError(f"demo run(s) failed: {[s.method for s in failed]}; see their folders under {root}")

    # 3. table, figures, summary
    runs = {spec.method: read_metrics(spec.out_dir / "metrics.jsonl") for spec in specs}
    finals = {name: final_values(recs) for name, recs in runs.items()}
    sources = sources_of({k for v in finals.values() for k in v})
    n = first.trainer.eval_n
    ks = [k for k in SHOWN_K if k < n] + [n]
    columns = [("heldout_acc", "held-out acc"), *[(f"pass@{k}", f"pass@{k}") for k in ks]]
    for s in sources:  # per split: accuracy and pass@k at the smallest and largest k
        columns += [(f"{s}/heldout_acc", f"{s} acc"), (f"{s}/pass@1", f"{s} pass@1"), (f"{s}/pass@{n}", f"{s} pass@{n}")]
    table = Table(title=f"stare demo: {config.stem}, {steps} steps, seed {first.seed}")
    for label in ("method", "initial entropy", "final entropy", *[c[1] for c in columns]):
        table.add_column(label, justify="left" if label == "method" else "right")
    summary = {"config": str(config), "overrides": overrides, "seconds_total": time.time() - t0,
               "seconds_base_model": t_base, "parallel": parallel, "runs": {}, "heldout_curves": {}}
    base_val = runs[BASE][0]
    for name, recs in runs.items():
        fv = finals[name]
        summary["runs"][name] = {k: fv[k] for k in ("initial_entropy", "final_entropy") if k in fv}
        summary["runs"][name].update({k: fv[k] for k, _ in columns if k in fv})
        summary["runs"][name]["pass_at_k"] = {k[5:]: v for k, v in fv.items() if k.startswith("pass@")}
        if name != BASE:  # held-out curves over steps, from the base model at step 0
            evals = [base_val] + [r for r in recs if any(k.startswith("val/acc/mean@") for k in r)]
            summary["heldout_curves"][name] = [{k: v for k, v in r.items() if k == "step" or k.startswith("val/")}
                                               for r in evals]
        ent = [f"{fv[k]:.3f}" if k in fv else "-" for k in ("initial_entropy", "final_entropy")]
        table.add_row(name, *ent, *[f"{fv[k]:.3f}" if k in fv else "-" for k, _ in columns])
    console.print(table)
    curves = {name: ([base_val] if name != BASE else []) + recs for name, recs in runs.items() if name != BASE}
    png = plot_runs(curves, root / "curves.png", title=f"GRPO-ds vs STARE-O1 ({config.stem}, seed {first.seed}); "
                    "held-out from the base model at step 0")
    from ..report.aggregate import pass_at_k_curves

    per_method = {name: {k: {"mean": v, "ci95": float("nan"), "n": 1} for k, v in fv.items()}
                  for name, fv in finals.items()}
    pk = pass_at_k_curves(per_method)
    summary["pass_at_k_curves"] = pk
    pk_png = plot_pass_at_k(pk, root / "pass_at_k.png", title=f"pass@k after {steps} steps (seed {first.seed})")
    summary["seconds_total"] = time.time() - t0
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"run folder: {root}  (figures: {png.name}, {pk_png.name}; metrics.jsonl and tensorboard/ per run); "
                  f"{summary['seconds_total']:.0f} s")
    return summary

"""Reproduce the first steps of the archived study (experiments/results/) and check them.

Runs an N-step cut (default 30) of every method of the study (``experiments/study.sh``: the packaged
testbed config, ``method=<m> seed=<s>``) with the code in this checkout, or another one given by
``--code`` (for example a worktree of an older commit), two runs at a time, one torch thread each. Then:

* against the archive: every per-step value the archive holds for steps 1..N (batch entropy, training
  accuracy, response length, gate, target, W) must equal the run's, written as the archive writes them
  (``%.6g``);
* with ``--compare-with OTHER``: every metric of every step (timings excepted) must be *identical* to the
  same run under OTHER (another cut root, e.g. made by an older commit with ``--code``).

The training steps do not depend on the cut: the learning rate is constant after warm-up and the
evaluation at the last step restores the random state it used.

    python experiments/reproduce_cut.py --out runs/cut                      # this code vs the archive
    python experiments/reproduce_cut.py --out runs/cut-old --code ../old    # an older checkout
    python experiments/reproduce_cut.py --out runs/cut --compare-with runs/cut-old --no-run
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
METHODS = ("grpo_ds", "stare_o1", "dapo", "stare_c2", "steer", "clip_cov", "forking", "entropy_bonus", "kl_cov")
STOCHASTIC = ("timing_s/", "perf/")


def archive_name(method: str, seed: int) -> str:
    return "study__kl_cov_30_steps" if method == "kl_cov" else f"study__{method}_seed_{seed}"


def run_one(code: Path, out: Path, method: str, seed: int, steps: int) -> tuple[str, int, float]:
    run = (out / method / f"seed_{seed}").resolve()
    if (run / "DONE").exists():
        return f"{method}/seed_{seed}", 0, 0.0
    cmd = [sys.executable, "-m", "stare.cli", "train", str(code / "stare" / "configs" / "testbed.yaml"),
           f"method={method}", f"seed={seed}", f"output_dir={run}", f"trainer.steps={steps}", "trainer.eval_every=0",
           "trainer.save_every=0", "trainer.threads=1", "trainer.resume=false", "logging.progress=false",
           "logging.tensorboard=false"]
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, cwd=code, capture_output=True, text=True)  # cwd: `-m` puts it first on the path
    if proc.returncode == 0:
        (run / "DONE").write_text("ok")
    else:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
    return f"{method}/seed_{seed}", proc.returncode, time.time() - t0


def archived_curve(name: str) -> list[dict]:
    path = HERE / "results" / "curves" / f"{name}.csv.gz"
    with gzip.open(path, "rt") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


def check_archive(records: list[dict], name: str, steps: int) -> list[str]:
    problems = []
    rows = archived_curve(name)[:steps]
    if len(records) < steps:
        return [f"{name}: the run has {len(records)} steps, need {steps}"]
    for row, rec in zip(rows, records):
        for key, archived in row.items():
            if key == "step" or key.startswith("val/") or archived == "":
                continue
            value = rec.get(key)
            mine = "" if value is None else f"{value:.6g}"
            if mine != archived:
                problems.append(f"{name} step {row['step']} {key}: archive {archived}, run {mine}")
    return problems


def check_identical(a: list[dict], b: list[dict], label: str, only_in_a: set) -> list[str]:
    """Every metric both runs log must be equal; metrics only one side logs (a newer version's new
    metrics) are collected in ``only_in_a`` / reported, not compared."""
    if len(a) != len(b):
        return [f"{label}: {len(a)} vs {len(b)} steps"]
    problems = []
    for x, y in zip(a, b):
        only_in_a.update(k for k in x if k not in y)
        if any(k not in x for k in y):
            problems.append(f"{label} step {x['step']}: metrics missing here: {sorted(k for k in y if k not in x)}")
        for k in sorted(k for k in x if k in y and not k.startswith(STOCHASTIC)):
            if x[k] != y[k]:
                problems.append(f"{label} step {x['step']} {k}: {x[k]!r} vs {y[k]!r}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/cut"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose code runs (default: this one)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compare-with", type=Path, default=None, help="another cut root: every metric must be identical")
    ap.add_argument("--no-run", action="store_true", help="only check existing runs")
    ap.add_argument("--no-archive", action="store_true", help="skip the comparison with the archive")
    args = ap.parse_args()
    jobs = [(m, s) for m in args.methods for s in (args.seeds if m != "kl_cov" else [0])]
    if not args.no_run:
        with ThreadPoolExecutor(args.workers) as pool:
            for label, rc, seconds in pool.map(lambda j: run_one(args.code.resolve(), args.out, *j, args.steps), jobs):
                print(f"{label}: {'ok' if rc == 0 else f'FAILED ({rc})'} {seconds:.0f} s", flush=True)

    sys.path.insert(0, str(ROOT))
    from stare.report.runs import read_metrics

    problems, new_metrics, compared = [], set(), 0
    for method, seed in jobs:
        path = args.out / method / f"seed_{seed}" / "metrics.jsonl"
        records = read_metrics(path, missing_ok=True)[: args.steps]
        if not args.no_archive:
            problems += check_archive(records, archive_name(method, seed), args.steps)
        if args.compare_with is not None:
            other = read_metrics(args.compare_with / method / f"seed_{seed}" / "metrics.jsonl", missing_ok=True)
            problems += check_identical(records, other[: args.steps], f"{method}/seed_{seed}", new_metrics)
            compared += sum(1 for r, o in zip(records, other) for k in r if k in o and not k.startswith(STOCHASTIC))
    checked = ["the archive" * (not args.no_archive), str(args.compare_with or "")]
    print(f"{len(jobs)} runs x {args.steps} steps checked against {' and '.join(c for c in checked if c)}: "
          f"{len(problems)} mismatches")
    if args.compare_with is not None:
        print(f"{compared} values compared with {args.compare_with}; metrics only this run logs: "
              f"{sorted(new_metrics) or 'none'}")
    for p in problems[:40]:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

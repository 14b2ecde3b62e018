"""The exploration testbed's targets, per seed, from a `stare compare` folder holding `base` and `grpo_ds`
runs (docs/testbed.md):

* base model, hard split: pass@1 <= 0.1 and pass@64 >= 0.5;
* GRPO-ds: batch entropy falls >= 5x (first step over the mean of the last 10) and hard-split pass@64 at
  the end is below the base model's (narrowing);
* each run <= 15 minutes (wall clock from its config.yaml to its DONE file: loading, steps, evaluations).

    python experiments/explore_targets.py runs/explore [--method grpo_ds] [--json out.json]

Prints one row per seed and exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stare.report.aggregate import final_values
from stare.report.runs import read_metrics

HARD = "explore_hard"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--method", default="grpo_ds")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows, ok = [], True
    for seed_dir in sorted((args.root / args.method).glob("seed_*")):
        seed = seed_dir.name.split("_")[1]
        base = final_values(read_metrics(args.root / "base" / seed_dir.name / "metrics.jsonl"))
        recs = read_metrics(seed_dir / "metrics.jsonl")
        run = final_values(recs)
        kmax = max(int(k.rsplit("@", 1)[1]) for k in base if k.startswith(f"{HARD}/pass@"))
        # wall clock of the run: from its config (written at the start) to DONE (model loading and evaluations
        # included); when DONE is missing, the steps' own timings
        done, start = seed_dir / "DONE", seed_dir / "config.yaml"
        seconds = (done.stat().st_mtime - start.stat().st_mtime if done.exists()
                   else sum(r.get("timing_s/step", 0.0) for r in recs))
        row = {"seed": seed, "base_hard_pass@1": base[f"{HARD}/pass@1"], f"base_hard_pass@{kmax}": base[f"{HARD}/pass@{kmax}"],
               "initial_entropy": run["initial_entropy"], "final_entropy": run["final_entropy"],
               "entropy_fall": run["entropy_ratio"], f"hard_pass@{kmax}": run[f"{HARD}/pass@{kmax}"],
               "easy_acc": run.get("explore_easy/heldout_acc"), "base_easy_acc": base.get("explore_easy/heldout_acc"),
               "train_seconds": seconds, "steps": len(recs)}
        row["targets"] = {
            "base pass@1 <= 0.1": row["base_hard_pass@1"] <= 0.1,
            f"base pass@{kmax} >= 0.5": row[f"base_hard_pass@{kmax}"] >= 0.5,
            "entropy falls >= 5x": row["entropy_fall"] >= 5,
            f"hard pass@{kmax} below base": row[f"hard_pass@{kmax}"] < row[f"base_hard_pass@{kmax}"],
            "run <= 15 min": seconds <= 900,
        }
        ok &= all(row["targets"].values())
        rows.append(row)
        print(f"seed {seed}: base hard pass@1 {row['base_hard_pass@1']:.3f}, pass@{kmax} {row[f'base_hard_pass@{kmax}']:.3f}; "
              f"{args.method} entropy {row['initial_entropy']:.3f} -> {row['final_entropy']:.3f} "
              f"({row['entropy_fall']:.2f}x), hard pass@{kmax} {row[f'hard_pass@{kmax}']:.3f}, easy acc "
              f"{row['easy_acc']:.3f} (base {row['base_easy_acc']:.3f}); {seconds / 60:.1f} min; "
              + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in row["targets"].items()))
    if not rows:
        print(f"no runs under {args.root / args.method}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

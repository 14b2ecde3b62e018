"""Writes the repository's archive of the CPU experiments (experiments/results/, see its README) from run
folders: each run's resolved config, its final values (``stare.report.aggregate.final_values``) and the
per-step metrics the figures plot, gzipped. Groups passed replace their entries; the others are kept.

    python experiments/archive_results.py --study runs/study --w-sweep runs/w_sweep --diagnostics runs/diagnostics
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
from pathlib import Path

from stare.report.aggregate import final_values
from stare.report.runs import read_metrics

DEST = Path(__file__).resolve().parent / "results"
CURVE_KEYS = ("actor/entropy", "critic/acc/mean", "response_length/mean", "stare/gate_on", "stare/target_entropy",
              "stare/reweight_w", "val/acc/mean@8", "val/pass@8", "diag/predicted_dH", "diag/predicted_dH_param",
              "diag/realised_dH")


def runs_in(root: Path) -> dict[str, Path]:
    """Run folders under ``root`` by archive name: ``<method>_seed_<s>`` for a `stare compare` grid,
    the folder's name for a single run."""
    found = {}
    for path in sorted(root.iterdir()):
        if (path / "metrics.jsonl").exists():
            found[path.name] = path
        for seed in sorted(path.glob("seed_*")) if path.is_dir() else ():
            if (seed / "metrics.jsonl").exists():
                found[f"{path.name}_{seed.name}"] = seed
    return found


def write_curves(records: list[dict], dest: Path) -> None:
    keys = [k for k in CURVE_KEYS if any(k in r for r in records)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", *keys])
    for r in records:
        writer.writerow([r["step"], *("" if r.get(k) is None else f"{r[k]:.6g}" for k in keys)])
    with gzip.GzipFile(dest, "wb", mtime=0) as f:  # mtime 0: the same runs give the same bytes
        f.write(buf.getvalue().encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for group in ("study", "w_sweep", "diagnostics"):
        ap.add_argument(f"--{group.replace('_', '-')}", dest=group, type=Path, help=f"folder of the {group} runs")
    args = ap.parse_args()
    (DEST / "configs").mkdir(parents=True, exist_ok=True)
    (DEST / "curves").mkdir(exist_ok=True)
    values_path = DEST / "final_values.json"
    values = json.loads(values_path.read_text()) if values_path.exists() else {}
    for group in ("study", "w_sweep", "diagnostics"):
        root = getattr(args, group)
        if root is None:
            continue
        values[group] = {}
        for name, run in runs_in(root).items():
            records = read_metrics(run / "metrics.jsonl")
            values[group][name] = {k: round(v, 5) for k, v in final_values(records).items()}
            (DEST / "configs" / f"{group}__{name}.yaml").write_text((run / "config.yaml").read_text())
            write_curves(records, DEST / "curves" / f"{group}__{name}.csv.gz")
        if group == "study" and (root / "report_all" / "summary.md").exists():
            (DEST / "study_summary.md").write_text((root / "report_all" / "summary.md").read_text())
        print(f"{group}: {len(values[group])} runs archived from {root}")
    values_path.write_text(json.dumps(values, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()

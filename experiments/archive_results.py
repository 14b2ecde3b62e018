"""Writes the repository's archive of the CPU experiments (experiments/results/, see its README) from run
folders: each run's resolved config, its final values (``stare.report.aggregate.final_values``) and the
per-step metrics the figures plot, gzipped. Groups passed replace their entries; the others are kept.

    python experiments/archive_results.py --study runs/study --w-sweep runs/w_sweep --diagnostics runs/diagnostics
    python experiments/archive_results.py --group equal_entropy__explore_on runs/equal_entropy/explore_on

A `stare compare` folder's `summary.md` (and a calibration's `calibration.json` and `calibrated.yaml`,
in the folder or under `<folder>/calibration/`) are kept as `<group>_summary.md`, `<group>_calibration.json`,
`<group>_calibrated.yaml`, and the fixed-strength runs' `fixed/summary.md` as `<group>_fixed_summary.md`.
Absolute paths into a `runs/` folder or the package's configs are kept from `runs/` or
`stare/configs/` on.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import re
from pathlib import Path

from stare.report.aggregate import final_values
from stare.report.runs import read_metrics

DEST = Path(__file__).resolve().parent / "results"
CURVE_KEYS = ("actor/entropy", "critic/acc/mean", "response_length/mean", "stare/gate_on", "stare/target_entropy",
              "stare/reweight_w", "val/acc/mean@8", "val/pass@8", "diag/predicted_dH", "diag/predicted_dH_param",
              "diag/realised_dH", "tune/value", "tune/target_entropy", "actor/entropy_coeff", "val/acc/mean@64",
              "val/pass@1", "val/pass@64", "val/explore_easy/acc/mean@64", "val/explore_easy/pass@64",
              "val/explore_hard/acc/mean@64", "val/explore_hard/pass@1", "val/explore_hard/pass@64")


def portable(text: str) -> str:
    """``text`` with absolute paths into a ``runs/`` folder or the package's configs cut to start there
    (``/x/y/runs/ee/a`` -> ``runs/ee/a``, ``/x/stare/configs/t.yaml`` -> ``stare/configs/t.yaml``), so the
    archive names no path of the machine the runs were made on."""
    return re.sub(r"(?<![\w.~-])/[^\s'\"`]*?/(?=runs/|stare/configs/)", "", text)


def copy_portable(src: Path, dest: Path) -> None:
    dest.write_text(portable(src.read_text()))


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
    ap.add_argument("--group", nargs=2, action="append", default=[], metavar=("NAME", "FOLDER"),
                    help="any other group: its name and folder (a stare compare or calibrate output)")
    args = ap.parse_args()
    groups = {g: getattr(args, g) for g in ("study", "w_sweep", "diagnostics")}
    groups.update({name: Path(folder) for name, folder in args.group})
    (DEST / "configs").mkdir(parents=True, exist_ok=True)
    (DEST / "curves").mkdir(exist_ok=True)
    values_path = DEST / "final_values.json"
    values = json.loads(values_path.read_text()) if values_path.exists() else {}
    for group, root in groups.items():
        if root is None:
            continue
        values[group] = {}
        runs = runs_in(root)
        if (root / "calibration" / "tune").is_dir():
            runs.update({f"tune_{k}": v for k, v in runs_in(root / "calibration" / "tune").items()})
        for name, run in runs.items():
            records = read_metrics(run / "metrics.jsonl")
            values[group][name] = {k: round(v, 5) for k, v in final_values(records).items()}
            if (run / "config.yaml").exists():  # the base model's evaluation ('base') has no config of its own
                copy_portable(run / "config.yaml", DEST / "configs" / f"{group}__{name}.yaml")
            write_curves(records, DEST / "curves" / f"{group}__{name}.csv.gz")
        if group == "study" and (root / "report_all" / "summary.md").exists():
            copy_portable(root / "report_all" / "summary.md", DEST / "study_summary.md")
        elif group not in ("study", "w_sweep", "diagnostics"):
            for name in ("summary.md", "calibration.json", "calibrated.yaml"):  # in the folder or calibration/
                src = next((p for p in (root / name, root / "calibration" / name) if p.exists()), None)
                if src is not None:
                    copy_portable(src, DEST / f"{group}_{name}")
            if (root / "fixed" / "summary.md").exists():  # equal_entropy.sh with FIXED=1
                copy_portable(root / "fixed" / "summary.md", DEST / f"{group}_fixed_summary.md")
        print(f"{group}: {len(values[group])} runs archived from {root}")
    values_path.write_text(json.dumps(values, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()

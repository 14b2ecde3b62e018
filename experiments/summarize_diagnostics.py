"""Tables of docs/results.md from the runs of experiments/diagnostics.sh: correlation across steps of
the predicted and realised batch entropy change per learning rate, the quadrant signs, and the cost.

    python experiments/summarize_diagnostics.py runs/diagnostics
"""

from __future__ import annotations

import sys
from pathlib import Path

from stare.report.aggregate import pearson
from stare.report.runs import read_metrics

QUADRANTS = ("pos_high_surprisal", "pos_low_surprisal", "neg_high_surprisal", "neg_low_surprisal")


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def main(root: Path) -> None:
    print("| run | steps | r(logit-space, realised) | r(param-space, realised) | sign agreement logit / param |"
          " mean realised dH | mean param-space dH |")
    print("|---|---|---|---|---|---|---|")
    quad_rows = []
    for d in sorted(root.glob("*_lr*")):
        recs = read_metrics(d / "metrics.jsonl")
        p = [r["diag/predicted_dH"] for r in recs]
        q = [r["diag/predicted_dH_param"] for r in recs]
        real = [r["diag/realised_dH"] for r in recs]
        agree_p = sum(_sign(a) == _sign(b) for a, b in zip(p, real)) / len(recs)
        agree_q = sum(_sign(a) == _sign(b) for a, b in zip(q, real)) / len(recs)
        print(f"| {d.name} | {len(recs)} | {pearson(p, real):.3f} | {pearson(q, real):.3f} | {agree_p:.2f} / {agree_q:.2f} |"
              f" {sum(real) / len(real):.2e} | {sum(q) / len(q):.2e} |")
        row = [d.name]
        for name in QUADRANTS:
            live = [r for r in recs if r[f"diag/quadrant/{name}/frac"] > 0]
            frac = sum(r[f"diag/quadrant/{name}/frac"] for r in recs) / len(recs)
            pos = sum(r[f"diag/quadrant/{name}/predicted_dH"] > 0 for r in live) / max(len(live), 1)
            row.append(f"{frac:.3f} / {pos:.2f}")
        quad_rows.append(row)
    print("\nper quadrant: mean token fraction / share of steps whose predicted dH is > 0")
    print("| run | " + " | ".join(QUADRANTS) + " |")
    print("|---|" + "---|" * len(QUADRANTS))
    for row in quad_rows:
        print("| " + " | ".join(row) + " |")
    print("\ncost: timing_s/diagnostics / timing_s/step (first step dropped)")
    print("| run | mean step s | mean diagnostics s | share |")
    print("|---|---|---|---|")
    for d in sorted(root.glob("cost_*")):
        recs = read_metrics(d / "metrics.jsonl")[1:]
        step = sum(r["timing_s/step"] for r in recs)
        diag = sum(r.get("timing_s/diagnostics", 0.0) for r in recs)
        print(f"| {d.name} | {step / len(recs):.3f} | {diag / len(recs):.3f} | {diag / step:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/diagnostics"))

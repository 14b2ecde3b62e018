"""Text tables of a comparison (``stare.report.compare.aggregate`` output)."""

from __future__ import annotations

import math

__all__ = ["summary_table", "markdown_table", "COLUMNS"]

COLUMNS = (
    ("final_entropy", "final entropy"),
    ("entropy_ratio", "initial / final"),
    ("heldout_acc", "held-out acc"),
    ("pass@1", "pass@1"),
    ("pass@8", "pass@8"),
    ("response_length", "length"),
    ("pred_real_corr", "r(predicted, realised dH)"),
    ("pred_param_real_corr", "r(param-space predicted, realised dH)"),
    ("band_frac", "steps in band"),
    ("band_max_dev_smoothed", "max dev. (10-step mean)"),
)


def _fmt(entry: dict | None) -> str:
    if not entry:
        return "-"
    ci = entry.get("ci95")
    text = f"{entry['mean']:.3f}" + (f" ± {ci:.3f}" if ci is not None and math.isfinite(ci) else "")
    p = entry.get("p_vs_baseline")
    if p is not None:
        text += f" (p={p:.2g})"
    return text


def summary_table(result: dict):
    """A rich Table: mean ± 95% CI over seeds, Welch p-value against the baseline in brackets."""
    from rich.table import Table

    table = Table(title=f"final values, mean ± 95% CI over seeds; p: Welch t-test vs {result['baseline']}")
    table.add_column("method")
    table.add_column("seeds", justify="right")
    cols = [(k, label) for k, label in COLUMNS if any(k in s for s in result["summary"].values())]
    for _, label in cols:
        table.add_column(label, justify="right")
    for method in result["methods"]:
        s = result["summary"].get(method, {})
        n = max((e["n"] for e in s.values()), default=0)
        table.add_row(method, str(n), *[_fmt(s.get(k)) for k, _ in cols])
    return table


def markdown_table(result: dict) -> str:
    """The same table in Markdown (for docs)."""
    cols = [(k, label) for k, label in COLUMNS if any(k in s for s in result["summary"].values())]
    lines = ["| method | seeds | " + " | ".join(label for _, label in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for method in result["methods"]:
        s = result["summary"].get(method, {})
        n = max((e["n"] for e in s.values()), default=0)
        lines.append(f"| {method} | {n} | " + " | ".join(_fmt(s.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines)

"""Tables of a comparison (``stare.report.aggregate.aggregate`` output): rich, Markdown, and the cell format
the HTML report shares."""

from __future__ import annotations

import math

__all__ = ["COLUMNS", "format_entry", "markdown_table", "summary_table"]

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


def format_entry(entry: dict | None, *, html: bool = False) -> str:
    """"mean ± ci (p=...)" of one summary entry; ``html`` puts the p-value on its own small line."""
    if not entry:
        return "&ndash;" if html else "-"
    ci = entry.get("ci95")
    pm = " &plusmn; " if html else " ± "
    text = f"{entry['mean']:.3f}" + (f"{pm}{ci:.3f}" if ci is not None and math.isfinite(ci) else "")
    p = entry.get("p_vs_baseline")
    if p is not None:
        text += f"<br><span class='small'>p = {p:.2g}</span>" if html else f" (p={p:.2g})"
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
        table.add_row(method, str(n), *[format_entry(s.get(k)) for k, _ in cols])
    return table


def markdown_table(result: dict) -> str:
    """The same table in Markdown (for docs)."""
    cols = [(k, label) for k, label in COLUMNS if any(k in s for s in result["summary"].values())]
    lines = ["| method | seeds | " + " | ".join(label for _, label in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for method in result["methods"]:
        s = result["summary"].get(method, {})
        n = max((e["n"] for e in s.values()), default=0)
        lines.append(f"| {method} | {n} | " + " | ".join(format_entry(s.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines)

"""Tables of a comparison (``stare.report.aggregate.aggregate`` output): rich, Markdown, and the cell format
the HTML report shares."""

from __future__ import annotations

import math

__all__ = ["COLUMNS", "format_entry", "markdown_table", "summary_table", "table_columns", "table_console"]

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


def table_console():
    """A rich console for wide tables: the terminal's width, or 240 columns when the output is not a
    terminal (a log file, CI), where rich would otherwise cut every cell to fit 80 columns."""
    import os
    import sys

    from rich.console import Console

    tty = sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
    return Console() if tty else Console(width=240)


def table_columns(result: dict) -> list[tuple[str, str]]:
    """The columns a comparison's table shows: ``COLUMNS`` present in its summary, then the largest k's
    pass@k when above 8, then per data source (``Example.source``) its held-out accuracy, pass@1 and
    pass@k at the largest k."""
    from .aggregate import sources_of

    keys = {k for s in result["summary"].values() for k in s}

    def largest(prefix: str) -> int | None:
        ks = [int(k[len(prefix):]) for k in keys if k.startswith(prefix) and k[len(prefix):].isdigit()]
        return max(ks) if ks else None

    cols = [(k, label) for k, label in COLUMNS if k in keys]
    top = largest("pass@")
    if top and top > 8:
        at = next((i for i, (k, _) in enumerate(cols) if k == "pass@8"), len(cols) - 1) + 1
        cols.insert(at, (f"pass@{top}", f"pass@{top}"))
    for source in sources_of(keys):
        cols.append((f"{source}/heldout_acc", f"{source} acc"))
        top = largest(f"{source}/pass@")
        for k in sorted({1, top} - {None}):
            cols.append((f"{source}/pass@{k}", f"{source} pass@{k}"))
    return cols


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
    cols = table_columns(result)
    for _, label in cols:
        table.add_column(label, justify="right")
    for method in result["methods"]:
        s = result["summary"].get(method, {})
        n = max((e["n"] for e in s.values()), default=0)
        table.add_row(method, str(n), *[format_entry(s.get(k)) for k, _ in cols])
    return table


def markdown_table(result: dict) -> str:
    """The same table in Markdown (for docs)."""
    cols = table_columns(result)
    lines = ["| method | seeds | " + " | ".join(label for _, label in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for method in result["methods"]:
        s = result["summary"].get(method, {})
        n = max((e["n"] for e in s.values()), default=0)
        lines.append(f"| {method} | {n} | " + " | ".join(format_entry(s.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines)

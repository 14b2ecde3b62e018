"""One self-contained HTML report of a comparison: figures embedded as base64 PNG, no scripts, no
external resources, so it opens offline and can be attached to an issue as a single file."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Mapping

from .tables import format_entry, table_columns

__all__ = ["write_report"]

_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}th{background:#f0f0f0}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}code{background:#f4f4f4;padding:.1em .3em}"
        ".small{font-size:.85em;color:#555}")


def write_report(result: Mapping, figures: Mapping[str, Path], out: Path, *, title: str, command: str = "",
                 notes: str = "") -> Path:
    """Write ``out`` (HTML) from an ``aggregate`` result and PNG figures {caption: path}."""
    cols = table_columns(result)
    rows = []
    for method in result["methods"]:
        s = result["summary"].get(method, {})
        n = max((e["n"] for e in s.values()), default=0)
        rows.append(f"<tr><td>{html.escape(method)}</td><td>{n}</td>" + "".join(f"<td>{format_entry(s.get(k), html=True)}</td>" for k, _ in cols)
                    + "</tr>")
    head = "<tr><th>method</th><th>seeds</th>" + "".join(f"<th>{html.escape(label)}</th>" for _, label in cols) + "</tr>"
    per_seed = []
    for method in result["methods"]:
        for seed, vals in sorted(result["runs"].get(method, {}).items(), key=lambda kv: str(kv[0])):
            cells = "".join(f"<td>{vals[k]:.3f}</td>" if k in vals and isinstance(vals[k], float) else "<td>&ndash;</td>"
                            for k, _ in cols)
            per_seed.append(f"<tr><td>{html.escape(method)}</td><td>{html.escape(str(seed))}</td>{cells}</tr>")
    imgs = []
    for caption, path in figures.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        imgs.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption class='small'>{html.escape(caption)}</figcaption></figure>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="small">Generated {time.strftime('%Y-%m-%d %H:%M')} by stare. Methods: {', '.join(html.escape(m) for m in result['methods'])}.
Baseline for the tests: {html.escape(str(result.get('baseline')))}.</p>
{f'<p>Command: <code>{html.escape(command)}</code></p>' if command else ''}
{f'<p>{html.escape(notes)}</p>' if notes else ''}
<h2>Final values</h2>
<p class="small">Mean &plusmn; 95% confidence half-width over seeds (Student t); p: Welch's t-test against the baseline
(two-sided; with few seeds only large effects can show). Final entropy: mean of the last 10 steps' batch entropy;
initial / final: the first step's batch entropy over that; held-out accuracy and pass@k: the last evaluation.</p>
<table>{head}{''.join(rows)}</table>
<h2>Curves</h2>
{''.join(imgs)}
<h2>Per seed</h2>
<table><tr><th>method</th><th>seed</th>{''.join(f'<th>{html.escape(label)}</th>' for _, label in cols)}</tr>{''.join(per_seed)}</table>
</body></html>"""
    out = Path(out)
    out.write_text(page)
    return out

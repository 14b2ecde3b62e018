"""Training-curve figures from ``metrics.jsonl`` files (no model needed).

``plot_runs`` draws one panel per quantity (batch entropy with the controller's target band, reward,
held-out accuracy overall and per data source, response length, gate on/off), one line per run, and writes
a PNG; ``plot_aggregate`` the same over seeds with 95% bands; ``plot_pass_at_k`` pass@k against k.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .runs import series

__all__ = ["aggregate_panels", "plot_aggregate", "plot_pass_at_k", "plot_runs"]

PANELS = (
    ("actor/entropy", "batch entropy (nats)"),
    ("critic/acc/mean", "training accuracy"),
    ("val/acc/mean@", "held-out accuracy (mean over samples)"),
    ("response_length/mean", "response length (tokens)"),
    ("stare/gate_on", "STARE gate on"),
)


def _save(fig, out: Path, title: str) -> Path:
    """Title, lay out, write (creating the folder) and close a figure; the path written."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_runs(runs: Mapping[str, Sequence[Mapping]], out: Path, *, band: float = 0.35, title: str = "") -> Path:
    """One PNG with a panel per quantity; ``band`` draws target x (1 +- band) where a target is logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = {k for r in runs.values() for rec in r for k in rec}
    sources = sorted({k.split("/")[1] for k in keys if k.startswith("val/") and k.count("/") >= 3 and "/acc/mean@" in k})
    per_source = [(f"val/{s}/{m}", f"{s}: {label}") for s in sources
                  for m, label in (("acc/mean@", "held-out accuracy"), ("pass@max", "pass@n"))]
    at = [k for k, _ in PANELS].index("val/acc/mean@") + 1
    panels = [(k, label) for k, label in (*PANELS[:at], *per_source, *PANELS[at:]) if any(series(r, k) for r in runs.values())]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=True, squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {name: palette[i % len(palette)] for i, name in enumerate(runs)}  # one colour per run, all panels
    for ax, (key, label) in zip(axes[:, 0], panels):
        for name, records in runs.items():
            points = series(records, key)
            xs, ys = list(points), list(points.values())
            if xs:
                ax.plot(xs, ys, label=name, lw=1.2, color=colors[name], marker="o" if len(xs) < 12 else None, ms=3,
                        drawstyle="steps-post" if key == "stare/gate_on" else "default")
            if key == "actor/entropy":
                target = series(records, "stare/target_entropy")
                tx, ty = list(target), list(target.values())
                if tx:
                    ax.plot(tx, ty, ls="--", lw=0.8, color="k", label=f"{name} target" if len(runs) > 1 else "target")
                    ax.fill_between(tx, [t * (1 - band) for t in ty], [t * (1 + band) for t in ty], color="k", alpha=0.08,
                                    lw=0)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("training step")
    return _save(fig, out, title)


AGG_PANELS = (
    ("actor/entropy", "batch entropy (nats)", "log"),
    ("critic/acc/mean", "training accuracy", "linear"),
    ("val/acc/mean@", "held-out accuracy", "linear"),
    ("val/pass@max", "held-out pass@n (n = samples per prompt)", "linear"),
    ("response_length/mean", "response length (tokens)", "linear"),
    ("batch/full_solve_ratio", "full-solve ratio", "linear"),
    ("stare/gate_on", "STARE gate on (share of seeds)", "linear"),
)


def aggregate_panels(curves: Mapping[str, Mapping[str, Sequence]]) -> list[tuple[str, str, str]]:
    """``AGG_PANELS`` plus, per data source found in ``curves``, its held-out accuracy and pass@n."""
    keys = {k for c in curves.values() for k in c}
    extra = []
    for key in sorted(k for k in keys if k.startswith("val/") and k.endswith("/acc/mean@") and k.count("/") == 3):
        source = key.split("/")[1]
        extra.append((key, f"{source}: held-out accuracy", "linear"))
        if f"val/{source}/pass@max" in keys:
            extra.append((f"val/{source}/pass@max", f"{source}: pass@n", "linear"))
    panels = list(AGG_PANELS)
    at = next(i for i, p in enumerate(panels) if p[0] == "val/pass@max") + 1
    return panels[:at] + extra + panels[at:]


_UNIT_INTERVAL = ("critic/acc/mean", "val/acc/mean@", "val/pass@", "batch/full_solve_ratio", "batch/zero_solve_ratio",
                  "stare/gate_on")


def plot_aggregate(curves: Mapping[str, Mapping[str, Sequence]], out: Path, *, title: str = "",
                   panels: Sequence[tuple[str, str, str]] = AGG_PANELS, band: float = 0.35) -> Path:
    """Mean over seeds with a 95% band per method; ``curves[method][metric] = [(step, mean, ci, n), ...]``.

    Bands are clipped to the metric's range ([0, 1] for rates, positive on log axes). On the entropy
    panel a gated method's target is drawn dashed with its +-``band`` range dotted."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in panels if any(p[0] in c for c in curves.values())]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.3 * len(panels)), sharex=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label, scale) in zip(axes[:, 0], panels):
        for i, (method, c) in enumerate(curves.items()):
            rows = c.get(key)
            if not rows:
                continue
            xs = [r[0] for r in rows]
            ms = [r[1] for r in rows]
            lo = [r[1] - (r[2] if math.isfinite(r[2]) else 0) for r in rows]
            hi = [r[1] + (r[2] if math.isfinite(r[2]) else 0) for r in rows]
            if key.startswith(_UNIT_INTERVAL) or "/pass@" in key or "/acc/mean@" in key:
                lo, hi = [max(0.0, v) for v in lo], [min(1.0, v) for v in hi]
            if scale == "log":
                floor = min(m for m in ms if m > 0) / 3 if any(m > 0 for m in ms) else 1e-6
                lo = [max(floor, v) for v in lo]
            color = colors[i % len(colors)]
            ax.plot(xs, ms, color=color, lw=1.2, label=method, marker="o" if len(xs) < 12 else None, ms=3)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
            target = c.get("stare/target_entropy") if key == "actor/entropy" else None
            if target:
                tx, ty = [r[0] for r in target], [r[1] for r in target]
                ax.plot(tx, ty, color=color, ls="--", lw=0.9)
                for f in (1 - band, 1 + band):
                    ax.plot(tx, [t * f for t in ty], color=color, ls=":", lw=0.8)
        ax.set_yscale(scale)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=2)
    axes[-1, 0].set_xlabel("training step")
    return _save(fig, out, title)


def plot_pass_at_k(curves: Mapping[str, Mapping[str, Sequence]], out: Path, *, title: str = "",
                   reference: str | None = "base") -> Path:
    """pass@k against k (log scale), one panel per data source, one line per method with its 95% band over
    seeds; ``curves[source][method] = [(k, mean, ci, n), ...]`` (``aggregate``'s ``pass_at_k``). The
    ``reference`` method (the untrained base model) is drawn black and dashed."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = [s for s in curves if s != "all"] or ["all"]
    if "all" in curves and len(sources) > 1:
        sources = ["all", *sources]
    fig, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys(m for s in sources for m in curves[s]))
    for ax, source in zip(axes[0], sources):
        for i, method in enumerate(methods):
            rows = curves[source].get(method)
            if not rows:
                continue
            ks = [r[0] for r in rows]
            ms = [r[1] for r in rows]
            ci = [r[2] if math.isfinite(r[2]) else 0.0 for r in rows]
            ref = method == reference
            color = "k" if ref else colors[i % len(colors)]
            ax.plot(ks, ms, color=color, ls="--" if ref else "-", lw=1.4 if ref else 1.1, marker="o", ms=2.5,
                    label=method)
            ax.fill_between(ks, [max(0.0, m - c) for m, c in zip(ms, ci)], [min(1.0, m + c) for m, c in zip(ms, ci)],
                            color=color, alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_title("all held-out prompts" if source == "all" else source, fontsize=9)
        ax.set_xlabel("k (samples per prompt)")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("pass@k (unbiased)")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    return _save(fig, out, title)

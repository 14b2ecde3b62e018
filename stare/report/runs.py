"""Run folders as the reports see them: where a run lives, whether it finished, its metrics records.

A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON record per step, ``{"step": n, ...}``),
TensorBoard logs, checkpoints, and ``DONE`` once a scheduled run has finished. Comparisons lay runs out
as ``<out>/<method>/seed_<s>``. Nothing here needs a model or the trainer.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["RunSpec", "plan_runs", "read_metrics", "series"]


@dataclass(frozen=True)
class RunSpec:
    """One run of a comparison: a method preset, a seed and its folder."""

    method: str
    seed: int
    out_dir: Path

    @property
    def done(self) -> bool:
        return (self.out_dir / "DONE").exists()


def plan_runs(out: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[RunSpec]:
    return [RunSpec(m, s, Path(out) / m / f"seed_{s}") for m in methods for s in seeds]


def read_metrics(path: Path, *, missing_ok: bool = False) -> list[dict]:
    """All records of a ``metrics.jsonl`` file ([] for a missing file when ``missing_ok``).

    Tolerant: a torn last line (a run killed while appending) is skipped silently; any other line that
    is not a JSON record is skipped with a warning naming it."""
    path = Path(path)
    if missing_ok and not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    out = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            torn = i == len(lines) - 1  # the last line, without its newline
            if not torn:
                warnings.warn(f"{path}: line {i + 1} is not a JSON record; skipped", stacklevel=2)
            continue
        out.append(record)
    return out


def series(records: Sequence[Mapping], key: str) -> dict[int, float]:
    """``{step: value}`` of one metric. A key ending in ``@`` matches the metric with that prefix
    (``val/acc/mean@`` finds ``val/acc/mean@8``); a key ending in ``pass@max`` (``val/pass@max``,
    ``val/<source>/pass@max``) takes each record's pass@k with the largest k."""
    out = {}
    for r in records:
        if key.endswith("/pass@max"):
            prefix = key[: -len("max")]
            ks = [n for n in r if n.startswith(prefix) and n[len(prefix):].isdigit()]
            k = max(ks, key=lambda n: int(n.rsplit("@", 1)[1])) if ks else None
        elif key.endswith("@"):
            k = next((n for n in r if n.startswith(key)), None)
        else:
            k = key
        if k is not None and r.get(k) is not None:
            out[r["step"]] = float(r[k])
    return out

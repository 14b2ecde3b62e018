"""Metric sinks: JSONL and TensorBoard always, Weights & Biases and trackio when asked for.

One call per step, ``log(step, metrics)``; names follow verl's (``actor/entropy``, ``critic/score/mean``,
``timing_s/rollout`` ...; the full table is in docs/training.md). Non-finite values are written as null.

``metrics.jsonl`` is append-only while a run trains: each record is one ``os.write`` of a whole line to
a file opened with ``O_APPEND``, so a crash loses at most the step in progress and a kill mid-write can
leave at most a torn last line, which the readers (``stare.report.runs.read_metrics`` and the resume
below) skip. On resume the records of steps after the checkpoint are dropped by writing the kept ones
to a temporary file (fsynced) and renaming it over the old one: a kill at any moment leaves either the
old file or the new one, never an empty or half-written one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from .runfolder import atomic_write_text

__all__ = ["MetricsLogger", "quiet_transformers", "truncate_metrics"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLogger:
    def __init__(self, run_dir: Path, *, tensorboard: bool = True, wandb: bool = False, trackio: bool = False,
                 project: str = "stare", run_name: str | None = None, config: Mapping | None = None,
                 resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # drop records of steps after the checkpoint we resume from: they will be recomputed
            truncate_metrics(self.path, resume_step)
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run (the run folder's claim said what it replaces)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=(resume_step + 1) if resume_step else None)
        self._wandb = None
        if wandb:
            try:
                import wandb as wb
            except ImportError as e:
                raise ImportError("logging.wandb=true needs the 'wandb' package: pip install 'stare-rl[wandb]'") from e
            self._wandb = wb.init(project=project, name=run_name, config=dict(config or {}), resume="allow")
        self._trackio = None
        if trackio:
            try:
                import trackio as tio
            except ImportError as e:
                raise ImportError("logging.trackio=true needs the 'trackio' package: pip install 'stare-rl[trackio]'") from e
            tio.init(project=project, name=run_name, config=dict(config or {}))
            self._trackio = tio

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        data = (json.dumps(record) + "\n").encode("utf-8")
        while data:  # one write in practice; a short write is continued, never interleaved
            data = data[os.write(self._fd, data):]
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v)}
        numeric.update({k: float(v) for k, v in metrics.items() if isinstance(v, bool)})
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)
        if self._trackio is not None:
            self._trackio.log(numeric, step=step)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._trackio is not None:
            self._trackio.finish()


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep the records of steps <= ``last_step`` (and drop a torn last line), atomically: the kept
    lines go to a temporary file, which is fsynced and renamed over ``path``. Returns the number kept."""
    from ..report.runs import read_metrics

    path = Path(path)
    kept = [r for r in read_metrics(path) if isinstance(r.get("step"), int) and r["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(kept)


def quiet_transformers() -> None:
    """Silence transformers' progress bars and info messages (command line and child processes)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

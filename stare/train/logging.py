"""Metric sinks: JSONL and TensorBoard always, Weights & Biases and trackio when asked for.

One call per step, ``log(step, metrics)``; names follow verl's (``actor/entropy``, ``critic/score/mean``,
``timing_s/rollout`` ...; the full table is in docs/training.md). Every line of ``metrics.jsonl`` is flushed
when written, so a crash loses at most the step in progress. Non-finite values are written as null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

__all__ = ["MetricsLogger", "quiet_transformers"]


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
            # drop lines of steps after the checkpoint we resume from: they will be recomputed
            kept = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln).get("step", -1) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a")
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
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
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
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._trackio is not None:
            self._trackio.finish()


def quiet_transformers() -> None:
    """Silence transformers' progress bars and info messages (command line and child processes)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

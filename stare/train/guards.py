"""Stop a run that trains nothing.

A step trains nothing when it makes no optimizer step: dynamic sampling found no group with mixed
outcomes within ``rollout.max_gen_rounds`` rounds (``actor/skipped_no_signal``), or every optimizer
step of it had a non-finite loss or gradient. Either way its ``actor/grad_norm`` is missing or null.
A diverged model (a huge learning rate) produces such steps forever, each one running all its
sampling rounds; before this guard only non-finite steps counted towards the abort, so such a run
went on for its whole length and exited 0.

``IdleGuard.observe`` counts these steps in a row and raises ``TrainingAborted`` at
``trainer.max_consecutive_skips`` with a message saying what happened and where the last checkpoint
is. The count survives a resume: it is rebuilt from the run's ``metrics.jsonl`` (the records up to the
checkpoint, which is what the resumed run keeps).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["IdleGuard", "TrainingAborted", "trained_nothing"]


class TrainingAborted(RuntimeError):
    """A run stopped because too many steps in a row had a non-finite loss or gradient, or trained nothing."""


def trained_nothing(record: Mapping[str, Any]) -> bool:
    """True for a step (a live metrics dict or a ``metrics.jsonl`` record) that made no optimizer step."""
    g = record.get("actor/grad_norm")
    return g is None or (isinstance(g, float) and not math.isfinite(g))


class IdleGuard:
    def __init__(self, limit: int, streak: list[Mapping[str, Any]] | None = None):
        self.limit = int(limit)
        self.streak: list[Mapping[str, Any]] = list(streak or [])

    @classmethod
    def resume(cls, metrics_path: Path, limit: int) -> "IdleGuard":
        """The guard of a run whose ``metrics.jsonl`` holds the steps done so far (none: a fresh run)."""
        from ..report.runs import read_metrics

        records = read_metrics(metrics_path, missing_ok=True)
        streak = []
        for r in reversed(records):
            if not trained_nothing(r):
                break
            streak.append(r)
        return cls(limit, streak[::-1])

    def observe(self, step: int, metrics: Mapping[str, Any], last_checkpoint: Callable[[], Any] = lambda: None) -> None:
        """Count step ``step``; raise ``TrainingAborted`` when ``limit`` steps in a row trained nothing."""
        if not trained_nothing(metrics):
            self.streak = []
            return
        self.streak.append(metrics)
        if len(self.streak) < self.limit:
            return

        no_signal = sum(bool(m.get("actor/skipped_no_signal")) for m in self.streak)
        bad = len(self.streak) - no_signal
        why = []
        if no_signal:
            last = next(m for m in reversed(self.streak) if m.get("actor/skipped_no_signal"))
            full, zero = last.get("batch/full_solve_ratio") or 0.0, last.get("batch/zero_solve_ratio") or 0.0
            hint = ("the policy fails every prompt: diverged (check optim.lr) or the task is too hard for it"
                    if zero >= full else "the policy solves every prompt: nothing left to learn on this data")
            why.append(f"{no_signal} found no group with mixed outcomes after {last.get('batch/gen_rounds')} "
                       f"rounds (last: {full:.0%} of the groups all correct, {zero:.0%} all wrong; {hint})")
        if bad:
            why.append(f"{bad} had a non-finite loss or gradient in every optimizer step")
        ckpt = last_checkpoint()
        where = f"the last checkpoint is {ckpt}" if ckpt is not None else "no checkpoint was written"
        raise TrainingAborted(
            f"{len(self.streak)} steps in a row trained nothing (up to step {step}): {'; '.join(why)}. Stopping "
            f"(trainer.max_consecutive_skips={self.limit}); {where}")

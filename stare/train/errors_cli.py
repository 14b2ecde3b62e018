"""How ``stare`` commands report errors: a user error (``stare.checks.UserError``: config, data, task
options, model path, run folder) or a stopped run (``TrainingAborted``) is one line on stderr, and the
command exits 2 (user error) or 3 (run stopped); ``STARE_TRACEBACK=1`` prints the traceback too.
Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

from ..checks import UserError

__all__ = ["one_line", "run_reporting_errors"]


def one_line(message: Any, limit: int = 2000) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(e: BaseException) -> str | None:
    trainer = sys.modules.get("stare.train.trainer")  # a run can only stop once the trainer is loaded
    if trainer is not None and isinstance(e, trainer.TrainingAborted):
        return "training stopped"
    if isinstance(e, UserError):
        names = {c.__name__ for c in type(e).__mro__}
        return "config error" if "ConfigError" in names else "data error" if "DataError" in names else "error"
    return None


def run_reporting_errors(func: Callable[[Any], int], args: Any) -> int:
    try:
        return func(args)
    except Exception as e:
        kind = _kind(e)
        if kind is None:
            raise
        if os.environ.get("STARE_TRACEBACK"):
            traceback.print_exc()
        print(f"stare: {kind}: {one_line(e)}", file=sys.stderr)
        return 3 if kind == "training stopped" else 2

"""Warnings for knobs that cannot act in the current regime (docs/methods.md §E.4).

On-policy (one mini-batch, one epoch) the importance ratio is identically 1: clip bounds, dual clip and
GSPO's clip range never trigger, and KL-Cov's |log pi - log pi_old| penalty is identically 0. Users set
these knobs and see nothing happen; we say so, once per process and knob.
"""

from __future__ import annotations

import warnings

__all__ = ["InertKnobWarning", "warn_inert", "reset_inert_warnings"]

_seen: set[str] = set()


class InertKnobWarning(UserWarning):
    """A configured hyperparameter has no effect in the current regime."""


def warn_inert(key: str, message: str) -> None:
    if key in _seen:
        return
    _seen.add(key)
    warnings.warn(message, InertKnobWarning, stacklevel=3)


def reset_inert_warnings() -> None:
    """Forget which warnings were given (for tests and long-lived processes)."""
    _seen.clear()

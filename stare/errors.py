"""The one exception type for bad input from a user: a config value, a data file, a task option, a model
path. ``stare`` commands print such an error as one line (``stare: error: <message>``) and exit 2; its
message names the field (``optim.betas``, ``task.options.train``, ``d.jsonl: line 3: field 'answer'``) and
what is valid. Set ``STARE_TRACEBACK=1`` to see the traceback as well. Everything else (a bug) keeps
its traceback.

Imports nothing, so every layer (``stare.env`` included) can raise it.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input from the user; the message names the field and the valid values."""

"""The calculator tool, run in a separate process with CPU-time, memory and wall-clock limits.

``Sandbox.run(code)`` sends the code to a worker process of ``ProcessPool`` that has loaded only
``calculator.py`` (standard library; no ``stare``, no torch) and returns its text. Defence in depth:

1. the interpreter (``calculator.py``) refuses imports, attribute escapes and unknown builtins, bounds
   every big-number and sequence operation and charges a work budget, so hostile code normally ends
   with a clean ``Error: ...`` inside the worker, which survives;
2. the worker has an address-space limit (``memory_mb``), a CPU-time limit per call (``cpu_s``,
   enforced by the kernel with SIGXCPU), no file writes (``RLIMIT_FSIZE`` = 0), stdin and stdout
   taken over by the protocol;
3. the parent kills the worker at ``timeout_s`` wall-clock seconds.

A worker killed by 2 or 3 is replaced, and the model gets a clean message. ``run`` never raises, so a
rollout keeps going whatever the code does.

Defaults: 5 s wall clock, 3 CPU-seconds, 256 MiB (the interpreter's own budget, ``MAX_STEPS``, ends
loops in about 1 s; the process limits only matter if it has a bug). The workers start when the
sandbox is built; ``num_workers`` calls run at once (``run_tool_episodes`` runs that many tool calls of
a batch in parallel). Output is returned through ``stare.env.text.encodable``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..procpool import CallTimeout, ProcessPool, WorkerDied, WorkerError
from ..text import encodable

__all__ = ["CALCULATOR", "Sandbox"]

CALCULATOR = Path(__file__).with_name("calculator.py")


class Sandbox:
    """A pool of calculator processes. ``handler`` may name another file with ``HANDLERS["run"]``
    (tests use it to check the process limits with code that the interpreter would refuse)."""

    def __init__(
        self,
        *,
        num_workers: int = 1,
        timeout_s: float = 5.0,
        cpu_s: int = 3,
        memory_mb: int = 256,
        handler: str | os.PathLike = CALCULATOR,
    ):
        self.timeout_s = timeout_s
        self.num_workers = num_workers
        self._pool_args = dict(
            num_workers=num_workers, timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb
        )
        self._handler = handler
        self._pool: ProcessPool | None = None
        self.pool  # start the workers now

    @property
    def pool(self) -> ProcessPool:
        if self._pool is None:
            self._pool = ProcessPool(self._handler, **self._pool_args)
        return self._pool

    def run(self, code: str) -> str:
        """The calculator's output for ``code``, or a one-line error; never raises."""
        try:
            out = self.pool.call("run", code)
        except CallTimeout as e:
            if e.startup:
                return f"Error: the calculator was not ready within {self.timeout_s:g} s; try again"
            return f"Error: time limit exceeded ({self.timeout_s:g} s); the calculator was restarted"
        except WorkerDied:
            return "Error: the calculator process was stopped (CPU-time or memory limit); it was restarted"
        except WorkerError as e:
            return f"Error: the calculator failed ({str(e)[:200]})"
        except RuntimeError as e:  # the worker could not start
            return f"Error: the calculator is unavailable ({str(e)[:200]})"
        return encodable(out) if isinstance(out, str) else "Error: the calculator returned no text"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A small pool of worker processes whose calls have a wall-clock limit that holds from any thread.

Verifiers (math-verify, reasoning-gym) and the calculator sandbox run code that can take unbounded time
or memory on adversarial input. math-verify's own time limits use ``signal.alarm``, which only works in
the main thread of the main interpreter; a trainer scores from worker threads and cannot rely on it. So
each call goes to a separate process and the caller waits on a pipe with a deadline: when it passes,
the worker is killed (SIGKILL), a replacement is started, and the caller gets ``CallTimeout`` at once.
A crashed worker (segfault, out of memory) is replaced the same way and the call raises ``WorkerDied``.

How a worker is built (see ``_procworker.py``): ``python -I <path>/_procworker.py <handler file>``, a
fresh interpreter in isolated mode that does not import ``stare`` (so not torch) and loads only the
handler file, a module whose ``HANDLERS`` dict names the functions a caller may invoke. The worker sets
its own resource limits (address space, CPU time per call, no file writes) before it reads a request.

The limit counts from the call: waiting for a free worker, and for a worker that is still starting
(a fresh pool, or the replacement of a killed one), is part of it, so no caller waits longer than its
limit. A call that runs out of time while its worker is still starting raises ``CallTimeout`` and
leaves the worker starting for the next call; a worker that has not started within
``startup_timeout_s`` of its spawn, or that fails to start, is replaced and the call raises
``RuntimeError`` naming the handler. Workers are spawned when the pool is built.

Protocol: length-prefixed frames on the worker's stdin/stdout. Requests are pickled (the parent is
trusted); replies are JSON (the worker may run hostile input, so the parent never unpickles from it),
at most ``max_reply_bytes``.

Not a general-purpose executor: handlers must be plain functions of picklable arguments returning
JSON-serialisable values, and a worker serves one call at a time.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["CallTimeout", "PoolStats", "ProcessPool", "WorkerDied", "WorkerError"]

_WORKER_MAIN = Path(__file__).with_name("_procworker.py")
_HEADER = struct.Struct(">I")


class WorkerError(RuntimeError):
    """The handler raised inside the worker (the worker survives)."""


class CallTimeout(RuntimeError):
    """The call ran past its wall-clock limit; the worker was killed and replaced (or, when the limit
    passed while waiting for a free or starting worker, ``startup`` is True and nothing was killed)."""

    def __init__(self, message: str = "timed out", *, startup: bool = False):
        super().__init__(message)
        self.startup = startup


class WorkerDied(RuntimeError):
    """The worker exited during the call (crash, memory or CPU limit); it was replaced."""


@dataclass
class PoolStats:
    """Counters since the pool started (read them for logging; they are not reset)."""

    calls: int = 0
    timeouts: int = 0
    waits_timed_out: int = 0  # of the timeouts: the limit passed before a started worker was free
    deaths: int = 0
    handler_errors: int = 0
    spawned: int = 0
    call_seconds: list[float] = field(default_factory=list, repr=False)


class _StartupFailed(Exception):
    pass


def _wait_fd(fd: int, event: int, deadline: float) -> None:
    """Wait until ``fd`` is ready for ``event`` (poll has no FD_SETSIZE limit, unlike select)."""
    poller = select.poll()
    poller.register(fd, event | select.POLLHUP | select.POLLERR)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CallTimeout("timed out")
        if poller.poll(max(1, int(remaining * 1000))):
            return  # readable, writable, or hung up (the read/write then reports it)


class _Worker:
    def __init__(self, handler: Path, limits: dict[str, Any], stderr: Any):
        cmd = [sys.executable, "-I", str(_WORKER_MAIN), str(handler), json.dumps(limits)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
            close_fds=True,
            start_new_session=True,  # a Ctrl-C in the trainer's terminal reaches the trainer only
        )
        self.spawned_at = time.monotonic()
        self.ready = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail in practice
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def send(self, payload: bytes, deadline: float) -> None:
        data = memoryview(_HEADER.pack(len(payload)) + payload)
        fd = self.proc.stdin.fileno()
        while data:
            _wait_fd(fd, select.POLLOUT, deadline)
            n = os.write(fd, data[: 1 << 16])
            data = data[n:]

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            _wait_fd(fd, select.POLLIN, deadline)
            chunk = os.read(fd, min(n - got, 1 << 20))
            if not chunk:
                raise WorkerDied(f"worker exited (return code {self.proc.poll()})")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def receive(self, deadline: float, max_bytes: int) -> Any:
        (n,) = _HEADER.unpack(self._read_exact(_HEADER.size, deadline))
        if n > max_bytes:
            raise WorkerDied(f"worker sent a {n}-byte reply (limit {max_bytes})")
        return json.loads(self._read_exact(n, deadline).decode("utf-8"))


class ProcessPool:
    """``num_workers`` processes running the functions of one handler file, each call time-limited.

    handler: path of a module with ``HANDLERS: dict[str, callable]`` (and optionally ``warmup()``);
        it must import nothing from ``stare`` (it is loaded by path in a bare interpreter).
    timeout_s: default wall-clock limit per call, counted from the call (waiting for a free or a
        starting worker included).
    memory_mb: address-space limit of each worker (``RLIMIT_AS``); None leaves it unlimited.
    cpu_s: CPU-seconds allowed per call (``RLIMIT_CPU`` re-armed before each call, whole seconds);
        None leaves it unlimited. The wall-clock limit applies in any case.
    spares: workers started ahead of need: a killed worker is replaced by a spare that has already
        imported its handler, so the next caller does not wait for a start (about 1 s for math-verify).
    startup_timeout_s: how long a new worker may take, from its spawn, to import its handler and warm
        up; past it the worker is replaced and a call raises RuntimeError (no call waits that long:
        each waits at most its own limit).
    disable_builtins: names of builtins (e.g. ``("eval",)``) replaced in the worker, after warm-up, by a
        function that raises; a handler can read how often anything tried (``_procworker.eval_attempts``).
    quiet: discard the workers' stderr (library warnings); False passes it through.
    """

    def __init__(
        self,
        handler: str | os.PathLike,
        *,
        num_workers: int = 1,
        timeout_s: float = 2.0,
        memory_mb: int | None = 2048,
        cpu_s: int | None = None,
        spares: int = 0,
        startup_timeout_s: float = 120.0,
        max_reply_bytes: int = 1 << 20,
        disable_builtins: Sequence[str] = (),
        quiet: bool = True,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.handler = Path(handler).resolve()
        if not self.handler.is_file():
            raise FileNotFoundError(f"handler file not found: {self.handler}")
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.max_reply_bytes = max_reply_bytes
        self._limits = {"memory_mb": memory_mb, "disable_builtins": list(disable_builtins)}
        self._cpu_s = cpu_s
        self._stderr = subprocess.DEVNULL if quiet else None
        self.stats = PoolStats()
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._spares: list[_Worker] = []
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        for _ in range(num_workers):
            self._idle.put(self._spawn())
        for _ in range(spares):
            self._spares.append(self._spawn())
        # Killed when the pool is collected or at interpreter exit (finalize's atexit); workers also
        # exit by themselves when the parent dies, as their stdin closes.
        self._finalizer = weakref.finalize(self, ProcessPool._kill_all, self._all)

    # -- lifecycle -------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        worker = _Worker(self.handler, self._limits, self._stderr)
        with self._lock:
            self._all.add(worker)
            self.stats.spawned += 1
        return worker

    def _replacement(self) -> _Worker:
        """A spare if there is one (and a new spare in its place), else a new worker."""
        with self._lock:
            spare = self._spares.pop(0) if self._spares else None
        if spare is None:
            return self._spawn()
        fresh = self._spawn()
        with self._lock:
            self._spares.append(fresh)
        return spare

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    @staticmethod
    def _kill_all(workers: set[_Worker]) -> None:
        for w in list(workers):
            w.kill()
        workers.clear()

    def close(self) -> None:
        """Kill every worker. Calls made after this raise RuntimeError."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._finalizer()

    def __enter__(self) -> "ProcessPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until every worker has started (before timing calls, or before the first calls of a
        run, which otherwise count a start against their limit). ``timeout_s`` bounds the wait
        (default ``startup_timeout_s``); RuntimeError if a worker fails or does not start in time."""
        deadline = time.monotonic() + (self.startup_timeout_s if timeout_s is None else float(timeout_s))
        workers = [self._idle.get() for _ in range(self.num_workers)]
        failure = None
        for i, w in enumerate(workers):
            try:
                self._ensure_ready(w, deadline)
            except CallTimeout:
                failure = failure or _StartupFailed("not ready within the wait")
            except _StartupFailed as e:
                self._retire(w)
                workers[i] = self._spawn()
                failure = failure or e
        for w in workers:
            self._idle.put(w)
        if failure is not None:
            raise self._startup_error(failure)

    def _ensure_ready(self, worker: _Worker, deadline: float) -> None:
        """Wait for the worker's hello until ``deadline`` (CallTimeout: the worker is left starting) or
        its own start-up limit (_StartupFailed), whichever comes first."""
        if worker.ready:
            return
        startup_deadline = worker.spawned_at + self.startup_timeout_s
        try:
            _wait_fd(worker.proc.stdout.fileno(), select.POLLIN, min(deadline, startup_deadline))
        except CallTimeout:
            if deadline < startup_deadline:
                raise CallTimeout("the worker was still starting", startup=True) from None
            raise _StartupFailed(f"not started within {self.startup_timeout_s:g} s") from None
        try:
            # the hello frame is one small write, so once readable it is all there
            hello = worker.receive(time.monotonic() + 5.0, self.max_reply_bytes)
        except (CallTimeout, WorkerDied, ValueError) as e:
            raise _StartupFailed(str(e)) from None
        if not hello.get("ready"):
            raise _StartupFailed(str(hello.get("error")))
        worker.ready = True

    def _startup_error(self, e: _StartupFailed) -> RuntimeError:
        return RuntimeError(
            f"a worker for {self.handler.name} failed to start ({e}); run "
            f"`python -I {_WORKER_MAIN} {self.handler}` to see its error"
        )

    # -- calls -----------------------------------------------------------------------------------

    def call(self, fn: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Run ``HANDLERS[fn](*args)`` in a worker; return its value or raise one of
        ``CallTimeout``, ``WorkerDied``, ``WorkerError`` (the handler raised). The limit counts from
        this call: a wait for a free or starting worker is part of it."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        start = time.monotonic()
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        deadline = start + limit
        payload = pickle.dumps((fn, args, self._cpu_s), protocol=pickle.HIGHEST_PROTOCOL)
        worker = self._next_idle(deadline)
        if worker is None:
            self._count(timeouts=1, waits=1)
            raise CallTimeout(f"{fn}: no worker was free within {limit:g} s", startup=True)
        release = worker
        try:
            try:
                self._ensure_ready(worker, deadline)
            except CallTimeout:
                self._count(timeouts=1, waits=1)
                raise CallTimeout(f"{fn}: the worker was still starting when the {limit:g} s limit passed",
                                  startup=True) from None
            except _StartupFailed as e:
                self._retire(worker)
                release = self._spawn()
                raise self._startup_error(e) from None
            try:
                worker.send(payload, deadline)
                reply = worker.receive(deadline, self.max_reply_bytes)
            except CallTimeout:
                self._retire(worker)
                release = self._replacement()
                self._count(timeouts=1)
                raise CallTimeout(f"{fn} ran past {limit:g} s; the worker was killed and replaced") from None
            except (WorkerDied, OSError, ValueError) as e:
                self._retire(worker)
                release = self._replacement()
                self._count(deaths=1)
                raise WorkerDied(f"{fn}: {e}") from None
            except BaseException:
                # An interrupt in the caller: a worker in an unknown state is never reused.
                self._retire(worker)
                release = self._replacement()
                raise
        finally:
            self._idle.put(release)
        self._count(seconds=time.monotonic() - start, handler_errors=0 if reply.get("ok") else 1)
        if not reply.get("ok"):
            raise WorkerError(str(reply.get("error", "unknown error")))
        return reply.get("value")

    def _next_idle(self, deadline: float) -> _Worker | None:
        """A free worker, or None when ``deadline`` passes first. Every call releases its worker
        within its own limit; the loop also notices a close() that happens while callers wait."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                return self._idle.get(timeout=min(0.5, remaining))
            except queue.Empty:
                if self._closed:
                    raise RuntimeError("the pool is closed") from None

    def _count(self, *, timeouts: int = 0, deaths: int = 0, handler_errors: int = 0,
               seconds: float | None = None, waits: int = 0) -> None:
        with self._lock:
            st = self.stats
            st.calls += 1
            st.timeouts += timeouts
            st.waits_timed_out += waits
            st.deaths += deaths
            st.handler_errors += handler_errors
            if seconds is not None:
                st.call_seconds.append(seconds)
                if len(st.call_seconds) > 10_000:
                    del st.call_seconds[:5_000]

    def map(
        self,
        fn: str,
        arg_tuples: Sequence[tuple],
        *,
        timeout_s: float | None = None,
        on_error: Callable[[BaseException, tuple], Any] | None = None,
    ) -> list[Any]:
        """``[call(fn, *a) for a in arg_tuples]`` with up to ``num_workers`` calls in flight.

        on_error(exception, args) gives the value for a failed call; without it the first failure
        is raised (after the other calls finish).
        """
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.num_workers, thread_name_prefix="procpool")

        def one(a: tuple) -> Any:
            try:
                return self.call(fn, *a, timeout_s=timeout_s)
            except (CallTimeout, WorkerDied, WorkerError) as e:
                if on_error is None:
                    raise
                return on_error(e, a)

        return list(self._executor.map(one, arg_tuples))

"""The math verifier: equivalence of an extracted answer with the reference, through math-verify.

The STARE reward (docs/methods.md §3.6) is accuracy in {0, 1} with a format flag logged beside it.
``MathVerifier.score`` extracts the final answer (``stare.env.answers.extract_answer``), rejects answers
longer than ``max_answer_chars`` or nested deeper than ``max_nesting`` (no reference answer in the shipped
benchmarks exceeds 202 characters), accepts answers equal to the reference after a light normalisation
(spacing commands, ``\\left``/``\\right``, ``\\dfrac``, ``$``) without starting any process, and sends the
rest to math-verify in a worker process with a wall-clock limit (``ProcessPool``): the caller never waits
longer, from any thread.

Deviations from the official STARE reward (hp-luo/STARE ``math_stare``), on purpose:

* STARE sets acc = 1 if any of three checks passes (math-verify on the extracted segment, on the
  boxed content, or mathruler's grader on the boxed content). We verify one answer, the last stated,
  so a response cannot hedge between a boxed answer and an "Answer:" line.
* mathruler's grader and math-verify's plain-expression parser run sympy's ``parse_expr``, i.e.
  ``eval``; neither is used. The normalised string match stands in for the cheap third check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..answers import clean_answer, extract_answer, nesting_depth, normalize_answer
from ..base import Score
from ..procpool import CallTimeout, ProcessPool, WorkerDied, WorkerError

__all__ = ["MathVerifier", "VerifierStats"]

_HANDLER = Path(__file__).with_name("_mv_handler.py")


@dataclass
class VerifierStats:
    """Counters since the verifier was built: how each verdict was reached."""

    scored: int = 0
    no_answer: int = 0
    rejected: int = 0  # too long or too deeply nested
    fast_path: int = 0  # equal to the reference after normalisation
    verified: int = 0  # sent to math-verify (and it answered)
    timeouts: int = 0
    not_ready: int = 0  # of the timeouts: the limit passed while waiting for a starting worker
    worker_errors: int = 0  # worker died or the handler raised
    eval_blocked: int = 0  # something inside math-verify tried eval and was refused (scored 0)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)


class MathVerifier:
    """Scores math responses against reference answers; thread-safe, time-limited, never raises on
    model output.

    num_workers: math-verify processes (started when the verifier is built; each 1.7-3 s to start,
        ~100 MB), plus one spare that replaces a worker killed at the time limit without a wait.
    timeout_s: wall-clock limit per math-verify call, counted from the call: a wait for a worker that
        is still starting is part of it, so every call returns within the limit plus the kill (a few
        ms). The slowest legitimate check measured on the shipped benchmarks' answers took 0.74 s
        (docs/data_and_rewards.md). A check made before the workers are up (the first seconds
        after the verifier is built) scores 0 when the limit passes first (``stats.not_ready``);
        ``wait_ready()`` waits for them.
    memory_mb: address-space limit of each worker.
    max_answer_chars / max_nesting: answers past these are scored 0 without calling math-verify.
    think_required: a response without ``</think>`` has no answer (long chain of thought).
    """

    def __init__(
        self,
        *,
        num_workers: int = 2,
        timeout_s: float = 1.5,
        memory_mb: int = 2048,
        max_answer_chars: int = 1000,
        max_nesting: int = 50,
        think_required: bool = False,
    ):
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_answer_chars = max_answer_chars
        self.max_nesting = max_nesting
        self.think_required = think_required
        self.stats = VerifierStats()
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()
        self.pool  # the workers start now, while the caller loads its model and data

    @property
    def pool(self) -> ProcessPool:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPool(
                    _HANDLER,
                    num_workers=self.num_workers,
                    timeout_s=self.timeout_s,
                    memory_mb=self.memory_mb,
                    spares=1,
                    disable_builtins=("eval",),
                )
            return self._pool

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the math-verify workers have started (RuntimeError if one cannot start)."""
        self.pool.wait_ready(timeout_s)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> "MathVerifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scoring ---------------------------------------------------------------------------------

    def _prepare(self, gold: str, response: Any) -> tuple[Score | None, str, str, bool]:
        """Everything before math-verify: a final Score, or None and (gold, pred, format_ok)."""
        ext = extract_answer(response, think_required=self.think_required)
        self.stats.add(scored=1)
        if ext.answer is None:
            self.stats.add(no_answer=1)
            return Score(0.0, 0.0, False, None), "", "", False
        pred = ext.answer
        gold = clean_answer(str(gold))
        if len(pred) > max(self.max_answer_chars, 4 * len(gold)) or nesting_depth(pred) > self.max_nesting:
            self.stats.add(rejected=1)
            return Score(0.0, 0.0, ext.format_ok, pred[:200]), gold, pred, ext.format_ok
        if normalize_answer(pred) and normalize_answer(pred) == normalize_answer(gold):
            self.stats.add(fast_path=1)
            return Score(1.0, 1.0, ext.format_ok, pred), gold, pred, ext.format_ok
        return None, gold, pred, ext.format_ok

    def _verdict(self, value: Any, pred: str, format_ok: bool) -> Score:
        equal = bool(value.get("equal")) and not value.get("eval_blocked")
        self.stats.add(verified=1, eval_blocked=int(bool(value.get("eval_blocked"))))
        acc = 1.0 if equal else 0.0
        return Score(acc, acc, format_ok, pred[:200])

    def _failed(self, err: BaseException, pred: str, format_ok: bool) -> Score:
        if isinstance(err, CallTimeout):
            self.stats.add(timeouts=1, not_ready=int(err.startup))
        else:
            self.stats.add(worker_errors=1)
        return Score(0.0, 0.0, format_ok, pred[:200])

    def score(self, gold: str, response: Any) -> Score:
        """One response; safe from any thread."""
        done, gold, pred, format_ok = self._prepare(gold, response)
        if done is not None:
            return done
        try:
            value = self.pool.call("equivalent", gold, pred)
        except (CallTimeout, WorkerDied, WorkerError) as e:
            return self._failed(e, pred, format_ok)
        return self._verdict(value, pred, format_ok)

    def score_many(self, golds: Sequence[str], responses: Sequence[Any]) -> list[Score]:
        """A batch, with up to ``num_workers`` math-verify calls in flight."""
        if len(golds) != len(responses):
            raise ValueError(f"{len(golds)} reference answers but {len(responses)} responses")
        out: list[Score | None] = []
        todo: list[tuple[int, str, str, bool]] = []
        for i, (g, r) in enumerate(zip(golds, responses)):
            done, gold, pred, format_ok = self._prepare(g, r)
            out.append(done)
            if done is None:
                todo.append((i, gold, pred, format_ok))
        if todo:
            values = self.pool.map(
                "equivalent", [(g, p) for _, g, p, _ in todo], on_error=lambda e, a: e
            )
            for (i, _, pred, format_ok), v in zip(todo, values):
                out[i] = self._failed(v, pred, format_ok) if isinstance(v, BaseException) else \
                    self._verdict(v, pred, format_ok)
        return out  # type: ignore[return-value]

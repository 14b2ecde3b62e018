"""Math answers: extraction from a response, and equivalence with the reference via math-verify.

The STARE reward (methods.md §3.6) is accuracy in {0, 1} with a format flag logged beside it. Here:

1. ``extract_answer`` finds the final answer, in linear time, in the last ``SEARCH_WINDOW`` characters:
   the text after the last ``</think>`` (or ``</thinking>``) if there is one, inside the last
   ``<answer>...</answer>`` if there is one; in it, whichever of the last ``\\boxed{...}`` (nested braces
   matched) and the last "Answer:" line (also "The final answer is ...") comes last. Those set
   ``format_ok``. Failing both, a last resort (``format_ok=False``): the last ``$...$``/``\\(...\\)``/
   ``\\[...\\]`` span, else the last number, within the final 300 characters (STARE's window).
2. ``MathVerifier.score`` rejects answers longer than ``max_answer_chars`` or nested deeper than
   ``max_nesting`` (no reference answer in the shipped benchmarks exceeds 202 characters), accepts
   answers equal to the reference after a light normalisation (spacing commands, ``\\left``/``\\right``,
   ``\\dfrac``, ``$``) without starting any process, and sends the rest to math-verify in a worker
   process with a wall-clock limit (``ProcessPool``): the caller never waits longer, from any thread.

Deviations from the official STARE reward (hp-luo/STARE ``math_stare``), on purpose:

* STARE sets acc = 1 if any of three checks passes (math-verify on the extracted segment, on the
  boxed content, or mathruler's grader on the boxed content). We verify one answer, the last stated,
  so a response cannot hedge between a boxed answer and an "Answer:" line.
* mathruler's grader and math-verify's plain-expression parser run sympy's ``parse_expr``, i.e.
  ``eval``; neither is used. The normalised string match stands in for the cheap third check.
* A ``<think>`` that is opened and never closed (or, with ``think_required``, a missing ``</think>``)
  yields no answer: a truncated chain of thought is not graded on a ``\\boxed{}`` inside it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..procpool import CallTimeout, ProcessPool, WorkerDied, WorkerError
from ..tasks.base import Score

__all__ = [
    "Extracted",
    "after_thinking",
    "last_answer_tag",
    "MathVerifier",
    "VerifierStats",
    "extract_answer",
    "nesting_depth",
    "normalize_answer",
    "to_text",
]

SEARCH_WINDOW = 50_000  # characters from the end of the response that extraction looks at
FALLBACK_WINDOW = 300  # STARE's last-resort window (methods.md §3.6)

_HANDLER = Path(__file__).with_name("_mv_handler.py")

# One token stream for brace matching: escaped braces are literal text, \boxed{ / \fbox{ open a box.
_BRACE_TOKENS = re.compile(r"\\[{}]|\\(?:boxed|fbox)\s*\{|[{}]")
_ANSWER_LINE = re.compile(r"(?i)(?:\banswer\s*[:：]|\bfinal answer is\b)[ \t]*([^\n]*)")
_FINAL_IS = re.compile(r"(?i)^(?:the\s+)?final answer is\s*:?\s*")
_HOPE = re.compile(r"(?i)\.?\s*I hope it is correct\.?\s*$")
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_THINK_CLOSE = re.compile(r"</think(?:ing)?>")
_THINK_OPEN = re.compile(r"<think(?:ing)?>")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_SPACING = re.compile(r"\\(?:[,;:! ]|q?quad(?![a-zA-Z])|displaystyle(?![a-zA-Z])|left(?![a-zA-Z])|right(?![a-zA-Z]))|\s+")


def to_text(response: Any) -> str:
    """Any model output as a valid str: bytes decoded as UTF-8 (bad bytes become U+FFFD), lone
    surrogates replaced, None as ""."""
    if response is None:
        return ""
    if isinstance(response, (bytes, bytearray, memoryview)):
        return bytes(response).decode("utf-8", errors="replace")
    text = response if isinstance(response, str) else str(response)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


@dataclass(frozen=True)
class Extracted:
    """answer: the extracted final answer (None if none); format_ok: it came from ``\\boxed{}`` or an
    answer line; how: "boxed", "answer_line", "math_span", "number", "unclosed_think" or "none"."""

    answer: str | None
    format_ok: bool
    how: str


def _last_boxed(text: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the last complete ``\\boxed{...}``/``\\fbox{...}``, by end position."""
    stack: list[tuple[int, int]] = []  # (content start, box start or -1 for a plain brace)
    best = None
    for m in _BRACE_TOKENS.finditer(text):
        tok = m.group()
        if tok in ("\\{", "\\}"):
            continue
        if tok == "}":
            if stack:
                content_start, box_start = stack.pop()
                if box_start >= 0:
                    best = (box_start, m.end(), text[content_start : m.start()])
            continue
        stack.append((m.end(), m.start() if tok != "{" else -1))
    return best


def _clean(answer: str) -> str:
    answer = answer.strip()
    answer = _HOPE.sub("", answer)
    answer = _FINAL_IS.sub("", answer)
    answer = answer.strip().strip("*").strip().rstrip(".").rstrip()
    boxed = _last_boxed(answer)
    if boxed is not None:
        return boxed[2].strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) >= len(left) + len(right):
            answer = answer[len(left) : len(answer) - len(right)].strip()
            break
    return answer.rstrip(".").strip()


def after_thinking(text: str) -> tuple[str, bool]:
    """(the text after the last ``</think>``/``</thinking>``, whether there was one), else (text, False)."""
    closes = list(_THINK_CLOSE.finditer(text))
    return (text[closes[-1].end() :], True) if closes else (text, False)


def last_answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` within the final ``SEARCH_WINDOW`` characters."""
    tags = _ANSWER_TAG.findall(text[-SEARCH_WINDOW:])
    return tags[-1] if tags else None


def extract_answer(response: Any, *, think_required: bool = False) -> Extracted:
    """The final answer of a response (see the module docstring for the rules)."""
    text, closed = after_thinking(to_text(response))
    if not closed and (think_required or _THINK_OPEN.search(text)):
        return Extracted(None, False, "unclosed_think")
    text = text[-SEARCH_WINDOW:]
    tagged = last_answer_tag(text)
    if tagged is not None:
        text = tagged

    boxed = _last_boxed(text)
    line = None
    for m in _ANSWER_LINE.finditer(text):
        if m.group(1).strip():
            line = m
    candidates = []
    if boxed is not None:
        candidates.append((boxed[1], "boxed", boxed[2].strip()))
    if line is not None:
        inner_box = boxed is not None and line.start() <= boxed[0] < line.end()
        if not inner_box:  # "Answer: \boxed{5}" is the boxed answer
            candidates.append((line.end(), "answer_line", _clean(line.group(1))))
    candidates = [c for c in candidates if c[2]]
    if candidates:
        _, how, answer = max(candidates, key=lambda c: c[0])
        return Extracted(answer, True, how)

    tail = text[-FALLBACK_WINDOW:]
    spans = [s for s in _MATH_SPAN.finditer(tail)]
    if spans:
        last = spans[-1]
        content = next(g for g in last.groups() if g is not None).strip()
        if content:
            return Extracted(_clean(content), False, "math_span")
    numbers = _NUMBER.findall(tail)
    if numbers:
        return Extracted(numbers[-1].replace(" ", ""), False, "number")
    return Extracted(None, False, "none")


def normalize_answer(answer: str) -> str:
    """A light, equivalence-preserving normal form for the string fast path: math delimiters, a
    surrounding ``\\boxed{}``, spacing commands, ``\\left``/``\\right`` and whitespace removed;
    ``\\dfrac``/``\\tfrac`` written ``\\frac``; a trailing period dropped."""
    answer = _clean(answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _SPACING.sub("", answer).rstrip(".")


def nesting_depth(text: str) -> int:
    """Deepest nesting of (), [] and {} (unbalanced closers ignored)."""
    depth = best = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}" and depth:
            depth -= 1
    return best


@dataclass
class VerifierStats:
    """Counters since the verifier was built: how each verdict was reached."""

    scored: int = 0
    no_answer: int = 0
    rejected: int = 0  # too long or too deeply nested
    fast_path: int = 0  # equal to the reference after normalisation
    verified: int = 0  # sent to math-verify (and it answered)
    timeouts: int = 0
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

    num_workers: math-verify processes (started on first need; each ~1 s to start, ~100 MB), plus one
        spare that replaces a worker killed at the time limit without a wait.
    timeout_s: wall-clock limit per math-verify call. The slowest legitimate check measured on the
        shipped benchmarks' answers took 0.74 s (docs/data_and_rewards.md); adversarial inputs hit
        the limit, so each returns within it plus the kill (a few ms).
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
        gold = _clean(str(gold))
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
            self.stats.add(timeouts=1)
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

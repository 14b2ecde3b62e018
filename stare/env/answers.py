"""Final answers in model text: extraction, light normalisation, and the text of any response object.

``extract_answer`` finds the final answer, in linear time, in the last ``SEARCH_WINDOW`` characters: the
text after the last ``</think>`` (or ``</thinking>``) if there is one, inside the last
``<answer>...</answer>`` if there is one; in it, whichever of the last ``\\boxed{...}`` (nested braces
matched) and the last "Answer:" line (also "The final answer is ...") comes last. Those set
``format_ok``. Failing both, a last resort (``format_ok=False``): the last ``$...$``/``\\(...\\)``/
``\\[...\\]`` span, else the last number, within the final 300 characters (STARE's window,
docs/methods.md §3.6).

A ``<think>`` that is opened and never closed (or, with ``think_required``, a missing ``</think>``)
yields no answer: a truncated chain of thought is not graded on a ``\\boxed{}`` inside it.

Shared by the math verifier, the data loaders (answer normalisation for deduplication) and the
reasoning-gym and tool-use tasks; imports nothing else of the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Extracted",
    "after_thinking",
    "clean_answer",
    "extract_answer",
    "last_answer_tag",
    "nesting_depth",
    "normalize_answer",
    "to_text",
]

SEARCH_WINDOW = 50_000  # characters from the end of the response that extraction looks at
FALLBACK_WINDOW = 300  # STARE's last-resort window (docs/methods.md §3.6)

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


def clean_answer(answer: str) -> str:
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
            candidates.append((line.end(), "answer_line", clean_answer(line.group(1))))
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
            return Extracted(clean_answer(content), False, "math_span")
    numbers = _NUMBER.findall(tail)
    if numbers:
        return Extracted(numbers[-1].replace(" ", ""), False, "number")
    return Extracted(None, False, "none")


def normalize_answer(answer: str) -> str:
    """A light, equivalence-preserving normal form for the string fast path: math delimiters, a
    surrounding ``\\boxed{}``, spacing commands, ``\\left``/``\\right`` and whitespace removed;
    ``\\dfrac``/``\\tfrac`` written ``\\frac``; a trailing period dropped."""
    answer = clean_answer(answer)
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



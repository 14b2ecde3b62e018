"""math-verify equivalence check, run inside a ``ProcessPool`` worker (loaded by path, not via stare).

Only math-verify's LaTeX extraction is used, for both the gold answer and the prediction, each wrapped
as ``\\boxed{...}``: its plain-expression extraction (``ExprExtractionConfig``) goes through sympy's
``parse_expr``, which calls ``eval``, and this project never evaluates model output. math-verify's own
signal-based time limits are switched off (``None``); the parent process enforces the wall-clock limit
by killing the worker.

One patch to a dependency: latex2sympy2_extended turns every number token into a sympy object with
``sympy.Number(text)``, which for a string calls ``sympify``, i.e. ``parse_expr`` and ``eval`` (the
tokens are digit strings, but it is still model text reaching ``eval``). ``_number`` builds the same
objects that ``sympify`` would (``Integer`` for integer literals, ``Float(text)`` for decimal and
exponent literals: sympy's ``auto_number`` rule) without evaluating anything, and replaces the two
places that call it (``convert_number`` and ``_Latex2Sympy.parse_number``).

The pool runs this worker with ``eval`` disabled after warm-up: a verdict reached while anything tried
it is reported, and the caller counts it and scores 0. ``exec`` stays: sympy's polynomial rings
generate their monomial helpers with ``exec`` from templates that depend only on the number of
variables (``sympy/polys/monomials.py``), never on input text.
"""

import logging
import re
import sys
from functools import lru_cache

import sympy
import sympy.physics.units  # noqa: F401 - imported lazily by sympy with eval of constant strings; do it before the guard
from latex2sympy2_extended import latex2sympy2 as _l2s
from math_verify import LatexExtractionConfig, parse, verify

logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # "timeout disabled" notices, parse failures

_CONFIG = [LatexExtractionConfig()]

_INT = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_SPECIAL = {"nan": sympy.nan, "inf": sympy.oo, "+inf": sympy.oo, "-inf": -sympy.oo}


def _number(text: str):
    """The sympy number that ``sympify(text)`` gives for a numeric literal, without ``eval``."""
    t = text.strip()
    if t.lower() in _SPECIAL:
        return _SPECIAL[t.lower()]
    if _INT.fullmatch(t):
        return sympy.Integer(int(t))  # int() drops leading zeros; over 4300 digits it raises
    if _DECIMAL.fullmatch(t):
        return sympy.Float(t)
    raise ValueError(f"not a numeric literal: {text[:50]!r}")


def _convert_number(number: str):
    # latex2sympy's rule: "0,111" is the decimal 0.111; other commas and spaces separate thousands.
    if "," in number and number.startswith("0"):
        number = number.replace(",", ".")
    return _number(number.replace(",", "").replace(" ", "").lstrip("0") or "0")


def _parse_number(self, text: str):
    return _number(text.replace(",", ""))


_l2s.convert_number = _convert_number
_l2s._Latex2Sympy.parse_number = _parse_number


def _eval_attempts() -> int:
    return getattr(sys.modules.get("__main__"), "eval_attempts", 0)


@lru_cache(maxsize=4096)
def _parse(answer: str):
    return parse("\\boxed{" + answer + "}", extraction_config=_CONFIG, parsing_timeout=None)


def equivalent(gold: str, pred: str) -> dict:
    """``{"equal": bool, "eval_blocked": bool}``: whether math-verify finds ``pred`` equal to ``gold``."""
    before = _eval_attempts()
    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    equal = bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None))
    return {"equal": equal, "eval_blocked": _eval_attempts() != before}


def warmup() -> None:
    # First calls build the ANTLR parser and sympy caches (~0.5 s); do it before saying ready.
    equivalent("\\frac{1}{2}", "0.5")
    equivalent("(1,2]", "x^2+\\sqrt{3}")
    _parse.cache_clear()


HANDLERS = {"equivalent": equivalent}

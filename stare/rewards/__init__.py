"""Rewards: math answer extraction and equivalence (time-limited worker processes), DAPO's overlong
shaping. Importing this package starts nothing; worker processes start on first use."""

from .math import Extracted, MathVerifier, VerifierStats, extract_answer, nesting_depth, normalize_answer, to_text
from .overlong import OverlongConfig, is_truncated, overlong_penalty

__all__ = [
    "Extracted",
    "MathVerifier",
    "OverlongConfig",
    "VerifierStats",
    "extract_answer",
    "is_truncated",
    "nesting_depth",
    "normalize_answer",
    "overlong_penalty",
    "to_text",
]

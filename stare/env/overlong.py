"""DAPO's overlong reward shaping and truncation masking (docs/methods.md §1.5), as pure functions.

Soft overlong punishment (DAPO, arXiv 2503.14476; verl ``DAPORewardManager``): with a generation cap
``max_len`` (L_max) and a buffer ``cache_len`` (L_cache), a response of ``length`` tokens gets

    0                                             if length <= L_max - L_cache
    -(length - (L_max - L_cache)) / L_cache * f   inside the buffer (f = penalty_factor)

added to its correctness reward, reaching -f at L_max. Deviation: verl's formula keeps falling past
L_max (it cannot get there, generation stops at L_max); we clamp at -f, the paper's "-1 beyond L_max".

Overlong filtering (DAPO; TRL ``mask_truncated_completions``): a response that hit the cap without an
end-of-sequence token is truncated, and its tokens are left out of the loss (``keep`` = 0).

Defaults (``OverlongConfig``): L_max 20480, L_cache 4096, f 1.0, from DAPO's reference recipe
(hp-luo/STARE ``recipe/dapo/run_dapo_qwen2.5_32b.sh``, the same as upstream verl); the STARE paper's
long chain-of-thought settings are not published (docs/methods.md §3.5, §13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

__all__ = ["OverlongConfig", "is_truncated", "overlong_penalty"]


def overlong_penalty(length: int, *, max_len: int, cache_len: int, penalty_factor: float = 1.0) -> float:
    """The soft punishment (<= 0) for a response of ``length`` tokens; see the module docstring."""
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    exceed = length - (max_len - cache_len)
    if exceed <= 0:
        return 0.0
    return -min(exceed / cache_len, 1.0) * penalty_factor


def is_truncated(
    token_ids: Sequence[int], *, eos_token_ids: Collection[int], max_new_tokens: int
) -> bool:
    """True if generation stopped at the length cap rather than at an end-of-sequence token.

    token_ids: the response's tokens (no padding). A response that ends with an EOS token is not
    truncated even at exactly ``max_new_tokens``; one shorter than the cap without EOS (stopped at a
    stop string) is not truncated either. Engines that report a finish reason ("length") say the same.
    """
    if len(token_ids) < max_new_tokens:
        return False
    return not (len(token_ids) > 0 and int(token_ids[-1]) in eos_token_ids)


@dataclass(frozen=True)
class OverlongConfig:
    """Overlong shaping for long chain-of-thought training.

    max_len: the generation cap L_max (tokens). cache_len: the buffer L_cache before it.
    penalty_factor: the punishment at L_max. soft_punishment: add the penalty to the reward.
    mask_truncated: leave truncated responses out of the loss (overlong filtering).
    """

    max_len: int = 20480
    cache_len: int = 4096
    penalty_factor: float = 1.0
    soft_punishment: bool = True
    mask_truncated: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.cache_len <= self.max_len:
            raise ValueError(f"need 0 < cache_len <= max_len, got {self.cache_len} and {self.max_len}")
        if self.penalty_factor < 0:
            raise ValueError(f"penalty_factor must be >= 0, got {self.penalty_factor}")

    def shape(self, reward: float, length: int, truncated: bool) -> tuple[float, float]:
        """(shaped reward, keep) for one response: keep is 0.0 for a masked truncated response."""
        if self.soft_punishment:
            reward += overlong_penalty(
                length, max_len=self.max_len, cache_len=self.cache_len, penalty_factor=self.penalty_factor
            )
        keep = 0.0 if (self.mask_truncated and truncated) else 1.0
        return reward, keep

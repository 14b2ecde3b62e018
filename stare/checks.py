"""Input validation with errors that name the offending argument, and name lookup with suggestions.

Two levels: shape and dtype checks read only tensor metadata and always run; value checks (finite,
binary mask) need one host synchronisation and run when ``validate=True`` (the default). A training
loop that has validated a mini-batch once can skip the value checks per micro-batch.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping

import torch
from torch import Tensor

__all__ = ["ConfigError", "UserError", "unknown_name_error", "check_choice", "check_shapes", "check_values", "check_fraction"]


class UserError(ValueError):
    """Bad input from a user (a config value, a data file, a task option, a model path), from any layer.
    The message names the field and what is valid; ``stare`` commands print it as one line and exit 2
    (``STARE_TRACEBACK=1`` shows the traceback too). Everything else, a bug, keeps its traceback."""


class ConfigError(UserError):
    """A configuration problem, naming the key that caused it and what is valid."""


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> UserError:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown {kind} '{name}'.{hint} Valid: {', '.join(valid)}")


def check_choice(kind: str, value: str, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise unknown_name_error(kind, value, valid)


def check_fraction(name: str, value: float, *, low_open: bool = False) -> None:
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1]'}, got {value}")


def check_shapes(reference: str, tensors: Mapping[str, Tensor | None], *, allow_rows: Iterable[str] = ()) -> None:
    """Every tensor must be floating and shaped like ``tensors[reference]`` ([B, T]).

    Names in ``allow_rows`` may instead be [B] (a per-sequence value broadcast over tokens).
    """
    ref = tensors[reference]
    if ref is None or ref.dim() != 2:
        shape = None if ref is None else tuple(ref.shape)
        raise ValueError(f"{reference} must be a [batch, tokens] tensor, got shape {shape}")
    allow_rows = set(allow_rows)
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.shape != ref.shape and not (name in allow_rows and t.shape == ref.shape[:1]):
            want = f"{tuple(ref.shape)}" + (f" or ({ref.shape[0]},)" if name in allow_rows else "")
            raise ValueError(f"{name} has shape {tuple(t.shape)} but must be {want} like {reference}")
        if name != "mask" and not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {reference} is on {ref.device}")


def check_values(tensors: Mapping[str, Tensor | None], mask_name: str = "mask") -> None:
    """NaN/Inf anywhere, or a mask that is not 0/1, raises an error naming the argument (one sync)."""
    names = [n for n, t in tensors.items() if t is not None]
    if not names:
        return
    flags = []
    for n in names:
        t = tensors[n].detach()
        if n == mask_name:
            flags.append(((t != 0) & (t != 1)).sum())
        elif t.is_floating_point():
            flags.append((~torch.isfinite(t)).sum())
        else:
            flags.append(torch.zeros((), dtype=torch.int64, device=t.device))
    counts = torch.stack([f.to(torch.int64) for f in flags]).tolist()
    for n, c in zip(names, counts):
        if c:
            if n == mask_name:
                raise ValueError(f"{n} must be binary (0 or 1 on every token); {c} entries are not")
            raise ValueError(f"{n} contains NaN or Inf in {c} of {tensors[n].numel()} entries")

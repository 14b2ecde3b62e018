"""reasoning-gym scoring, run inside a ``ProcessPool`` worker (loaded by path, not via stare).

The parent sends the task name, the dataset config it generated the entry with (some verifiers read
their config), the entry itself (pickled by the trusted parent) and the extracted answer. While a
verifier runs, ``eval`` and ``exec`` raise: the denylist in ``gym.py`` removes every verifier known to
call them, and this guard reports (``eval_blocked``) any that still tries, which the caller scores 0.
Generation is not guarded: it runs in the parent, on the library's own generated expressions.
"""

import builtins
import json
import math

import reasoning_gym

_datasets = {}
_blocked = [0]


def _refuse(*args, **kwargs):
    _blocked[0] += 1
    raise RuntimeError("eval/exec is disabled while scoring")


def _dataset(name, config):
    key = (name, json.dumps(config, sort_keys=True, default=repr))
    if key not in _datasets:
        _datasets[key] = reasoning_gym.create_dataset(name, **config)
    return _datasets[key]


def score(name, config, entry, answer):
    """``{"score": float in [0, 1], "eval_blocked": bool}`` from the dataset's own ``score_answer``."""
    dataset = _dataset(name, config)
    before = _blocked[0]
    saved = builtins.eval, builtins.exec
    builtins.eval = builtins.exec = _refuse
    try:
        value = dataset.score_answer(answer, entry)
    finally:
        builtins.eval, builtins.exec = saved
    value = float(value) if isinstance(value, (int, float)) else 0.0
    if not math.isfinite(value):
        value = 0.0
    return {"score": min(max(value, 0.0), 1.0), "eval_blocked": _blocked[0] != before}


HANDLERS = {"score": score}

"""Task factory and prompt encoding for the trainer.

Bad ``task.*`` settings raise ``ConfigError`` naming the key (``task.name``, ``task.options.train``, ...);
argument errors that a task itself reports (``UserError`` whose message starts with the argument's
name) are re-raised the same way, and data errors keep their file, row and field.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..checks import unknown_name_error
from ..env.base import Example, Task
from ..checks import UserError
from ..checks import ConfigError

__all__ = ["make_task", "encode_prompt", "TASKS"]


def _testbed(cfg) -> Task:
    """The task of the testbed ``model.testbed.task`` names (addition by default; stare.env.testbed)."""
    if cfg.task.options:
        raise ConfigError(f"task.options: task 'testbed' takes no options, got {sorted(cfg.task.options)} (its "
                          f"settings are model.testbed.*)")
    return cfg.model.testbed_config().make_task()


def _options(cfg, valid: dict) -> dict:
    """``task.options`` checked against ``valid`` (name -> default); unknown keys list the valid ones."""
    opts = dict(cfg.task.options)
    for key in opts:
        if key not in valid:
            raise ConfigError(f"task.options: {unknown_name_error(f'option of task {cfg.task.name!r}', key, valid)}")
    return {**valid, **opts}


_HUB_ID = re.compile(r"(?:hf://)?[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*")


def _check_option(key: str, value, kind: str) -> None:
    """``kind``: 'int>=0', 'int>=1', 'number', 'number>0', 'sources' (a file or hub id, or a list of them)."""
    name = f"task.options.{key}"
    if kind == "sources":
        items = [value] if isinstance(value, (str, Path)) else value
        if not isinstance(items, (list, tuple)) or not items or not all(isinstance(x, (str, Path)) for x in items):
            raise ConfigError(f"{name}: expected a file path or hub id, or a list of them, got {value!r}")
        for x in map(str, items):
            if not Path(x).exists() and (x.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(x)):
                raise ConfigError(f"{name}: no such file '{x}' (give .parquet, .jsonl or .json files, or hub ids "
                                  f"owner/name)")
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= int(kind[-1])
    elif kind == "number>0":
        ok = ok and value > 0
    if not ok:
        want = {"int>=0": "an integer >= 0", "int>=1": "an integer >= 1", "number": "a number",
                "number>0": "a number > 0"}[kind]
        raise ConfigError(f"{name}: must be {want}, got {value!r}")


# Options of the math tasks. Sources are files (parquet / jsonl) or hub ids (a list is concatenated);
# ``limit`` keeps the first examples of each source after deduplication.
_MATH_OPTIONS = {"train": None, "test": None, "template": "boxed", "limit": None, "correct_reward": 1.0,
                 "wrong_reward": 0.0, "verifier_workers": 2}


def _check_data_options(cfg, o: dict) -> None:
    """The data options the file-based tasks share: ``train`` (required) and ``test`` sources, ``limit``."""
    if not o["train"]:
        raise ConfigError(f"task.options.train: task '{cfg.task.name}' needs training data (a parquet / jsonl file "
                          f"or hub id, or a list of them)")
    _check_option("train", o["train"], "sources")
    if o["test"]:
        _check_option("test", o["test"], "sources")
    if o["limit"] is not None:
        _check_option("limit", o["limit"], "int>=0")


def _math(cfg, long_cot: bool = False) -> Task:
    from ..env.tasks.math import MathTask

    o = _options(cfg, _MATH_OPTIONS)
    _check_data_options(cfg, o)
    _check_option("verifier_workers", o["verifier_workers"], "int>=1")
    for key in ("correct_reward", "wrong_reward"):
        _check_option(key, o[key], "number")
    return MathTask.from_sources(
        o["train"], o["test"], template=o["template"], limit=o["limit"],
        verifier={"num_workers": o["verifier_workers"], "think_required": long_cot},  # built after the data loads
        correct_reward=o["correct_reward"], wrong_reward=o["wrong_reward"],
        name="math-long-cot" if long_cot else "math-short-cot")


_GYM_OPTIONS = {"names": None, "size": 1000, "test_size": 100, "seed": 0, "partial_credit": False,
                "system_prompt": None, "timeout_s": 2.0, "instruction": None,
                "untagged_answer": "none"}


def _gym(cfg) -> Task:
    from ..env.tasks.gym import GymTask

    o = _options(cfg, _GYM_OPTIONS)
    if not o["names"]:
        raise ConfigError("task.options.names: task 'gym' needs reasoning-gym task names")
    _check_option("size", o["size"], "int>=1")
    _check_option("test_size", o["test_size"], "int>=0")
    _check_option("timeout_s", o["timeout_s"], "number>0")
    if o["instruction"] is None:
        del o["instruction"]  # GymTask's own default
    return GymTask(o.pop("names"), **o)


_TOOL_OPTIONS = {"train": None, "test": None, "limit": None, "max_turns": 4, "verifier_workers": 2,
                 "sandbox_workers": None}


def _tool_use(cfg) -> Task:
    from ..env.tasks.tool_use import ToolUseMathTask

    o = _options(cfg, _TOOL_OPTIONS)
    _check_data_options(cfg, o)
    _check_option("max_turns", o["max_turns"], "int>=0")
    _check_option("verifier_workers", o["verifier_workers"], "int>=1")
    if o["sandbox_workers"] is not None:
        _check_option("sandbox_workers", o["sandbox_workers"], "int>=1")
    return ToolUseMathTask.from_sources(o["train"], o["test"], max_turns=o["max_turns"], limit=o["limit"],
                                        verifier={"num_workers": o["verifier_workers"]},
                                        sandbox_workers=o["sandbox_workers"])


TASKS = {
    "testbed": _testbed,
    "math": _math,
    "math_long_cot": lambda cfg: _math(cfg, long_cot=True),
    "gym": _gym,
    "tool_use": _tool_use,
}


def make_task(cfg) -> Task:
    """A registered task by name, or a user's task from an import path ``package.module:factory``
    (``factory(cfg)`` returns an object with the ``stare.env.Task`` interface)."""
    name = cfg.task.name
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"task.name: '{name}': cannot import {attr} from {module}: {e}") from None
        return factory(cfg)
    if name not in TASKS:
        raise ConfigError(f"task.name: {unknown_name_error('task', name, list(TASKS) + ['<module>:<factory>'])}")
    try:
        return TASKS[name](cfg)
    except ConfigError:
        raise
    except UserError as e:  # reported by the task: name the option when the message starts with it
        from ..env.data import DataError

        key = str(e).split(":", 1)[0]
        if key in cfg.task.options or key in ("names", "limit"):
            raise ConfigError(f"task.options.{e}") from None
        if isinstance(e, DataError):
            raise
        raise ConfigError(f"task '{name}': {e}") from None


def encode_prompt(tokenizer, example: Example, chat_template: bool = True) -> list[int]:
    """Token ids of a prompt: chat messages through the tokenizer's chat template (with the generation
    prompt), raw text with the tokenizer's BOS when it has one."""
    if isinstance(example.prompt, list):
        if chat_template and tokenizer.chat_template:
            return list(tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=True,
                                                      return_dict=False))
        text = "\n".join(m["content"] for m in example.prompt)
    else:
        text = example.prompt
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids

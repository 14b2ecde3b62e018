"""Task factory and prompt encoding for the trainer."""

from __future__ import annotations

from ..checks import unknown_name_error
from ..env.base import Example, Task

__all__ = ["make_task", "encode_prompt", "TASKS"]


def _testbed(cfg) -> Task:
    from ..env.testbed import AdditionTask

    if cfg.task.options:
        raise ValueError(f"task 'testbed' takes no options, got {sorted(cfg.task.options)}")
    return AdditionTask(cfg.model.testbed_config())


def _options(cfg, valid: dict) -> dict:
    """``task.options`` checked against ``valid`` (name -> default); unknown keys list the valid ones."""
    opts = dict(cfg.task.options)
    for key in opts:
        if key not in valid:
            raise unknown_name_error(f"option of task '{cfg.task.name}'", key, valid)
    return {**valid, **opts}


# Options of the math tasks. Sources are files (parquet / jsonl) or hub ids (a list is concatenated);
# ``limit`` keeps the first examples of each source after deduplication.
_MATH_OPTIONS = {"train": None, "test": None, "template": "boxed", "limit": None, "correct_reward": 1.0,
                 "wrong_reward": 0.0, "verifier_workers": 2}


def _math(cfg, long_cot: bool = False) -> Task:
    from ..env.verifiers.math import MathVerifier
    from ..env.tasks.math import MathTask

    o = _options(cfg, _MATH_OPTIONS)
    if not o["train"]:
        raise ValueError(f"task '{cfg.task.name}' needs task.options.train (a parquet / jsonl file or hub id)")
    return MathTask.from_sources(
        o["train"], o["test"], template=o["template"], limit=o["limit"],
        verifier=MathVerifier(num_workers=o["verifier_workers"], think_required=long_cot),
        correct_reward=o["correct_reward"], wrong_reward=o["wrong_reward"],
        name="math-long-cot" if long_cot else "math-short-cot")


_GYM_OPTIONS = {"names": None, "size": 1000, "test_size": 100, "seed": 0, "partial_credit": False,
                "system_prompt": None, "timeout_s": 2.0, "instruction": None,
                "untagged_answer": "none"}


def _gym(cfg) -> Task:
    from ..env.tasks.gym import GymTask

    o = _options(cfg, _GYM_OPTIONS)
    if not o["names"]:
        raise ValueError("task 'gym' needs task.options.names (reasoning-gym task names)")
    if o["instruction"] is None:
        del o["instruction"]  # GymTask's own default
    return GymTask(o.pop("names"), **o)


_TOOL_OPTIONS = {"train": None, "test": None, "limit": None, "max_turns": 4, "verifier_workers": 2,
                 "sandbox_workers": None}


def _tool_use(cfg) -> Task:
    from ..env.verifiers.math import MathVerifier
    from ..env.tasks.tool_use import ToolUseMathTask

    o = _options(cfg, _TOOL_OPTIONS)
    if not o["train"]:
        raise ValueError("task 'tool_use' needs task.options.train (a parquet / jsonl file or hub id)")
    return ToolUseMathTask.from_sources(o["train"], o["test"], max_turns=o["max_turns"], limit=o["limit"],
                                        verifier=MathVerifier(num_workers=o["verifier_workers"]),
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
            raise ValueError(f"task '{name}': cannot import {attr} from {module}: {e}") from None
        return factory(cfg)
    if name not in TASKS:
        raise unknown_name_error("task", name, list(TASKS) + ["<module>:<factory>"])
    return TASKS[name](cfg)


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

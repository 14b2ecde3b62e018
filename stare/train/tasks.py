"""Task factory and prompt encoding for the trainer."""

from __future__ import annotations

from ..checks import unknown_name_error
from ..tasks.base import Example, Task

__all__ = ["make_task", "encode_prompt", "TASKS"]


def _testbed(cfg) -> Task:
    from ..tasks.testbed import AdditionTask

    if cfg.task.options:
        raise ValueError(f"task 'testbed' takes no options, got {sorted(cfg.task.options)}")
    return AdditionTask(cfg.model.testbed_config())


TASKS = {"testbed": _testbed}


def make_task(cfg) -> Task:
    """A registered task by name, or a user's task from an import path ``package.module:factory``
    (``factory(cfg)`` returns an object with the ``stare.tasks.Task`` interface)."""
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
            ids = tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) else ids)
        text = "\n".join(m["content"] for m in example.prompt)
    else:
        text = example.prompt
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids

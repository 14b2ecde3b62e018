"""The CPU testbeds: a task and its cached base model each (docs/testbed.md).

* ``addition`` (default; ``task``): three-number addition with many valid paths, where GRPO collapses
  entropy in minutes and every path is valid.
* ``explore`` (``explore``): reach a target from three numbers, where the hard split needs a strategy
  the base model rarely samples, so that collapse costs pass@k.

``testbed_config(overrides)`` builds the configuration of the testbed named by ``overrides["task"]``
(the ``model.testbed`` section of a run's config); ``load_or_build`` builds or loads its base model and
``cfg.make_task()`` its task.
"""

import dataclasses
from typing import Any, Mapping

from .base_model import build_model, load_or_build, sft
from .explore import EXPLORE_CHARSET, ExploreConfig, ExploreTask, check_derivation, make_explore_trace
from .task import CHARSET, AdditionTask, TestbedConfig, build_tokenizer, make_trace, parse_answer

__all__ = ["AdditionTask", "CHARSET", "EXPLORE_CHARSET", "ExploreConfig", "ExploreTask", "TESTBEDS", "TestbedConfig",
           "build_model", "build_tokenizer", "check_derivation", "load_or_build", "make_explore_trace", "make_trace",
           "parse_answer", "sft", "testbed_config", "testbed_keys"]

#: ``model.testbed.task`` -> the configuration class of that testbed
TESTBEDS: dict[str, type] = {"addition": TestbedConfig, "explore": ExploreConfig}


def testbed_keys() -> list[str]:
    """Every key ``model.testbed`` may hold, over all testbeds (``task`` first)."""
    keys = ["task"]
    for cls in TESTBEDS.values():
        keys += [f.name for f in dataclasses.fields(cls) if f.name not in keys]
    return keys


def testbed_config(overrides: Mapping[str, Any] | None = None):
    """The configuration of the testbed ``overrides["task"]`` (default ``addition``) with the other keys
    as overrides of its defaults; an unknown testbed or key is an error naming it."""
    data = dict(overrides or {})
    kind = data.pop("task", "addition")
    if kind not in TESTBEDS:
        raise ValueError(f"unknown testbed 'model.testbed.task: {kind}'; valid: {', '.join(TESTBEDS)}")
    cls = TESTBEDS[kind]
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in valid:
            raise ValueError(f"unknown key 'model.testbed.{key}' for testbed '{kind}'; valid: task, {', '.join(valid)}")
    if "pair_risk" in data and data["pair_risk"] is not None:
        data["pair_risk"] = tuple(data["pair_risk"])  # YAML gives a list; the config is hashed as a tuple
    return cls(**data)

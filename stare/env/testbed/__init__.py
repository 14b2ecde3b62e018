"""The CPU testbed: the task (``task``) and its cached base model (``base_model``). docs/testbed.md."""

from .base_model import build_model, load_or_build, sft
from .task import CHARSET, AdditionTask, TestbedConfig, build_tokenizer, make_trace, parse_answer

__all__ = ["AdditionTask", "CHARSET", "TestbedConfig", "build_model", "build_tokenizer", "load_or_build",
           "make_trace", "parse_answer", "sft"]

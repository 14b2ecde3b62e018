"""What the trainer needs from a task: examples, a verifier, and optionally a tool environment.

A task is anything with ``name``, ``examples(split)`` and ``score(example, response)``. The trainer samples
examples, renders ``Example.prompt`` (chat messages through the tokenizer's chat template, or raw text),
generates responses, and asks the task to score them. Scoring must never raise on model output and must
never ``eval`` it; tasks whose verifiers can hang (math equivalence) bound them with time limits.

Multi-turn tasks also return a ``ToolEnv``: generation stops at one of its ``stop_strings`` (e.g. the end
of a code block), ``ToolEnv.step`` runs the tool on the transcript and returns the text to append (tool
output tokens are masked out of the loss), or ``None`` when the episode is over. Such a task has a
method ``tool_env() -> ToolEnv``; ``tool_env_of(task)`` returns it, or None for single-turn tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

__all__ = ["Example", "Score", "Task", "ToolEnv", "score_all", "tool_env_of"]


@dataclass(frozen=True)
class Example:
    """One prompt with its reference answer.

    prompt: a list of chat messages ``[{"role": ..., "content": ...}]`` or a raw text prompt.
    answer: the ground truth the verifier compares against (string form).
    source: dataset tag (``data_source`` in verl files), for per-source evaluation.
    uid: a stable identifier (deduplication, grouping of samples).
    meta: anything else the verifier needs (e.g. a reasoning-gym entry).
    """

    prompt: list[dict[str, str]] | str
    answer: str
    source: str = ""
    uid: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Score:
    """Verdict on one response. ``reward`` trains; ``acc`` in {0, 1} is reported (and filters DAPO groups)."""

    reward: float
    acc: float
    format_ok: bool = True
    pred: str | None = None


@runtime_checkable
class ToolEnv(Protocol):
    max_turns: int
    stop_strings: Sequence[str]

    def step(self, example: Example, transcript: str) -> str | None:
        """Tool output to append after a turn that ended at a stop string, or None to end the episode."""


@runtime_checkable
class Task(Protocol):
    name: str

    def examples(self, split: str) -> Sequence[Example]:
        """The examples of a split ("train" or "test")."""

    def score(self, example: Example, response: str) -> Score:
        """Verify one response; never raises on any model output."""


def score_all(task: Task, examples: Sequence[Example], responses: Sequence[str]) -> list[Score]:
    """Score a batch, through the task's own ``score_batch`` when it has one (e.g. a worker pool)."""
    if len(examples) != len(responses):
        raise ValueError(f"{len(examples)} examples but {len(responses)} responses")
    batch_fn = getattr(task, "score_batch", None)
    if batch_fn is not None:
        return list(batch_fn(examples, responses))
    return [task.score(e, r) for e, r in zip(examples, responses)]


def tool_env_of(task: Task) -> ToolEnv | None:
    """The task's ``ToolEnv`` if it is a multi-turn task (it has ``tool_env()``), else None."""
    make = getattr(task, "tool_env", None)
    return make() if make is not None else None

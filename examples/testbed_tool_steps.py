"""The testbed with each partial sum as one tool-call step, so that rollout methods that branch at tool
calls (AEPO, ``aepo_agentic``) have turns to branch from on the CPU testbed.

A response ``"17+42=59;59+5=64;A:64"`` becomes a three-turn episode: generation stops at every ``;``, a
no-op "tool" returns nothing, and the model continues. The text the model sees is the plain testbed's,
so the base model and its accuracy are unchanged; only the turn structure (``segment_ids``) is new.
Use it as a task factory:

    stare train stare/configs/testbed.yaml method=aepo_agentic task.name=examples.testbed_tool_steps:make_task

(run from the repository root, which puts ``examples`` on the import path).
"""

from __future__ import annotations


class StepBoundary:
    """A tool environment whose only call is the end of a step: ``;`` stops a turn, nothing comes back."""

    stop_strings = (";",)
    max_turns = 2  # two partial sums; the answer segment follows the last one

    def step(self, example, transcript: str) -> str | None:
        return "" if transcript.endswith(";") else None


def make_task(cfg):
    from stare.env.testbed import AdditionTask

    class AdditionWithSteps(AdditionTask):
        def tool_env(self):
            return StepBoundary()

    return AdditionWithSteps(cfg.model.testbed_config())

"""The environment wing: what the policy is trained on and how its answers are judged.

Nothing here knows about losses or the trainer; the trainer reaches in, never the reverse. Layers,
each importing only the ones above it in this list:

* ``base``       ``Example``, ``Score``, the ``Task`` and ``ToolEnv`` interfaces
* ``answers``    final-answer extraction and normalisation;  ``overlong``: DAPO's overlong shaping;
  ``procpool``   time-, CPU- and memory-limited worker processes;  ``cache``: where artefacts are cached
* ``data``       dataset loaders (verl parquet, JSONL, JSON, hub), schema checks, prompt templates
  ``verifiers``  the math verifier (math-verify in worker processes)
  ``tools``      the calculator interpreter and its sandbox
* ``tasks``      math (short and long chain of thought), reasoning-gym, multi-turn tool use
  ``testbed``    the CPU testbed: three-number addition and its cached base model
"""

from .base import Example, Score, Task, ToolEnv, score_all, tool_env_of

__all__ = ["Example", "Score", "Task", "ToolEnv", "score_all", "tool_env_of"]

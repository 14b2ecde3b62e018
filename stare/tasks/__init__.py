"""Tasks: prompts with verifiable answers (see ``base`` for the interface the trainer uses)."""

from .base import Example, Score, Task, ToolEnv, score_all, tool_env_of

__all__ = ["Example", "Score", "Task", "ToolEnv", "score_all", "tool_env_of"]

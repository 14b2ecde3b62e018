"""Tasks: math with a verifier (``math``), reasoning-gym (``gym``), multi-turn tool use (``tool_use``).

Each module is imported on use (the trainer's ``stare.train.tasks`` maps task names to them), since
their dependencies (math-verify, reasoning-gym, pyarrow) are an optional extra.
"""

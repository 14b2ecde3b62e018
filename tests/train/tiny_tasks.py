"""A test task for runs in spawned processes, under a module name no other test folder uses (a spawned
process imports ``conftest`` from whichever test folder is first on the parent's sys.path, so
``conftest:make_contains_one`` depends on which tests run together)."""

from stare.env.base import Example, Score


class ContainsOneTask:
    """Reward 1 when the response contains the character '1' (about half of random samples do)."""

    name = "contains_one"

    def __init__(self, n_train=64, n_test=8):
        self._ex = {s: [Example(prompt=f"{i}+{i}+1=", answer="", uid=f"{s}{i}") for i in range(n)]
                    for s, n in (("train", n_train), ("test", n_test))}

    def examples(self, split):
        return self._ex[split]

    def score(self, example, response):
        acc = float("1" in response)
        return Score(reward=acc, acc=acc)


def make_contains_one(cfg):
    """Factory for ``task.name=tiny_tasks:make_contains_one``."""
    return ContainsOneTask()


class SemicolonEnv:
    """A tool that answers every ';' with the text '9' (up to two calls)."""

    stop_strings = (";",)
    max_turns = 2

    def step(self, example, transcript):
        return "9"


class ToolTask(ContainsOneTask):
    """ContainsOneTask with the ';' -> '9' tool."""

    def tool_env(self):
        return SemicolonEnv()

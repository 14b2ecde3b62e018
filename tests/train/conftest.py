"""Fixtures for trainer tests: a tiny testbed model built once per session in a temporary cache, and a
test task whose reward depends on the sampled text, so that even an untrained model gets mixed groups."""

import pytest

from stare.env.base import Example, Score
from stare.train import tasks as task_registry

TINY_TESTBED = {"hidden_size": 32, "layers": 1, "heads": 2, "sft_steps": 20, "sft_examples": 500,
                "train_prompts": 200, "test_prompts": 16}


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
    """Factory for ``task.name=conftest:make_contains_one`` (processes that import this file by path)."""
    return ContainsOneTask()


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("STARE_CACHE", str(tmp_path_factory.mktemp("stare-cache")))
    mp.setitem(task_registry.TASKS, "contains_one", lambda cfg: ContainsOneTask())
    yield
    mp.undo()


def tiny_overrides(tmp_path, **extra):
    data = {
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
        "model": {"testbed": dict(TINY_TESTBED)},
        "task": {"name": "contains_one"},
        "rollout": {"prompts_per_step": 4, "n": 4, "max_new_tokens": 8, "dynamic_sampling": True},
        "algorithm": {"micro_batch_size": 6},
        "trainer": {"steps": 3, "eval_every": 0, "eval_prompts": 4, "eval_n": 4, "save_every": 0, "threads": 1},
        "logging": {"tensorboard": True, "progress": False},
    }
    from stare.train.config import _deep_merge

    return _deep_merge(data, extra)

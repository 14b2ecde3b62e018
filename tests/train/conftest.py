"""Fixtures for trainer tests: a tiny testbed model built once per session in a temporary cache, and a
test task whose reward depends on the sampled text, so that even an untrained model gets mixed groups."""

import pytest
# the test task lives in tiny_tasks (spawned processes import it by that name); re-exported here for
# ``task.name=conftest:make_contains_one`` and the tests that import it from conftest
from tiny_tasks import ContainsOneTask, make_contains_one  # noqa: F401

from stare.train import tasks as task_registry

TINY_TESTBED = {"hidden_size": 32, "layers": 1, "heads": 2, "sft_steps": 20, "sft_examples": 500,
                "train_prompts": 200, "test_prompts": 16}


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

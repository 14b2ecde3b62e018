"""MathTask: the Task contract over loaded data, reward mapping, and the long-CoT setting.

Run: python -m pytest -q tests/tasks/test_math_task.py   (CPU; a few seconds)."""

import json

import pytest

from stare.env.overlong import OverlongConfig
from stare.env.verifiers.math import MathVerifier
from stare.env import Example, Task, score_all, tool_env_of
from stare.env.tasks.math import MathTask


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(num_workers=1)
    v.wait_ready()  # a check's limit counts the workers' start-up
    yield v
    v.close()


@pytest.fixture
def data(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in [
        {"problem": "What is 1/2 + 1/4?", "answer": "\\frac{3}{4}"},
        {"problem": "What is 2 + 2?", "answer": "4"},
    ]))
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"problem": "What is 3 * 3?", "answer": "9"}))
    return train, test


def test_loads_splits_and_scores(data, verifier):
    task = MathTask.short_cot(*data, verifier=verifier)
    assert isinstance(task, Task) and tool_env_of(task) is None
    train, test = task.examples("train"), task.examples("test")
    assert [e.answer for e in train] == ["\\frac{3}{4}", "4"] and [e.answer for e in test] == ["9"]
    assert train[0].prompt[0]["content"].endswith("put your final answer within \\boxed{}.")
    responses = ["so it is \\boxed{0.75}", "Answer: 5"]
    assert [(s.reward, s.acc, s.format_ok, s.pred) for s in score_all(task, train, responses)] == [
        (1.0, 1.0, True, "0.75"), (0.0, 0.0, True, "5")]
    assert task.score(test[0], "I think 9") == task.score_batch(test, ["I think 9"])[0]
    with pytest.raises(KeyError, match=r"unknown split 'validation'; valid: \['test', 'train'\]"):
        task.examples("validation")


def test_dapo_reward_mapping(verifier):
    ex = [Example("q", "7")]
    task = MathTask(ex, correct_reward=1.0, wrong_reward=-1.0, verifier=verifier)  # DAPO's +1 / -1
    assert [(s.reward, s.acc) for s in task.score_batch(ex * 2, ["\\boxed{7}", "\\boxed{8}"])] == [(1.0, 1.0), (-1.0, 0.0)]


def test_long_cot_needs_closed_thinking(data):
    task = MathTask.long_cot(*data, overlong=OverlongConfig(max_len=4096, cache_len=1024))
    try:
        ex = task.examples("test")[0]
        assert task.overlong.max_len == 4096  # for the trainer to shape rewards and mask truncation
        assert task.score(ex, "thinking... \\boxed{9}").acc == 0.0  # never closed its thinking
        assert task.score(ex, "thinking...</think> The answer is \\boxed{9}").acc == 1.0
        assert MathTask.long_cot(*data).overlong == OverlongConfig()  # DAPO's defaults
    finally:
        task.close()

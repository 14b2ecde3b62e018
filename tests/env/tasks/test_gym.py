"""reasoning-gym tasks: the denylist's evidence on the pinned version, name handling, generation,
and scoring through the worker.

Run: python -m pytest -q tests/tasks/test_gym.py   (CPU; about 10 s; the full audit of every task
is marked slow)."""

import pytest
import reasoning_gym
from reasoning_gym.factory import DATASETS

from stare.env import Task
from stare.env.tasks.gym import DENYLIST, GymTask, available_tasks, extract_tagged_answer


def test_coin_flip_verifier_accepts_zero_for_any_probability():
    # Why coin_flip is denied: '0' matches the first character of '0.x', and the prefix credit is
    # divided by the shorter length (1), so it scores 1.0. If this fails, reasoning-gym fixed it.
    ds = reasoning_gym.create_dataset("coin_flip", seed=3, size=20)
    entries = [e for e in ds if 0 < float(e["answer"]) < 1]
    assert entries and all(ds.score_answer("0", e) == 1.0 for e in entries)


def test_game_of_life_halting_verifier_accepts_anything():
    # Why game_of_life_halting is denied: bool(answer) == bool(oracle) for any non-empty strings.
    ds = reasoning_gym.create_dataset("game_of_life_halting", seed=3, size=10)
    for e in ds:
        wrong = "False" if e["answer"] == "True" else "True"
        assert ds.score_answer(wrong, e) == 1.0 and ds.score_answer("banana", e) == 1.0


def test_denylist_names_are_real_tasks():
    assert set(DENYLIST) <= set(DATASETS)
    assert not set(DENYLIST) & set(available_tasks())
    assert len(available_tasks()) == len(DATASETS) - len(DENYLIST)


def test_names_are_checked():
    with pytest.raises(ValueError, match=r"'coin_flip' is excluded: partial credit"):
        GymTask("coin_flip")
    with pytest.raises(ValueError, match=r"unknown reasoning-gym task 'chainsum'; did you mean \['chain_sum'"):
        GymTask("chainsum")
    with pytest.raises(ValueError, match="set 'seed' through GymTask's own argument"):
        GymTask({"chain_sum": {"seed": 3}})
    with pytest.raises(ValueError, match=r"unknown system_prompt 'nope'"):
        GymTask("chain_sum", system_prompt="nope")


def test_tagged_answer_extraction():
    assert extract_tagged_answer("<answer>1</answer> then <answer> 2 </answer>") == "2"
    assert extract_tagged_answer("<think><answer>1</answer></think><answer>3</answer>") == "3"
    assert extract_tagged_answer("no tags") is None
    assert extract_tagged_answer(b"<answer>\xff</answer>") == "\ufffd"


@pytest.fixture(scope="module")
def task():
    t = GymTask(["chain_sum", "word_sorting", {"basic_arithmetic": {}}.popitem()[0]], size=6, test_size=3, seed=11)
    t.wait_ready()  # a call's limit counts the worker's start-up
    yield t
    t.close()


def test_generation_mixes_tasks_and_splits_differ(task):
    assert isinstance(task, Task)
    train, test = task.examples("train"), task.examples("test")
    assert len(train) == 18 and len(test) == 9
    assert [e.source for e in train[:3]] == ["gym/chain_sum", "gym/word_sorting", "gym/basic_arithmetic"]
    assert not {e.prompt[0]["content"] for e in train} & {e.prompt[0]["content"] for e in test}
    again = GymTask(["chain_sum", "word_sorting", "basic_arithmetic"], size=6, test_size=3, seed=11)
    assert [e.prompt for e in again.examples("train")] == [e.prompt for e in train]  # deterministic
    assert train[0].prompt[0]["content"].endswith("give only the final answer between <answer> and </answer>.")


def test_scoring_through_the_worker(task):
    train = task.examples("train")
    right = [f"<think>...</think><answer>{e.answer}</answer>" for e in train]
    assert [s.acc for s in task.score_batch(train, right)] == [1.0] * len(train)
    wrong = task.score_batch(train, ["<answer>definitely wrong</answer>"] * len(train))
    assert [(s.acc, s.reward, s.format_ok) for s in wrong] == [(0.0, 0.0, True)] * len(train)
    s = task.score(train[0], train[0].answer)  # no tags: a format failure
    assert (s.acc, s.format_ok, s.pred) == (0.0, False, None)
    assert task.pool.stats.timeouts == 0


def test_partial_credit_is_opt_in():
    t = GymTask("word_sorting", size=2, test_size=1, partial_credit=True)
    t.wait_ready()
    try:
        ex = t.examples("train")[0]
        words = ex.answer.split(", ")
        half = ", ".join(words[: len(words) // 2])
        s = t.score(ex, f"<answer>{half}</answer>")
        assert s.acc == 0.0 and 0.0 <= s.reward < 1.0
    finally:
        t.close()


def test_untagged_last_number_is_opt_in():
    with pytest.raises(ValueError, match="untagged_answer"):
        GymTask("chain_sum", untagged_answer="first_number")
    t = GymTask("chain_sum", size=2, test_size=1, untagged_answer="last_number")
    t.wait_ready()
    try:
        ex = t.examples("train")[0]
        right = t.score(ex, f"Adding up, 1 then 2, gives {ex.answer}.")
        assert (right.acc, right.format_ok, right.pred) == (1.0, False, ex.answer)  # verified, flagged untagged
        wrong = t.score(ex, f"The sum is {int(ex.answer) + 1}")
        assert (wrong.acc, wrong.format_ok) == (0.0, False)
        assert t.score(ex, "no number here").pred is None
        tagged = t.score_batch([ex], [f"{int(ex.answer) + 5} <answer>{ex.answer}</answer>"])[0]
        assert (tagged.acc, tagged.format_ok) == (1.0, True)  # a tag still wins over the last number
    finally:
        t.close()


@pytest.mark.slow
def test_every_available_verifier_accepts_its_oracle_without_eval():
    # About 20 s here (slow because of its generators): 3 problems of each of the 91 tasks; every
    # oracle answer must score 1, and neither the oracle nor a wrong answer may reach eval/exec
    # (disabled in the worker while scoring). This is how bitwise_arithmetic was found.
    t = GymTask("all", size=3, test_size=1, seed=5, timeout_s=10)
    try:
        examples = t.examples("train")
        args = [(e.meta["gym"], e.meta["config"], e.meta["entry"]) for e in examples]
        oracle = t.pool.map("score", [a + (e.answer,) for a, e in zip(args, examples)])
        # (some verifiers raise on answers they cannot parse; GymTask scores those 0)
        wrong = t.pool.map("score", [a + ("0",) for a in args],
                           on_error=lambda e, a: {"score": 0.0, "eval_blocked": False})
        has_oracle = [e.meta["entry"].get("answer") is not None for e in examples]
        assert sorted({a[0] for a, v, h in zip(args, oracle, has_oracle) if h and v["score"] != 1.0}) == []
        assert sorted({a[0] for a, v, w in zip(args, oracle, wrong) if v["eval_blocked"] or w["eval_blocked"]}) == []
    finally:
        t.close()


def test_workers_start_when_the_task_is_built():
    # issue 15: a score's time limit counts a worker's start-up, so the pool must not wait for the first score
    t = GymTask("chain_sum", size=1, test_size=1)
    try:
        assert t._pool is not None and t._pool.stats.spawned == 1
    finally:
        t.close()

"""The exploration testbed: the verifier accepts exactly the valid derivations of the target (hand-checked
instances of each split, gaming attempts rejected), the generator is deterministic with alternating,
disjoint splits, attempts follow their strategy and slip rates, and ``model.testbed.task`` selects the
testbed without changing the addition testbed's cache name."""

import random

import pytest

from stare.env.base import Example
from stare.env.testbed import ExploreConfig, ExploreTask, build_tokenizer, check_derivation, make_explore_trace
from stare.env.testbed import TestbedConfig as AdditionConfig
from stare.env.testbed import testbed_config as make_testbed_config
from stare.env.testbed.explore import EXPLORE_CHARSET, parse_prompt

SMALL = dict(train_prompts=400, test_prompts=20)


def example(numbers, target, hard):
    a, b, c = numbers
    return Example(prompt=f"{a},{b},{c}>{target}:", answer=str(target),
                   source="explore_hard" if hard else "explore_easy", meta={"numbers": list(numbers)})


# Easy instance, checked by hand: 10 + 19 + 11 = 40.
@pytest.mark.parametrize("response", [
    "10+19=29;29+11=40;A:40", "19+10=29;11+29=40;A: 40", "10+11=21;21+19=40;=40", "19+11=30;30+10=40;A:40",
    " 10 + 19 = 29 ; 29 + 11 = 40 ; A: 40 ",
])
def test_easy_instance_accepts_every_addition_order(response):
    s = ExploreTask(ExploreConfig(**SMALL)).score(example((10, 19, 11), 40, False), response)
    assert (s.acc, s.reward, s.format_ok, s.pred) == (1.0, 1.0, True, "40")


# Hard instance, checked by hand: 14 + 3 = 17 (4 unused); no derivation with all three numbers reaches 17
# (14+3+4 = 21, 14+4-3 = 15, 14+3-4 = 13, 3+4-14 = -7, ...).
@pytest.mark.parametrize("response", ["14+3=17;A:17", "3+14=17;=17", " 14 + 3 = 17 ; A: 17 "])
def test_hard_instance_accepts_the_early_answer(response):
    s = ExploreTask(ExploreConfig(**SMALL)).score(example((14, 3, 4), 17, True), response)
    assert (s.acc, s.format_ok, s.pred) == (1.0, True, "17")


@pytest.mark.parametrize("response, fmt", [
    ("14+3=17;17+4=21;A:21", True),   # the dominant strategy: a correct sum, not the target
    ("14+4=18;A:18", True),           # stops early after the wrong pair
    ("14+4=18;18-1=17;A:17", True),   # 1 is not the remaining number
    ("14+3=17;A:18", True),           # answer differs from the derivation
    ("14+3=18;18-1=17;A:17", True),   # arithmetic slip, then a fix to reach the target
    ("14+3=17;17+0=17;A:17", True),   # 0 is not a number of the prompt
    ("9+8=17;A:17", True),            # numbers that are not the prompt's
    ("14+14=28;28-11=17;A:17", True),  # a number used twice
    ("14+3=17;17+4=21;A:17", True),   # answers the target, not its own result
    ("14+3=17;17-4=13;A:13;", False),  # extra segment
    ("A:17", False),                  # the target copied from the prompt
    ("17;A:17", False),
    ("14+3=17;A:1 7", False),
    ("14+3=17", False),
    ("", False),
])
def test_hard_instance_rejects_wrong_and_gamed_derivations(response, fmt):
    s = ExploreTask(ExploreConfig(**SMALL)).score(example((14, 3, 4), 17, True), response)
    assert s.acc == 0.0 and s.reward == 0.0 and s.format_ok is fmt


def test_subtraction_is_a_valid_step():
    # the verifier accepts any valid derivation, subtractions included (the base model never writes one)
    assert check_derivation([14, 3, 4], 13, "14+3=17;17-4=13;A:13")[1]
    assert check_derivation([14, 3, 4], 13, "14-4=10;3+10=13;=13")[1]
    assert check_derivation([14, 3, 4], -13, "14+3=17;4-17=-13;A:-13")[1]


def test_duplicate_numbers_count_once_each():
    assert check_derivation([20, 14, 20], 40, "20+20=40;A:40")[1]
    assert check_derivation([20, 14, 20], 54, "20+14=34;34+20=54;A:54")[1]
    assert not check_derivation([20, 14, 20], 28, "14+14=28;A:28")[1]


def test_score_never_raises_and_reads_the_prompt_without_meta():
    task = ExploreTask(ExploreConfig(**SMALL))
    e = Example(prompt="14,3,4>17:", answer="17")
    assert parse_prompt(e.prompt) == ([14, 3, 4], 17)
    assert task.score(e, "14+3=17;A:17").acc == 1.0
    for junk in ("\x00", ";;;", "1+1=2;2+1=3;A:" + "9" * 400, "-" * 50):
        assert task.score(e, junk).acc == 0.0


def test_splits_alternate_are_disjoint_deterministic_and_correctly_labelled():
    cfg = ExploreConfig(**SMALL)
    a, b = ExploreTask(cfg), ExploreTask(cfg)
    assert a.examples("train") == b.examples("train") and a.examples("test") == b.examples("test")
    assert ExploreTask(ExploreConfig(**SMALL, seed=1)).examples("test") != a.examples("test")
    test, train = a.examples("test"), a.examples("train")
    assert [e.source for e in test[:4]] == ["explore_easy", "explore_hard"] * 2 and len(test) == 2 * cfg.test_prompts
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert sum(e.source == "explore_hard" for e in train) == round(len(train) * cfg.hard_frac)
    for e in train + test:
        nums, target = e.meta["numbers"], int(e.answer)
        if e.source == "explore_easy":
            assert target == sum(nums)
        else:  # the sum of two of them
            assert any(sum(nums) - z == target for z in nums)
    with pytest.raises(ValueError, match="split"):
        a.examples("validation")


def test_attempts_follow_the_forced_strategy_and_are_deterministic():
    rng = random.Random(0)
    nums = [14, 3, 4]
    for _ in range(50):
        t = make_explore_trace(nums, rng, 0.1, 0.3, pair=0, early=True, corrupt=False)
        assert check_derivation(nums, 17, t)[1]  # (14, 3), then the answer
        t = make_explore_trace(nums, rng, 0.1, 0.3, early=False, corrupt=False)
        assert check_derivation(nums, 21, t)[1]
        t = make_explore_trace(nums, rng, 0.1, 0.3, early=False, corrupt=True)
        assert check_derivation(nums, 21, t)[0] and not check_derivation(nums, 21, t)[1]
    one = [make_explore_trace(nums, random.Random(5), 0.1, 0.3) for _ in range(3)]
    assert one == [make_explore_trace(nums, random.Random(5), 0.1, 0.3) for _ in range(3)]


def test_attempt_rates_early_answers_and_slips_by_pair():
    rng = random.Random(1)
    nums, n = [12, 5, 3], 8000
    traces = [make_explore_trace(nums, rng, 0.1, 0.4, (0.25, 1.0, 1.75)) for _ in range(n)]
    early = [t for t in traces if t.count(";") == 1]
    assert len(early) / n == pytest.approx(0.1, abs=0.012)
    slips = {}
    for t in traces:
        first = t.split(";")[0]
        pair = tuple(sorted(int(v) for v in first.split("=")[0].split("+")))
        slips.setdefault(pair, []).append(int(first.split("=")[1]) != sum(pair))
    rates = {p: sum(v) / len(v) for p, v in slips.items()}
    assert rates[(5, 12)] == pytest.approx(0.1, abs=0.03)
    assert rates[(3, 12)] == pytest.approx(0.4, abs=0.04)
    assert rates[(3, 5)] == pytest.approx(0.7, abs=0.04)


def test_base_attempts_solve_hard_prompts_rarely():
    task = ExploreTask(ExploreConfig(train_prompts=3000, test_prompts=10))
    pairs = task.sft_texts()[:6000]
    assert pairs == ExploreTask(ExploreConfig(train_prompts=3000, test_prompts=10)).sft_texts()[:6000]
    by_prompt = {e.prompt: e for e in task.examples("train")}
    acc = {"explore_easy": [], "explore_hard": []}
    for prompt, response in pairs:
        e = by_prompt[prompt]
        acc[e.source].append(task.score(e, response).acc)
    easy, hard = (sum(v) / len(v) for v in acc.values())
    # defaults: early_rate 0.15, corrupt_frac 0.2 with pair risks (0.25, 1, 1.75)
    assert 0.6 < easy < 0.75  # adding all three: 0.85 x (1 - 0.2) = 0.68
    assert 0.035 < hard < 0.08  # the right pair (1 in 3) and an early answer: 0.15 / 3 x (1 - 0.2) = 0.04, more
    #                             where a number repeats (two pairs reach the target)


def test_testbed_selection_and_errors():
    assert AdditionConfig().cache_name() == "testbed-afd910dbe23f67ab"  # existing caches stay valid
    assert make_testbed_config({}) == AdditionConfig()
    cfg = make_testbed_config({"task": "explore", "hard_frac": 0.5, "pair_risk": [1, 1, 1]})
    assert isinstance(cfg, ExploreConfig) and cfg.hard_frac == 0.5 and cfg.pair_risk == (1, 1, 1)
    assert cfg.cache_name().startswith("testbed-explore-") and cfg.cache_name() != ExploreConfig().cache_name()
    with pytest.raises(ValueError, match="model.testbed.task: nope"):
        make_testbed_config({"task": "nope"})
    with pytest.raises(ValueError, match="model.testbed.early_rate"):
        make_testbed_config({"early_rate": 0.1})  # a key of the other testbed
    with pytest.raises(ValueError, match="model.testbed.hard_frac"):
        make_testbed_config({"task": "explore", "hard_frac": 1.5})


@pytest.mark.parametrize("key, value, message", [
    ("heads", 3, "must divide model.testbed.hidden_size"),       # a raw rotary-embedding error in the build
    ("sft_steps", 0, "must be an integer >= 1"),
    ("layers", 1.5, "must be an integer >= 1"),
    ("sft_lr", 0, "must be a number in \\(0, 1\\]"),
    ("hard_frac", "x", "must be a number in \\[0, 1\\]"),          # was a TypeError from the comparison
    ("pair_risk", [1, 1], "must be three numbers >= 0"),
])
def test_the_explore_config_refuses_what_the_addition_config_refuses(key, value, message):
    with pytest.raises(ValueError, match=f"model.testbed.{key}: {message}"):
        make_testbed_config({"task": "explore", key: value})


def test_tokenizer_round_trip_with_the_explore_charset():
    tok = build_tokenizer(EXPLORE_CHARSET)
    text = "17,5,12>29:17+12=29;A: 29"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text) and tok.decode(ids) == text


def test_the_default_configuration_builds_its_splits_quickly():
    import time

    t0 = time.time()
    task = ExploreTask(ExploreConfig())  # 20 000 training prompts from only 20^3 easy instances: repeats allowed
    assert len(task.examples("train")) == 20000 and len(task.examples("test")) == 2 * 256
    assert time.time() - t0 < 30


def test_train_hard_frac_changes_the_rl_prompts_only():
    base = ExploreConfig(**SMALL)
    more = ExploreConfig(**SMALL, train_hard_frac=0.5)
    assert more.cache_name() == base.cache_name()  # the same base model
    a, b = ExploreTask(base), ExploreTask(more)
    assert a.sft_texts()[:200] == b.sft_texts()[:200] and a.examples("test") == b.examples("test")
    train = b.examples("train")
    assert sum(e.source == "explore_hard" for e in train) == len(train) // 2
    assert not {e.prompt for e in train} & {e.prompt for e in b.examples("test")}

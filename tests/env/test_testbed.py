"""The testbed task: every valid answer form is accepted, wrong and malformed answers are rejected,
traces cover the 12 solution orders and 3 answer forms, and splits are disjoint and deterministic."""

import random

import pytest

from stare.env.testbed import AdditionTask, build_tokenizer, make_trace, parse_answer
from stare.env.testbed import TestbedConfig as Config


def ex(a, b, c):
    task = AdditionTask(Config(train_prompts=10, test_prompts=10))
    return task, task.examples("test")[0].__class__(prompt=f"{a}+{b}+{c}=", answer=str(a + b + c))


@pytest.mark.parametrize("response", [
    "12+5=17;17+3=20;A:20", "12+5=17;17+3=20;A: 20", "12+5=17;17+3=20;=20", "3+12=15;15+5=20;A:020",
    "5+3=8;12+8=20; A:  20 ", "A:20", "x;=20",
])
def test_valid_answer_forms_accepted(response):
    task, e = ex(12, 5, 3)
    s = task.score(e, response)
    assert s.acc == 1.0 and s.reward == 1.0 and s.format_ok and s.pred == "20"


@pytest.mark.parametrize("response, fmt", [
    ("12+5=17;17+3=21;A:21", True),  # wrong sum
    ("12+5=17;17+3=20", False),  # no answer segment: the partial sum 20 does not count
    ("12+5=17;17+3=20;A:2 0", False),
    ("12+5=17;17+3=20;A:", False),
    ("", False),
    ("A:20;", False),  # the answer must be the last segment
    ("A:-20", False),
])
def test_wrong_or_malformed_rejected(response, fmt):
    task, e = ex(12, 5, 3)
    s = task.score(e, response)
    assert s.acc == 0.0 and s.reward == 0.0 and s.format_ok is fmt


def test_traces_cover_all_orders_and_forms_and_corruption_is_wrong():
    rng = random.Random(0)
    clean = {make_trace([12, 5, 3], rng, 0.4, corrupt=False) for _ in range(2000)}
    orders = {t.rsplit(";", 1)[0] for t in clean}
    assert len(orders) == 12  # 3 first pairs x 2 inner orders x 2 sides for the third term
    assert {t.rsplit(";", 1)[1].replace("20", "{}") for t in clean} == {"A:{}", "A: {}", "={}"}
    assert all(parse_answer(t) == 20 for t in clean)
    bad = [make_trace([12, 5, 3], rng, 0.4, corrupt=True) for _ in range(200)]
    assert all(parse_answer(t) != 20 for t in bad)


def test_slip_rate_follows_the_first_pair():
    # pair_risk (0.25, 1, 1.75) x 0.4: slips in 10%, 40%, 70% of traces starting with the pairs
    # (12, 5), (12, 3), (5, 3) -- in either internal order
    rng = random.Random(1)
    counts = {}
    for _ in range(6000):
        t = make_trace([12, 5, 3], rng, 0.4, (0.25, 1.0, 1.75))
        pair = frozenset(int(v) for v in t.split("=")[0].split("+"))
        ok = parse_answer(t) == 20
        n, bad = counts.get(pair, (0, 0))
        counts[pair] = (n + 1, bad + (not ok))
    rates = {tuple(sorted(p)): bad / n for p, (n, bad) in counts.items()}
    assert rates[(5, 12)] == pytest.approx(0.1, abs=0.03)
    assert rates[(3, 12)] == pytest.approx(0.4, abs=0.04)
    assert rates[(3, 5)] == pytest.approx(0.7, abs=0.04)


def test_splits_disjoint_and_deterministic():
    cfg = Config(train_prompts=300, test_prompts=50)
    a, b = AdditionTask(cfg), AdditionTask(cfg)
    assert a.examples("train") == b.examples("train")
    assert not {e.prompt for e in a.examples("train")} & {e.prompt for e in a.examples("test")}
    with pytest.raises(ValueError, match="split"):
        a.examples("validation")


def test_tokenizer_round_trip():
    tok = build_tokenizer()
    text = "12+5=17;17+3=20;A: 20"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text) and tok.decode(ids) == text


def test_building_the_base_model_leaves_the_global_generator_alone(tmp_path):
    # issue 15 (found by experiments/kill9.py): a run that built the model sampled differently from a run
    # that loaded it from the cache, because the build re-seeded torch's generator
    import torch

    from stare.env.testbed import TestbedConfig, load_or_build

    cfg = TestbedConfig(hidden_size=16, layers=1, heads=2, sft_steps=3, sft_examples=50, train_prompts=20,
                        test_prompts=4)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    built, _ = load_or_build(cfg, cache_dir=tmp_path, log=None)
    assert torch.equal(torch.get_rng_state(), before)
    loaded, _ = load_or_build(cfg, cache_dir=tmp_path, log=None)
    for (n, p), (_, q) in zip(built.named_parameters(), loaded.named_parameters()):
        assert torch.equal(p, q), n

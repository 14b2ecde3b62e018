"""Unbiased pass@k against exact combinatorics (enumerating every k-subset)."""

import itertools

import pytest

from stare.train.evaluate import pass_at_k, summarize, summarize_by_source


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        samples = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            exact = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_known_values_and_errors():
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 6, 5) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_summarize():
    out = summarize([[1, 0, 0, 0], [1, 1, 0, 0]])
    assert out["acc/mean@4"] == pytest.approx(3 / 8)
    assert out["pass@1"] == pytest.approx(3 / 8)
    assert out["pass@4"] == 1.0
    assert out["pass@2"] == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    with pytest.raises(ValueError):
        summarize([[1, 0], [1]])


def test_summarize_reports_every_k_up_to_16():
    out = summarize([[1] + [0] * 19])  # n = 20: k = 1..16 and n
    assert [k for k in out if k.startswith("pass@")] == [f"pass@{k}" for k in list(range(1, 17)) + [20]]
    assert out["pass@20"] == 1.0 and out["pass@1"] == pytest.approx(1 / 20)


def test_summarize_by_source():
    # two sources: "a" has prompts [1,0] and [0,0]; "b" has [1,1]
    out = summarize_by_source([[1, 0], [0, 0], [1, 1]], ["a", "a", "b"])
    assert out["acc/mean@2"] == pytest.approx(3 / 6)
    assert out["a/acc/mean@2"] == pytest.approx(1 / 4)
    assert out["b/acc/mean@2"] == 1.0
    assert out["a/pass@2"] == pytest.approx(0.5)  # prompt 1: 1 - C(1,2)/C(2,2) = 1; prompt 2: 0
    # a single source adds nothing
    assert set(summarize_by_source([[1, 0]], ["a"])) == {"acc/mean@2", "pass@1", "pass@2"}
    with pytest.raises(ValueError, match="source tags"):
        summarize_by_source([[1, 0]], ["a", "b"])

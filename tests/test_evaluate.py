"""Unbiased pass@k against exact combinatorics (enumerating every k-subset)."""

import itertools

import pytest

from stare.train.evaluate import pass_at_k, summarize


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

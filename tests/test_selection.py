"""Selection statistics: exact-k top-k with id tie-breaks, the official rounding, quantiles, hashing."""

import math

import pytest
import torch

from stare.selection import (
    apply_topk,
    ceil_fraction,
    fit_quantile,
    fit_topk,
    floor_fraction,
    hash_uniform,
    masked_min_max,
    token_ids,
)


def _topk(score, cand, k_of):
    ids = token_ids(score.shape, None, score.device)
    return apply_topk(score, cand, ids, fit_topk(score, cand, ids, k_of))


def test_topk_selects_largest_candidates_only():
    score = torch.tensor([[5.0, 1.0, 9.0, 3.0], [8.0, 2.0, 7.0, 0.5]])
    cand = torch.tensor([[True, True, False, True], [True, True, True, False]])
    # candidates' scores: 5, 1, 3, 8, 2, 7 -> top 2 are 8 and 7 (9 and 0.5 are not candidates)
    sel = _topk(score, cand, lambda n: torch.full_like(n, 2))
    assert sel.tolist() == [[False, False, False, False], [True, False, True, False]]


def test_ties_go_to_lower_id_and_exactly_k():
    score = torch.tensor([[1.0, 3.0, 3.0], [3.0, 3.0, 0.0]])
    cand = torch.ones(2, 3, dtype=torch.bool)
    # four tokens tie at 3.0; k = 2 -> ids (0,1) and (0,2) win over (1,0), (1,1)
    sel = _topk(score, cand, lambda n: torch.full_like(n, 2))
    assert sel.tolist() == [[False, True, True], [False, False, False]]
    # with row ids reversed the second row comes first
    ids = token_ids((2, 3), torch.tensor([1, 0]), torch.device("cpu"))
    fit = fit_topk(score, cand, ids, lambda n: torch.full_like(n, 2))
    assert apply_topk(score, cand, ids, fit).tolist() == [[False, False, False], [True, True, False]]


def test_empty_candidates_select_nothing():
    score = torch.randn(2, 3)
    sel = _topk(score, torch.zeros(2, 3, dtype=torch.bool), ceil_fraction(0.5))
    assert not sel.any()
    sel = _topk(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool), ceil_fraction(0.5))
    assert sel.shape == (0, 3)


@pytest.mark.parametrize(
    "n, p, k",
    [
        (10, 0.1, 1),
        (11, 0.1, 2),  # ceil(1.1) = 2
        (30, 0.1, 3),  # 30 * 0.1 = 3.0000000000000004 in floats; official int(x + 0.999999) gives 3
        (3, 0.1, 1),  # at least one
        (1, 1.0, 1),
        (5, 0.0, 0),  # P = 0 selects nothing
        (0, 0.1, 0),  # no candidates
    ],
)
def test_ceil_fraction_matches_official_rounding(n, p, k):
    assert int(ceil_fraction(p)(torch.tensor(n))) == k


@pytest.mark.parametrize("n, m, r, k", [(100, 100, 0.2, 20), (4, 100, 0.0002, 1), (3, 10000, 0.001, 3), (0, 10, 0.5, 0)])
def test_floor_fraction(n, m, r, k):
    # k = min(n, max(1, int(r * m))), 0 without candidates
    assert int(floor_fraction(r, of=torch.tensor(m))(torch.tensor(n))) == k


def test_quantile_matches_torch_quantile():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(4, 9, generator=g)
    valid = torch.rand(4, 9, generator=g) > 0.3
    for q in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert fit_quantile(v, valid, q).item() == pytest.approx(torch.quantile(v[valid].double(), q).item())
    assert fit_quantile(v, torch.zeros_like(valid), 0.5).item() == math.inf


def test_min_max_empty():
    lo, hi = masked_min_max(torch.randn(3), torch.zeros(3, dtype=torch.bool))
    assert lo.item() == math.inf and hi.item() == -math.inf


def test_hash_uniform_is_deterministic_and_spread():
    ids = token_ids((64, 128), None, torch.device("cpu"))
    u = hash_uniform(ids, seed=3)
    assert torch.equal(u, hash_uniform(ids, seed=3))
    assert not torch.equal(u, hash_uniform(ids, seed=4))
    assert (u >= 0).all() and (u < 1).all()
    # 8192 draws: the mean of U(0,1) is 0.5 +- 0.0032 (1 sd); deciles hold about 10% each
    assert abs(u.mean().item() - 0.5) < 0.015
    counts = torch.histc(u.float(), bins=10, min=0, max=1)
    assert (counts / u.numel() - 0.1).abs().max() < 0.02
    assert u.unique().numel() > 0.99 * u.numel()

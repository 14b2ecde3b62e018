"""DAPO overlong shaping and truncation (docs/methods.md §1.5), by hand. Run: python -m pytest -q tests/rewards/test_overlong.py"""

import pytest

from stare.env.overlong import OverlongConfig, is_truncated, overlong_penalty

# DAPO's recipe: L_max = 20480, L_cache = 4096, so the buffer starts after 20480 - 4096 = 16384 tokens.
KW = dict(max_len=20480, cache_len=4096)


@pytest.mark.parametrize(
    "length, expected",
    [
        (0, 0.0),
        (16384, 0.0),  # last length without penalty
        (16385, -1 / 4096),  # one token into the buffer
        (18432, -0.5),  # halfway: (18432 - 16384) / 4096
        (20480, -1.0),  # at L_max: the full factor
        (30000, -1.0),  # past L_max: clamped (the paper's -1 beyond L_max)
    ],
)
def test_penalty_by_hand(length, expected):
    assert overlong_penalty(length, **KW) == pytest.approx(expected, abs=1e-12)


def test_penalty_factor_scales_and_small_caps():
    assert overlong_penalty(18432, penalty_factor=0.5, **KW) == pytest.approx(-0.25)
    # L_max = 10, L_cache = 4: free up to 6; 8 tokens is halfway -> -0.5.
    assert overlong_penalty(8, max_len=10, cache_len=4) == pytest.approx(-0.5)
    assert overlong_penalty(6, max_len=10, cache_len=10) == pytest.approx(-0.6)  # buffer = everything


@pytest.mark.parametrize("bad", [dict(max_len=10, cache_len=0), dict(max_len=10, cache_len=11)])
def test_penalty_rejects_bad_buffers(bad):
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(5, **bad)
    with pytest.raises(ValueError):
        OverlongConfig(**bad)
    with pytest.raises(ValueError, match="length"):
        overlong_penalty(-1, **KW)


def test_truncation():
    eos = {2}
    assert not is_truncated([5, 6], eos_token_ids=eos, max_new_tokens=4)  # stopped early (stop string)
    assert not is_truncated([5, 6, 7, 2], eos_token_ids=eos, max_new_tokens=4)  # EOS exactly at the cap
    assert is_truncated([5, 6, 7, 8], eos_token_ids=eos, max_new_tokens=4)  # cap reached without EOS
    assert is_truncated([5, 6, 7, 8, 9], eos_token_ids=eos, max_new_tokens=4)
    assert not is_truncated([], eos_token_ids=eos, max_new_tokens=4)


def test_config_shapes_reward_and_mask():
    cfg = OverlongConfig()  # DAPO defaults
    assert cfg.shape(1.0, 18432, truncated=False) == (pytest.approx(0.5), 1.0)
    assert cfg.shape(1.0, 20480, truncated=True) == (pytest.approx(0.0), 0.0)
    assert OverlongConfig(mask_truncated=False).shape(0.0, 20480, truncated=True) == (pytest.approx(-1.0), 1.0)
    assert OverlongConfig(soft_punishment=False).shape(1.0, 20480, truncated=True) == (1.0, 0.0)

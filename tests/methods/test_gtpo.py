"""GTPO and GRPO-S on hand tensors: the shaped token / response rewards, the zero-filled normalisation
(ours) and the within-set one (third-party reading, shown to cancel the outcome), variable lengths,
zero entropies, groups of one sign, the identity with the token-level group average when the entropy
weight is 0, and the hook through the trainer's ``StepData``. a1 = 1, a2 = 0.1 unless stated."""

import dataclasses
import math

import pytest
import torch

from stare import StepData
from stare.advantages import group_advantages
from stare.objectives.gtpo import (GrpoSParams, GtpoParams, grpo_s_advantages, gtpo_advantages, gtpo_step_advantages,
                                   gtpo_step_metrics)
from stare.objectives.hapo import token_group_average

# one group of three: two correct responses, one wrong; two tokens each
REWARDS = torch.tensor([1.0, 1.0, 0.0])
GROUPS = torch.tensor([0, 0, 0])
ENT = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
MASK = torch.ones(3, 2)


def test_token_rewards_and_zero_filled_normalisation_by_hand():
    # O+ at t = 0: d = 2, entropies [3, 1] (sum 4): r+ = 1 + 0.1 * (3/4) * 2 = 1.15 and 1 + 0.1 * (1/4) * 2 = 1.05;
    # at t = 1 the other way round. O-: h = 1, 1/H share = 1: r- = -1 - 0.1 * 1 * 1 = -1.1 at both positions.
    # R+ over the group's 6 active tokens: [1.15, 1.05, 1.05, 1.15, 0, 0]: mean 0.733333, population std 0.520150:
    #   A+ = (1.15 - 0.733333) / 0.520150 = 0.801052, (1.05 - 0.733333) / 0.520150 = 0.608799
    # R- = [0, 0, 0, 0, -1.1, -1.1]: mean -0.366667, std 0.518545: A- = (-1.1 + 0.366667) / 0.518545 = -1.414214
    out = gtpo_advantages(REWARDS, GROUPS, ENT, MASK, eps=0.0)
    hi, lo = 0.8010517, 0.6087993
    torch.testing.assert_close(out, torch.tensor([[hi, lo], [lo, hi], [-math.sqrt(2), -math.sqrt(2)]]),
                               rtol=1e-6, atol=1e-6)


def test_within_set_normalisation_cancels_the_outcome():
    # R+ = O+ tokens only: [1.15, 1.05, 1.05, 1.15], mean 1.1, std 0.05 -> +-1 (eps 1e-6 aside): correct tokens are
    # pushed down as often as up; R- = [-1.1, -1.1]: std 0 -> 0 / eps = 0: the wrong response gets no signal at all
    out = gtpo_advantages(REWARDS, GROUPS, ENT, MASK, normalization="within_set")
    torch.testing.assert_close(out[:2], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), rtol=1e-4, atol=1e-4)
    assert float(out[:2].mean()) == pytest.approx(0.0, abs=1e-6) and float(out[2].abs().max()) == 0.0


def test_counts_follow_the_active_responses():
    # lengths [3, 1, 2], rewards [1, 1, 0], equal entropies 1: at t = 0 d = 2 (shares 1/2 each): r+ = 1 + 0.1 = 1.1;
    # at t = 1, 2 only response 0 is active among O+: d = 1, share 1: r+ = 1.1 again. O-: r- = -1.1 at t = 0, 1.
    # R+ = [1.1 x 4 (O+ tokens), 0 x 2]: mean 4.4 / 6, std sqrt(4 * 1.21 / 6 - (4.4 / 6)^2) = 0.518545
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    out = gtpo_advantages(REWARDS, GROUPS, torch.ones(3, 3), mask, eps=0.0)
    a_pos = (1.1 - 4.4 / 6) / 0.5185449728701349
    a_neg = (-1.1 + 2.2 / 6) / 0.5185449728701349
    expected = torch.tensor([[a_pos] * 3, [a_pos, 0, 0], [a_neg, a_neg, 0]])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_zero_entropies_are_floored_and_one_sided_groups_stay_finite():
    ent = torch.zeros(3, 2)
    out = gtpo_advantages(REWARDS, GROUPS, ent, MASK)
    assert bool(torch.isfinite(out).all())
    # the floor makes every share equal, so both correct responses get the same advantage
    torch.testing.assert_close(out[0], out[1])
    # all correct: R+ varies only by entropy; with a2 = 0 it is constant and every advantage is 0
    same = gtpo_advantages(torch.ones(3), GROUPS, ENT, MASK, entropy_weight=0.0)
    assert float(same.abs().max()) == 0.0
    assert gtpo_advantages(torch.ones(0), torch.ones(0), torch.ones(0, 2), torch.ones(0, 2)).shape == (0, 2)


def test_zero_entropy_weight_is_the_token_level_group_average():
    # a2 = 0: R+ is the 0/1 outcome on the group's tokens, R- its negative, both over the same tokens, so
    # A+ = (1 - p) / sqrt(p (1 - p)) and A- = -p / sqrt(p (1 - p)) with p the share of correct tokens: HAPO's
    # token-level group average (length-weighted mean, population std), here without its fallback
    g = torch.Generator().manual_seed(3)
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1])
    groups = torch.arange(12) // 4
    mask = (torch.arange(9).unsqueeze(0) < torch.randint(1, 10, (12, 1), generator=g)).float()
    ent = torch.rand(12, 9, generator=g)
    ours = gtpo_advantages(rewards, groups, ent, mask, entropy_weight=0.0)
    tlga, frac = token_group_average(rewards, groups, mask, torch.full((12,), float("nan")))
    assert float(frac) == 0.0
    torch.testing.assert_close(ours, tlga.unsqueeze(1) * mask, rtol=1e-5, atol=1e-5)
    # and with -1 / +1 rewards the same
    torch.testing.assert_close(gtpo_advantages(2 * rewards - 1, groups, ent, mask, entropy_weight=0.0), ours)


def test_grpo_s_by_hand():
    # rewards [1, 1, 0, 0], mean entropies [2, 1, 0.5, 1]. O+: shares [2/3, 1/3] x |O+| = 2:
    #   r+ = [1 + 0.1 * 4/3, 1 + 0.1 * 2/3] = [1.133333, 1.066667]
    # O-: 1/H = [2, 1], shares [2/3, 1/3] x 2: r- = [-1.133333, -1.066667] (the confident wrong answer pays more)
    # zero-filled over the group's 4 responses: R+ = [1.133333, 1.066667, 0, 0], mean 0.55, std 0.550505
    #   A+ = [1.059633, 0.938533];  R- = [0, 0, -1.133333, -1.066667]: A- = [-1.059633, -0.938533]
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    ent = torch.tensor([[2.0, 2.0], [1.0, 1.0], [0.5, 0.5], [1.0, 1.0]])
    out = grpo_s_advantages(rewards, torch.zeros(4), ent, torch.ones(4, 2), eps=0.0)
    torch.testing.assert_close(out, torch.tensor([1.0596335, 0.9385325, -1.0596335, -0.9385325]), rtol=1e-6, atol=1e-6)


def test_grpo_s_without_the_entropy_weight_is_grpo_with_the_population_std():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randint(0, 2, (16,), generator=g).float()
    groups = torch.arange(16) // 4
    ent = torch.rand(16, 5, generator=g)
    ours = grpo_s_advantages(rewards, groups, ent, torch.ones(16, 5), entropy_weight=0.0, eps=1e-12)
    # GRPO divides by the Bessel std, sqrt(n / (n - 1)) times the population std: A_pop = A_grpo * sqrt(4 / 3)
    # (a group of equal rewards: 0 in both)
    expected = group_advantages(rewards, groups, eps=1e-12) * math.sqrt(4 / 3)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_grpo_s_response_without_tokens_takes_no_part():
    out = grpo_s_advantages(torch.tensor([1.0, 0.0, 1.0]), torch.zeros(3), torch.ones(3, 2),
                            torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]))
    assert float(out[2]) == 0.0 and float(out[0]) > 0 > float(out[1])


def test_hook_and_step_metrics_through_step_data():
    data = StepData(batch_entropy=1.0, rewards=REWARDS, group_ids=GROUPS, old_entropy=ENT, mask=MASK)
    adv = gtpo_step_advantages(data, GtpoParams(), {})
    torch.testing.assert_close(adv, gtpo_advantages(REWARDS, GROUPS, ENT, MASK))
    assert gtpo_step_advantages(data, GrpoSParams(), {}).shape == (3,)
    # the metrics read the step's final advantages (the trainer passes them in StepData.advantages)
    m = gtpo_step_metrics(dataclasses.replace(data, advantages=adv), GtpoParams(), {})
    assert m["gtpo/pos_token_frac"] == pytest.approx(4 / 6) and m["gtpo/adv_spread_mean"] > 0
    seq = gtpo_step_advantages(data, GrpoSParams(), {})
    assert set(gtpo_step_metrics(dataclasses.replace(data, advantages=seq), GrpoSParams(), {})) == {"grpo_s/pos_token_frac"}


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="normalization"):
        GtpoParams(normalization="per_set")
    with pytest.raises(ValueError, match="entropy_floor"):
        GtpoParams(entropy_floor=0.0)

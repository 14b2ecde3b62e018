"""GRPO / Dr.GRPO / batch-std advantages on hand-made rewards, with verl's edge cases."""

import math

import pytest
import torch

from stare.advantages import dr_grpo_advantages, expand_to_tokens, group_advantages, grpo_advantages


def test_grpo_hand_values():
    # group 0: rewards [1, 0, 0, 1] -> mean 0.5, Bessel std sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.57735
    #          A = +-0.5 / 0.57735 = +-0.866025
    # group 1: rewards [1, 0] -> mean 0.5, std sqrt(2 * 0.25 / 1) = 0.707107, A = +-0.707107
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    g = torch.tensor([0, 0, 0, 0, 7, 7])
    a = grpo_advantages(r, g, eps=0.0)
    expected = torch.tensor([0.866025, -0.866025, -0.866025, 0.866025, 0.707107, -0.707107])
    torch.testing.assert_close(a, expected, rtol=1e-5, atol=1e-6)


def test_eps_in_denominator():
    r, g = torch.tensor([1.0, 0.0]), [0, 0]
    # std = 0.7071068; A = 0.5 / (0.7071068 + 0.1)
    torch.testing.assert_close(grpo_advantages(r, g, eps=0.1), torch.tensor([0.5, -0.5]) / (math.sqrt(0.5) + 0.1))


def test_all_equal_rewards_give_zero_advantage():
    a = grpo_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]), [0, 0, 0, 1, 1])
    assert torch.equal(a, torch.zeros(5))


def test_group_of_one_uses_mean_zero_std_one():
    # verl: a singleton group has mean 0 and std 1, so its advantage is r / (1 + eps)
    a = grpo_advantages(torch.tensor([0.7, 1.0, 0.0]), ["solo", "pair", "pair"], eps=1e-6)
    torch.testing.assert_close(a[0], torch.tensor(0.7 / (1 + 1e-6)))
    assert dr_grpo_advantages(torch.tensor([0.7]), [0]).item() == pytest.approx(0.7)


def test_dr_grpo_has_no_std():
    a = dr_grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), [0, 0, 0, 0])
    torch.testing.assert_close(a, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_batch_std():
    # group means 0.5 and 0.0; batch std of [1, 0, 0, 0] = sqrt(0.75 * 0.25 * 4 / 3) = 0.5
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    a = group_advantages(r, [0, 0, 1, 1], std_scope="batch", eps=0.0)
    torch.testing.assert_close(a, torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_string_ids_and_order_do_not_matter():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    a1 = grpo_advantages(r, ["b", "a", "b", "a"])
    a2 = grpo_advantages(r, torch.tensor([5, 2, 5, 2]))
    torch.testing.assert_close(a1, a2)


def test_expand_to_tokens_and_errors():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(expand_to_tokens(torch.tensor([2.0, -1.0]), mask), torch.tensor([[2.0, 2, 0], [-1, 0, 0]]))
    with pytest.raises(ValueError, match="group_ids"):
        grpo_advantages(torch.ones(3), [0, 0])
    with pytest.raises(ValueError, match="std_scope"):
        group_advantages(torch.ones(2), [0, 0], std_scope="groups")

"""Advantage reweighting and Lopti on hand-made tensors: AR's weights (negative-advantage factor), the
identity AR(k = 0) == PPO, Lopti's three ways to isolate tokens, its two passes adding up to one AR
update, and parameter errors."""

import pytest
import torch

from stare import PolicyBatch, fit_plan, policy_loss
from stare.objectives.lopti import ARParams, ar_weights

CLIP = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.24, "clip_ratio_c": 10.0}


def test_ar_weights_by_hand():
    p = ARParams(reweight_k=0.2, neg_adv_weight=0.5)  # tau = 1 - k = 0.8
    w = ar_weights(torch.tensor([0.1, 0.9, 0.5]), torch.tensor([1.0, -1.0, 0.0]), p)
    # 0.2 * 0.1 + 0.8 = 0.82; 0.2 * 0.9 + 0.8 = 0.98, times 0.5 for A < 0; A = 0 counts as negative (official)
    assert w.tolist() == pytest.approx([0.82, 0.49, 0.45])


def test_ar_loss_by_hand_on_policy():
    old = torch.log(torch.tensor([[0.1, 0.9]]))
    lp = old.clone().requires_grad_()
    out = policy_loss("ar", PolicyBatch(lp, torch.tensor([2.0]), torch.ones(1, 2), old_log_prob=old, on_policy=True))
    # w = 0.82, 0.98; on-policy -A w r with r = 1: (-1.64 - 1.96) / 2
    assert out.loss.item() == pytest.approx(-1.8)
    out.loss.backward()
    assert lp.grad.tolist() == [pytest.approx([-0.82, -0.98])]


@pytest.mark.parametrize("off_policy", [False, True])
def test_ar_with_k_zero_is_ppo_bit_for_bit(off_policy):
    g = torch.Generator().manual_seed(1)
    lp0 = -torch.rand(3, 6, generator=g) * 2
    old = lp0 + 0.3 * torch.randn(3, 6, generator=g) if off_policy else None
    adv, mask = torch.randn(3, generator=g), (torch.rand(3, 6, generator=g) > 0.2).float()
    res = []
    for name, params in (("ar", {"reweight_k": 0.0, **CLIP}), ("ppo", CLIP)):
        lp = lp0.clone().requires_grad_()
        out = policy_loss(name, PolicyBatch(lp, adv, mask, old_log_prob=old), params)
        out.loss.backward()
        res.append((out.loss, lp.grad))
    assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1])


def _lopti_batch():
    old = torch.log(torch.tensor([[0.1, 0.3, 0.5, 0.9], [0.2, 0.6, 0.05, 0.7]]))
    lp = (old + 0.1).requires_grad_()
    return PolicyBatch(lp, torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]]), old_log_prob=old), lp


@pytest.mark.parametrize("eta, first", [
    (0.4, [[1, 1, 0, 0], [1, 0, 1, 0]]),  # pi_old < 0.4 first
    (-0.4, [[0, 0, 1, 1], [0, 1, 0, 1]]),  # pi_old >= 0.4 first
    # eta = 0: below the 0.6-quantile of the 7 valid pi_old (0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.9): position
    # 6 * 0.6 = 3.6, so 0.3 + 0.6 (0.5 - 0.3) = 0.42; the padded 0.7 does not count
    (0.0, [[1, 1, 0, 0], [1, 0, 1, 0]]),
])
def test_lopti_isolates_and_trains_each_set_in_its_pass(eta, first):
    b, _ = _lopti_batch()
    params = {"separate_prob": eta, "separate_quantile": 0.5 if eta else 0.6}
    want = torch.tensor(first, dtype=torch.bool)
    w0 = policy_loss("lopti", b, params, state={"lopti_pass": 0}).weights
    w1 = policy_loss("lopti", b, params, state={"lopti_pass": 1}).weights
    valid = b.mask.bool()
    assert torch.equal((w0 > 0) & valid, want & valid)
    assert torch.equal((w1 > 0) & valid, ~want & valid)


def test_two_passes_add_up_to_one_ar_update():
    b, lp = _lopti_batch()
    params = {"reweight_k": 0.3, "separate_prob": 0.5}
    grads = []
    for state in ({"lopti_pass": 0}, {"lopti_pass": 1}, None):
        lp.grad = None
        policy_loss("lopti", b, params, state=state).loss.backward()
        grads.append(lp.grad.clone())
    torch.testing.assert_close(grads[0] + grads[1], grads[2])  # complementary sets, zeroed advantages elsewhere
    ar = policy_loss("ar", b, {"reweight_k": 0.3}).loss
    assert policy_loss("lopti", b, params).loss.item() == pytest.approx(ar.item())  # no pass: every token, = AR


def test_quantile_split_is_fitted_over_the_scope():
    b, _ = _lopti_batch()
    plan = fit_plan("lopti", b, {"separate_prob": 0.0, "selection_scope": "global"})
    assert plan["threshold"].item() == pytest.approx(0.3)  # median of the 7 valid old probabilities
    assert fit_plan("lopti", b) is None  # eta != 0: nothing to fit


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="reweight_k and reweight_tau"):
        ARParams(reweight_k=0.0, reweight_tau=0.0)
    with pytest.raises(ValueError, match="separate_prob"):
        policy_loss("lopti", _lopti_batch()[0], {"separate_prob": 2.0})
    with pytest.raises(ValueError, match="state key"):
        policy_loss("ar", _lopti_batch()[0], state={"lopti_pass": 0})

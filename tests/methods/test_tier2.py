"""Tier-2 methods on hand-made tensors: BAPO's bound search, ASPO's flipped weight and soft dual clip,
DPPO's TV / KL masks, and 1-shot RLVR's entropy loss; each with its identity where it reduces to a
baseline."""

import math

import pytest
import torch

from stare import PolicyBatch, policy_loss
from stare.objectives.bapo import BapoParams, bapo_bounds, bound_grid


# ------------------------------------------------------------------------------------------------ BAPO

def test_bound_grid_visits_the_official_values():
    assert bound_grid(0.8, 0.95, 0.05) == pytest.approx([0.8, 0.85, 0.9, 0.95])
    assert bound_grid(1.2, 2.0, 0.3) == pytest.approx([1.2, 1.5, 1.8, 2.0])  # the last step is capped
    assert bound_grid(0.6, 0.6, 0.05) == [0.6]


def _bapo_batch():
    lp = torch.log(torch.tensor([[1.5, 1.0, 0.5]])).requires_grad_()
    return PolicyBatch(lp, torch.tensor([[1.0, -1.0, -1.0]]), torch.ones(1, 3), old_log_prob=torch.zeros(1, 3)), lp


def test_bapo_search_and_loss_by_hand():
    b, lp = _bapo_batch()
    p = BapoParams(target=0.7)
    # pos = A min(r, c_hi) = min(1.5, c_hi); neg = max(1.0, c_lo) + max(0.5, c_lo).
    # c_lo search (c_hi = 1.2): rho = 1.2 / 1.8 = 0.667 at 0.8 and falls as c_lo rises: runs to 0.95.
    # c_hi search (neg = 1.95): 1.2 -> 0.615, 1.3 -> 0.667, 1.4 -> 0.718 >= 0.7: c_hi = 1.4.
    c_lo, c_hi, rho = bapo_bounds(torch.tensor([[1.5, 1.0, 0.5]]), b.advantages, b.valid, p)
    assert (c_lo.item(), c_hi.item()) == pytest.approx((0.95, 1.4))
    assert rho.item() == pytest.approx(1.4 / 1.95)
    out = policy_loss("bapo", b, p)
    # losses: A > 0 clipped at 1.4 -> -1.4; r = 1 -> 1; r = 0.5 below 0.95 -> max(0.5, 0.95) = 0.95
    assert out.per_token_loss[0].tolist() == pytest.approx([-1.4, 1.0, 0.95])
    out.loss.backward()
    assert lp.grad[0].tolist() == pytest.approx([0.0, 1 / 3, 0.0])
    stat = out.stats["bapo/clip_upper"]
    assert stat.value.item() / stat.count.item() == pytest.approx(1.4)


def test_bapo_target_reached_at_the_start_keeps_the_start_bounds():
    b, _ = _bapo_batch()
    c_lo, c_hi, _ = bapo_bounds(torch.tensor([[1.5, 1.0, 0.5]]), b.advantages, b.valid, BapoParams(target=0.1))
    assert (c_lo.item(), c_hi.item()) == pytest.approx((0.8, 1.2))
    only_pos = torch.tensor([[1.0, 1.0, 0.0]])  # no negative mass: rho = inf, at target from the start
    c_lo, c_hi, rho = bapo_bounds(torch.ones(1, 3), only_pos, torch.ones(1, 3, dtype=torch.bool), BapoParams())
    assert (c_lo.item(), c_hi.item()) == pytest.approx((0.8, 1.2)) and math.isinf(rho.item())


def test_bapo_with_fixed_bounds_is_ppo():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 5, generator=g)
    lp0 = old + 0.5 * torch.randn(3, 5, generator=g)
    adv = torch.randn(3, generator=g)
    params = dict(lower_start=0.75, lower_max=0.75, upper_start=1.25, upper_max=1.25)  # nothing to search
    res = []
    for name, p in (("bapo", params), ("ppo", {"clip_ratio_low": 0.25, "clip_ratio_high": 0.25})):
        x = lp0.clone().requires_grad_()
        out = policy_loss(name, PolicyBatch(x, adv, torch.ones(3, 5), old_log_prob=old), p)
        out.loss.backward()
        res.append((out.loss, x.grad))
    torch.testing.assert_close(res[0][0], res[1][0])
    torch.testing.assert_close(res[0][1], res[1][1])


# ------------------------------------------------------------------------------------------------ ASPO

def test_aspo_by_hand():
    ratios = [0.5, 0.25, 1.5, 0.5, 4.0, 2.0]
    lp = torch.log(torch.tensor([ratios])).requires_grad_()
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
    b = PolicyBatch(lp, adv, torch.ones(1, 6), old_log_prob=torch.zeros(1, 6), entropy=torch.zeros(1, 6))
    out = policy_loss("aspo", b, {"entropy_quantile": 1.0})  # every token at or below the quantile: eps = 0.2
    # A > 0: r = 0.5 -> -1/0.5 = -2; r = 0.25 -> 1/r = 4 > 3: soft dual clip -3 log pi = -3 log 0.25;
    #        r = 1.5 -> clamped at 1.2: -1/1.2.   A < 0: r = 0.5 -> max(0.5, 0.8) = 0.8; r = 4 > 3: 3 log 4; r = 2 -> 2
    want = [-2.0, -3 * math.log(0.25), -1 / 1.2, 0.8, 3 * math.log(4.0), 2.0]
    assert out.per_token_loss[0].tolist() == pytest.approx(want)
    out.loss.backward()
    # gradients: -A / r = -2; -3; 0 (clamped); 0 (clamped); 3; -A r = 2
    assert (lp.grad[0] * 6).tolist() == pytest.approx([-2.0, -3.0, 0.0, 0.0, 3.0, 2.0])


def test_aspo_entropy_split_bounds():
    # entropies 0.1 .. 0.5: the 0.8-quantile is 0.42, so the last token is high-entropy (eps = 0.4)
    lp = torch.log(torch.full((1, 5), 1.3)).requires_grad_()
    b = PolicyBatch(lp, torch.tensor([1.0]), torch.ones(1, 5), old_log_prob=torch.zeros(1, 5),
                    entropy=torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]]))
    out = policy_loss("aspo", b)
    # r = 1.3: clamped at 1.2 on low-entropy tokens (-1/1.2), inside 1.4 on the last (-1/1.3)
    assert out.per_token_loss[0].tolist() == pytest.approx([-1 / 1.2] * 4 + [-1 / 1.3])


# ------------------------------------------------------------------------------------------------ DPPO

def _dppo_batch(probs, adv):
    lp = torch.log(torch.tensor([probs])).requires_grad_()
    return PolicyBatch(lp, torch.tensor([adv]), torch.ones(1, len(probs)), old_log_prob=torch.log(torch.full((1, len(probs)), 0.5))), lp


def test_dppo_tv_by_hand():
    b, lp = _dppo_batch([0.8, 0.6, 0.2, 0.4], [1.0, 1.0, -1.0, -1.0])
    out = policy_loss("dppo", b)
    # p0 = 0.5: 0.8 - 0.5 > 0.2 (A > 0): dropped; 0.6: kept, weight 1.2; 0.2 - 0.5 < -0.2 (A < 0): dropped;
    # 0.4: kept, weight 0.8. loss = -A sg(w) log p
    assert out.weights[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert out.per_token_loss[0].tolist() == pytest.approx([0.0, -1.2 * math.log(0.6), 0.0, 0.8 * math.log(0.4)])
    out.loss.backward()
    assert (lp.grad[0] * 4).tolist() == pytest.approx([0.0, -1.2, 0.0, 0.8])


def test_dppo_kl_by_hand():
    b, _ = _dppo_batch([0.8, 0.8, 0.55], [1.0, -1.0, 1.0])
    # Bernoulli KL(0.5 || 0.8) = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2) = 0.2231 > 0.2; moved up: dropped for A > 0,
    # kept for A < 0 (moved against A's direction); 0.55: KL 0.005, kept
    out = policy_loss("dppo", b, {"divergence": "kl"})
    assert out.weights[0].tolist() == [0.0, 1.0, 1.0]


def test_dppo_on_policy_has_ppos_gradient():
    g = torch.Generator().manual_seed(2)
    lp0 = -torch.rand(3, 4, generator=g) * 2
    adv = torch.randn(3, generator=g)
    grads = []
    for name in ("dppo", "ppo"):
        x = lp0.clone().requires_grad_()
        policy_loss(name, PolicyBatch(x, adv, torch.ones(3, 4))).loss.backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])


# ------------------------------------------------------------------------------------- 1-shot entropy loss

def _entropy_batch():
    g = torch.Generator().manual_seed(4)
    lp = (-torch.rand(2, 5, generator=g)).requires_grad_()
    ent = torch.rand(2, 5, generator=g).requires_grad_()
    return PolicyBatch(lp, torch.randn(2, generator=g), torch.ones(2, 5), entropy=ent), lp, ent


def test_one_shot_with_pg_coef_one_is_the_entropy_bonus_bit_for_bit():
    b, lp, ent = _entropy_batch()
    a = policy_loss("one_shot_entropy", b, {"entropy_coeff": 0.01})
    c = policy_loss("entropy_bonus", b, {"entropy_coeff": 0.01})
    assert torch.equal(a.loss, c.loss)


def test_one_shot_entropy_only():
    b, lp, ent = _entropy_batch()
    out = policy_loss("one_shot_entropy", b, {"pg_coef": 0.0, "entropy_coeff": 0.5})
    assert out.pg_loss.item() == 0.0
    out.loss.backward()
    assert lp.grad.abs().sum().item() == 0.0  # no reward signal at all
    torch.testing.assert_close(ent.grad, torch.full((2, 5), -0.5 / 10))  # maximise the token-mean entropy


# ------------------------------------------------------------------------------------------ inert knobs

@pytest.mark.parametrize("name, knob", [("bapo", "bounds"), ("aspo", "eps_low_entropy"), ("dppo", "trust region"),
                                        ("aepo_agentic_loss", "grad_coef_high"), ("lp_reg", "clip_ratio_low"),
                                        ("ar", "clip_ratio_low"), ("siren", "clip_ratio_low")])
def test_knobs_that_cannot_act_on_policy_say_so(name, knob):
    from stare import InertKnobWarning, get_objective

    aux = {n: torch.zeros(1, 2) for n in get_objective(name).aux_needs}
    b = PolicyBatch(torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), entropy=torch.ones(1, 2), aux=aux)
    with pytest.warns(InertKnobWarning, match=knob):
        policy_loss(name, b)

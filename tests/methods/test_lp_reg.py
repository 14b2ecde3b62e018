"""Lp-Reg on hand-made tensors: the min-p proxy (and where the temperature matters), the regularised set,
the loss and gradient derived from the spec's formulas, the k > 1 rule, and the identity rho = 0 == PPO."""

import math

import pytest
import torch

from stare import PolicyBatch, policy_loss
from stare.objectives.lp_reg import FILTERED_LOG_PROB, PROXY, minp_proxy_log_prob

RAW = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))


def test_minp_proxy_by_hand():
    stat = minp_proxy_log_prob(0.2)  # keeps p >= 0.2 * 0.5 = 0.1: tokens 0, 1, 2 (mass 0.95)
    out = stat(RAW.expand(4, 4), torch.arange(4))
    assert out[:3].tolist() == pytest.approx([math.log(0.5 / 0.95), math.log(0.3 / 0.95), math.log(0.15 / 0.95)], rel=1e-6)
    assert out[3].item() == FILTERED_LOG_PROB  # filtered: never below a log-prob, so never regularised


def test_minp_temperature_reproduces_the_filter_on_raw_logits():
    # At T = 2 the statistic sees raw / 2. The official filter (raw logits) drops token 3 (0.05 < 0.1);
    # on the T-scaled distribution (p ~ sqrt(p_raw)) token 3 has 0.224 / 0.707 = 0.32 of the top: kept.
    z = RAW / 2
    official = minp_proxy_log_prob(0.2, temperature=2.0)(z, torch.tensor([3]))
    on_scaled = minp_proxy_log_prob(0.2, temperature=1.0)(z, torch.tensor([3]))
    assert official.item() == FILTERED_LOG_PROB
    q = torch.softmax(z[0], -1)
    assert on_scaled.item() == pytest.approx(math.log(q[3].item()), rel=1e-5)  # all four kept: the plain log-prob
    # kept tokens are renormalised at T over the raw filter's set
    kept = minp_proxy_log_prob(0.2, temperature=2.0)(z, torch.tensor([1]))
    assert kept.item() == pytest.approx(math.log(q[1].item() / q[:3].sum().item()), rel=1e-5)


def _batch(lp, adv, proxy, mask=None, old=None):
    lp = torch.log(torch.tensor(lp)).requires_grad_()
    mask = torch.ones_like(lp) if mask is None else torch.tensor(mask)
    return PolicyBatch(lp, torch.tensor(adv), mask, old_log_prob=old, aux={PROXY: torch.tensor(proxy)})


def test_loss_and_gradient_by_hand():
    # Agreement check with the spec's formulas. Row 0: A = -1, four tokens; row 1: A = +1, two tokens (and
    # two padding positions). rho_neg = 0.5: k = floor(0.5 * 4) = 2 > 1, so S = the two lowest log-probs of
    # row 0 (p = 0.05 at t3, p = 0.1 at t0). Proxy: t0 log 0.3 (> log 0.1: regularised), t3 filtered.
    b = _batch([[0.1, 0.2, 0.4, 0.05], [0.5, 0.5, 0.5, 0.5]], [-1.0, 1.0],
               [[math.log(0.3), math.log(0.5), math.log(0.3), FILTERED_LOG_PROB], [0.0] * 4],
               mask=[[1.0, 1, 1, 1], [1, 1, 0, 0]])
    out = policy_loss("lp_reg", b, {"rho_neg": 0.5})
    k3 = 3 - math.log(3) - 1  # e^d - d - 1 with d = log 0.3 - log 0.1 = log 3
    # on-policy r = 1: off R, max(-A, -A) = 1 (A = -1) or -1 (A = +1); on R (t0): -A r + beta k3 = 1 + k3
    assert out.per_token_loss[0].tolist() == pytest.approx([1 + k3, 1, 1, 1])
    assert out.loss.item() == pytest.approx((1 + k3 + 3 - 2) / 6)
    out.loss.backward()
    # d/dlogp: -A r -> 1 (A = -1); k3 -> 1 - e^d = -2 on t0, which pulls log pi(t0) up toward the proxy
    assert b.log_prob.grad[0].tolist() == pytest.approx([(1 - 2) / 6, 1 / 6, 1 / 6, 1 / 6])
    assert b.log_prob.grad[1].tolist() == pytest.approx([-1 / 6, -1 / 6, 0, 0])
    s = {k: v.value.item() / max(v.count.item(), 1) for k, v in out.stats.items()}
    assert s["lp_reg/neg_lowest_frac"] == pytest.approx(2 / 6) and s["lp_reg/neg_regularised_frac"] == pytest.approx(1 / 6)
    assert s["lp_reg/proxy_kl"] == pytest.approx(k3)


def test_k_must_exceed_one_and_empty_sides_do_nothing():
    proxy = [[math.log(0.9)] * 3]
    three = _batch([[0.1, 0.2, 0.4]], [-1.0], proxy)
    # rho = 0.5 of 3 tokens: k = max(1, floor(1.5)) = 1, not > 1: the official rule leaves them alone
    assert torch.equal(policy_loss("lp_reg", three, {"rho_neg": 0.5}).loss, policy_loss("ppo", three, _ppo()).loss)
    zero = _batch([[0.1, 0.2, 0.4]], [0.0], proxy)  # all-zero advantages: no candidate on either side
    assert policy_loss("lp_reg", zero, {"rho_neg": 1.0, "rho_pos": 1.0}).loss.item() == 0.0


def _ppo():
    return {"clip_ratio_low": 1.0, "clip_ratio_high": 9.0, "clip_ratio_c": None}


@pytest.mark.parametrize("off_policy", [False, True])
def test_rho_zero_is_its_base_clip_loss_bit_for_bit(off_policy):
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(4, 7, generator=g) * 3
    old = lp + 0.3 * torch.randn(4, 7, generator=g) if off_policy else None
    adv, mask = torch.randn(4, generator=g), (torch.rand(4, 7, generator=g) > 0.2).float()
    proxy = lp + 0.5
    grads = []
    for name, params in (("lp_reg", {"rho_neg": 0.0, "rho_pos": 0.0}), ("ppo", _ppo())):
        x = lp.clone().requires_grad_()
        out = policy_loss(name, PolicyBatch(x, adv, mask, old_log_prob=old, aux={PROXY: proxy}), params)
        out.loss.backward()
        grads.append((out.loss, x.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_padding_is_never_selected():
    # the lowest log-probs sit on padding; only valid tokens may be regularised
    b = _batch([[0.4, 0.3, 0.2, 0.001, 0.001]], [-1.0], [[math.log(0.9)] * 5], mask=[[1.0, 1, 1, 0, 0]])
    out = policy_loss("lp_reg", b, {"rho_neg": 1.0})  # k = 3 > 1: every valid token, all below the proxy
    reg = out.stats["lp_reg/neg_regularised_frac"]
    assert reg.value.item() == 3 and reg.count.item() == 3
    assert out.per_token_loss[0, 3:].tolist() == pytest.approx([1.0, 1.0])  # padding keeps the plain value (masked)


def test_needs_the_proxy_and_rejects_bad_parameters():
    b = PolicyBatch(torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2))
    with pytest.raises(ValueError, match="lp_reg_proxy_log_prob"):
        policy_loss("lp_reg", b)
    with pytest.raises(ValueError, match="minp_kappa"):
        policy_loss("lp_reg", b, {"minp_kappa": 0.0})
    with pytest.raises(ValueError, match="proxy_kl_estimator.*Valid"):
        policy_loss("lp_reg", b, {"proxy_kl_estimator": "k4"})

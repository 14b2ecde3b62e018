"""SIREN on hand-made tensors: the top-p nucleus entropy (crossing token excluded, empty nucleus, gradient),
the per-sequence peak mask, the squared penalty with its gradient, the anchor controller, and the
identity without an anchor (or c = 0) == the clipped base loss."""

import math

import pytest
import torch

from stare import LossNormalizer, PolicyBatch, StepData, make_controller, policy_loss
from stare.objectives import load_controller, save_controller
from stare.objectives.siren import NUCLEUS_ENTROPY, OLD_NUCLEUS_ENTROPY, nucleus_entropy, peak_mask
from stare.stats import logit_statistics


def test_nucleus_entropy_by_hand():
    z = torch.log(torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.9, 0.05, 0.03, 0.02], [0.3, 0.3, 0.3, 0.1]]))
    h = nucleus_entropy(0.8, 10000)(z, torch.zeros(3, dtype=torch.long))
    # row 0: cumulative 0.5, 0.7, 0.9: the nucleus is {0.5, 0.2}; the token crossing 0.8 is left out
    want0 = -(5 / 7 * math.log(5 / 7) + 2 / 7 * math.log(2 / 7))
    # row 1: p_max >= P: empty nucleus, H = 0; row 2: cumulative 0.3, 0.6, 0.9: two of the three ties
    assert h.tolist() == pytest.approx([want0, 0.0, math.log(2)], abs=1e-6)
    h_k = nucleus_entropy(0.8, 1)(z, torch.zeros(3, dtype=torch.long))  # top-K truncation to one token
    assert h_k.tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_nucleus_entropy_gradient_through_chunked_logits():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.zeros(6, dtype=torch.long)
    fn = nucleus_entropy(0.8, 10000)
    out = logit_statistics({"h": fn}, ids, hidden=hidden, lm_head_weight=w, chunk_size=4)["h"]
    gh, = torch.autograd.grad(out.sum(), hidden)
    # direct: the same nucleus (piecewise constant), entropy of the renormalised probabilities
    p = torch.softmax(hidden @ w.T, -1)
    srt, idx = p.sort(-1, descending=True)
    inside = torch.zeros_like(p, dtype=torch.bool).scatter(-1, idx, srt.detach().cumsum(-1) < 0.8)
    q = torch.where(inside, p, 0.0)
    q = q / q.sum(-1, keepdim=True).clamp(min=1e-30)  # an empty nucleus has entropy 0
    direct = -(q * torch.log(torch.where(inside, q, 1.0))).sum(-1)  # log(1) = 0 off the nucleus, no NaN gradient
    dh, = torch.autograd.grad(direct.sum(), hidden)
    torch.testing.assert_close(out, direct, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(gh, dh, atol=1e-7, rtol=1e-6)


def test_peak_mask_per_sequence():
    h = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.2], [0.4, 0.4, 7.0, 0.0, 0.0]])
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    # row 0: the 0.8-quantile of (0.1, 0.2, 0.3, 0.5, 0.9) is 0.5 + 0.2 (0.9 - 0.5) = 0.58: only 0.9 is above
    # row 1: two equal valid values: quantile 0.4, nothing strictly above; padding never counts
    assert peak_mask(h, valid, 0.8).tolist() == [[False, False, False, True, False], [False] * 5]


def _batch(h, adv=(1.0, -1.0), requires_grad=True):
    h = torch.tensor(h).requires_grad_(requires_grad)
    lp = torch.full(h.shape, -1.0, requires_grad=True)
    return PolicyBatch(lp, torch.tensor(adv), torch.ones(h.shape), aux={NUCLEUS_ENTROPY: h}), h


def test_penalty_and_its_gradient_by_hand():
    b, h = _batch([[0.1, 0.5, 0.3, 0.9, 0.2], [0.2, 0.2, 0.2, 0.2, 0.6]])
    out = policy_loss("siren", b, {"entropy_coeff": 0.5}, state={"anchor": 0.5})
    # peaks: row 0 t3 (0.9), row 1 t4 (0.6); seq-mean-token-mean H_sel = (0.9 + 0.6) / 2 = 0.75
    assert out.extra_losses["siren_penalty"].item() == pytest.approx(0.5 * 0.25 ** 2)
    out.loss.backward()
    g = 2 * 0.5 * 0.25 / 2  # d/dH of c (H_sel - a)^2 through the mean of the two rows
    want = torch.zeros(2, 5)
    want[0, 3] = want[1, 4] = g
    torch.testing.assert_close(h.grad, want)


def test_no_anchor_or_zero_coefficient_is_the_base_loss():
    b, _ = _batch([[0.1, 0.5, 0.3, 0.9, 0.2], [0.2, 0.2, 0.2, 0.2, 0.6]])
    base = policy_loss("ppo", b, {"clip_ratio_low": 0.28, "clip_ratio_high": 0.28,
                                  "loss_agg_mode": "seq-mean-token-sum-norm"})
    assert torch.equal(policy_loss("siren", b).loss, base.loss)  # initial state: no anchor yet, no penalty
    assert torch.equal(policy_loss("siren", b, {"entropy_coeff": 0.0}, state={"anchor": 0.3}).loss, base.loss)


def test_penalty_is_per_call_weighted_by_token_share():
    a, _ = _batch([[0.1, 0.5, 0.3, 0.9, 0.2]], adv=(1.0,))  # H_sel 0.9
    c, _ = _batch([[0.2, 0.2, 0.2, 0.2, 0.6]], adv=(1.0,))  # H_sel 0.6
    norm = LossNormalizer.from_masks(a.mask, c.mask)
    total = sum(policy_loss("siren", x, {"entropy_coeff": 1.0}, state={"anchor": 0.5}, normalizer=norm)
                .extra_losses["siren_penalty"] for x in (a, c))
    assert total.item() == pytest.approx(0.5 * 0.4 ** 2 + 0.5 * 0.1 ** 2)  # the micro-batch penalties, not (0.75 - 0.5)^2


def test_anchor_is_set_once_from_the_first_step_and_survives_a_checkpoint(tmp_path):
    ctrl = make_controller("siren")
    assert math.isnan(ctrl.state()["anchor"])
    old = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.2], [0.2, 0.2, 0.2, 0.2, 0.6]])
    mask = torch.ones(2, 5, dtype=torch.bool)
    ctrl.update(StepData(batch_entropy=1.0, mask=mask, aux={OLD_NUCLEUS_ENTROPY: old}))
    assert ctrl.state()["anchor"] == pytest.approx(0.75)
    ctrl.update(StepData(batch_entropy=1.0, step=1, mask=mask, aux={OLD_NUCLEUS_ENTROPY: old * 0}))
    assert ctrl.state()["anchor"] == pytest.approx(0.75)  # held
    fresh = make_controller("siren")
    load_controller(save_controller(tmp_path / "c.pt", ctrl), fresh)
    assert fresh.state() == ctrl.state()
    assert make_controller("siren", {"anchor": 0.2}).state()["anchor"] == 0.2
    with pytest.raises(ValueError, match="siren_old_topp_entropy"):
        make_controller("siren").update(StepData(batch_entropy=1.0))

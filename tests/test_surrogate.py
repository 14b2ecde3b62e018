"""Clipped / dual-clipped / GSPO surrogates and the aggregation modes, on hand-made tensors."""

import math

import pytest
import torch

from stare.surrogate import LossNormalizer, aggregate, clipped_surrogate, gspo_surrogate, surrogate_stats
from stare.metrics import StatAccumulator


def test_clipped_surrogate_hand_values():
    # log ratios ln(1.5), ln(0.5), ln(1.1), ln(4.0); advantages +1, +1, -1, -1; eps 0.2 / 0.28, c = 3
    # token 0: r = 1.5, A = 1: max(-1.5, -1.28) = -1.28 (clipped)
    # token 1: r = 0.5, A = 1: max(-0.5, -0.8) = -0.5 (not clipped)
    # token 2: r = 1.1, A = -1: max(1.1, 1.1) = 1.1 (not clipped, inside the range)
    # token 3: r = 4.0, A = -1: max(4.0, 1.28) = 4.0, then dual clip min(4.0, 3.0) = 3.0
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 4.0]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    s = clipped_surrogate(logp, old, adv, 0.2, 0.28, 3.0)
    torch.testing.assert_close(s.loss, torch.tensor([[-1.28, -0.5, 1.1, 3.0]]))
    assert s.clipped.tolist() == [[True, False, False, False]]
    assert s.dual_clipped.tolist() == [[False, False, False, True]]
    acc = StatAccumulator()
    acc.add(surrogate_stats(s, torch.ones(1, 4, dtype=torch.bool)))
    r = acc.result()
    assert r["pg_clipfrac"] == 0.25 and r["pg_clipfrac_lower"] == 0.25
    # ppo_kl = mean(-log r) = -(ln 1.5 + ln 0.5 + ln 1.1 + ln 4) / 4
    assert r["ppo_kl"] == pytest.approx(-math.log(1.5 * 0.5 * 1.1 * 4.0) / 4, rel=1e-6)


def test_no_dual_clip_when_c_is_none():
    s = clipped_surrogate(torch.log(torch.tensor([[4.0]])), torch.zeros(1, 1), torch.tensor([[-1.0]]), 0.2, 0.2, None)
    assert s.loss.item() == pytest.approx(4.0) and not s.dual_clipped.any()


def test_on_policy_ratio_is_one_and_gradient_is_minus_a_grad_logp():
    logp = torch.tensor([[-0.3, -2.0, -1.0]], requires_grad=True)
    adv = torch.tensor([[1.5, -0.5, 2.0]])
    s = clipped_surrogate(logp, logp.detach(), adv, 0.2, 0.28, 10.0)
    assert torch.equal(s.ratio, torch.ones_like(s.ratio)) and not s.clipped.any()
    s.loss.sum().backward()
    assert torch.equal(logp.grad, -adv)


def test_gspo_sequence_ratio():
    # sequence 0 log-ratios [0.1, 0.3] (mean 0.2) -> every token's ratio exp(0.2); A = 1, eps 0.1 / 0.1
    # -> clipped at 1.1: loss -1.1 on both tokens. Sequence 1: log ratio [0.02, pad] -> r = exp(0.02) in range.
    old = torch.zeros(2, 2)
    logp = torch.tensor([[0.1, 0.3], [0.02, 5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    s = gspo_surrogate(logp, old, adv, mask, 0.1, 0.1)
    torch.testing.assert_close(s.loss[0], torch.tensor([-1.1, -1.1]))
    torch.testing.assert_close(s.loss[1, 0], -torch.exp(torch.tensor(0.02)))
    # gradient of token form sg[s] * pi / sg[pi] on an unclipped token is -A s
    s.loss[1, 0].backward()
    torch.testing.assert_close(logp.grad[1, 0], -torch.exp(torch.tensor(0.02)))


# Aggregation: L = [[1, 2, 3], [4, pad, pad]] with mask [[1,1,1],[1,0,0]], L[1,1] = 100 on padding
L = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
M = torch.tensor([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", (1 + 2 + 3 + 4) / 4),  # 2.5
        ("seq-mean-token-mean", ((1 + 2 + 3) / 3 + 4 / 1) / 2),  # (2 + 4) / 2 = 3
        ("seq-mean-token-sum", (6 + 4) / 2),  # 5
        ("seq-mean-token-sum-norm", 10 / (2 * 3)),  # sum / (N_seq * C), C = padded length 3
    ],
)
def test_aggregation_modes(mode, expected):
    assert aggregate(L, M, mode).item() == pytest.approx(expected)


def test_sum_norm_uses_constant_scale_factor():
    assert aggregate(L, M, "seq-mean-token-sum-norm", loss_scale_factor=10).item() == pytest.approx(10 / 20)


def test_empty_mask_gives_zero_not_nan():
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        assert aggregate(L, torch.zeros_like(M), mode).item() == 0.0


def test_fully_padded_row_is_ignored_by_seq_modes():
    Lp = torch.cat([L, torch.tensor([[7.0, 7.0, 7.0]])])
    Mp = torch.cat([M, torch.zeros(1, 3, dtype=M.dtype)])
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        assert aggregate(Lp, Mp, mode).item() == pytest.approx(aggregate(L, M, mode).item())


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_exact_global_aggregate_across_micro_batches(mode):
    # Micro-batches of very different token counts: with one normaliser for the whole mini-batch, the
    # sum of the micro-batch losses is the mini-batch loss.
    g = torch.Generator().manual_seed(0)
    per_tok = torch.randn(6, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    full = aggregate(per_tok, mask, mode, loss_scale_factor=5)
    splits = [(0, 1), (1, 4), (4, 6)]
    norm = LossNormalizer.from_masks(*[mask[a:b] for a, b in splits])
    total = sum(aggregate(per_tok[a:b], mask[a:b], mode, norm, loss_scale_factor=5) for a, b in splits)
    torch.testing.assert_close(total, full)
    if mode == "token-mean":
        # the legacy "mean of micro-batch means" is not the token mean here
        legacy = sum(aggregate(per_tok[a:b], mask[a:b], mode) for a, b in splits) / len(splits)
        assert not torch.allclose(legacy, full)


def test_normalizer_grad_scale_for_averaged_ranks():
    norm = LossNormalizer(torch.tensor(4.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64), 3, grad_scale=2.0)
    assert aggregate(L, M, "token-mean", norm).item() == pytest.approx(2.5 * 2)


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(L, M, "token_mean")

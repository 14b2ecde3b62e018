"""STARE on hand-made tensors: which tokens get W and M, the loss and its gradient, edge cases, and the
identities with GRPO-ds (bit for bit)."""

import pytest
import torch

from stare import PolicyBatch, StatAccumulator, policy_loss

GRPO_DS = dict(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=10.0)


def hand_batch():
    # Row 0: A = +1, surprisals 0.1, 2.0, 0.5, 3.0 (4 valid tokens)
    # Row 1: A = -1, surprisals 1.0, 4.0, 0.2 and one padded token with surprisal 9 (never a candidate)
    log_prob = torch.tensor([[-0.1, -2.0, -0.5, -3.0], [-1.0, -4.0, -0.2, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    adv = torch.tensor([1.0, -1.0])
    return PolicyBatch(log_prob, adv, mask)


def stats_of(out):
    acc = StatAccumulator()
    acc.add(out.stats)
    return acc.result()


def test_o1_hand_values():
    # T+ = 4 tokens, P = 0.25 -> k = ceil(1.0) = 1: the surprisal-3.0 token (0, 3) gets W = 2.
    # On-policy the per-token loss is -A (ratio 1): row 0 -> -1 each, row 1 -> +1 each.
    # token-mean: (-(1 + 1 + 1 + 2) + (1 + 1 + 1)) / 7 = -2 / 7.
    b = hand_batch()
    out = policy_loss("stare", b, dict(top_p_ratio=0.25, reweight_w=2.0, **GRPO_DS))
    assert out.weights.tolist() == [[1, 1, 1, 2], [1, 1, 1, 1]]
    assert out.loss.item() == pytest.approx(-2 / 7)
    out.loss.backward()
    # d loss / d log_prob = -A w / 7 on valid tokens, 0 on padding
    expected = torch.tensor([[-1, -1, -1, -2], [1, 1, 1, 0]]) / 7
    torch.testing.assert_close(b.log_prob.grad, expected)
    s = stats_of(out)
    assert s["stare/pos_candidate_frac"] == pytest.approx(4 / 7)
    assert s["stare/neg_candidate_frac"] == pytest.approx(3 / 7)
    assert s["stare/pos_selected_frac"] == pytest.approx(1 / 7)
    assert s["stare/neg_selected_frac"] == 0
    assert s["weight/mean"] == pytest.approx(8 / 7)  # weights are not renormalised


def test_c2_hand_values():
    # C2 also selects the top surprisal of T- (3 tokens, k = ceil(0.75) = 1): token (1, 1), surprisal 4.0,
    # and gives it M = 0.5. The padded token (surprisal 9) is not a candidate.
    # loss = (-(3 + 2) + (1 + 0.5 + 1)) / 7 = -2.5 / 7
    b = hand_batch()
    out = policy_loss("stare", b, dict(variant="C2", top_p_ratio=0.25, reweight_w=2.0, reweight_m=0.5, **GRPO_DS))
    assert out.weights.tolist() == [[1, 1, 1, 2], [1, 0.5, 1, 1]]
    assert out.loss.item() == pytest.approx(-2.5 / 7)


def test_state_overrides_parameters_and_gate_closes():
    b = hand_batch()
    out = policy_loss("stare", b, dict(variant="C2", top_p_ratio=0.25), state={"gate_on": True, "reweight_w": 1.3, "reweight_m": 0.7})
    torch.testing.assert_close(out.weights, torch.tensor([[1, 1, 1, 1.3], [1, 0.7, 1, 1]]))
    out = policy_loss("stare", b, dict(variant="C2", top_p_ratio=0.25), state={"gate_on": False})
    assert torch.equal(out.weights, torch.ones(2, 4))
    s = stats_of(out)
    assert s["stare/pos_selected_frac"] == pytest.approx(1 / 7)  # still selected, not reweighted
    assert s["stare/pos_reweighted_frac"] == 0


def test_k_is_ceil_and_at_least_one():
    # 4 positive candidates, P = 0.3 -> ceil(1.2) = 2: surprisals 3.0 and 2.0
    out = policy_loss("stare", hand_batch(), dict(top_p_ratio=0.3, reweight_w=2.0))
    assert out.weights[0].tolist() == [1, 2, 1, 2]
    # P = 0.01 still selects one token
    out = policy_loss("stare", hand_batch(), dict(top_p_ratio=0.01, reweight_w=2.0))
    assert out.weights[0].tolist() == [1, 1, 1, 2]


def test_zero_advantage_tokens_are_never_candidates():
    # The A = 0 row has the largest surprisals of all, yet gets nothing; P = 1 selects all of T+ only.
    lp = torch.tensor([[-0.1, -0.2], [-9.0, -8.0]])
    b = PolicyBatch(lp, torch.tensor([1.0, 0.0]), torch.ones(2, 2))
    out = policy_loss("stare", b, dict(variant="C2", top_p_ratio=1.0, reweight_w=2.0, reweight_m=0.5))
    assert out.weights.tolist() == [[2, 2], [1, 1]]


def test_all_zero_advantages():
    b = PolicyBatch(torch.randn(3, 4).requires_grad_(), torch.zeros(3), torch.ones(3, 4))
    out = policy_loss("stare", b, dict(variant="C2"))
    assert torch.equal(out.weights, torch.ones(3, 4))
    assert out.loss.item() == 0.0
    s = stats_of(out)
    assert s["stare/pos_candidate_frac"] == 0 and s["stare/neg_selected_frac"] == 0


def test_empty_negative_set_in_c2_and_o1_never_touches_negatives():
    b = PolicyBatch(torch.tensor([[-1.0, -2.0]]), torch.tensor([1.0]), torch.ones(1, 2))
    out = policy_loss("stare", b, dict(variant="C2", top_p_ratio=0.5, reweight_w=2.0, reweight_m=0.5))
    assert out.weights.tolist() == [[1, 2]]
    b = PolicyBatch(torch.tensor([[-1.0, -2.0]]), torch.tensor([-1.0]), torch.ones(1, 2))
    out = policy_loss("stare", b, dict(variant="O1", top_p_ratio=1.0, reweight_w=2.0))
    assert out.weights.tolist() == [[1, 1]]


def test_ties_in_surprisal_go_to_the_first_token():
    b = PolicyBatch(torch.full((2, 3), -1.0), torch.tensor([1.0, 1.0]), torch.ones(2, 3))
    out = policy_loss("stare", b, dict(top_p_ratio=0.3, reweight_w=2.0))  # 6 candidates -> k = 2
    assert out.weights.tolist() == [[2, 2, 1], [1, 1, 1]]


def test_fully_padded_row():
    lp = torch.tensor([[-1.0, -2.0], [-50.0, -60.0]])
    b = PolicyBatch(lp, torch.tensor([1.0, 1.0]), torch.tensor([[1, 1], [0, 0]]))
    out = policy_loss("stare", b, dict(top_p_ratio=0.5, reweight_w=2.0))
    assert out.weights.tolist() == [[1, 2], [1, 1]]
    assert torch.isfinite(out.loss)


def test_micro_scope_ranks_current_surprisal_off_policy():
    # Official code: s = -log_prob.detach() of the current forward, even when old log-probs differ.
    lp = torch.tensor([[-3.0, -0.1]])
    old = torch.tensor([[-0.1, -3.0]])
    b = PolicyBatch(lp, torch.tensor([1.0]), torch.ones(1, 2), old_log_prob=old)
    assert policy_loss("stare", b, dict(top_p_ratio=0.5, reweight_w=2.0)).weights.tolist() == [[2, 1]]
    # global scope ranks the old policy's surprisal (fixed for the mini-batch)
    out = policy_loss("stare", b, dict(top_p_ratio=0.5, reweight_w=2.0, selection_scope="global"))
    assert out.weights.tolist() == [[1, 2]]


def _random_batch(seed, off_policy):
    g = torch.Generator().manual_seed(seed)
    lp = (-torch.rand(6, 9, generator=g) * 4).requires_grad_()
    old = (lp.detach() + 0.6 * torch.randn(6, 9, generator=g)).clamp(max=0) if off_policy else None
    mask = torch.ones(6, 9)
    mask[2, 5:] = 0
    mask[4] = 0
    adv = torch.randn(6, generator=g)
    adv[1] = 0
    return PolicyBatch(lp, adv, mask, old_log_prob=old)


@pytest.mark.parametrize("off_policy", [False, True])
@pytest.mark.parametrize(
    "stare_params, state",
    [
        (dict(reweight_w=1.0, reweight_m=1.0, variant="C2"), None),  # W = M = 1
        (dict(top_p_ratio=0.0, variant="C2", reweight_w=3.0, reweight_m=0.2), None),  # P = 0
        (dict(variant="C2", reweight_w=3.0, reweight_m=0.2), {"gate_on": False}),  # gate off
    ],
)
def test_identity_with_grpo_ds_bit_for_bit(off_policy, stare_params, state):
    b1, b2 = _random_batch(0, off_policy), _random_batch(0, off_policy)
    ref = policy_loss("ppo", b1, GRPO_DS)
    out = policy_loss("stare", b2, dict(**GRPO_DS, **stare_params), state=state)
    assert torch.equal(out.loss, ref.loss)
    ref.loss.backward()
    out.loss.backward()
    assert torch.equal(b1.log_prob.grad, b2.log_prob.grad)
    if off_policy:  # the off-policy case exercises clipping and dual clip
        s = stats_of(ref)
        assert s["pg_clipfrac"] > 0


def test_stare_weights_scale_the_clipped_loss_not_the_clip_decision():
    b = _random_batch(1, True)
    ref = policy_loss("ppo", b, GRPO_DS)
    out = policy_loss("stare", b, dict(**GRPO_DS, variant="C2", top_p_ratio=0.5, reweight_w=1.5, reweight_m=0.5))
    acc_r, acc_o = stats_of(ref), stats_of(out)
    assert acc_r["pg_clipfrac"] == acc_o["pg_clipfrac"]
    assert not torch.equal(out.loss, ref.loss)


@pytest.mark.parametrize("bad, match", [(dict(variant="O2"), "variant"), (dict(top_p_ratio=1.5), "top_p_ratio"),
                                        (dict(reweight_w=0.0), "reweight_w"), (dict(reweigth_w=2.0), "reweight_w")])
def test_bad_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        policy_loss("stare", hand_batch(), bad)


def test_unknown_state_key():
    with pytest.raises(ValueError, match="gate_on"):
        policy_loss("stare", hand_batch(), state={"gate": True})

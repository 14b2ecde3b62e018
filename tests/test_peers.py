"""Peer objectives on hand-made tensors: STEER, STAPO, Clip-Cov, KL-Cov, 80/20, entropy bonus,
EntroAdv, GSPO. Expected values are derived in the comments."""

import math

import pytest
import torch

from stare import PolicyBatch, StatAccumulator, policy_loss

LN2 = math.log(2.0)


def stats_of(out):
    acc = StatAccumulator()
    acc.add(out.stats)
    return acc.result()


# ------------------------------------------------------------------------------------------------ STEER

def steer_batch():
    # On-policy, x = 0.5 for every token, A = 1, old entropy H = ln 2 + [0, 1, 2]
    # Omega = A (1 - x)(log x + H) = 0.5 * [0, 1, 2] = [0, 0.5, 1.0]  -> lo = 0, hi = 1
    lp = torch.full((1, 3), -LN2)
    h = torch.tensor([[LN2, LN2 + 1, LN2 + 2]])
    return PolicyBatch(lp, torch.tensor([1.0]), torch.ones(1, 3), old_entropy=h)


def test_steer_linear():
    # w = w_max - (a - lo)(w_max - w_min)/(hi - lo) = 1.2 - 0.4 a = [1.2, 1.0, 0.8]
    out = policy_loss("steer", steer_batch(), dict(mapping="linear"))
    torch.testing.assert_close(out.weights, torch.tensor([[1.2, 1.0, 0.8]]))
    # loss = token-mean of -A w = -(1.2 + 1.0 + 0.8) / 3 = -1
    assert out.loss.item() == pytest.approx(-1.0)


def test_steer_exp():
    # k = -ln(0.8) / max(hi = 1, 0.02); w = exp(-k a) = [1, 0.8 ** 0.5, 0.8]: the largest |Omega| gets w_min
    out = policy_loss("steer", steer_batch(), dict(mapping="exp"))
    torch.testing.assert_close(out.weights, torch.tensor([[1.0, 0.8**0.5, 0.8]]))


def test_steer_all_equal_omega_gets_midpoint_linear():
    b = PolicyBatch(torch.full((1, 3), -LN2), torch.tensor([1.0]), torch.ones(1, 3), old_entropy=torch.full((1, 3), LN2 + 1))
    out = policy_loss("steer", b, dict(mapping="linear"))
    torch.testing.assert_close(out.weights, torch.ones(1, 3))  # (0.8 + 1.2) / 2


def test_steer_exp_floor():
    # max |Omega| = 0.01 < 0.02: k = -ln 0.8 / 0.02, so the largest token gets exp(ln 0.8 * 0.5) = 0.894, not 0.8
    b = PolicyBatch(torch.full((1, 2), -LN2), torch.tensor([1.0]), torch.ones(1, 2),
                    old_entropy=torch.tensor([[LN2, LN2 + 0.02]]))
    out = policy_loss("steer", b, dict(mapping="exp"))
    torch.testing.assert_close(out.weights, torch.tensor([[1.0, 0.8**0.5]]))


def test_steer_padding_and_zero_advantage():
    b = PolicyBatch(torch.full((2, 2), -LN2), torch.tensor([0.0, 1.0]), torch.tensor([[1, 1], [1, 0]]),
                    old_entropy=torch.full((2, 2), LN2 + 1))
    out = policy_loss("steer", b, dict(mapping="linear"))
    # Omega = 0 on the A = 0 row (lo = 0), 0.5 on the A = 1 token (hi): weights 1.2, 1.2 | 0.8, 0 (pad)
    torch.testing.assert_close(out.weights, torch.tensor([[1.2, 1.2], [0.8, 0.0]]))


def test_steer_needs_old_entropy_off_policy():
    b = PolicyBatch(torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), old_log_prob=torch.zeros(1, 2),
                    entropy=torch.ones(1, 2))
    with pytest.raises(ValueError, match="old_entropy"):
        policy_loss("steer", b)


# ------------------------------------------------------------------------------------------------ STAPO

def stapo_batch():
    # Row 0 (A = +1): probs 0.005, 0.005, 0.5; old entropies 0.1, 0.9, 0.1 -> with tau_p = 0.01 and
    # tau_h = 0.5 only token (0, 0) is rare AND confident: spurious. Row 1 (A = -1) has the same profile
    # but negative advantage: never spurious.
    lp = torch.log(torch.tensor([[0.005, 0.005, 0.5], [0.005, 0.005, 0.5]]))
    h = torch.tensor([[0.1, 0.9, 0.1], [0.1, 0.9, 0.1]])
    return PolicyBatch(lp.requires_grad_(), torch.tensor([1.0, -1.0]), torch.ones(2, 3), old_entropy=h)


def test_stapo_masks_and_renormalises():
    b = stapo_batch()
    out = policy_loss("stapo", b, dict(entropy_threshold=0.5))
    # kept 5 of 6 tokens: weight 6/5 on them, 0 on the spurious one
    torch.testing.assert_close(out.weights, torch.tensor([[0.0, 1.2, 1.2], [1.2, 1.2, 1.2]]))
    # loss = sum(-A over kept) / 5 = (-2 + 3) / 5 = 0.2 ; the spurious token gets no gradient
    assert out.loss.item() == pytest.approx(0.2)
    out.loss.backward()
    assert b.log_prob.grad[0, 0] == 0
    s = stats_of(out)
    assert s["stapo/spurious_frac"] == pytest.approx(1 / 6)
    assert s["stapo/spurious_prob"] == pytest.approx(0.005)


def test_stapo_quantile_threshold_and_no_renormalisation():
    # entropy quantile 0.5 of [0.1, 0.9, 0.1, 0.1, 0.9, 0.1] = 0.1 -> H < 0.1 never holds: nothing spurious
    out = policy_loss("stapo", stapo_batch(), dict(entropy_quantile=0.5))
    assert torch.equal(out.weights, torch.ones(2, 3))
    # quantile 1.0 = 0.9: tokens (0, 0) is spurious ((0, 1) has H = 0.9, not < 0.9); no renormalisation
    out = policy_loss("stapo", stapo_batch(), dict(entropy_quantile=1.0, renormalize=False))
    assert out.weights.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert out.loss.item() == pytest.approx(1 / 6)  # (-2 + 3) / 6: denominator unchanged


# --------------------------------------------------------------------------------------- Clip-Cov, KL-Cov

def cov_batch(old=None):
    # A = +2 (row 0), -2 (row 1): mean A = 0. log-probs [-0.5, -3.5] in both rows: mean -2.
    # cov = (A - 0)(lp + 2): row 0 -> [3, -3], row 1 -> [-3, 3]. In (1, 5): tokens (0, 0) and (1, 1).
    lp = torch.tensor([[-0.5, -3.5], [-0.5, -3.5]], requires_grad=True)
    return PolicyBatch(lp, torch.tensor([2.0, -2.0]), torch.ones(2, 2), old_log_prob=old)


def test_clip_cov_detaches_a_random_candidate_keeping_the_denominator():
    # k = max(1, int(2e-4 * 4)) = 1 of the two candidates. On-policy per-token loss -A: [-2, -2, 2, 2];
    # zeroing (0, 0) gives (-2 + 2 + 2) / 4 = 0.5, zeroing (1, 1) gives -0.5 (denominator stays 4).
    seen = set()
    for seed in range(8):
        b = cov_batch()
        out = policy_loss("clip_cov", b, state={"seed": seed})
        zeroed = [tuple(ix) for ix in (out.weights == 0).nonzero().tolist()]
        assert len(zeroed) == 1 and zeroed[0] in {(0, 0), (1, 1)}
        assert out.loss.item() == pytest.approx(0.5 if zeroed[0] == (0, 0) else -0.5)
        out.loss.backward()
        assert b.log_prob.grad[zeroed[0]] == 0
        seen.add(zeroed[0])
        # same seed, same choice
        assert torch.equal(policy_loss("clip_cov", cov_batch(), state={"seed": seed}).weights, out.weights)
    assert seen == {(0, 0), (1, 1)}  # both candidates get picked across seeds


def test_clip_cov_ratio_selects_all_candidates():
    out = policy_loss("clip_cov", cov_batch(), dict(clip_cov_ratio=0.5))  # k = int(2) = 2
    assert out.weights.tolist() == [[0, 1], [1, 0]]
    assert out.loss.item() == 0.0  # (-2 + 2) / 4
    assert stats_of(out)["clip_cov/candidate_frac"] == 0.5


def test_kl_cov_penalises_top_covariance_token():
    # Off-policy: old = lp - 0.1, so log r = 0.1 everywhere. k = max(1, int(0.25 * 4)) = 1; the top
    # covariance (3) is shared by (0, 0) and (1, 1): the lower id (0, 0) wins.
    # loss = token-mean of -A r + beta |log r| on (0, 0) = (0 + 0.1 * beta) / 4 with beta = 1
    lp = torch.tensor([[-0.5, -3.5], [-0.5, -3.5]])
    b = cov_batch(old=lp - 0.1)
    out = policy_loss("kl_cov", b, dict(kl_cov_ratio=0.25))
    assert out.loss.item() == pytest.approx(0.025, rel=1e-5)
    s = stats_of(out)
    assert s["kl_cov/selected_frac"] == 0.25 and s["ppo_kl"] == pytest.approx(0.1, rel=1e-5)


def test_kl_cov_is_inert_on_policy_and_warns_once():
    from stare.inert import InertKnobWarning

    with pytest.warns(InertKnobWarning, match="no effect on-policy"):
        out = policy_loss("kl_cov", cov_batch())
    # on-policy it is plain -A: (-2 - 2 + 2 + 2) / 4 = 0
    assert out.loss.item() == 0.0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy_loss("kl_cov", cov_batch())  # second time: no warning


# ------------------------------------------------------------------------------------------------- 80/20

def forking_batch():
    # one row, A = 1, entropies [0.1, 2.0, 0.5, 3.0, 1.0]
    h = torch.tensor([[0.1, 2.0, 0.5, 3.0, 1.0]])
    return PolicyBatch(torch.full((1, 5), -1.0), torch.tensor([1.0]), torch.ones(1, 5), entropy=h)


def test_forking_topk_kept_denominator():
    # rho = 0.4: k = int(0.4 * 5) = 2 -> entropies 3.0 and 2.0 kept; weight n_valid / n_kept = 2.5
    # loss = -(2.5 + 2.5) / 5 = -1 = sum over kept of -A / 2
    out = policy_loss("forking", forking_batch(), dict(top_entropy_ratio=0.4))
    torch.testing.assert_close(out.weights, torch.tensor([[0, 2.5, 0, 2.5, 0]]))
    assert out.loss.item() == pytest.approx(-1.0)


def test_forking_quantile_all_denominator_trl_style():
    # quantile(0.6) of [0.1, 0.5, 1.0, 2.0, 3.0] = 1.0 + 0.4 * (2.0 - 1.0) = 1.4 -> keep H >= 1.4
    # loss = -(1 + 1) / 5 (masked tokens still count)
    out = policy_loss("80_20", forking_batch(), dict(top_entropy_ratio=0.4, threshold="quantile", denominator="all"))
    assert out.weights.tolist() == [[0, 1, 0, 1, 0]]
    assert out.loss.item() == pytest.approx(-0.4)


def test_forking_edges():
    out = policy_loss("forking", forking_batch(), dict(top_entropy_ratio=1.0))
    assert torch.equal(out.weights, torch.ones(1, 5))
    out = policy_loss("forking", forking_batch(), dict(top_entropy_ratio=0.0, threshold="quantile"))
    assert torch.equal(out.weights, torch.zeros(1, 5)) and out.loss.item() == 0.0
    with pytest.raises(ValueError, match="entropy"):
        policy_loss("forking", PolicyBatch(torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2)))


# ---------------------------------------------------------------------------------------- entropy bonus

def test_entropy_bonus_term_and_gradient():
    h = torch.tensor([[1.0, 2.0, 4.0], [3.0, 0.0, 0.0]], requires_grad=True)
    lp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = policy_loss("entropy_bonus", PolicyBatch(lp, torch.tensor([1.0, 1.0]), mask, entropy=h),
                      dict(entropy_coeff=0.1))
    # bonus = -0.1 * token-mean(H) = -0.1 * 10 / 4 ; pg = -1
    assert out.extra_losses["entropy_bonus"].item() == pytest.approx(-0.25)
    assert out.loss.item() == pytest.approx(-1.25)
    out.loss.backward()
    torch.testing.assert_close(h.grad, -0.1 * mask / 4)


def test_entropy_bonus_coefficient_from_controller_state():
    h = torch.ones(1, 2, requires_grad=True)
    b = PolicyBatch(torch.zeros(1, 2, requires_grad=True), torch.ones(1), torch.ones(1, 2), entropy=h)
    out = policy_loss("entropy_bonus", b, state={"entropy_coeff": 0.0})
    assert out.extra_losses == {} and out.loss.item() == -1.0


def test_entropy_bonus_requires_entropy_with_graph():
    b = PolicyBatch(torch.zeros(1, 2, requires_grad=True), torch.ones(1), torch.ones(1, 2), entropy=torch.ones(1, 2))
    with pytest.raises(ValueError, match="does not require grad"):
        policy_loss("entropy_bonus", b)


# --------------------------------------------------------------------------------------------- EntroAdv

def test_entroadv_shaping():
    # alpha = 0.4, kappa = 2. Row 0 (A = 1), H = [0.5, 10]: bonus min(0.2, 0.5) = 0.2, min(4, 0.5) = 0.5
    # Row 1 (A = -1), H = 1: min(0.4, 0.5) = 0.4 -> A' = -0.6. Row 2 (A = 0): stays 0.
    # on-policy loss = -mean(A') = -(1.2 + 1.5 - 0.6 - 0.6 + 0 + 0) / 6
    h = torch.tensor([[0.5, 10.0], [1.0, 1.0], [5.0, 5.0]])
    b = PolicyBatch(torch.zeros(3, 2), torch.tensor([1.0, -1.0, 0.0]), torch.ones(3, 2), entropy=h)
    out = policy_loss("entroadv", b)
    assert out.loss.item() == pytest.approx(-(1.2 + 1.5 - 1.2) / 6)


# ------------------------------------------------------------------------------------------------- GSPO

def test_gspo_through_the_driver():
    lp = torch.tensor([[0.1, 0.3], [0.02, 0.0]])
    b = PolicyBatch(lp, torch.tensor([1.0, 1.0]), torch.tensor([[1, 1], [1, 0]]), old_log_prob=torch.zeros(2, 2))
    out = policy_loss("gspo", b, dict(clip_ratio_low=0.1, clip_ratio_high=0.1))
    # seq 0: mean log r = 0.2 -> clipped to 1.1 -> token mean -1.1; seq 1: -exp(0.02); seq-mean
    assert out.loss.item() == pytest.approx((-1.1 - math.exp(0.02)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="seq-mean-token-mean"):
        policy_loss("gspo", b, dict(loss_agg_mode="token-mean"))

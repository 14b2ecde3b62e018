"""HAPO on hand tensors: the entropy signal (unsigned as coded, signed as in the paper), the token-level
group average and its fallback, the per-token clip bounds and advantage redistribution, the temperature
processor, the controller (one step's statistics for the next rollout), the rollout hook, inert knobs.
Each expected value is derived in the comments from the formulas of stare/objectives/hapo.py."""

import math
import warnings

import pytest
import torch

from stare import InertKnobWarning, PolicyBatch, StepData, make_controller, policy_loss
from stare.objectives import RolloutRequest, RolloutRow
from stare.objectives.hapo import (
    EntropyStats,
    HapoController,
    HapoParams,
    entropy_signal,
    hapo_rollout,
    hapo_step_advantages,
    temperature_processor,
    token_group_average,
)

# log-entropies of six tokens; H = exp(l). Sorted l: [-3, -1.5, -0.2, 0, 0.5, 2].
L = torch.tensor([[-3.0, -1.5, -0.2, 0.0, 0.5, 2.0, 7.0]], dtype=torch.float64)
VALID = torch.tensor([[True] * 6 + [False]])  # the last position is padding (its large entropy must not count)


def test_entropy_signal_unsigned_as_coded():
    # pivot 0.8 over n = 6: nearest rank round(0.8 * 5) = 4 -> sorted l[4] = 0.5
    # h = l - 0.5 = [-3.5, -2, -0.7, -0.5, 0, 1.5]; rms = sqrt(19.24 / 6) = 1.790717
    # h / rms = [-1.954525, -1.116871, -0.390905, -0.279218, 0, 0.837653]
    # unsigned (the code): positives / max(h > 0), the rest / min(h < 0) (negative):
    #   [-3.5/-3.5, -2/-3.5, -0.7/-3.5, -0.5/-3.5, 0, 1.5/1.5] = [1, 0.571429, 0.2, 0.142857, 0, 1]
    h_hat, s = entropy_signal(L.exp(), VALID, pivot=0.8, signed=False)
    assert float(s.median) == pytest.approx(0.5)
    assert float(s.std) == pytest.approx(1.7907168, rel=1e-6)
    torch.testing.assert_close(h_hat[0, :6], torch.tensor([1, 4 / 7, 0.2, 1 / 7, 0, 1], dtype=torch.float64))
    assert float(s.scale_pos) == pytest.approx(1 / 0.8376534, rel=1e-6)
    assert float(s.scale_neg) == pytest.approx(1 / -1.9545246, rel=1e-6)  # negative: h <= 0 maps to h_hat >= 0


def test_entropy_signal_signed_as_in_the_paper():
    # the same, but the negative side divided by |min(h < 0)|: [-1, -0.571429, -0.2, -0.142857, 0, 1]
    h_hat, s = entropy_signal(L.exp(), VALID, pivot=0.8, signed=True)
    torch.testing.assert_close(h_hat[0, :6], torch.tensor([-1, -4 / 7, -0.2, -1 / 7, 0, 1], dtype=torch.float64))
    assert float(s.scale_neg) > 0


def test_pivot_is_a_nearest_rank_with_half_to_even_rounding():
    # pivot 0.5 over 6: 0.5 * 5 = 2.5 rounds to 2 (Python's round, as the code's torch_quantile) -> l[2] = -0.2
    _, s = entropy_signal(L.exp(), VALID, pivot=0.5)
    assert float(s.median) == pytest.approx(-0.2)
    _, s = entropy_signal(L.exp(), VALID, pivot=1.0)
    assert float(s.median) == pytest.approx(2.0)  # the padded 7.0 is not a candidate


def test_entropy_signal_with_no_valid_token_is_finite():
    h_hat, s = entropy_signal(L.exp(), torch.zeros_like(VALID))
    assert float(s.median) == 0.0 and bool(torch.isfinite(h_hat).all())


# ------------------------------------------------------------------------------------ token-level group average


def test_token_group_average_by_hand():
    # group 0: rewards [1, 0], lengths [3, 1]: token mean 3/4, population var (3 * 0.25^2 + 0.75^2) / 4 = 0.1875,
    #   std 0.433013: A = [0.25, -0.75] / 0.433013 = [0.577350, -1.732051]
    # group 1: rewards [1, 0], lengths [1, 30]: mean 1/31, std 0.176685, A_0 = 5.477 >= 5 -> the fallback
    # group 2: no loss tokens at all -> the fallback
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    lengths = [3, 1, 1, 30, 0, 0]
    mask = torch.tensor([[1.0] * n + [0.0] * (30 - n) for n in lengths])
    fallback = torch.tensor([9.0, 9.0, 0.7, -0.7, 0.3, -0.3])
    adv, frac = token_group_average(rewards, groups, mask, fallback)
    torch.testing.assert_close(adv, torch.tensor([0.5773503, -1.7320508, 0.7, -0.7, 0.3, -0.3]), rtol=1e-5, atol=1e-5)
    assert float(frac) == pytest.approx(2 / 3)


def test_token_group_average_equal_rewards_and_equal_lengths():
    # equal rewards: std 0 -> A = 0 (no fallback: 0 < 5). Equal lengths: the population-std GRPO advantage,
    # rewards [1, 0, 0, 0]: mean 0.25, std sqrt(0.1875): [1.732051, -0.577350 x 3]
    mask = torch.ones(6, 4)
    adv, _ = token_group_average(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]), torch.tensor([0, 0, 1, 1, 1, 1]), mask,
                                 torch.zeros(6))
    torch.testing.assert_close(adv, torch.tensor([0.0, 0.0, 1.7320508, -0.5773503, -0.5773503, -0.5773503]),
                               rtol=1e-5, atol=1e-5)


def test_advantage_hook_can_use_the_default():
    data = StepData(batch_entropy=0.5, rewards=torch.tensor([1.0, 0.0]), group_ids=torch.tensor([0, 0]),
                    mask=torch.ones(2, 3), advantages=torch.tensor([0.5, -0.5]))
    assert torch.equal(hapo_step_advantages(data, HapoParams(token_level_advantage=False), {}), data.advantages)
    torch.testing.assert_close(hapo_step_advantages(data, HapoParams(), {}), torch.tensor([1.0, -1.0]), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ the loss


def _loss_batch(ratios, adv):
    # log-entropies [0.5, 0, -0.5] (H = exp(l)) under the plan median 0, std 1, scale_pos 1, |scale_neg| 1:
    # h_hat = [0.5, 0, 0.5] unsigned, [0.5, 0, -0.5] signed (and a fourth token at 0.5 for A < 0)
    ent = torch.tensor([[0.5, 0.0, -0.5, 0.5]]).exp()
    old = torch.zeros(1, 4)
    lp = torch.log(torch.tensor([ratios])).requires_grad_(True)
    return PolicyBatch(lp, torch.tensor([adv]), torch.ones(1, 4), old_log_prob=old, entropy=ent, old_entropy=ent)


def _plan(signed):
    one = torch.tensor(1.0, dtype=torch.float64)
    return EntropyStats(torch.tensor(0.0, dtype=torch.float64), one, one, one if signed else -one)


@pytest.mark.parametrize("signed", [False, True])
def test_clip_bounds_and_redistribution_by_hand(signed):
    # clip 0.2 / 0.2, alpha = beta = 1, dual clip 10
    # token 0: h_hat 0.5 > 0: eps_high = 0.2 * 1.5 = 0.3, eps_low 0.2; zone (0.9, 1.15); r = 1.4 outside -> A_ent = 1.5;
    #          loss = max(-1.5 * 1.4, -1.5 * 1.3) = -1.95
    # token 1: h_hat 0 (<= 0): bounds 0.2 / 0.2, zone (0.9, 1.1); r = 1.05 inside -> A_ent = 1 * (1 + 0) = 1; -1.05
    # token 2: unsigned h_hat 0.5: zone (0.9, 1.15), r = 0.95 inside, h_hat > 0 keeps A = 1: loss -0.95
    #          signed h_hat -0.5: eps_low = 0.2 * 1.5 = 0.3, zone (0.85, 1.1), inside -> A_ent = 0.5: loss -0.475
    # token 3: A = -1, h_hat 0.5: zone (0.9, 1.15), r = 0.5 outside -> A_ent = -1.5;
    #          loss = max(1.5 * 0.5, 1.5 * 0.8) = 1.2, below the dual-clip cap 15
    b = _loss_batch([1.4, 1.05, 0.95, 0.5], [1.0, 1.0, 1.0, -1.0])
    out = policy_loss("hapo", b, HapoParams(signed_h=signed), plan=_plan(signed))
    expected = [-1.95, -1.05, -0.475 if signed else -0.95, 1.2]
    torch.testing.assert_close(out.per_token_loss[0], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert out.stats["hapo/clip_high_mean"].value / out.stats["hapo/clip_high_mean"].count == pytest.approx(
        (0.3 + 0.2 + (0.2 if signed else 0.3) + 0.3) / 4)


def test_alpha_and_beta_zero_are_the_dual_clipped_ppo_loss():
    b = _loss_batch([1.4, 1.05, 0.95, 0.5], [1.0, 1.0, 1.0, -1.0])
    hapo = policy_loss("hapo", b, HapoParams(clip_alpha=0.0, adv_beta=0.0))
    ppo = policy_loss("ppo", b, dict(clip_ratio_c=10.0))
    torch.testing.assert_close(hapo.per_token_loss, ppo.per_token_loss)
    torch.testing.assert_close(hapo.loss, ppo.loss)


def test_unsigned_on_policy_is_ppo_and_warns_that_alpha_and_beta_are_inert():
    # ratio 1: every token is inside its zone; unsigned h_hat >= 0 keeps A, and no bound is reached
    ent = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) + 0.01
    lp = -torch.rand(3, 5, generator=torch.Generator().manual_seed(1))
    b = PolicyBatch(lp, torch.tensor([1.0, -0.5, 0.2]), torch.ones(3, 5), entropy=ent)
    with pytest.warns(InertKnobWarning) as rec:
        out = policy_loss("hapo", b)
    names = " ".join(str(w.message) for w in rec)
    assert "adv_beta" in names and "clip_alpha" in names
    torch.testing.assert_close(out.per_token_loss, policy_loss("ppo", b).per_token_loss)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        signed = policy_loss("hapo", b, dict(signed_h=True))
    assert not any("adv_beta" in str(w.message) for w in rec)  # signed: the redistribution acts on-policy
    assert not torch.allclose(signed.per_token_loss, out.per_token_loss)


def test_hapo_loss_objective_is_the_loss_alone():
    b = _loss_batch([1.4, 1.05, 0.95, 0.5], [1.0, 1.0, 1.0, -1.0])
    torch.testing.assert_close(policy_loss("hapo_loss", b).loss, policy_loss("hapo", b).loss)


# ------------------------------------------------------------------------------------ the sampler


def test_temperature_processor_by_hand():
    # stats: median 0, std 1, scale_pos 0.5, scale_neg -1 (unsigned); T = 1, tau = 0.05
    # row 0: uniform over 4 tokens, H = ln 4 = 1.386294, l = ln H = 0.326634, h = l / (1 + 1e-6) = 0.326634,
    #        h_hat = 0.5 h = 0.163317, T_0 = 1 + 0.05 * 0.163317 = 1.008166
    # row 1: logits [0, -100, -100, -100]: H ~ 0 -> floored at 1e-6, l = -13.8155, h_hat = -13.8155 * -1 clamped to 1,
    #        T_1 = 1.05
    stats = {"entropy_median": 0.0, "entropy_std": 1.0, "scale_pos": 0.5, "scale_neg": -1.0}
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, -100.0, -100.0, -100.0]])
    out = temperature_processor(stats, 1.0, 0.05, 1.0)(None, z)
    torch.testing.assert_close(out[0], z[0] / 1.0081658, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[1], z[1] / 1.05, rtol=1e-6, atol=1e-6)


def test_temperature_processor_signed_can_lower_the_temperature_and_applies_top_p():
    # scale_neg +1 (signed): row 1's h_hat = -1, T = 2 * (1 - 0.5) = 1.0 (tau 0.5, base T 2)
    # row 0 (uniform, h_hat 0.5 * 0.326634 = 0.163317): T = 2 * (1 + 0.5 * 0.163317) = 2.163317
    # top-p 0.6: for row 0 (probabilities 1/4 each) the three most likely tokens carry the first 0.75; the third's
    # predecessors hold 0.5 < 0.6, so it stays; the fourth's hold 0.75 >= 0.6 and it is dropped
    stats = {"entropy_median": 0.0, "entropy_std": 1.0, "scale_pos": 0.5, "scale_neg": 1.0}
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, -100.0, -100.0, -100.0]])
    out = temperature_processor(stats, 2.0, 0.5, 0.6)(None, z)
    assert int(torch.isinf(out[0]).sum()) == 1
    torch.testing.assert_close(out[0][torch.isfinite(out[0])], torch.full((3,), 1 / 2.163317), rtol=1e-6, atol=1e-6)
    assert float(out[1, 0]) == 0.0 and bool(torch.isinf(out[1, 1:]).all())  # T_1 = 1; top-p keeps only token 0


# ------------------------------------------------------------------------------------ controller and rollout hook


def _step(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    return StepData(batch_entropy=0.3, step=0, rewards=torch.tensor([1.0, 0.0, 1.0, 1.0]),
                    group_ids=torch.tensor([0, 0, 1, 1]), mask=mask, old_entropy=torch.rand(4, 6, generator=g) + 1e-3,
                    advantages=torch.tensor([0.7, -0.7, 0.0, 0.0]))


def test_controller_keeps_the_last_statistics_for_the_next_rollout(tmp_path):
    from stare.objectives import load_controller, save_controller

    c = make_controller("hapo")
    assert isinstance(c, HapoController) and c.state()["has_stats"] is False and c.metrics() == {}
    data = _step()
    c.update(data)
    _, s = entropy_signal(data.old_entropy, data.mask.bool(), 0.8)
    st = c.state()
    assert st["has_stats"] and st["entropy_median"] == pytest.approx(float(s.median))
    assert st["scale_neg"] == pytest.approx(float(s.scale_neg)) and c.metrics()["hapo/fallback_group_frac"] == 0.0
    fresh = make_controller("hapo")
    load_controller(save_controller(tmp_path / "c.pt", c), fresh)
    assert fresh.state() == st
    with pytest.warns(RuntimeWarning, match="no old-policy entropies"):
        c.update(StepData(batch_entropy=0.3))
    assert c.state() == st and c.skipped_updates == 1


class FakeSampler:
    """Records how the hook calls it; returns one-token rows."""

    tokenizer = None

    def __init__(self):
        self.calls = []

    def episodes(self, examples, contexts, *, max_new_tokens, temperature, top_p, logits_processors=()):
        self.calls.append(dict(n=len(contexts), temperature=temperature, top_p=top_p, processors=list(logits_processors)))
        return [RolloutRow(i, [1], "x") for i in range(len(contexts))]


def test_rollout_hook_first_step_is_plain_then_per_token():
    req = RolloutRequest(["a", "b"], [[5], [6]], n=3, max_new_tokens=4, temperature=0.9, top_p=0.95)
    sampler = FakeSampler()
    rows = hapo_rollout(req, sampler, HapoParams(), make_controller("hapo").state())
    assert [r.prompt_index for r in rows] == [0, 0, 0, 1, 1, 1]
    assert sampler.calls[-1] == dict(n=6, temperature=0.9, top_p=0.95, processors=[])
    c = make_controller("hapo")
    c.update(_step())
    hapo_rollout(req, sampler, HapoParams(), c.state())
    call = sampler.calls[-1]
    assert call["temperature"] == 1.0 and call["top_p"] == 1.0 and len(call["processors"]) == 1  # T, top-p inside
    hapo_rollout(req, sampler, HapoParams(temperature_tau=0.0), c.state())
    assert sampler.calls[-1]["processors"] == [] and sampler.calls[-1]["temperature"] == 0.9


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="temperature_tau"):
        HapoParams(temperature_tau=1.5)
    with pytest.raises(ValueError, match="entropy_pivot"):
        HapoParams(entropy_pivot=1.2)
    assert math.isclose(HapoParams().clip_ratio_c, 10.0)

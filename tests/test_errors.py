"""Bad input gets a clear error that names the argument; unknown names list the valid ones; inert knobs
warn once."""

import warnings

import pytest
import torch

from stare import InertKnobWarning, PolicyBatch, get_objective, list_objectives, make_params, policy_loss


def ok(**over):
    kw = dict(log_prob=torch.zeros(2, 3), advantages=torch.ones(2), mask=torch.ones(2, 3))
    kw.update(over)
    return PolicyBatch(**kw)


@pytest.mark.parametrize(
    "batch, match",
    [
        (ok(advantages=torch.ones(3)), "advantages has shape"),
        (ok(mask=torch.ones(2, 4)), "mask has shape"),
        (ok(old_log_prob=torch.zeros(3, 3)), "old_log_prob has shape"),
        (ok(entropy=torch.zeros(2)), "entropy has shape"),
        (ok(log_prob=torch.zeros(6)), "log_prob must be a \\[batch, tokens\\]"),
        (ok(mask=torch.tensor([[1, 1, 0.5], [1, 1, 1]])), "mask must be binary"),
        (ok(mask=torch.tensor([[1, 2, 0], [1, 1, 1]])), "mask must be binary"),
        (ok(log_prob=torch.tensor([[0.0, float("nan"), 0], [0, 0, 0]])), "log_prob contains NaN or Inf in 1"),
        (ok(advantages=torch.tensor([1.0, float("inf")])), "advantages contains NaN or Inf"),
        (ok(old_log_prob=torch.full((2, 3), -float("inf"))), "old_log_prob contains NaN or Inf in 6 of 6"),
        (ok(log_prob=torch.zeros(2, 3, dtype=torch.long)), "log_prob must be a floating-point"),
        (ok(row_ids=torch.arange(3)), "row_ids"),
        (ok(on_policy=False), "on_policy=False needs old_log_prob"),
    ],
)
def test_bad_batch(batch, match):
    with pytest.raises((ValueError, TypeError), match=match):
        policy_loss("stare", batch)


def test_value_checks_can_be_skipped_but_shapes_cannot():
    policy_loss("ppo", ok(mask=torch.tensor([[1, 1, 0.5], [1, 1, 1]])), validate=False)
    with pytest.raises(ValueError, match="advantages has shape"):
        policy_loss("ppo", ok(advantages=torch.ones(3)), validate=False)


def test_unknown_objective_lists_valid_names_and_suggests():
    with pytest.raises(ValueError) as e:
        get_objective("starr")
    msg = str(e.value)
    assert "unknown objective 'starr'" in msg and "Did you mean 'stare'" in msg
    for name in list_objectives():
        assert name in msg


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        make_params("steer", {"token_weight_mn": 0.5})
    msg = str(e.value)
    assert "token_weight_mn" in msg and "token_weight_min" in msg and "mapping" in msg


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("ppo", dict(clip_ratio_c=1.0), "clip_ratio_c must be > 1"),
        ("ppo", dict(loss_agg_mode="tokenmean"), "loss_agg_mode"),
        ("ppo", dict(selection_scope="rank"), "selection_scope"),
        ("steer", dict(mapping="cubic"), "mapping"),
        ("forking", dict(denominator="kept_tokens"), "denominator"),
        ("clip_cov", dict(clip_cov_lb=5.0, clip_cov_ub=1.0), "clip_cov_lb < clip_cov_ub"),
        ("kl_cov", dict(kl_cov_ratio=2.0), "kl_cov_ratio"),
        ("entroadv", dict(entropy_adv_kappa=0.5), "entropy_adv_kappa"),
    ],
)
def test_bad_parameter_values(name, params, match):
    with pytest.raises(ValueError, match=match):
        make_params(name, params)


def test_params_type_error():
    with pytest.raises(TypeError, match="params for 'stare'"):
        make_params("stare", [("variant", "C2")])


def test_inert_knob_warning_once_per_knob():
    with pytest.warns(InertKnobWarning) as rec:
        policy_loss("ppo", ok())
    messages = [str(r.message) for r in rec]
    assert any("clip_ratio_low" in m for m in messages) and any("clip_ratio_c" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy_loss("ppo", ok())
        # off-policy: no inert warning at all
        policy_loss("stare", ok(old_log_prob=torch.zeros(2, 3)))

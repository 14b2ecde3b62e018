"""Equal entropy: the tuned wrapper is the method itself at the knob's current value, the knob's controller
moves it the right way within its range, band presets load, the calibrated value is read from a run's tail,
and calibration end to end writes a config with fixed strengths that loads."""

import json
import math
import os

import pytest
import torch

from stare import PolicyBatch, policy_loss
from stare.objectives import StepData, load_controller, make_controller, save_controller
from stare.objectives.registry import unregister_objective
from stare.train.calibrate import calibrated_value
from stare.train.knobs import KNOBS, Knob, register_tuned

from conftest import TINY_TESTBED


@pytest.fixture
def tuned():
    names = []

    knobs = {"clip_cov": KNOBS["clip_cov"], "kl_cov": KNOBS["kl_cov"], "steer": KNOBS["steer"],
             "forking": KNOBS["forking"], "lp_reg": KNOBS["lp_reg"], "siren": KNOBS["siren"],
             "stare": Knob("reweight_w", 1.0, 50.0, +1)}

    def make(objective):
        obj = register_tuned(objective, knobs[objective])
        names.append(obj.name)
        return obj

    yield make
    for name in names:
        unregister_objective(name)


def H(h, step=0):
    return StepData(batch_entropy=h, step=step, seed=1)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(6, 9, generator=g) * 3
    return PolicyBatch(lp.requires_grad_(), torch.randn(6, generator=g), torch.ones(6, 9),
                       old_log_prob=lp.detach() + 0.05 * torch.randn(6, 9, generator=g), on_policy=False,
                       entropy=torch.rand(6, 9, generator=g) + 0.1, old_entropy=torch.rand(6, 9, generator=g) + 0.1)


@pytest.mark.parametrize("objective, knob, value, extra_state", [
    ("clip_cov", "clip_cov_ratio", 0.3, {"seed": 7}),
    ("kl_cov", "kl_cov_ratio", 0.5, {}),
    ("steer", "token_weight_min", 0.1, {}),
    ("forking", "top_entropy_ratio", 0.05, {}),
    ("stare", "reweight_w", 4.0, {"gate_on": True, "reweight_m": 0.9}),
])
def test_the_wrapper_is_the_method_at_the_knobs_value(tuned, objective, knob, value, extra_state):
    obj = tuned(objective)
    b1, b2 = batch(), batch()
    params = {knob: 0.9 if objective == "forking" else (1.0 if objective == "stare" else 0.5), "tune_knob": knob}
    out = policy_loss(obj, b1, params, state={**extra_state, **({knob: value} if knob == "reweight_w" else {}),
                                              "tune_value": value})
    ref = policy_loss(objective, b2, {knob: value}, state={**extra_state, **({knob: value} if knob == "reweight_w" else {})})
    out.loss.backward()
    ref.loss.backward()
    assert out.loss.item() == ref.loss.item()
    torch.testing.assert_close(b1.log_prob.grad, b2.log_prob.grad, rtol=0, atol=0)


@pytest.mark.parametrize("objective, value, inner_state", [("lp_reg", 0.6, {}), ("siren", 2.0, {"anchor": 1.5})])
def test_lp_reg_and_siren_wrapped_are_the_methods_at_the_knobs_value(tuned, objective, value, inner_state):
    """The two new methods with a band preset: their knobs act through aux inputs (Lp-Reg's proxy log-probs,
    SIREN's nucleus entropy) and an inner controller's state (SIREN's anchor), which the wrapper passes on."""
    from stare.objectives.lp_reg import PROXY
    from stare.objectives.siren import NUCLEUS_ENTROPY

    obj = tuned(objective)
    knob, lo = KNOBS[objective].param, KNOBS[objective].lo
    g = torch.Generator().manual_seed(3)
    lp = -torch.rand(6, 9, generator=g) * 3
    adv = torch.tensor([1.0, -1.0, -0.5, 0.5, -2.0, 1.5])
    # Lp-Reg: a proxy above pi, so protected tokens exist
    aux = {PROXY: lp + 0.5} if objective == "lp_reg" else {NUCLEUS_ENTROPY: torch.rand(6, 9, generator=g)}

    def loss_and_grad(name, params, state):
        x = lp.clone().requires_grad_()
        b = PolicyBatch(x, adv, torch.ones(6, 9), old_log_prob=lp - 0.1, on_policy=False,
                        aux={k: v.clone().requires_grad_(k == NUCLEUS_ENTROPY) for k, v in aux.items()})
        out = policy_loss(name, b, params, state=state)
        out.loss.backward()
        return out.loss.item(), x.grad

    wrapped = loss_and_grad(obj.name, {knob: lo}, {**inner_state, "tune_value": value})
    direct = loss_and_grad(objective, {knob: value}, inner_state)
    assert wrapped[0] == direct[0]
    torch.testing.assert_close(wrapped[1], direct[1], rtol=0, atol=0)
    # and the knob matters: at the bottom of its range the loss differs
    assert loss_and_grad(objective, {knob: lo}, inner_state)[0] != direct[0]


def test_controller_engages_at_the_target_moves_the_knob_and_clamps(tuned):
    tuned("clip_cov")
    p = dict(clip_cov_ratio=0.01, tune_knob="clip_cov_ratio", tune_lo=1e-3, tune_hi=0.1, tune_rate=0.5,
             tune_target_ratio=0.5)
    c = make_controller("tune.clip_cov", p)
    c.update(H(1.0, 0))  # target = 0.5; above it: not engaged, knob unchanged
    assert (c.target_entropy, c.engaged, c.value) == (0.5, False, 0.01)
    assert c.state()["seed"] == 1_000_003  # the wrapped controller runs too (Clip-Cov's seed)
    c.update(H(0.25, 1))  # half the target: error +0.5, log v += 0.5 * 0.5
    assert c.engaged and c.value == pytest.approx(0.01 * math.exp(0.25))
    c.update(H(0.75, 2))  # above the target once engaged: error -0.5, back down
    assert c.value == pytest.approx(0.01)
    for step in range(3, 40):
        c.update(H(0.0, step))  # error clipped at +1: up to the upper bound, and no further
    assert c.value == pytest.approx(0.1)
    assert c.state()["tune_value"] == c.value and c.metrics()["tune/value"] == c.value


def test_engages_at_the_engage_step_when_entropy_stays_above_the_target(tuned):
    tuned("clip_cov")
    c = make_controller("tune.clip_cov", dict(clip_cov_ratio=0.01, tune_knob="clip_cov_ratio", tune_lo=1e-3,
                                              tune_hi=0.1, tune_rate=0.5, tune_target=0.5, tune_target_ratio=None,
                                              tune_engage_step=2))
    c.update(H(1.0, 1))
    assert not c.engaged and c.value == 0.01
    c.update(H(1.0, 2))  # still above the target, but from step 2 on the knob is weakened: error clipped at -1
    assert c.engaged and c.value == pytest.approx(0.01 * math.exp(-0.5))


def test_direction_minus_one_and_knobs_carried_in_state(tuned, tmp_path):
    tuned("steer")
    c = make_controller("tune.steer", dict(token_weight_min=0.5, tune_knob="token_weight_min", tune_direction=-1,
                                           tune_lo=0.01, tune_hi=0.8, tune_rate=0.2, tune_target=0.5,
                                           tune_target_ratio=None))
    c.update(H(0.25))  # below the target: a smaller floor raises entropy
    assert c.value == pytest.approx(0.5 * math.exp(-0.1))
    tuned("stare")
    s = make_controller("tune.stare", dict(reweight_w=2.0, tune_knob="reweight_w", tune_lo=1.0, tune_hi=20.0,
                                           target_entropy=0.5, tune_target=0.5, tune_target_ratio=None))
    s.update(H(0.25))
    assert s.state()["reweight_w"] == s.value > 2.0 and s.state()["gate_on"]  # the gate sees H < its target
    fresh = make_controller("tune.stare", dict(reweight_w=2.0, tune_knob="reweight_w", tune_lo=1.0, tune_hi=20.0,
                                               target_entropy=0.5, tune_target=0.5, tune_target_ratio=None))
    load_controller(save_controller(tmp_path / "c.pt", s), fresh)
    assert fresh.state() == s.state() and fresh.metrics() == s.metrics()


def test_bad_tuning_parameters_name_the_field(tuned):
    tuned("clip_cov")
    with pytest.raises(ValueError, match="tune_knob 'nope'"):
        make_controller("tune.clip_cov", dict(tune_knob="nope"))
    with pytest.raises(ValueError, match="tune_lo"):
        make_controller("tune.clip_cov", dict(tune_knob="clip_cov_ratio", tune_lo=0.0))
    with pytest.raises(ValueError, match="clip_cov_ratio"):
        make_controller("tune.clip_cov", dict(tune_knob="clip_cov_ratio", clip_cov_ratio=2.0))  # the method's own check


def test_calibrated_value_reads_the_tail():
    knob = Knob("x", 0.01, 1.0, +1)
    recs = [{"step": i, "tune/value": v, "tune/engaged": float(i > 1), "tune/target_entropy": 0.5, "actor/entropy": h}
            for i, (v, h) in enumerate([(0.01, 1.0), (0.01, 0.6), (0.1, 0.4), (0.2, 0.5), (0.05, 0.5), (0.8, 0.6)])]
    cal = calibrated_value(recs, knob, tail=0.5)
    assert cal["value"] == pytest.approx(0.2)  # geometric mean of 0.2, 0.05, 0.8
    assert cal["reached"] and cal["at_bound_frac"] == 0
    assert cal["tail_entropy_over_target"] == pytest.approx((0.5 + 0.5 + 0.6) / 3 / 0.5)
    at_top = [{**r, "tune/value": 1.0} for r in recs]
    assert not calibrated_value(at_top, knob)["reached"]
    with pytest.raises(ValueError, match="band"):
        calibrated_value([{"step": 1}], knob)


def test_every_knob_names_a_parameter_of_its_method():
    from stare.objectives import get_objective
    from stare.train.config import load_config

    for method, knob in KNOBS.items():
        objective = load_config(None, [f"method={method}"]).algorithm.objective
        assert knob.param in get_objective(objective).params.__dataclass_fields__, method
        if not knob.own_controller:
            assert 0 < knob.lo < knob.hi and knob.direction in (1, -1), method


def test_band_presets_wrap_the_method_and_hold_stares_target():
    from stare.train.config import load_config
    from stare.train.methods import BAND_METHODS

    for m in BAND_METHODS:
        plain, band = load_config(None, [f"method={m}"]), load_config(None, [f"method={m}_band"])
        assert band.algorithm.objective == "tune." + plain.algorithm.objective
        p = band.algorithm.params
        assert p["tune_knob"] == KNOBS[m].param and p["tune_target_ratio"] == 0.5
        assert {k: v for k, v in p.items() if not k.startswith("tune_")} == plain.algorithm.params
        assert band.rollout == plain.rollout and band.algorithm.advantage == plain.algorithm.advantage
    assert load_config(None, ["method=stare_o1"]).algorithm.params["target_entropy_ratio"] == 0.5


@pytest.mark.parametrize("method", ["clip_cov", "lp_reg", "siren"])
def test_calibrate_end_to_end_writes_a_config_that_loads(method, tmp_path, monkeypatch):
    from stare.train.calibrate import calibrate
    from stare.train.config import load_config

    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({
        "task": {"name": "tiny_tasks:make_contains_one"}, "model": {"testbed": TINY_TESTBED},
        "rollout": {"prompts_per_step": 4, "n": 4, "max_new_tokens": 8}, "algorithm": {"micro_batch_size": 8},
        "trainer": {"steps": 4, "eval_every": 0, "eval_prompts": 4, "eval_n": 4, "save_every": 0},
        "logging": {"tensorboard": False}}))
    # a target of 10x the first entropy: engaged from the first step, so the knob rises every step
    result = calibrate(str(cfg), [method], tmp_path / "cmp", [f"method_overrides.{method}_band.algorithm.params."
                                                              "tune_target_ratio=10.0"], workers=1)
    cal = result["methods"][method]
    run = cal["per_seed"][0]
    assert run["engaged"] and run["tail_steps"] == 2 and cal["value"] == run["value"] > KNOBS[method].lo
    assert (tmp_path / "cmp" / f"{method}_band" / "seed_0" / "DONE").exists()  # the layout of stare compare
    calibrated = tmp_path / "cmp" / "calibrated.yaml"
    loaded = load_config(calibrated, [f"method={method}"])
    assert loaded.algorithm.objective == method  # the published method at a fixed strength
    if cal["reached"]:
        assert loaded.algorithm.params[KNOBS[method].param] == pytest.approx(cal["value"], rel=1e-3)


def test_calibrate_refuses_a_method_with_its_own_controller(tmp_path):
    from stare.train.calibrate import calibrate

    with pytest.raises(ValueError, match="own controller"):
        calibrate(None, ["stare_o1"], tmp_path / "x")

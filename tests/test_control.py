"""Controllers, each owned by its method: STARE's gate (strict <, same step, NaN leaves the state
unchanged, target from a ratio of the first batch entropy), the adaptive W/M schedule inside its bounds,
the entropy bonus's static and adaptive coefficient, Clip-Cov's per-step seed, and checkpoint round trips
through ``save_controller`` / ``load_controller``."""

import math

import pytest
import torch

from stare import PolicyBatch, StareController, StareParams, StepData, make_controller, policy_loss
from stare.objectives import EntropyBonusController, EntropyBonusParams, get_objective, load_controller, save_controller


def H(h, step=0, seed=0):
    return StepData(batch_entropy=h, step=step, seed=seed)


def test_gate_is_strict_and_starts_open():
    c = StareController(StareParams(target_entropy=0.3))
    assert c.gate_on  # before the first update (official default)
    c.update(H(0.3))
    assert c.gate_on is False  # equal to the target: off (strict <)
    c.update(H(0.2999))
    assert c.gate_on is True
    c.update(H(torch.tensor(0.5)))  # a tensor entropy is accepted
    assert c.gate_on is False


def test_default_target_and_one_source_for_w():
    c = StareController()
    assert c.target_entropy == 0.3  # hp-luo/STARE's trainer default
    p = StareParams(reweight_w=2.5, reweight_m=0.7)
    assert make_controller("stare", p).state() == {"gate_on": True, "reweight_w": 2.5, "reweight_m": 0.7}
    # the loss without a state reads the same initial state, so W comes from the parameters only
    b = PolicyBatch(torch.tensor([[-1.0, -5.0]]), torch.tensor([1.0]), torch.ones(1, 2))
    assert policy_loss("stare", b, dict(top_p_ratio=0.5, reweight_w=2.5)).weights.tolist() == [[1, 2.5]]


def test_target_ratio_is_fixed_by_the_first_batch():
    c = StareController(StareParams(target_entropy_ratio=0.5))
    assert math.isnan(c.target_entropy)
    c.update(H(0.8))  # target = 0.4, 0.8 >= 0.4: gate off
    assert c.target_entropy == pytest.approx(0.4) and not c.gate_on
    c.update(H(0.3))
    assert c.target_entropy == pytest.approx(0.4) and c.gate_on  # unchanged by later batches
    with pytest.raises(ValueError, match="not both"):
        StareParams(target_entropy=0.3, target_entropy_ratio=0.5)


def test_nan_leaves_state_unchanged():
    c = StareController(StareParams(adaptive=True))
    c.update(H(0.1))
    before = c.state_dict()
    with pytest.warns(RuntimeWarning, match="unchanged"):
        c.update(H(float("nan")))
    with pytest.warns(RuntimeWarning):
        c.update(H(torch.tensor(float("inf"))))
    after = c.state_dict()
    assert after.pop("skipped_updates") == 2
    before.pop("skipped_updates")
    assert after == before


def test_adaptive_schedule_moves_and_stays_in_bounds():
    p = StareParams(target_entropy=0.3, reweight_w=1.1, reweight_m=0.9, adaptive=True, alpha=0.1, w_max=1.5, m_min=0.5)
    c = StareController(p)
    c.update(H(0.1))  # below target: d = +1 -> W 1.2, M 0.8
    assert (c.reweight_w, c.reweight_m) == pytest.approx((1.2, 0.8))
    for _ in range(20):
        c.update(H(0.1))
    assert (c.reweight_w, c.reweight_m) == pytest.approx((1.5, 0.5))  # clipped at W_max, M_min
    for _ in range(40):
        c.update(H(0.9))  # above: d = -1
    assert (c.reweight_w, c.reweight_m) == pytest.approx((1.0, 1.0))  # clipped at 1
    c.update(H(0.3))  # equal: d = 0, nothing moves
    assert (c.reweight_w, c.reweight_m) == pytest.approx((1.0, 1.0))


def test_non_adaptive_keeps_weights():
    c = StareController(StareParams(adaptive=False))
    c.update(H(0.0))
    assert (c.reweight_w, c.reweight_m) == (1.1, 0.9)


def test_state_dict_round_trip_and_errors(tmp_path):
    p = StareParams(adaptive=True, target_entropy_ratio=0.5)
    c = StareController(p)
    for h in (0.5, 0.2, 0.1):
        c.update(H(h))
    d = StareController(p)
    load_controller(save_controller(tmp_path / "c.pt", c), d)
    assert d == c and d.state() == c.state() and d.target_entropy == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown keys"):
        d.load_state_dict({**c.state_dict(), "extra": 1})
    with pytest.raises(ValueError):
        StareParams(w_max=0.9)


def test_controller_state_drives_the_objective_same_step():
    c = StareController(StareParams(target_entropy=0.5, reweight_w=3.0))
    b = PolicyBatch(torch.tensor([[-1.0, -5.0]]), torch.tensor([1.0]), torch.ones(1, 2))
    c.update(H(0.9))  # above target: gate closed -> GRPO-ds weights
    assert policy_loss("stare", b, dict(top_p_ratio=0.5), state=c.state()).weights.tolist() == [[1, 1]]
    c.update(H(0.4))  # below: this very step is reweighted
    assert policy_loss("stare", b, dict(top_p_ratio=0.5), state=c.state()).weights.tolist() == [[1, 3]]
    assert c.metrics() == {"stare/gate_on": 1.0, "stare/target_entropy": 0.5, "stare/reweight_w": 3.0,
                           "stare/reweight_m": 0.9, "stare/batch_entropy": 0.4}


def test_adaptive_entropy_coefficient():
    p = EntropyBonusParams(adaptive=True, target_entropy=0.5, entropy_coeff=0.01, coef_delta=0.005, coef_min=0.0,
                           coef_max=0.02)
    c = EntropyBonusController(p)
    assert c.state() == {"entropy_coeff": 0.0}  # adaptive: not applied before the first update
    c.update(H(0.4))
    assert c.state()["entropy_coeff"] == pytest.approx(0.015)  # at/below target: +delta and applied
    c.update(H(0.5))
    assert c.state()["entropy_coeff"] == pytest.approx(0.02)  # <= target (TRL uses <=)
    c.update(H(0.5))
    assert c.state()["entropy_coeff"] == pytest.approx(0.02)  # capped
    c.update(H(0.9))
    assert c.state()["entropy_coeff"] == 0.0 and c.coef == pytest.approx(0.015)  # above: off, decremented
    with pytest.warns(RuntimeWarning):
        c.update(H(math.nan))
    assert c.coef == pytest.approx(0.015)
    d = EntropyBonusController(p)
    d.load_state_dict(c.state_dict())
    assert d.state() == c.state() == {"entropy_coeff": 0.0}
    assert c.metrics() == {"actor/entropy_coeff": 0.0, "actor/entropy_target": 0.5}


def test_static_entropy_coefficient_is_the_parameter():
    c = make_controller("entropy_bonus", {"entropy_coeff": 0.003})
    c.update(H(5.0))
    assert c.state() == {"entropy_coeff": 0.003} and c.metrics() == {"actor/entropy_coeff": 0.003}


def test_clip_cov_draws_a_new_seed_each_step():
    c = make_controller("clip_cov")
    seeds = []
    for step in range(3):
        c.update(H(0.5, step=step, seed=2))
        seeds.append(c.state()["seed"])
    assert seeds == [2 * 1_000_003, 2 * 1_000_003 + 1, 2 * 1_000_003 + 2]


def _full_step(name):
    """A step as the trainer hands it to a controller: every field, and the method's old-pass statistics."""
    from stare.objectives import make_params

    g = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 6, dtype=torch.bool)
    obj = get_objective(name)
    stats = obj.logit_stats(make_params(name)) if obj.logit_stats else {}
    return StepData(batch_entropy=0.25, step=1, seed=1, rewards=torch.tensor([1.0, 0, 1, 0]), acc=torch.tensor([1.0, 0, 1, 0]),
                    group_ids=torch.tensor([0, 0, 1, 1]), mask=mask, old_log_prob=-torch.rand(4, 6, generator=g),
                    old_entropy=torch.rand(4, 6, generator=g), advantages=torch.tensor([1.0, -1, 1, -1]),
                    aux={k: torch.rand(4, 6, generator=g) for k in stats})


def test_every_registered_controller_satisfies_the_contract(tmp_path):
    from stare.objectives import Controller, list_objectives

    for name in list_objectives():
        c = make_controller(name)
        if c is None:
            assert get_objective(name).controller is None
            continue
        assert isinstance(c, Controller)
        c.update(_full_step(name))
        fresh = make_controller(name)
        load_controller(save_controller(tmp_path / f"{name}.pt", c), fresh)
        assert fresh.state() == c.state() and fresh.metrics() == c.metrics()

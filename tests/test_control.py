"""Controllers: STARE's gate (strict <, same step, NaN leaves the state unchanged), the adaptive W/M
schedule inside its bounds, the adaptive entropy coefficient, and checkpoint round trips."""

import math

import pytest
import torch

from stare import AdaptiveEntropyCoef, PolicyBatch, StareController, policy_loss


def test_gate_is_strict_and_starts_open():
    c = StareController(target_entropy=0.3)
    assert c.gate_on  # before the first update (official default)
    assert c.update(0.3) is False  # equal to the target: off (strict <)
    assert c.update(0.2999) is True
    assert c.update(torch.tensor(0.5)) is False  # tensors accepted


def test_nan_leaves_state_unchanged():
    c = StareController(adaptive=True)
    c.update(0.1)
    before = c.state_dict()
    with pytest.warns(RuntimeWarning, match="unchanged"):
        c.update(float("nan"))
    with pytest.warns(RuntimeWarning):
        c.update(torch.tensor(float("inf")))
    after = c.state_dict()
    assert after.pop("skipped_updates") == 2
    before.pop("skipped_updates")
    assert after == before


def test_adaptive_schedule_moves_and_stays_in_bounds():
    c = StareController(target_entropy=0.3, reweight_w=1.1, reweight_m=0.9, adaptive=True, alpha=0.1, w_max=1.5, m_min=0.5)
    c.update(0.1)  # below target: d = +1 -> W 1.2, M 0.8
    assert (c.reweight_w, c.reweight_m) == pytest.approx((1.2, 0.8))
    for _ in range(20):
        c.update(0.1)
    assert (c.reweight_w, c.reweight_m) == pytest.approx((1.5, 0.5))  # clipped at W_max, M_min
    for _ in range(40):
        c.update(0.9)  # above: d = -1
    assert (c.reweight_w, c.reweight_m) == pytest.approx((1.0, 1.0))  # clipped at 1
    c.update(0.3)  # equal: d = 0, nothing moves
    assert (c.reweight_w, c.reweight_m) == pytest.approx((1.0, 1.0))


def test_non_adaptive_keeps_weights():
    c = StareController(adaptive=False)
    c.update(0.0)
    assert (c.reweight_w, c.reweight_m) == (1.1, 0.9)


def test_state_dict_round_trip_and_errors():
    c = StareController(adaptive=True)
    for h in (0.5, 0.2, 0.1):
        c.update(h)
    d = StareController()
    d.load_state_dict(c.state_dict())
    assert d == c and d.state() == c.state()
    with pytest.raises(ValueError, match="unknown keys"):
        d.load_state_dict({**c.state_dict(), "extra": 1})
    with pytest.raises(ValueError):
        StareController(w_max=0.9)


def test_controller_state_drives_the_objective_same_step():
    c = StareController(target_entropy=0.5, reweight_w=3.0)
    b = PolicyBatch(torch.tensor([[-1.0, -5.0]]), torch.tensor([1.0]), torch.ones(1, 2))
    c.update(0.9)  # above target: gate closed -> GRPO-ds weights
    assert policy_loss("stare", b, dict(top_p_ratio=0.5), state=c.state()).weights.tolist() == [[1, 1]]
    c.update(0.4)  # below: this very step is reweighted
    assert policy_loss("stare", b, dict(top_p_ratio=0.5), state=c.state()).weights.tolist() == [[1, 3]]


def test_adaptive_entropy_coefficient():
    c = AdaptiveEntropyCoef(target_entropy=0.5, coef=0.01, delta=0.005, coef_min=0.0, coef_max=0.02)
    assert c.update(0.4) == pytest.approx(0.015)  # at/below target: +delta and applied
    assert c.update(0.5) == pytest.approx(0.02)  # <= target (TRL uses <=)
    assert c.update(0.5) == pytest.approx(0.02)  # capped
    assert c.update(0.9) == 0.0  # above: not applied, and decremented
    assert c.coef == pytest.approx(0.015)
    with pytest.warns(RuntimeWarning):
        c.update(math.nan)
    assert c.coef == pytest.approx(0.015)
    d = AdaptiveEntropyCoef()
    d.load_state_dict(c.state_dict())
    assert d.state() == c.state() == {"entropy_coeff": 0.0}

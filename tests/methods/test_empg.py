"""EMPG on hand tensors: single-turn steps (one per response), multi-turn steps from segment ids with the
clarity bonus from the next step, tool tokens in no step, empty batches, the GRPO identity with the
modulation off, and the inert clarity bonus on single-turn data. Expected values derived in comments
from the formulas of stare/objectives/empg.py (k = k_f = 1, zeta = 0.1)."""

import math

import pytest
import torch

from stare import InertKnobWarning, StepData
from stare.advantages import grpo_advantages
from stare.objectives.empg import EmpgParams, empg_advantages, empg_step_advantages


def single_turn():
    # three responses, one step each; mean old entropies over their loss tokens:
    # row 0: [1, 3] (third token padding) -> 2.0;  row 1: [0.5] * 3 -> 0.5;  row 2: [1.25] * 3 -> 1.25
    ent = torch.tensor([[1.0, 3.0, 9.0], [0.5, 0.5, 0.5], [1.25, 1.25, 1.25]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    return torch.tensor([1.0, -0.5, -0.5]), ent, mask


def test_single_turn_by_hand():
    # Hn = (H - 0.5) / (1.5 + 1e-8) = [1, 0, 0.5]
    # g_raw = exp(-Hn) = [0.367879, 1, 0.606531], mean 0.658137 -> g = [0.558971, 1.519441, 0.921588]
    # A_step = g * A = [0.558971, -0.759721, -0.460794]; their mean -0.220515 is subtracted:
    # A' = [0.779486, -0.539206, -0.240279], on every loss token (padding 0); no bonus (one step each)
    adv, ent, mask = single_turn()
    out, diag = empg_advantages(adv, ent, mask)
    expected = torch.tensor([0.7794856, -0.5392062, -0.2402794]).unsqueeze(1) * mask
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert diag["empg/steps"] == 3 and diag["empg/steps_per_trajectory_max"] == 1 and diag["empg/bonus_mean"] == 0.0
    assert diag["empg/scale_max"] == pytest.approx(1.5194411)


def test_multi_turn_steps_and_clarity_bonus_by_hand():
    # row 0: segments [0, 0, 1, 1, 1], token 2 is tool output (mask 0, entropy 9 ignored):
    #   step (0, 0): H = mean(1, 1) = 1; step (0, 1): H = mean(3, 3) = 3
    # row 1: one step, H = mean(2, 2, 2) = 2
    # Hn = [0, 1, 0.5]; g = exp(-Hn) / mean = [1.519441, 0.558971, 0.921588]; f = exp(-Hn) = [1, 0.367879, 0.606531]
    # A_step = [g0 * 1 + 0.1 * f(step (0, 1)), g1 * 1, g2 * -1] = [1.556229, 0.558971, -0.921588]
    # mean 0.397871 -> A' = [1.158358, 0.161100, -1.319459]
    ent = torch.tensor([[1.0, 1.0, 9.0, 3.0, 3.0], [2.0, 2.0, 2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    seg = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    out, diag = empg_advantages(torch.tensor([1.0, -1.0]), ent, mask, seg)
    a, b, c = 1.1583582, 0.1611003, -1.3194585
    torch.testing.assert_close(out, torch.tensor([[a, a, 0.0, b, b], [c, c, c, 0.0, 0.0]]), rtol=1e-6, atol=1e-6)
    assert diag["empg/steps_per_trajectory_max"] == 2 and diag["empg/bonus_mean"] == pytest.approx(0.1 * math.exp(-1))


def test_a_segment_without_loss_tokens_is_not_a_step():
    # row 0: segment 1 is only tool output (masked); its step 2 follows. So step (0, 0) takes the bonus from step
    # (0, 2). Entropies 1 and 3 as above, one row only: Hn = [0, 1], g_raw = [1, e^-1], g = 2 g_raw / (1 + e^-1)
    ent = torch.tensor([[1.0, 5.0, 3.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    seg = torch.tensor([[0.0, 1.0, 2.0]])
    out, diag = empg_advantages(torch.tensor([1.0]), ent, mask, seg, center=False)
    g0, g1 = 2 / (1 + math.exp(-1)), 2 * math.exp(-1) / (1 + math.exp(-1))
    torch.testing.assert_close(out, torch.tensor([[g0 + 0.1 * math.exp(-1), 0.0, g1]]), rtol=1e-6, atol=1e-6)
    assert diag["empg/steps"] == 2


def test_equal_step_entropies_and_empty_batches():
    # equal entropies: Hn = 0 everywhere, g = 1 / (1 + 1e-8), f = 1; all-zero advantages stay (numerically) zero
    out, _ = empg_advantages(torch.zeros(2), torch.ones(2, 3), torch.ones(2, 3), center=False)
    assert float(out.abs().max()) == 0.0
    out, diag = empg_advantages(torch.tensor([1.0, -1.0]), torch.ones(2, 3), torch.zeros(2, 3))
    assert float(out.abs().max()) == 0.0 and diag == {"empg/steps": 0.0}


def test_modulation_off_is_grpo():
    # k = 0 and zeta = 0: g = 1 / (1 + 1e-8) on every step, no bonus, no centring -> the GRPO advantages on every token
    g = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (12,), generator=g).float()
    groups = torch.arange(12) // 4
    adv = grpo_advantages(rewards, groups)
    mask = (torch.rand(12, 7, generator=g) > 0.2).float()
    mask[:, 0] = 1
    ent = torch.rand(12, 7, generator=g)
    out, _ = empg_advantages(adv, ent, mask, confidence_k=0.0, clarity_bonus=0.0, center=False)
    torch.testing.assert_close(out, adv.unsqueeze(1) * mask, rtol=1e-7, atol=1e-7)
    # single turn, equal group sizes: GRPO advantages sum to 0, so centring changes nothing either
    out, _ = empg_advantages(adv, ent, mask, confidence_k=0.0, clarity_bonus=0.0, center=True)
    torch.testing.assert_close(out, adv.unsqueeze(1) * mask, rtol=1e-6, atol=1e-6)


def test_hook_warns_that_the_bonus_is_inert_on_single_turn_data():
    adv, ent, mask = single_turn()
    data = StepData(batch_entropy=1.0, advantages=adv, old_entropy=ent, mask=mask)
    with pytest.warns(InertKnobWarning, match="clarity_bonus"):
        out, metrics = empg_step_advantages(data, EmpgParams(), {})
    torch.testing.assert_close(out, empg_advantages(adv, ent, mask)[0])
    assert metrics["empg/steps"] == 3  # the hook's diagnostics, which the trainer logs with the step
    with pytest.raises(ValueError, match="old_entropy"):  # an engine that fills only the batch entropy
        empg_step_advantages(StepData(batch_entropy=1.0), EmpgParams(), {})


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="confidence_k"):
        EmpgParams(confidence_k=-1.0)

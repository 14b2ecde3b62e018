"""AEPO (agentic) on hand-made tensors and a scripted sampler: the gradient-preserving clip (value of PPO,
gradient kept on clipped tokens; beta = 0 is PPO bit for bit), the entropy factor (z-score, floor, std 0),
the identity a = 0, beta = 0 == PPO, the entropy probe, and the rollout's pre-monitoring and branching
decisions derived by hand."""

import math

import pytest
import torch

from stare import PolicyBatch, policy_loss
from stare.objectives import RolloutRequest, RolloutRow
from stare.objectives.aepo_agentic import AepoParams, EntropyProbe, aepo_fit, aepo_rollout, entropy_factor
from stare.surrogate import clipped_surrogate, gradient_preserving_surrogate

CLIP = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 10.0}


def test_gradient_preserving_clip_by_hand():
    # ratios 1.5 (A > 0: clipped above), 0.5 (A < 0: clipped below), 1.0 (A > 0: inside), 20 (A < 0: dual clip)
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.0, 20.0]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    s = gradient_preserving_surrogate(lp, torch.zeros(1, 4), adv, 0.2, 0.28, 10.0, grad_coef_low=0.5, grad_coef_high=1.0)
    assert s.loss[0].tolist() == pytest.approx([-1.28, 0.8, -1.0, 10.0])  # PPO's values
    s.loss.sum().backward()
    # clipped above: -A (1 + eps_h) beta_h = -1.28; below: -A (1 - eps_l) beta_l = 0.4; inside: -A r = -1;
    # dual-clipped: constant
    assert lp.grad[0].tolist() == pytest.approx([-1.28, 0.4, -1.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_beta_zero_is_the_clipped_surrogate_bit_for_bit(seed):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(5, 8, generator=g) * 3
    lp0 = old + 0.5 * torch.randn(5, 8, generator=g)
    adv = torch.randn(5, 8, generator=g)
    out = []
    for fn in (lambda x: gradient_preserving_surrogate(x, old, adv, 0.2, 0.28, 3.0, 0.0, 0.0),
               lambda x: clipped_surrogate(x, old, adv, 0.2, 0.28, 3.0)):
        x = lp0.clone().requires_grad_()
        s = fn(x)
        s.loss.sum().backward()
        out.append((s.loss, x.grad, s.clipped, s.dual_clipped))
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_entropy_factor_by_hand():
    view_h = torch.tensor([[0.0, 1.0, 2.0, 9.0]])
    valid = torch.tensor([[True, True, True, False]])

    plan = aepo_fit(type("V", (), {"entropy": view_h, "valid": valid})(), AepoParams(), {}, None)
    assert plan["mean"].item() == pytest.approx(1.0) and plan["std"].item() == pytest.approx(1.0)  # unbiased
    assert entropy_factor(view_h, plan, 0.2)[0, :3].tolist() == pytest.approx([0.8, 1.0, 1.2])
    assert entropy_factor(view_h, plan, 2.0)[0, :3].tolist() == pytest.approx([0.0, 1.0, 3.0])  # floored at 0
    flat = aepo_fit(type("V", (), {"entropy": torch.ones(1, 3), "valid": torch.ones(1, 3, dtype=torch.bool)})(),
                    AepoParams(), {}, None)
    assert flat["std"].item() == 1.0 and entropy_factor(torch.ones(1, 3), flat, 0.2).tolist() == [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("name", ["aepo_agentic_loss", "aepo_agentic"])
def test_without_entropy_factor_and_kept_gradient_it_is_ppo(name):
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(4, 6, generator=g) * 3
    lp0 = old + 0.4 * torch.randn(4, 6, generator=g)
    adv, ent = torch.randn(4, generator=g), torch.rand(4, 6, generator=g)
    res = []
    for obj, params in ((name, {"entropy_adv_coef": 0.0, "grad_coef_high": 0.0, **CLIP}), ("ppo", CLIP)):
        x = lp0.clone().requires_grad_()
        out = policy_loss(obj, PolicyBatch(x, adv, torch.ones(4, 6), old_log_prob=old, entropy=ent), params)
        out.loss.backward()
        res.append((out.loss, x.grad))
    assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1])


def test_loss_on_policy_scales_advantages_by_the_entropy_factor():
    lp = torch.full((1, 3), -1.0, requires_grad=True)
    out = policy_loss("aepo_agentic_loss", PolicyBatch(lp, torch.tensor([1.0]), torch.ones(1, 3),
                                                       entropy=torch.tensor([[0.0, 1.0, 2.0]])))
    out.loss.backward()
    assert lp.grad[0].tolist() == pytest.approx([-0.8 / 3, -1.0 / 3, -1.2 / 3])  # -A (1 + 0.2 z) / N


# ------------------------------------------------------------------------------------------ the rollout

def _scores(support: int, vocab: int = 16) -> torch.Tensor:
    """Logits uniform over ``support`` tokens: entropy ln(support)."""
    z = torch.full((1, vocab), -math.inf)
    z[0, :support] = 0.0
    return z


def test_entropy_probe_keeps_the_first_window_tokens_by_context():
    probe = EntropyProbe(window=2, pad_id=0)
    # a batch of two contexts (the first left-padded), three generation steps
    ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
    for step, support in enumerate((2, 4, 8)):
        probe(ids, torch.cat([_scores(support), _scores(2 * support)]))
        ids = torch.cat([ids, torch.tensor([[1], [1]])], 1)
    assert probe.take([5, 6], generated=3) == pytest.approx((math.log(2) + math.log(4)) / 2)  # window of 2
    assert probe.take([7, 8, 9], generated=1) == pytest.approx(math.log(4))
    assert math.isnan(probe.take([5, 6], generated=1))  # served once


class ScriptedSampler:
    """Every episode: turn 0 = two tokens at entropy ln 2, a tool output (token 3, masked), turn 1 = one
    token at entropy ln 8. It calls the logits processors as a generator would, token by token."""

    class Tok:
        pad_token_id = 0

        def decode(self, ids, skip_special_tokens=True):
            return "".join(str(i) for i in ids)

    tokenizer = Tok()

    def __init__(self):
        self.calls = []

    def episodes(self, examples, contexts, *, max_new_tokens, temperature, top_p, logits_processors=()):
        self.calls.append([list(c) for c in contexts])
        rows = []
        for i, ctx in enumerate(contexts):
            seq = list(ctx)
            for tok, support in ((1, 2), (2, 2)):
                for fn in logits_processors:
                    fn(torch.tensor([seq]), _scores(support))
                seq.append(tok)
            seq.append(3)  # tool output
            for fn in logits_processors:
                fn(torch.tensor([seq]), _scores(8))
            rows.append(RolloutRow(i, [1, 2, 3, 4], "12|4", loss_mask=[1, 1, 0, 1], log_probs=[-0.1] * 4,
                                   token_values={"segment_ids": [0.0, 0.0, 1.0, 1.0]}, tool_calls=1))
        return rows


def test_rollout_pre_monitoring_and_branching_by_hand():
    sampler = ScriptedSampler()
    request = RolloutRequest(examples=["q"], prompt_ids=[[9, 9]], n=8, max_new_tokens=8, temperature=1.0, top_p=1.0)
    rows = aepo_rollout(request, sampler, AepoParams())
    # pre-monitoring: H_root = ln 2, H_tool = ln 8: m = round(8 sigmoid(ln 2 - ln 8)) = round(8 / 5) = 2 roots
    # (the 2 probes), budget 6. Each root's tool turn: dH = ln 4, P = 0.5 + 0.2 ln 4 = 0.777 > 0.5: 1 branch each.
    # Branches (l = 1): P = 0.777 (1 - 0.2) = 0.622 > 0.5: 1 branch each. Their branches (l = 2): 0.466: none.
    # Budget left 2: two fresh roots. Rows: 2 roots + 2 + 2 branches + 2 roots = 8.
    assert len(rows) == 8 and all(r.prompt_index == 0 for r in rows)
    branch = [r for r in rows if r.row_values["aepo_branch"] == 1.0]
    assert len(branch) == 4
    assert [len(c) for c in sampler.calls] == [2, 2, 2, 2]  # probes (no extra root), depth 1, depth 2, fill
    depth1 = [9, 9, 1, 2, 3]  # prompt + a root's first turn and its tool output
    assert sampler.calls[1] == [depth1, depth1]
    assert sampler.calls[2] == [depth1 + [1, 2, 3]] * 2
    assert sorted(len(r.context_ids) for r in branch) == [5, 5, 8, 8]
    deep = [r for r in branch if len(r.context_ids) == 8][0]
    assert deep.text == "123123" + "12|4"  # the prefix it continues, then its own text
    assert deep.token_values["segment_ids"] == [2.0, 2.0, 3.0, 3.0]  # turns of the full trajectory
    assert all(r.context_ids is None for r in rows if r.row_values["aepo_branch"] == 0.0)


def test_rollout_without_tool_calls_is_plain_sampling():
    class NoTools(ScriptedSampler):
        def episodes(self, examples, contexts, **kw):
            self.calls.append(list(contexts))
            return [RolloutRow(i, [1, 2], "12") for i in range(len(contexts))]

    sampler = NoTools()
    request = RolloutRequest(examples=["a", "b"], prompt_ids=[[9], [8]], n=4, max_new_tokens=8, temperature=1.0, top_p=1.0)
    with pytest.warns(UserWarning, match="no tool call"):
        rows = aepo_rollout(request, sampler, AepoParams())
    assert len(rows) == 8 and [r.prompt_index for r in rows].count(0) == 4
    assert all(r.row_values["aepo_branch"] == 0.0 for r in rows)


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="branch_width"):
        AepoParams(branch_width=0)
    with pytest.raises(ValueError, match="entropy_adv_coef"):
        policy_loss("aepo_agentic_loss", PolicyBatch(torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), entropy=torch.ones(1, 1)),
                    {"entropy_adv_coef": -1.0})


def test_turns_come_from_segment_ids_even_when_a_tool_returns_nothing():
    from stare.objectives.aepo_agentic import _turn_starts

    empty_output = RolloutRow(0, [1, 2, 5, 6, 7, 8], "", loss_mask=[1] * 6,
                              token_values={"segment_ids": [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]})
    assert _turn_starts(empty_output) == [0, 2, 4]
    masked_output = RolloutRow(0, [1, 2, 3, 4], "", loss_mask=[1, 1, 0, 1])  # no segment ids: the mask decides
    assert _turn_starts(masked_output) == [0, 3]
    with_ids = RolloutRow(0, [1, 2, 3, 4], "", loss_mask=[1, 1, 0, 1], token_values={"segment_ids": [0.0, 0.0, 1.0, 1.0]})
    assert _turn_starts(with_ids) == [0, 3]  # the tool output opens segment 1; its first model token starts the turn

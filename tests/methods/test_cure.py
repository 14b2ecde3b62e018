"""CURE on hand inputs: the critical position (entropy order, filters, top-k, ties, no candidate), the
sampler-side entropy recorder (values, top-p, batches mapped back to contexts), the rollout hook with a
scripted sampler (rows, groups, contexts, scored texts, the n1 (1 + n2) = n check, stage 2, tools
refused) and the stage controller."""

import math

import pytest
import torch

from stare import StepData, make_controller
from stare.objectives import Generation, RolloutRequest, RolloutRow
from stare.objectives.cure import CureParams, EntropyRecorder, critical_position, cure_rollout

TEXT = {10: "ab", 11: " a ", 12: "xy", 13: "<s>", 14: "zz"}


def decode(ids):
    return "".join(TEXT[i] for i in ids)


def test_critical_position_walks_the_entropy_order_through_the_filters():
    ent = [5.0, 4.0, 3.0, 2.0, 1.0]
    ids = [10, 11, 12, 13, 14]
    # order by entropy: 0 (position 0: skipped), 1 (" a " strips to one character: skipped), 2 (kept),
    # 3 (special: skipped), 4 (kept)
    assert critical_position(ent, ids, special_ids={13}, decode=decode, top_k=1) == (2, True)
    g = torch.Generator().manual_seed(0)
    picks = {critical_position(ent, ids, special_ids={13}, decode=decode, top_k=20, generator=g)[0] for _ in range(50)}
    assert picks == {2, 4}  # uniform over the surviving candidates
    # with min_chars 1, position 1 passes and is the highest-entropy candidate
    assert critical_position(ent, ids, special_ids={13}, decode=decode, top_k=1, min_chars=1) == (1, True)


def test_critical_position_ties_go_to_the_earlier_position_and_no_candidate_gives_zero():
    ids = [10, 12, 14, 12]
    assert critical_position([1.0, 2.0, 2.0, 2.0], ids, special_ids=set(), decode=decode, top_k=1) == (1, True)
    # every token filtered: (0, False), i.e. the branch restarts from the prompt
    assert critical_position([1.0, 2.0], [10, 11], special_ids=set(), decode=decode, min_chars=3) == (0, False)
    assert critical_position([], [], special_ids=set(), decode=decode) == (0, False)


def test_random_mode_draws_from_a_random_order():
    g = torch.Generator().manual_seed(1)
    ids = [10, 12, 14, 12, 10]
    picks = {critical_position([0.0] * 5, ids, special_ids=set(), decode=decode, top_k=1, mode="random",
                               generator=g)[0] for _ in range(60)}
    assert picks == {1, 2, 3, 4}  # any position but 0


def test_recorder_entropy_top_p_and_batches():
    # T = 2: logits [2, 0, 0, 0] -> z / T = [1, 0, 0, 0], p = [e, 1, 1, 1] / (e + 3)
    # H = -sum p log p = log(e + 3) - e / (e + 3)
    rec = EntropyRecorder(temperature=2.0, top_p=1.0)
    contexts = [[7, 8], [9], [4, 4, 4]]
    pad = 0
    # batch 1 (contexts 0, 1; width 2): two steps; batch 2 (context 2; width 3): one step
    ids = torch.tensor([[7, 8], [pad, 9]])
    z = torch.tensor([[2.0, 0, 0, 0], [0.0, 0, 0, 0]])
    out = rec(ids, z)
    torch.testing.assert_close(out, z / 2)
    rec(torch.cat([ids, torch.tensor([[1], [2]])], 1), z)
    rec(torch.tensor([[4, 4, 4]]), z[:1])
    h = math.log(math.e + 3) - math.e / (math.e + 3)
    got = rec.entropies(contexts, [2, 1, 1])
    assert got[0] == pytest.approx([h, h]) and got[1] == pytest.approx([math.log(4)]) and got[2] == pytest.approx([h])
    with pytest.raises(RuntimeError, match="order"):
        rec.entropies([[9], [7, 8], [4, 4, 4]], [1, 1, 1])
    # top-p 0.5 on p = [e, 1, 1, 1] / (e + 3) = [0.475, 0.175 x 3]: the first token's predecessors hold 0 < 0.5,
    # the second's 0.475 < 0.5 (kept), the others' >= 0.5 (dropped)
    out = EntropyRecorder(2.0, 0.5)(torch.tensor([[1]]), z[:1])
    assert torch.isinf(out).tolist() == [[False, False, True, True]]


class Tok:
    all_special_ids = [0]

    def decode(self, ids, skip_special_tokens=False):
        return "".join("#" if i == 0 else chr(ord("a") + i) for i in ids if not (skip_special_tokens and i == 0))


class ScriptedSampler:
    """Generates in batches of two (left-padded), calling the processors at each step. Every response is
    [1, 2, 3, 4]; at step j the logits are [4 - j, 0, ...] (entropy rises with j), so the last position has the
    highest entropy."""

    tokenizer = Tok()
    tool_env = None

    def __init__(self):
        self.generate_calls, self.episode_calls = [], []

    def generate(self, contexts, max_new_tokens, *, temperature, top_p, stop_strings=(), logits_processors=()):
        self.generate_calls.append(dict(contexts=[list(c) for c in contexts], temperature=temperature, top_p=top_p))
        out = []
        for s in range(0, len(contexts), 2):
            rows = contexts[s: s + 2]
            width = max(len(c) for c in rows)
            ids = torch.tensor([[0] * (width - len(c)) + list(c) for c in rows])
            for j in range(4):
                z = torch.zeros(len(rows), 6)
                z[:, 0] = 4.0 - j
                for proc in logits_processors:
                    z = proc(ids, z)
                ids = torch.cat([ids, torch.full((len(rows), 1), j + 1)], 1)
            out += [Generation([1, 2, 3, 4], "bcde", "length", [-0.1] * 4) for _ in rows]
        return out

    def episodes(self, examples, contexts, *, max_new_tokens, temperature, top_p, logits_processors=()):
        self.episode_calls.append(len(contexts))
        return [RolloutRow(i, [1], "b") for i in range(len(contexts))]


def request(n=8):
    return RolloutRequest(["p0", "p1"], [[5], [6, 6]], n=n, max_new_tokens=4, temperature=1.0, top_p=1.0)


def test_rollout_hook_branches_from_the_critical_token():
    # n = 8, branches 3 -> n1 = 2 first-stage responses per prompt, 2 x 3 continuations
    # entropy rises along [1, 2, 3, 4]: with top_k 1 the critical position is 3; context = prompt + [1, 2, 3]
    sampler = ScriptedSampler()
    p = CureParams(critical_top_k=1, min_token_chars=1)
    rows = cure_rollout(request(), sampler, p, {"stage": 1})
    assert len(rows) == 16 and [r.prompt_index for r in rows] == [0] * 8 + [1] * 8
    first, branches = rows[:2], rows[2:8]
    assert all(r.context_ids is None and not r.row_values for r in first)
    assert all(r.context_ids == [5, 1, 2, 3] and r.response_ids == [1, 2, 3, 4] for r in branches)
    assert branches[0].text == "bcd" + "bcde"  # prefix + continuation (score_prefix)
    assert branches[0].row_values == {"cure_branch": 1.0, "cure_prefix_len": 3.0, "cure_no_candidate": 0.0}
    assert rows[10].context_ids == [6, 6, 1, 2, 3]
    gen1, gen2 = sampler.generate_calls
    assert (gen1["temperature"], gen1["top_p"]) == (1.0, 1.0) and len(gen1["contexts"]) == 4  # T, top-p in the recorder
    assert len(gen2["contexts"]) == 12
    only = cure_rollout(request(), ScriptedSampler(), CureParams(critical_top_k=1, min_token_chars=1, score_prefix=False),
                        {"stage": 1})
    assert only[2].text == "bcde"  # the code: the continuation alone


def test_rollout_hook_warns_when_no_token_can_be_critical():
    from stare import InertKnobWarning

    with pytest.warns(InertKnobWarning, match="min_token_chars"):
        rows = cure_rollout(request(), ScriptedSampler(), CureParams(), {"stage": 1})  # one-character tokens
    assert all(r.context_ids in ([5], [6, 6]) for r in rows[2:8] + rows[10:])  # branches restart from the prompt
    assert rows[2].row_values["cure_no_candidate"] == 1.0


def test_rollout_hook_checks_the_row_count_and_refuses_tools():
    with pytest.raises(ValueError, match="rollout.n=8"):
        cure_rollout(request(), ScriptedSampler(), CureParams(branches=2), {"stage": 1})
    assert len(cure_rollout(request(), ScriptedSampler(), CureParams(branches=1, first_samples=4, min_token_chars=1),
                            {"stage": 1})) == 16
    tools = ScriptedSampler()
    tools.tool_env = object()
    with pytest.raises(ValueError, match="tools"):
        cure_rollout(request(), tools, CureParams(), {"stage": 1})


def test_stage_two_and_zero_branches_are_plain_sampling():
    sampler = ScriptedSampler()
    rows = cure_rollout(request(), sampler, CureParams(), {"stage": 2})
    assert sampler.episode_calls == [16] and [r.prompt_index for r in rows] == [0] * 8 + [1] * 8
    cure_rollout(request(), sampler, CureParams(branches=0), {"stage": 1})
    assert sampler.episode_calls == [16, 16] and not sampler.generate_calls


def test_stage_controller_switches_after_the_step():
    c = make_controller("cure", {"stage_switch_step": 2})
    assert c.state() == {"stage": 1}  # step 0's rollout
    c.update(StepData(batch_entropy=0.1, step=0))
    assert c.state() == {"stage": 1}  # step 1's rollout
    c.update(StepData(batch_entropy=0.1, step=1))
    assert c.state() == {"stage": 2} and c.metrics() == {"cure/stage": 2.0}  # step 2's rollout: plain
    assert make_controller("cure", {"stage_switch_step": None}).state() == {"stage": 1}
    assert make_controller("cure", {"stage_switch_step": 0}).state() == {"stage": 2}


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="critical_token"):
        CureParams(critical_token="surprisal")
    with pytest.raises(ValueError, match="branches"):
        CureParams(branches=-1)

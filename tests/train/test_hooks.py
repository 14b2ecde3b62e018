"""Every step-level hook of the contract, proven through the trainer on the tiny model: each test registers a
throwaway method (one record, as a method file would) and trains it with no edit to the trainer.

Worked examples (docs/core.md names the same ones): an advantage hook that modulates by the old entropy and
reads segment ids and texts; reward shaping after the old pass; old-pass logit statistics as aux inputs
(fused and not); training-forward statistics with gradient; a controller fed the whole step with tensor
state, through a checkpoint; the KL term to a reference (full copy and LoRA); rollout hooks for prefix
branching, per-token temperature, tool-call trees and auxiliary rows, all with the sampler's log-probs;
majority-vote group rewards; a two-pass update schedule.
"""

import dataclasses

import pytest
import torch

from stare.env.base import Score
from stare.lm import response_stats
from stare.objectives import (
    ControllerState,
    Objective,
    RolloutRow,
    StepData,
    Terms,
    register_objective,
    unregister_objective,
)
from stare.objectives.ppo import PPOParams, ppo_terms
from stare.surrogate import clipped_surrogate, surrogate_stats
from stare.train.config import load_config
from stare.train.rollout import default_rollout
from stare.train.trainer import Trainer

from tiny_tasks import ToolTask
from conftest import ContainsOneTask, tiny_overrides


@pytest.fixture
def method():
    """Register throwaway methods for one test (``method(name, **fields)``), removed afterwards."""
    names = []

    def add(name, **fields):
        fields.setdefault("params", PPOParams)
        fields.setdefault("terms", ppo_terms)
        names.append(name)
        return register_objective(Objective(name, **fields))

    yield add
    for n in names:
        unregister_objective(n)


def trainer(tmp_path, objective, **extra):
    extra.setdefault("algorithm", {})["objective"] = objective
    return Trainer(load_config(None, tiny_overrides(tmp_path, **extra)), log=lambda m: None)


def recording_terms(seen: list):
    """PPO's terms that also record what each call received."""

    def terms(batch, view, p, state, plan):
        seen.append({"adv": batch.token_advantages.detach().clone(), "aux": {k: v.detach() for k, v in batch.aux.items()},
                     "state": dict(state), "on_policy": batch.is_on_policy, "valid": batch.valid.clone(),
                     "log_prob": batch.log_prob.detach().clone()})
        return ppo_terms(batch, view, p, state, plan)

    return terms


# ------------------------------------------------------------------------------------ advantages, rewards


def test_advantage_hook_sees_the_whole_step(tmp_path, method):
    seen_data, seen_loss = [], []

    def advantages(data: StepData, p, state):
        seen_data.append(data)
        scale = 1.0 + data.old_entropy  # per token: more weight where the old policy was uncertain
        return data.advantages.unsqueeze(-1) * scale * data.mask

    method("adv_test", advantages=advantages, terms=recording_terms(seen_loss))
    tr = trainer(tmp_path, "adv_test", trainer={"steps": 1})
    tr.train()
    d = seen_data[0]
    b = d.rewards.shape[0]
    assert d.group_ids.shape == (b,) and d.acc.shape == (b,) and len(d.texts) == b and len(d.preds) == b
    assert d.old_entropy.shape == d.mask.shape and "segment_ids" not in d.aux  # single-turn task: no segments
    assert "rollout_log_prob" in d.aux  # the sampler's own log-probs
    expected = d.advantages.unsqueeze(-1) * (1.0 + d.old_entropy) * d.mask
    got = seen_loss[0]["adv"]  # the first micro-batch's rows
    torch.testing.assert_close(got, expected[: got.shape[0], : got.shape[1]])  # the loss saw the hook's [B, T] advantages


def test_reward_shaping_after_the_old_pass(tmp_path, method):
    seen = []

    def shape(data: StepData, p, state):
        seen.append(data.rewards.clone())
        lengths = data.mask.sum(-1).cpu()
        return data.rewards - 0.01 * lengths  # a length penalty that needs the loss mask

    method("shape_test", shape_rewards=shape)
    tr = trainer(tmp_path, "shape_test", trainer={"steps": 1})
    rec = tr.train()[0]
    batch_lengths = rec["response_length/mean"]
    assert rec["critic/score/mean"] == pytest.approx(float(seen[0].mean()) - 0.01 * batch_lengths, abs=1e-5)


# ------------------------------------------------------------------------------------ logit statistics


def top2(z, ids):
    return torch.log_softmax(z, -1).topk(2, -1).values


@pytest.mark.parametrize("fused", [True, False])
def test_old_pass_logit_statistics_reach_the_loss(tmp_path, method, fused):
    seen = []
    method("top2_test", logit_stats=lambda p: {"top2": top2}, needs=("top2",), terms=recording_terms(seen))
    tr = trainer(tmp_path, "top2_test", trainer={"steps": 1},
                 algorithm={"micro_batch_size": 64 if fused else 5})
    tr.train()
    for call in seen:
        t2, valid = call["aux"]["top2"], call["valid"]
        assert t2.shape == (*valid.shape, 2)
        # the largest log-prob is at least the sampled token's, and the old pass is the policy the loss sees
        assert bool((t2[..., 0][valid] >= call["log_prob"][valid] - 1e-5).all())
        assert bool((t2[..., 0] >= t2[..., 1]).all())


def test_training_forward_statistics_carry_gradients(tmp_path, method):
    def terms(batch, view, p, state, plan):
        """Gap: zero policy gradient, plus a term on the top-1 log-prob computed with gradient."""
        return Terms(pg_loss=batch.log_prob * 0, extra={"top1": -0.1 * batch.aux["top2"][..., 0]})

    method("gap_test", terms=terms, train_stats=lambda p: {"top2": top2}, needs=("top2",))
    tr = trainer(tmp_path, "gap_test", trainer={"steps": 1})
    before = [p.detach().clone() for p in tr.trainable]
    rec = tr.train()[0]
    assert rec["actor/top1"] != 0 and any(not torch.equal(a, p) for a, p in zip(before, tr.trainable))


# ------------------------------------------------------------------------------------ controller


@dataclasses.dataclass(frozen=True)
class TrackParams(PPOParams):
    window: int = 2


@dataclasses.dataclass
class Track(ControllerState):
    """Vector state from several statistics: recent batch entropies and accuracies."""

    params: TrackParams = dataclasses.field(default_factory=TrackParams)
    history: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0, 2))
    steps_seen: list = dataclasses.field(default_factory=list)

    def update(self, data: StepData) -> None:
        data.require("Track", "acc", "old_entropy")
        row = torch.tensor([[data.batch_entropy, float(data.acc.mean())]])
        self.history = torch.cat([self.history, row])[-self.params.window:]
        self.steps_seen.append(data.step)

    def state(self) -> dict:
        return {"mean_acc": float(self.history[:, 1].mean()) if len(self.history) else 0.0}

    def metrics(self) -> dict:
        return {"track/mean_acc": self.state()["mean_acc"], "track/len": float(len(self.history))}


def test_controller_with_vector_state_survives_resume(tmp_path, method):
    method("track_test", params=TrackParams, controller=Track, acts_at=("LOSS", "CTRL"))
    full = trainer(tmp_path / "a", "track_test", trainer={"steps": 3, "save_every": 0})
    hist = full.train()
    assert [r["track/len"] for r in hist] == [1.0, 2.0, 2.0] and full.controller.steps_seen == [0, 1, 2]
    part = trainer(tmp_path / "b", "track_test", trainer={"steps": 2, "save_every": 1})
    part.train()
    resumed = trainer(tmp_path / "b", "track_test", trainer={"steps": 3, "save_every": 1})
    assert torch.equal(resumed.controller.history, part.controller.history)  # restored from controller.pt
    resumed.train()
    assert torch.equal(resumed.controller.history, full.controller.history)
    assert resumed.controller.steps_seen == [0, 1, 2]


# ------------------------------------------------------------------------------------ reference and KL


@pytest.mark.parametrize("lora", [False, True])
def test_kl_to_the_reference_model(tmp_path, lora):
    extra = {"model": {"lora": {"enabled": True, "r": 4, "alpha": 8}}} if lora else {}
    tr = trainer(tmp_path, "ppo", algorithm={"objective": "ppo", "params": {"kl_coef": 0.5}},
                 trainer={"steps": 3}, optim={"lr": 0.05}, **extra)
    hist = tr.train()
    kl = [r["actor/kl_loss"] for r in hist]
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is the reference
    assert kl[-1] > 1e-5 and hist[-1]["actor/kl"] > 0


# ------------------------------------------------------------------------------------ rollout hooks


def prefix_branching(request, sampler, p, state):
    """Sample n responses; then, per prompt, branch n continuations from the first half of its first response
    (CURE-style re-concatenation). The branches form a group of their own; the verifier sees prefix + branch."""
    rows = default_rollout(request, sampler)
    contexts, examples, prefixes, owners = [], [], [], []
    for i, prompt in enumerate(request.prompt_ids):
        first = next(r for r in rows if r.prompt_index == i)
        cut = max(1, len(first.response_ids) // 2)
        prefix = first.response_ids[:cut]
        for _ in range(request.n):
            contexts.append(list(prompt) + prefix)
            examples.append(request.examples[i])
            prefixes.append(prefix)
            owners.append(i)
    gens = sampler.generate(contexts, request.max_new_tokens, temperature=request.temperature, top_p=request.top_p)
    n_groups = len(request.prompt_ids)
    for j, (g, prefix, i) in enumerate(zip(gens, prefixes, owners)):
        text = sampler.tokenizer.decode(prefix, skip_special_tokens=True) + g.text
        rows.append(RolloutRow(i, list(g.token_ids), text, g.finish_reason == "length", context_ids=contexts[j],
                               log_probs=list(g.log_probs), row_values={"branch": 1.0}, group=n_groups + i))
    return rows


class RecordingTask(ContainsOneTask):
    """ContainsOne that records every text it scores."""

    def __init__(self):
        super().__init__()
        self.scored = []

    def score(self, example, response):
        self.scored.append(response)
        return super().score(example, response)


def test_prefix_branching(tmp_path, method, monkeypatch):
    from stare.train import tasks

    task = RecordingTask()
    monkeypatch.setitem(tasks.TASKS, "recording", lambda cfg: task)
    seen = []
    method("branch_test", rollout=prefix_branching, terms=recording_terms(seen), needs=("branch",))
    tr = trainer(tmp_path, "branch_test", task={"name": "recording"},
                 rollout={"prompts_per_step": 2, "dynamic_sampling": False}, algorithm={"micro_batch_size": 64})
    batch, metrics = tr.rollout()
    b = batch.packed.response_ids.shape[0]
    assert b == 2 * 2 * 4 and metrics["batch/kept_groups"] == 4  # 2 prompts x (4 samples + 4 branches), branches kept
    tr2 = trainer(tmp_path / "r", "branch_test", task={"name": "recording"},
                  rollout={"prompts_per_step": 4, "dynamic_sampling": False}, trainer={"steps": 1})
    tr2.train()
    branch = torch.cat([call["aux"]["branch"].amax(-1) for call in seen])
    assert int(branch.sum()) == 16 and int((branch == 0).sum()) == 16  # 4 prompts x 4 samples, and their branches
    assert len(task.scored) >= 16  # every row scored, branches on prefix + continuation


def test_per_token_temperature_and_the_samplers_log_probs(tmp_path, method):
    def sharper(input_ids, scores):
        return scores / 0.5  # a processor: the distribution sampled from is softmax(z / 0.5)

    def rollout(request, sampler, p, state):
        n = request.n
        return [dataclasses.replace(r, prompt_index=i // n) for i, r in enumerate(sampler.episodes(
            [e for e in request.examples for _ in range(n)], [q for q in request.prompt_ids for _ in range(n)],
            max_new_tokens=request.max_new_tokens, temperature=1.0, top_p=1.0, logits_processors=[sharper]))]

    method("temp_test", rollout=rollout)
    tr = trainer(tmp_path, "temp_test", rollout={"dynamic_sampling": False})
    batch, _ = tr.rollout()
    with torch.no_grad():
        at_half = response_stats(tr.model, batch.packed, temperature=0.5).log_prob
    m = batch.packed.response_mask.bool()
    torch.testing.assert_close(batch.aux["rollout_log_prob"][m], at_half[m], atol=1e-5, rtol=1e-5)




def tool_tree(request, sampler, p, state):
    """Episodes; then from each episode's first tool output, n further episodes (ARPO/AEPO-style tree)."""
    rows = default_rollout(request, sampler)
    roots = [r for r in rows if r.tool_calls > 0]
    contexts, examples, owners = [], [], []
    for r in roots:
        first_out = r.loss_mask.index(0)  # the first tool-output token
        end = first_out + r.loss_mask[first_out:].index(1) if 1 in r.loss_mask[first_out:] else len(r.loss_mask)
        contexts.append(list(request.prompt_ids[r.prompt_index]) + r.response_ids[:end])
        examples.append(request.examples[r.prompt_index])
        owners.append(r.prompt_index)
    branches = sampler.episodes(examples, contexts, max_new_tokens=request.max_new_tokens,
                                temperature=request.temperature, top_p=request.top_p)
    for b, ctx, i in zip(branches, contexts, owners):
        rows.append(dataclasses.replace(b, prompt_index=i, context_ids=ctx, row_values={"tree": 1.0}))
    return rows


def test_tool_call_trees(tmp_path, method, monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "tool_tree", lambda cfg: ToolTask())
    seen = []
    method("tree_test", rollout=tool_tree, terms=recording_terms(seen), needs=("tree",))
    tr = trainer(tmp_path, "tree_test", task={"name": "tool_tree"}, rollout={"max_new_tokens": 16},
                 trainer={"steps": 1})
    batch, _ = tr.rollout()
    tree = batch.aux["tree"].amax(-1) == 1
    assert bool(tree.any())
    # branch rows continue after a tool output: their context holds it, and their own tool output is masked
    nine = tr.tokenizer.convert_tokens_to_ids("9")
    ids, mask = batch.packed.response_ids, batch.packed.response_mask
    assert bool(((ids == nine) | (mask == 1) | (ids == tr.tokenizer.pad_token_id)).all())
    assert "segment_ids" in batch.aux and "rollout_log_prob" in batch.aux
    tr.train()
    assert seen and "tree" in seen[0]["aux"]


def test_auxiliary_rows(tmp_path, method):
    def with_auxiliary(request, sampler, p, state):
        rows = default_rollout(request, sampler)
        hot = default_rollout(dataclasses.replace(request, temperature=1.5), sampler)  # a hotter auxiliary batch
        n_groups = len(request.prompt_ids)
        for r in hot:
            rows.append(dataclasses.replace(r, row_values={"auxiliary": 1.0}, group=n_groups + r.prompt_index))
        return rows

    def terms(batch, view, p, state, plan):
        """Aux: the policy gradient on normal rows only; auxiliary rows get a weight of 0."""
        s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, 0.2, 0.2)
        w = 1.0 - batch.aux["auxiliary"]
        return Terms(pg_loss=s.loss * w, weights=w, stats=surrogate_stats(s, batch.valid))

    method("aux_test", rollout=with_auxiliary, terms=terms, needs=("auxiliary",))
    tr = trainer(tmp_path, "aux_test", rollout={"dynamic_sampling": False, "prompts_per_step": 8},
                 trainer={"steps": 1})
    batch, _ = tr.rollout()
    per_row = batch.aux["auxiliary"].amax(-1)
    assert int(per_row.sum()) == 32 and batch.packed.response_ids.shape[0] == 64  # 8 prompts x 4, twice
    assert tr.train()[0]["actor/weight/min"] == 0.0


# ------------------------------------------------------------------------------------ group rewards


def majority_vote(preds, texts, p):
    """TTRL: reward 1 for the group's most common answer (ties: the first), 0 otherwise; no ground truth."""
    answers = [a for a in preds if a is not None]
    if not answers:
        return [0.0] * len(preds)
    top = max(answers, key=answers.count)
    return [float(a == top) for a in preds]


class DigitTask(ContainsOneTask):
    """The answer is the response's first digit (ground truth: '1')."""

    def score(self, example, response):
        pred = next((c for c in response if c.isdigit()), None)
        acc = float(pred == "1")
        return Score(reward=acc, acc=acc, pred=pred)


def test_majority_vote_group_rewards(tmp_path, method, monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "digit", lambda cfg: DigitTask())
    method("vote_test", group_rewards=majority_vote)
    tr = trainer(tmp_path, "vote_test", task={"name": "digit"}, rollout={"dynamic_sampling": False})
    batch, _ = tr.rollout()
    for g in batch.group_ids.unique():
        rows = (batch.group_ids == g).nonzero().flatten().tolist()
        preds = [batch.preds[i] for i in rows]
        assert batch.rewards[rows].tolist() == majority_vote(preds, None, None)
    assert not torch.equal(batch.rewards, batch.acc)  # label-free rewards, accuracy still reported


# ------------------------------------------------------------------------------------ update schedule


def test_two_pass_update_schedule(tmp_path, method):
    seen = []

    def terms(batch, view, p, state, plan):
        """Halves: pass 0 trains on even positions, pass 1 on odd ones (a Lopti-style partition)."""
        seen.append((state["part"], batch.is_on_policy, batch.old_log_prob is not None))
        s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, 0.2, 0.2)
        pos = torch.arange(batch.log_prob.shape[1]) % 2 == state["part"]
        w = pos.to(s.loss.dtype).expand_as(s.loss)
        return Terms(pg_loss=s.loss * w, weights=w, stats=surrogate_stats(s, batch.valid))

    method("halves_test", terms=terms, schedule=lambda p: [{"part": 0}, {"part": 1}])
    tr = trainer(tmp_path, "halves_test", trainer={"steps": 1}, algorithm={"micro_batch_size": 64})
    rec = tr.train()[0]
    parts = [s[0] for s in seen]
    assert parts[0] == 0 and parts[-1] == 1 and all(not on for _, on, _ in seen)  # off-policy: two optimizer passes
    assert rec["actor/ppo_kl"] != 0  # the second pass sees ratios moved by the first
    assert "timing_s/old_log_prob" in rec  # a separate old pass, shared by both passes


def test_hooks_report_metrics_with_the_step(tmp_path, method):
    def advantages(data, p, state):
        return data.advantages * 2, {"twice/abs_mean": float(data.advantages.abs().mean())}

    def step_metrics(data, p, state):  # sees the final advantages
        return {"twice/final_abs_mean": float(data.advantages.abs().mean())}

    method("twice_test", advantages=advantages, step_metrics=step_metrics)
    rec = trainer(tmp_path, "twice_test", trainer={"steps": 1}).train()[0]
    assert rec["twice/final_abs_mean"] == pytest.approx(2 * rec["twice/abs_mean"])

"""Rollout on the tiny testbed model: finish reasons, stop strings, budgets, and multi-turn episodes whose
tool-output tokens are masked out of the loss, also through the trainer."""

import torch

from stare.env.base import Example
from stare.train.config import load_config
from stare.objectives import RolloutRequest
from stare.train.rollout import HFBackend, TrainerSampler, default_rollout
from stare.train.trainer import Trainer

from tiny_tasks import SemicolonEnv, ToolTask
from conftest import ContainsOneTask, tiny_overrides


def _backend(tmp_path):
    tr = Trainer(load_config(None, tiny_overrides(tmp_path)), log=lambda m: None)
    return tr, HFBackend(tr.model, tr.tokenizer)


def test_finish_reasons_and_budgets(tmp_path):
    tr, be = _backend(tmp_path)
    torch.manual_seed(0)
    ctx = [[tr.tokenizer.bos_token_id] + tr.tokenizer("1+2+3=", add_special_tokens=False).input_ids] * 12
    gens = be.generate(ctx, [3] * 6 + [12] * 6, temperature=1.0, top_p=1.0, stop_strings=[";"])
    eos = tr.tokenizer.eos_token_id
    for i, g in enumerate(gens):
        assert len(g.token_ids) <= (3 if i < 6 else 12)
        if g.finish_reason == "stop":
            assert g.text.endswith(";") and eos not in g.token_ids
        elif g.finish_reason == "eos":
            assert g.token_ids[-1] == eos and ";" not in g.text
        else:
            assert g.finish_reason == "length" and ";" not in g.text
    rows = default_rollout(RolloutRequest([None], [ctx[0]], 5, 4, 1.0, 1.0), TrainerSampler(be))
    assert [r.prompt_index for r in rows] == [0] * 5 and all(len(r.response_ids) <= 4 for r in rows)
    assert [r.truncated for r in rows] == [len(r.response_ids) == 4 and r.response_ids[-1] != eos for r in rows]



def test_multi_turn_masks_tool_output(tmp_path):
    tr, be = _backend(tmp_path)
    torch.manual_seed(1)
    ex = [Example(prompt="1+2+3=", answer="6")]
    ctx = [[tr.tokenizer.bos_token_id] + tr.tokenizer("1+2+3=", add_special_tokens=False).input_ids]
    rows = default_rollout(RolloutRequest(ex, ctx, 16, 24, 1.0, 1.0), TrainerSampler(be, SemicolonEnv()))
    nine = tr.tokenizer.convert_tokens_to_ids("9")
    saw_tool = False
    for row in rows:
        ids, mask, calls = row.response_ids, row.loss_mask, row.tool_calls
        assert len(ids) == len(mask) <= 24
        masked = [t for t, m in zip(ids, mask) if m == 0]
        assert masked == [nine] * calls  # exactly the tool outputs are masked
        # segments: 0 for the first turn, k from the k-th tool output on
        segments = row.token_values["segment_ids"]
        assert segments == sorted(segments) and segments[-1] == calls
        assert [s for s, m in zip(segments, mask) if m == 0] == list(range(1, calls + 1))
        # the sampler's log-probs cover every token (0 on tool output)
        assert len(row.log_probs) == len(ids) and all(lp == 0.0 for lp, m in zip(row.log_probs, mask) if m == 0)
        saw_tool |= calls > 0
    assert saw_tool



def test_trainer_with_a_tool_env(tmp_path, monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "tool_test", lambda cfg: ToolTask())
    tr = Trainer(load_config(None, tiny_overrides(tmp_path, task={"name": "tool_test"},
                                                  rollout={"max_new_tokens": 16})), log=lambda m: None)
    batch, _ = tr.rollout()
    nine = tr.tokenizer.convert_tokens_to_ids("9")
    ids, mask = batch.packed.response_ids, batch.packed.response_mask
    # every masked token inside a response is a tool output '9'
    lengths = [len(t) for t in batch.texts]
    assert ((mask == 0) & (ids != tr.tokenizer.pad_token_id)).any()
    assert bool(((ids == nine) | (mask == 1) | (ids == tr.tokenizer.pad_token_id)).all())
    history = tr.train()
    assert len(history) == 3 and lengths


class SurrogateEnv(SemicolonEnv):
    """A tool whose output holds a lone surrogate, as ``print("\\ud800")`` in the calculator gives (issue 15)."""

    def step(self, example, transcript):
        return "9\ud800"


class SurrogateTask(ContainsOneTask):
    def tool_env(self):
        return SurrogateEnv()


def test_tool_output_the_tokenizer_cannot_encode_does_not_crash_the_rollout(tmp_path, monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "tool_surrogate", lambda cfg: SurrogateTask())
    tr = Trainer(load_config(None, tiny_overrides(tmp_path, task={"name": "tool_surrogate"},
                                                  rollout={"max_new_tokens": 16})), log=lambda m: None)
    batch, _ = tr.rollout()  # raised TypeError in the tokenizer before
    assert batch is not None and any("9\\ud800" in t for t in batch.texts)
    for t in batch.texts:
        t.encode("utf-8")


class WarmingTask(ContainsOneTask):
    waited = 0

    def wait_ready(self):
        WarmingTask.waited += 1


def test_the_trainer_waits_for_the_tasks_workers_before_the_first_step(tmp_path, monkeypatch):
    # issue 15: verifiers start when built and count start-up against a check's limit; the trainer waits
    # for them once, after loading the model, so that the first step's checks do not find them cold
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "warming", lambda cfg: WarmingTask())
    Trainer(load_config(None, tiny_overrides(tmp_path, task={"name": "warming"})), log=lambda m: None)
    assert WarmingTask.waited == 1

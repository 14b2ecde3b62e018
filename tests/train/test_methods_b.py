"""The step-hook methods (HAPO, EMPG, GTPO, GRPO-S, CURE, TTRL, EMPO, SEED-GRPO) through the trainer on the
tiny testbed model: each trains; HAPO's sampler draws each token from the per-token-temperature policy
(checked against the model's own logits) and its controller survives a resume; CURE's groups hold the
first-stage responses and their branches, sampled from the configured distribution; EMPG sees several
steps per trajectory on a tool task; TTRL's vote-only rows vote but do not train; the verl and TRL
plug-ins refuse every one of them by name, and run ``hapo_loss``."""

import dataclasses
import pytest
import torch

from stare.env.base import Score
from stare.integrations import check_loss_side
from stare.lm import response_stats
from stare.objectives.empg import empg_advantages
from stare.objectives.hapo import temperature_processor
from stare.train.config import load_config
from stare.train.trainer import Trainer

from tiny_tasks import ToolTask
from conftest import ContainsOneTask, tiny_overrides

METHODS = {
    "hapo": {"temperature_tau": 0.5},
    "empg": {},
    "gtpo": {},
    "grpo_s": {},
    "cure": {"min_token_chars": 1, "branches": 1},
    "ttrl": {"votes_per_prompt": 6},
    "empo": {},
    "seed_grpo": {},
}
METRIC = {"hapo": "hapo/entropy_median", "empg": "empg/steps", "gtpo": "gtpo/pos_token_frac",
          "grpo_s": "grpo_s/pos_token_frac", "cure": "cure/stage", "ttrl": "ttrl/majority_ratio",
          "empo": "empo/semantic_entropy_mean", "seed_grpo": "seed_grpo/scale_mean"}


class DigitTask(ContainsOneTask):
    """The answer is the response's first digit (ground truth '1'), so that groups have answers to vote on."""

    def score(self, example, response):
        pred = next((c for c in response if c.isdigit()), None)
        acc = float(pred == "1")
        return Score(reward=acc, acc=acc, pred=pred)


@pytest.fixture
def digit_task(monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "digit", lambda cfg: DigitTask())


def trainer(tmp_path, objective, params=None, **extra):
    extra.setdefault("algorithm", {}).update(objective=objective, params=params or {})
    return Trainer(load_config(None, tiny_overrides(tmp_path, **extra)), log=lambda m: None)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains(tmp_path, name, digit_task):
    tr = trainer(tmp_path, name, METHODS[name], task={"name": "digit"}, trainer={"steps": 2},
                 rollout={"dynamic_sampling": False})
    hist = tr.train()
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(r["actor/pg_loss"])) for r in hist)
    assert METRIC[name] in hist[-1]


def test_the_plug_ins_refuse_the_step_hook_methods_and_run_hapos_loss():
    for name in METHODS:
        for engine in ("verl", "TRL"):
            with pytest.raises(ValueError, match=f"objective '{name}' acts at .* only the stare trainer"):
                check_loss_side(name, engine)
    assert check_loss_side("hapo_loss", "verl").name == "hapo_loss"


def test_hapo_samples_each_token_at_its_own_temperature(tmp_path):
    tr = trainer(tmp_path, "hapo", {"temperature_tau": 0.5}, rollout={"dynamic_sampling": False, "top_p": 0.9},
                 trainer={"steps": 1})
    tr.train()  # step 1 at the plain temperature; its old pass sets the statistics of the next rollout
    state = tr.controller.state()
    assert state["has_stats"]
    batch, _ = tr.rollout()
    process = temperature_processor(state, tr.cfg.rollout.temperature, 0.5, 0.9)

    def sampled(z, ids):  # the log-prob of the sampled token under the processor applied to the raw logits
        return torch.log_softmax(process(None, z), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)

    with torch.no_grad():
        st = response_stats(tr.model, batch.packed, 1.0, logit_stats={"hapo": sampled})
    m = batch.packed.response_mask.bool()
    got = batch.aux["rollout_log_prob"][m]
    torch.testing.assert_close(got, st.extra["hapo"][m], atol=2e-4, rtol=2e-4)
    assert float((got - st.log_prob[m]).abs().max()) > 1e-3  # and it is not the plain policy


def test_hapo_controller_resumes_from_its_checkpoint(tmp_path):
    full = trainer(tmp_path / "a", "hapo", trainer={"steps": 2, "save_every": 0})
    full.train()
    part = trainer(tmp_path / "b", "hapo", trainer={"steps": 1, "save_every": 1})
    part.train()
    resumed = trainer(tmp_path / "b", "hapo", trainer={"steps": 2, "save_every": 1})
    assert resumed.controller.state() == part.controller.state()
    resumed.train()
    assert resumed.controller.state() == pytest.approx(full.controller.state())


def test_cure_groups_hold_the_first_responses_and_their_branches(tmp_path):
    tr = trainer(tmp_path, "cure", {"min_token_chars": 1, "branches": 3},
                 rollout={"dynamic_sampling": False, "prompts_per_step": 3}, trainer={"steps": 1})
    batch, _ = tr.rollout()
    gids = batch.group_ids
    assert gids.shape == (12,) and all(int((gids == g).sum()) == 4 for g in gids.unique())  # n = 1 + 1 x 3
    branch = batch.aux["cure_branch"].amax(-1) > 0
    assert int(branch.sum()) == 9
    prompt_len = batch.packed.attention_mask[:, : batch.packed.prompt_width].sum(-1)
    assert bool((prompt_len[branch] > prompt_len[~branch].min()).any())  # branches continue a prefix
    # both stages sample from the configured policy: the sampler's log-probs are the old pass's
    with torch.no_grad():
        old = response_stats(tr.model, batch.packed, tr.cfg.rollout.temperature).log_prob
    m = batch.packed.response_mask.bool()
    torch.testing.assert_close(batch.aux["rollout_log_prob"][m], old[m], atol=2e-4, rtol=2e-4)




def test_empg_sees_several_steps_per_trajectory_on_a_tool_task(tmp_path, monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "semicolon", lambda cfg: ToolTask())
    tr = trainer(tmp_path, "empg", task={"name": "semicolon"}, rollout={"max_new_tokens": 16, "dynamic_sampling": False},
                 trainer={"steps": 1})
    seen = []
    hook = tr.objective.advantages  # record the step the advantage hook sees
    tr.objective = dataclasses.replace(tr.objective, advantages=lambda data, p, s: (seen.append(data), hook(data, p, s))[1])
    rec = tr.train()[0]
    data = seen[0]
    assert "segment_ids" in data.aux and rec["empg/steps_per_trajectory_max"] >= 2
    adv, _ = empg_advantages(data.advantages, data.old_entropy, data.mask, data.aux["segment_ids"])
    multi = [i for i in range(adv.shape[0]) if len(set(adv[i][data.mask[i].bool()].tolist())) > 1]
    assert multi  # a trajectory whose turns got different advantages


def test_ttrl_vote_only_rows_do_not_train(tmp_path, digit_task, monkeypatch):
    tr = trainer(tmp_path, "ttrl", {"votes_per_prompt": 8, "kl_coef": 0.001}, task={"name": "digit"},
                 rollout={"dynamic_sampling": False}, trainer={"steps": 1})
    seen = []
    hook = tr.objective.advantages  # record the step the advantage hook sees
    tr.objective = dataclasses.replace(tr.objective, advantages=lambda data, p, s: (seen.append(data), hook(data, p, s))[1])
    rec = tr.train()[0]
    data = seen[0]
    only = data.aux["ttrl_vote_only"].amax(-1) > 0
    assert int(only.sum()) == 16 and data.rewards.shape == (32,)  # 4 prompts x 8 votes, 4 of them trained
    assert float(data.mask[only].sum()) == 0.0  # no loss token
    adv = tr.objective.advantages(data, tr.params, {})
    assert float(adv[only].abs().max()) == 0.0
    assert 0 <= rec["ttrl/label_accuracy"] <= 1 and rec["actor/kl_loss"] >= 0

"""Issue 13 part A through the trainer on the tiny model: each method's step-level pieces (old-pass proxy,
training-forward nucleus entropy and its anchor, Lopti's two passes, AEPO's tool-call branching) run and
act, with no method-specific code in the trainer."""

import pytest
import torch

from stare.train.config import load_config
from stare.train.trainer import Trainer

from tiny_tasks import ToolTask
from conftest import tiny_overrides


def trainer(tmp_path, objective, params=None, **extra):
    extra.setdefault("algorithm", {}).update(objective=objective, params=params or {})
    return Trainer(load_config(None, tiny_overrides(tmp_path, **extra)), log=lambda m: None)


def test_lp_reg_regularises_low_probability_negative_tokens(tmp_path):
    tr = trainer(tmp_path, "lp_reg", {"rho_neg": 0.5, "minp_kappa": 0.5}, trainer={"steps": 2})
    hist = tr.train()
    assert all(r["actor/lp_reg/neg_lowest_frac"] > 0 for r in hist)
    assert any(r["actor/lp_reg/neg_regularised_frac"] > 0 for r in hist)  # some survived the filter
    assert 0 < hist[-1]["actor/lp_reg/filtered_frac"] < 1


def test_siren_anchor_and_penalty(tmp_path):
    tr = trainer(tmp_path, "siren", {"entropy_coeff": 1.0, "top_p": 0.9}, trainer={"steps": 2}, optim={"lr": 0.05},
                 algorithm={"micro_batch_size": 64})  # one micro-batch: its H_sel is the batch's
    hist = tr.train()
    anchor = hist[0]["siren/entropy_anchor"]
    assert anchor > 0 and hist[1]["siren/entropy_anchor"] == anchor  # set at the first step, then held
    assert hist[0]["actor/siren_penalty"] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is the anchor's
    assert hist[1]["actor/siren_penalty"] > 0  # the update moved the selected entropy


def test_lopti_makes_two_passes(tmp_path):
    tr = trainer(tmp_path, "lopti", {"separate_prob": 0.5, "reweight_k": 0.3}, trainer={"steps": 1},
                 algorithm={"micro_batch_size": 64})
    rec = tr.train()[0]
    # pass 1 trains the isolated share x of the tokens, pass 2 the other 1 - x: the mean over both is 1/2
    assert rec["actor/lopti/trained_frac"] == pytest.approx(0.5)
    assert rec["actor/ppo_kl"] != 0  # the second pass sees ratios moved by the first




def test_aepo_agentic_branches_at_tool_calls(tmp_path, monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "tool_aepo", lambda cfg: ToolTask())
    # threshold below alpha: every tool turn may branch (consecutive ones less), so the tree is exercised
    tr = trainer(tmp_path, "aepo_agentic", {"branch_threshold": 0.0, "probe_roots": 1}, task={"name": "tool_aepo"},
                 rollout={"max_new_tokens": 16, "n": 4, "dynamic_sampling": False}, trainer={"steps": 1})
    batch, _ = tr.rollout()
    b = batch.packed.response_ids.shape[0]
    assert b == 4 * 4  # n rows per prompt, roots and branches together
    branch = batch.aux["aepo_branch"].amax(-1) > 0
    per_group = torch.bincount(batch.group_ids, minlength=4)
    assert per_group.tolist() == [4, 4, 4, 4]
    if bool(branch.any()):  # branch rows continue a prefix: their context is longer than the prompt
        assert "segment_ids" in batch.aux
    rec = tr.train()[0]
    assert "actor/aepo/entropy_factor_mean" in rec and "actor/aepo/branch_token_frac" in rec


def test_aepo_agentic_loss_and_ar_train(tmp_path):
    for name in ("aepo_agentic_loss", "ar"):
        rec = trainer(tmp_path / name, name, trainer={"steps": 1}).train()[0]
        assert rec["actor/weight/min"] < rec["actor/weight/max"]  # per-token factors differ

"""The trainer end to end on a tiny model (CPU, single thread): parameters change, metrics are finite,
resume is bit-identical, checkpoints survive a kill, non-finite steps are skipped and then abort."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from stare.train.checkpoint import latest_checkpoint
from stare.train.config import load_config
from stare.report.runs import read_metrics
from stare.train.trainer import Trainer, TrainingAborted

from conftest import tiny_overrides

STOCHASTIC = ("timing_s/", "perf/")


def _trainer(tmp_path, **extra):
    return Trainer(load_config(None, tiny_overrides(tmp_path, **extra)), log=lambda m: None)


@pytest.mark.parametrize(
    "method, extra",
    [
        ("grpo_ds", {}),
        ("stare_o1", {"algorithm": {"params": {"target_entropy_ratio": 2.0, "reweight_w": 3.0}}}),
        ("stare_c2", {"algorithm": {"params": {"target_entropy_ratio": 2.0, "selection_scope": "global"}}}),
        ("forking", {}),
        ("entropy_bonus", {"algorithm": {"params": {"entropy_coeff": 0.01}}}),
        ("clip_cov", {"algorithm": {"mini_batches": 2, "ppo_epochs": 2}}),  # off-policy path
    ],
)
def test_every_parameter_changes_and_metrics_are_finite(tmp_path, method, extra):
    tr = _trainer(tmp_path, method=method, **extra)
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    history = tr.train()
    assert len(history) == 3
    unchanged = [n for n, p in tr.model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, unchanged
    for rec in history:
        for k, v in rec.items():
            if isinstance(v, float):
                assert math.isfinite(v), (k, v)
    last = history[-1]
    assert last["actor/skipped_steps_total"] == 0
    assert "val/pass@1" in last and "val/acc/mean@4" in last  # evaluation at the end
    if method.startswith("stare"):
        assert last["stare/gate_on"] == 1 and last["actor/stare/pos_reweighted_frac"] > 0
    if method == "clip_cov":
        assert any(r["actor/ppo_kl"] != 0 for r in history)  # ratios move off-policy
    run = tmp_path / "run"
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "config.yaml").exists() and latest_checkpoint(run / "checkpoints").name == "global_step_3"


def _deterministic(records):
    return [{k: v for k, v in r.items() if not k.startswith(STOCHASTIC)} for r in records]


def test_resume_is_bit_identical(tmp_path):
    extra = {"method": "stare_o1", "algorithm": {"params": {"target_entropy_ratio": 1.5}},
             "trainer": {"steps": 4, "save_every": 2, "eval_every": 2}}
    full = _trainer(tmp_path / "a", **extra).train()
    # interrupted: the first process stops after step 2 (as if killed right after its checkpoint)
    _trainer(tmp_path / "b", **{**extra, "trainer": {**extra["trainer"], "steps": 2}}).train()
    resumed = _trainer(tmp_path / "b", **extra)
    assert resumed.step_idx == 2
    rest = resumed.train()
    assert _deterministic(rest) == _deterministic(full[2:])
    on_disk = read_metrics(tmp_path / "b" / "run" / "metrics.jsonl")
    assert _deterministic(on_disk) == _deterministic(full)
    a = _trainer(tmp_path / "a", **extra)  # reload both final states
    b = _trainer(tmp_path / "b", **extra)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), n
    assert a.controller.state_dict() == b.controller.state_dict()


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    overrides = tiny_overrides(tmp_path, method="grpo_ds", trainer={"steps": 2, "save_every": 1})
    script = textwrap.dedent(f"""
        import json, os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import conftest
        from stare.train import tasks
        tasks.TASKS["contains_one"] = lambda cfg: conftest.ContainsOneTask()
        from stare.train import trainer as T
        from stare.train.config import load_config
        from stare.train import checkpoint
        tr = T.Trainer(load_config(None, json.loads({json.dumps(json.dumps(overrides))})), log=lambda m: None)
        tr.train()                       # checkpoints 1 and 2 written
        tr.step_idx = 3
        def die(stage):
            if stage == "optimizer":     # weights of step 3 on disk, the rest not yet
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.save_checkpoint(tr.ckpt_dir, 3, model=tr.model, optimizer=tr.optimizer,
                                   scheduler=tr.scheduler, trainer_state={{}}, hook=die)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert (ckpt_dir / ".tmp-global_step_3").exists()  # the interrupted write
    assert latest_checkpoint(ckpt_dir).name == "global_step_2"
    assert (ckpt_dir / "latest_checkpointed_iteration.txt").read_text() == "2"
    tr = _trainer(tmp_path, method="grpo_ds", trainer={"steps": 3})
    assert tr.step_idx == 2  # resumed from the last good checkpoint
    tr.train()
    assert latest_checkpoint(ckpt_dir).name == "global_step_3"


def _poison(trainer, steps):
    """Make every gradient NaN during the optimizer steps of the given training steps (1-based)."""
    param = next(p for p in trainer.model.parameters() if p.requires_grad)

    def hook(grad):
        return torch.full_like(grad, float("nan")) if trainer.step_idx + 1 in steps else grad

    param.register_hook(hook)


def test_nan_gradient_skips_the_step(tmp_path):
    tr = _trainer(tmp_path, method="grpo_ds", trainer={"steps": 3})
    _poison(tr, {2})
    snapshots = []
    orig = tr.step

    def step():
        snapshots.append({n: p.detach().clone() for n, p in tr.model.named_parameters()})
        return orig()

    tr.step = step
    history = tr.train()
    assert [r["actor/skipped_optimizer_steps"] for r in history] == [0, 1, 0]
    assert history[-1]["actor/skipped_steps_total"] == 1
    after_step2 = snapshots[2]  # parameters at the start of step 3 = after the skipped step 2
    for n, p in snapshots[1].items():
        assert torch.equal(p, after_step2[n]), n  # nothing changed during the poisoned step
    assert all(math.isfinite(p.sum().item()) for p in tr.model.parameters())


def test_consecutive_nan_steps_abort_and_keep_the_last_checkpoint(tmp_path):
    tr = _trainer(tmp_path, method="grpo_ds",
                  trainer={"steps": 8, "save_every": 1, "max_consecutive_skips": 2})
    _poison(tr, {3, 4, 5, 6, 7, 8})
    with pytest.raises(TrainingAborted, match="2 consecutive steps .* last good checkpoint .*step 3"):
        tr.train()
    # step 3 was skipped and saved (its weights are step 2's); step 4 aborted before saving anything
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert latest_checkpoint(ckpt_dir).name == "global_step_3"
    assert json.loads((ckpt_dir / "global_step_3" / "trainer_state.json").read_text())["skipped_steps"] == 1
    from safetensors.torch import load_file

    w2, w3 = load_file(ckpt_dir / "global_step_2" / "model.safetensors"), load_file(ckpt_dir / "global_step_3" / "model.safetensors")
    assert all(torch.equal(w2[k], w3[k]) for k in w2)
    again = _trainer(tmp_path, method="grpo_ds", trainer={"steps": 3})
    assert again.step_idx == 3  # loadable


def test_fused_old_pass_gives_the_same_run(tmp_path):
    # one micro-batch holds the whole on-policy batch: the update's forward replaces the old pass
    extra = {"method": "stare_o1", "algorithm": {"micro_batch_size": 64, "params": {"target_entropy_ratio": 1.2}},
             "trainer": {"steps": 3}}
    fused = _trainer(tmp_path / "f", **extra).train()
    separate = _trainer(tmp_path / "s", **{**extra, "algorithm": {**extra["algorithm"], "fuse_old_pass": False}}).train()
    assert "timing_s/old_log_prob" not in fused[0] and "timing_s/old_log_prob" in separate[0]
    assert _deterministic(fused) == [{k: v for k, v in r.items() if k != "timing_s/old_log_prob"}
                                     for r in _deterministic(separate)]


def test_dr_grpo_divides_by_the_maximum_response_length(tmp_path):
    tr = _trainer(tmp_path, method="dr_grpo")
    assert tr.params.loss_scale_factor == 8.0  # rollout.max_new_tokens, not each batch's padded width
    tr = _trainer(tmp_path, method="dr_grpo", algorithm={"params": {"loss_scale_factor": 100.0}})
    assert tr.params.loss_scale_factor == 100.0

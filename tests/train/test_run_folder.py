"""Issue 15: the run folder and its files survive kills and belong to one run; resume honours or refuses
every change; a run that trains nothing stops. Each test failed on the code before the fix."""

import builtins
import io
import json

import pytest
import torch

from stare.env.base import Score
from stare.report.runs import read_metrics
from stare.train import checkpoint as ckpt_mod
from stare.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from stare.train.config import ConfigError, load_config
from stare.train.logging import MetricsLogger
from stare.train.trainer import Trainer, TrainingAborted

from conftest import ContainsOneTask, tiny_overrides

STOCHASTIC = ("timing_s/", "perf/")


def _trainer(tmp_path, **extra):
    return Trainer(load_config(None, tiny_overrides(tmp_path, **extra)), log=lambda m: None)


def _det(records):
    return [{k: v for k, v in r.items() if not k.startswith(STOCHASTIC)} for r in records]


# -- metrics.jsonl --------------------------------------------------------------------------------------


class SimulatedKill(BaseException):
    pass


def _kill_at_first_metrics_write(monkeypatch):
    """Any file whose name contains 'metrics.jsonl', opened for writing, 'dies' at its first write (the
    process would be killed there: whatever the open call truncated stays truncated)."""
    real_open = io.open

    class Dying:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise SimulatedKill()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "metrics.jsonl" in str(file) and any(c in mode for c in "wa"):
            return Dying(f)
        return f

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)


def test_a_kill_during_the_resume_rewrite_loses_no_metrics(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s * 0.5}) + "\n" for s in range(1, 5)))
    _kill_at_first_metrics_write(monkeypatch)
    with pytest.raises(SimulatedKill):
        MetricsLogger(tmp_path, tensorboard=False, resume_step=2)  # drops steps 3, 4 in place
    monkeypatch.undo()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]  # was empty: truncated, then killed
    MetricsLogger(tmp_path, tensorboard=False, resume_step=2).close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_a_torn_last_line_does_not_make_the_run_unresumable(tmp_path):
    extra = {"method": "grpo_ds", "trainer": {"steps": 3, "save_every": 2, "eval_every": 2}}
    full = _trainer(tmp_path / "a", **extra).train()
    _trainer(tmp_path / "b", **{**extra, "trainer": {"steps": 2, "save_every": 2, "eval_every": 2}}).train()
    metrics = tmp_path / "b" / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 3, "actor/entropy": 0.5')  # killed mid-append
    assert [r["step"] for r in read_metrics(metrics)] == [1, 2]  # the reader skips it
    _trainer(tmp_path / "b", **extra).train()  # raised JSONDecodeError before
    assert _det(read_metrics(metrics)) == _det(full)


def test_read_metrics_warns_about_a_bad_line_in_the_middle(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.warns(UserWarning, match="line 2 is not a JSON record"):
        assert [r["step"] for r in read_metrics(path)] == [1, 2]


# -- one run per folder ---------------------------------------------------------------------------------


def test_resume_false_into_a_used_folder_is_refused_and_changes_nothing(tmp_path):
    first = {"method": "grpo_ds", "trainer": {"steps": 4, "save_every": 2}}
    _trainer(tmp_path, **first).train()
    run = tmp_path / "run"
    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    other = _trainer(tmp_path, method="grpo_ds", seed=1, trainer={"steps": 2, "save_every": 2, "resume": False})
    with pytest.raises(ConfigError, match=r"already holds a run \(4 metric records, checkpoints 2, 4, seed 0\) "
                                          r"and trainer.resume is false.*--overwrite"):
        other.train()  # mixed the two runs before: its checkpoint 2 replaced the old one, 4 stayed
    after = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_overwrite_replaces_the_old_run_and_says_so(tmp_path):
    _trainer(tmp_path, method="grpo_ds", trainer={"steps": 4, "save_every": 2}).train()
    logs = []
    cfg = load_config(None, tiny_overrides(tmp_path, method="grpo_ds", seed=1,
                                           trainer={"steps": 2, "save_every": 2, "resume": False, "overwrite": True}))
    Trainer(cfg, log=logs.append).train()
    assert any("overwrite: removing the previous run" in m and "checkpoints 2, 4" in m for m in logs)
    ck = tmp_path / "run" / "checkpoints"
    assert [p.name for p in sorted(ck.glob("global_step_*"))] == ["global_step_2"]
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    again = _trainer(tmp_path, method="grpo_ds", seed=1, trainer={"steps": 2})
    assert again.step_idx == 2  # resumes the new run (seed 1), not the old run's step 4
    # --overwrite alone (trainer.resume keeps its default, true) replaces the run too: it does not resume it
    fresh = _trainer(tmp_path, method="grpo_ds", seed=2, trainer={"steps": 1, "overwrite": True})
    assert fresh.step_idx == 0 and not fresh.cfg.trainer.resume
    fresh.train()
    assert [p.name for p in sorted(ck.glob("global_step_*"))] == ["global_step_1"]


def test_resume_refuses_a_seed_or_model_it_cannot_honour(tmp_path):
    _trainer(tmp_path, method="grpo_ds", trainer={"steps": 2, "save_every": 2}).train()
    with pytest.raises(ConfigError, match=r"trainer.resume: .*cannot change seed \(seed 0 -> 1\)"):
        _trainer(tmp_path, method="grpo_ds", seed=1, trainer={"steps": 4})  # silently kept seed 0's state
    with pytest.raises(ConfigError, match=r"cannot change .*algorithm.objective"):
        _trainer(tmp_path, method="stare_o1", trainer={"steps": 4})
    _trainer(tmp_path, method="grpo_ds", trainer={"steps": 3, "eval_every": 3}).train()  # these apply


def test_resume_refuses_parameters_that_a_restored_controller_would_override(tmp_path):
    # STARE's controller state (its target, W and M) is restored from the checkpoint: a new W would be dropped
    _trainer(tmp_path, method="stare_o1", trainer={"steps": 2, "save_every": 2}).train()
    with pytest.raises(ConfigError, match=r"cannot change .*algorithm.params.reweight_w"):
        _trainer(tmp_path, method="stare_o1", trainer={"steps": 4}, algorithm={"params": {"reweight_w": 3.0}})
    # a method without a controller reads its parameters afresh: they apply
    other = tmp_path / "ppo"
    _trainer(other, method="grpo_ds", trainer={"steps": 2, "save_every": 2}).train()
    resumed = _trainer(other, method="grpo_ds", trainer={"steps": 3}, algorithm={"params": {"clip_ratio_high": 0.3}})
    assert resumed.step_idx == 2 and resumed.params.clip_ratio_high == 0.3


def test_resume_without_checkpoint_refuses_another_runs_folder(tmp_path):
    tr = _trainer(tmp_path, method="grpo_ds", trainer={"steps": 1, "save_every": 0})
    tr.save = lambda: None  # as if killed before its first checkpoint
    tr.train()
    with pytest.raises(ConfigError, match="holds another run .*seed 0 -> 2.* no checkpoint to resume"):
        _trainer(tmp_path, method="grpo_ds", seed=2, trainer={"steps": 1}).train()
    logs = []
    Trainer(load_config(None, tiny_overrides(tmp_path, method="grpo_ds", trainer={"steps": 1})), log=logs.append).train()
    assert any("starting this run over" in m for m in logs)


def test_a_learning_rate_given_at_resume_is_applied(tmp_path):
    _trainer(tmp_path, method="grpo_ds", optim={"lr": 1e-3}, trainer={"steps": 2, "save_every": 2}).train()
    logs = []
    tr = Trainer(load_config(None, tiny_overrides(tmp_path, method="grpo_ds", optim={"lr": 2e-4, "weight_decay": 0.1},
                                                  trainer={"steps": 3})), log=logs.append)
    assert [g["lr"] for g in tr.optimizer.param_groups] == [2e-4]  # the saved state brought 1e-3 back
    assert tr.optimizer.param_groups[0]["weight_decay"] == 0.1
    assert any("optim.lr 0.001 -> 0.0002" in m for m in logs)
    (rec,) = tr.train()
    assert rec["actor/lr"] == 2e-4


# -- checkpoints ----------------------------------------------------------------------------------------


def test_saving_a_step_again_never_deletes_it_before_the_new_one_is_in_place(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 2, model=model, optimizer=opt, scheduler=sched, trainer_state={"v": 1})
    real = ckpt_mod.os.replace

    def dying_replace(src, dst):
        if str(src).endswith(".tmp-global_step_2"):
            raise SimulatedKill()  # killed just before the new folder takes the name
        return real(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", dying_replace)
    with pytest.raises(SimulatedKill):
        save_checkpoint(root, 2, model=model, optimizer=opt, scheduler=sched, trainer_state={"v": 2})
    monkeypatch.undo()
    found = latest_checkpoint(root)  # None before: the old step 2 was deleted first
    assert found is not None
    assert load_checkpoint(found, model=model, optimizer=opt, scheduler=sched) == {"v": 1}
    save_checkpoint(root, 3, model=model, optimizer=opt, scheduler=sched, trainer_state={"v": 3})
    assert sorted(p.name for p in root.iterdir()) == ["global_step_2", "global_step_3",
                                                      "latest_checkpointed_iteration.txt"]


# -- a run that trains nothing --------------------------------------------------------------------------


class NeverRightTask(ContainsOneTask):
    """Every response is wrong, as for a diverged policy: no group ever has mixed outcomes."""

    def score(self, example, response):
        return Score(reward=0.0, acc=0.0)


def test_a_run_that_trains_nothing_stops_with_a_clear_message(tmp_path, monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "never_right", lambda cfg: NeverRightTask())
    extra = dict(method="grpo_ds", task={"name": "never_right"}, rollout={"max_gen_rounds": 1},
                 trainer={"steps": 6, "max_consecutive_skips": 3, "save_every": 1})
    tr = _trainer(tmp_path, **extra)
    with pytest.raises(TrainingAborted, match=r"3 steps in a row trained nothing \(up to step 3\): 3 found no group "
                                              r"with mixed outcomes after 1 rounds \(last: 0% of the groups all "
                                              r"correct, 100% all wrong; the policy fails every prompt"):
        tr.train()  # ran all 6 steps and exited normally before
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "global_step_2"
    # the count survives a resume: the records of steps 1-2 are idle, so one more idle step stops it
    tr = _trainer(tmp_path, **extra)
    assert tr.step_idx == 2
    with pytest.raises(TrainingAborted, match="up to step 3"):
        tr.train()


def test_numpy_is_seeded_with_the_others(tmp_path):
    # found by experiments/kill9.py: checkpoints store numpy's generator, which no run seeded, so two runs
    # with the same seed ended with different checkpoints
    import numpy as np

    _trainer(tmp_path / "a", method="grpo_ds")
    first = np.random.get_state()[1].copy()
    np.random.random(10)
    _trainer(tmp_path / "b", method="grpo_ds")
    assert (np.random.get_state()[1] == first).all()

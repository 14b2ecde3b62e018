"""The TRL plug-in end to end on the CPU: a locally built tiny model and tokenizer, TRL's own generation,
rewards, advantages, optimizer and checkpoints.

* STARE O1 and C2, STEER and Clip-Cov train a few steps: every parameter changes, the objective's own
  statistics are logged under TRL's names, and the gate's state moves.
* The controller survives a checkpoint round trip: a run resumed from ``checkpoint-1`` starts with the
  saved controller and ends with the state of the uninterrupted run.
* Two processes (``accelerate launch --num_processes 2``, gloo) with the global selection scope end
  with the weights of one process trained on the same batch (``two_process_trl.py``).
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("trl", reason="TRL is not installed: pip install -e '.[trl]'")

from stare.integrations.trl import CONTROLLER_FILE, StareGRPOConfig, StareGRPOTrainer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tiny_lm import count_yes, prompts_dataset, tiny_model, tiny_tokenizer  # noqa: E402


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_completion_length=6, num_generations=4, per_device_train_batch_size=4,
                gradient_accumulation_steps=2, max_steps=2, learning_rate=1e-2, report_to="none", use_cpu=True,
                logging_steps=1, save_strategy="no", seed=0, epsilon_high=0.28, dataloader_num_workers=0)
    base.update(kw)
    return StareGRPOConfig(**base)


def trainer(args, seed=0):
    tok = tiny_tokenizer()
    return StareGRPOTrainer(model=tiny_model(tok, seed), reward_funcs=count_yes, args=args,
                            train_dataset=prompts_dataset(), processing_class=tok)


RUNS = [
    ("stare", {"variant": "O1", "top_p_ratio": 0.3, "target_entropy": 100.0, "adaptive": True}, "stare/pos_reweighted_frac"),
    ("stare", {"variant": "C2", "top_p_ratio": 0.3, "target_entropy": 100.0}, "stare/neg_reweighted_frac"),
    ("steer", {"mapping": "linear"}, "steer/omega_abs_max"),
    ("clip_cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": -10.0, "clip_cov_ub": 10.0}, "clip_cov/detached_frac"),
]


@pytest.mark.parametrize("objective, params, stat", RUNS)
def test_end_to_end_every_parameter_changes(tmp_path, objective, params, stat):
    t = trainer(config(tmp_path, stare_objective=objective, stare_params=params))
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.train()
    unchanged = [n for n, p in t.model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, unchanged
    logs = [h for h in t.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert h[stat] > 0, (stat, h)  # the objective acted on some tokens
        assert 0 <= h["clip_ratio/region_mean"] <= 1 and h["entropy"] > 0
        assert h["policy_loss"] == pytest.approx(h["loss"], rel=1e-4, abs=1e-6)
    if objective == "stare":
        assert all(h["stare/gate_on"] == 1.0 for h in logs)
        if params.get("adaptive"):
            assert t.controller.reweight_w == pytest.approx(1.1 + 2 * 0.01)  # W ratchets up while below target


def test_controller_survives_checkpoint_round_trip(tmp_path):
    params = {"variant": "C2", "target_entropy": 100.0, "adaptive": True, "alpha": 0.05}
    full = trainer(config(tmp_path / "full", max_steps=3, save_strategy="steps", save_steps=1, stare_params=params))
    full.train()
    saved = {}
    for step in (1, 2, 3):
        saved[step] = torch.load(tmp_path / "full" / f"checkpoint-{step}" / CONTROLLER_FILE, weights_only=True)
    assert saved[1]["reweight_w"] == pytest.approx(1.15) and saved[3]["reweight_w"] == pytest.approx(1.25)
    assert full.controller.state_dict() == saved[3]

    resumed = trainer(config(tmp_path / "full", max_steps=3, save_strategy="no", stare_params=params), seed=1)
    seen = {}

    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            seen["begin"] = resumed.controller.state_dict()

    resumed.add_callback(Record())
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-1"))
    assert seen["begin"] == saved[1]  # restored before the first resumed step
    assert resumed.controller.state_dict()["reweight_w"] == pytest.approx(saved[3]["reweight_w"])
    assert resumed.controller.state_dict()["gate_on"] == saved[3]["gate_on"]


def test_refuses_options_it_would_ignore(tmp_path):
    with pytest.raises(ValueError, match="forking"):
        trainer(config(tmp_path, top_entropy_quantile=0.2))
    with pytest.raises(ValueError, match="steps_per_generation"):
        trainer(config(tmp_path, steps_per_generation=4))
    with pytest.raises(ValueError, match="Did you mean 'top_p_ratio'"):
        trainer(config(tmp_path, stare_params={"top_p": 0.2}))
    with pytest.raises(ValueError, match="GRPOConfig.epsilon_high"):
        trainer(config(tmp_path, stare_params={"clip_ratio_high": 0.3}))
    with pytest.raises(ValueError, match="GRPOConfig.beta"):
        trainer(config(tmp_path, stare_params={"kl_coef": 0.1}))


def test_a_method_defined_in_one_file_runs_unchanged(tmp_path):
    """A throwaway method with its own controller, registered here, trains through the plug-in as is."""
    import dataclasses

    from stare.objectives import ClipParams, ControllerState, Objective, Terms, register_objective, unregister_objective
    from stare.surrogate import clipped_surrogate, surrogate_stats

    @dataclasses.dataclass(frozen=True)
    class HalfParams(ClipParams):
        scale: float = 0.5

    @dataclasses.dataclass
    class Steps(ControllerState):
        params: HalfParams = dataclasses.field(default_factory=HalfParams)
        updates: int = 0

        def update(self, data):
            self.updates += 1

        def state(self):
            return {"updates": self.updates}

        def metrics(self):
            return {"half/updates": float(self.updates)}

    def half_terms(batch, view, p, state, plan):
        """Half: the clipped surrogate times a constant."""
        s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low,
                              p.clip_ratio_high, p.clip_ratio_c)
        return Terms(pg_loss=s.loss * p.scale, stats=surrogate_stats(s, batch.valid))

    register_objective(Objective("half_test", params=HalfParams, terms=half_terms, controller=Steps, acts_at=("WEIGHT",)))
    try:
        t = trainer(config(tmp_path, stare_objective="half_test"))
        t.train()
        logs = [h for h in t.state.log_history if "loss" in h]
        assert t.controller.updates == 2 and [h["half/updates"] for h in logs] == [1.0, 2.0]
    finally:
        unregister_objective("half_test")


def test_refuses_methods_that_need_the_trainer(tmp_path):
    from stare.objectives import Objective, register_objective, unregister_objective
    from stare.objectives.ppo import PPOParams, ppo_terms

    register_objective(Objective("branch_test", params=PPOParams, terms=ppo_terms, rollout=lambda *a: []))
    try:
        with pytest.raises(ValueError, match="only the stare trainer"):
            trainer(config(tmp_path, stare_objective="branch_test"))
    finally:
        unregister_objective("branch_test")


def test_two_processes_equal_one_process(tmp_path):
    """accelerate launch --num_processes 2 (gloo on the CPU), global scope: the same weights as one process."""
    pytest.importorskip("accelerate")
    script = os.path.join(HERE, "two_process_trl.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false")
    for procs in (1, 2):
        out = tmp_path / f"procs{procs}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(procs),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(29500 + procs + os.getpid() % 1000), script, str(out)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    one = torch.load(tmp_path / "procs1" / "weights.pt", weights_only=True)
    two = torch.load(tmp_path / "procs2" / "weights.pt", weights_only=True)
    init = torch.load(tmp_path / "procs1" / "initial.pt", weights_only=True)
    moved = 0
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-7, msg=name)
        moved += int(not torch.equal(one[name], init[name]))
    assert moved == len(one)  # every parameter trained, so equality is not vacuous
    with open(tmp_path / "procs2" / "selected.json") as f:
        two_sel = json.load(f)
    with open(tmp_path / "procs1" / "selected.json") as f:
        one_sel = json.load(f)
    assert one_sel["stare/pos_selected_frac"] > 0
    assert two_sel["stare/pos_selected_frac"] == pytest.approx(one_sel["stare/pos_selected_frac"], rel=1e-12)


def test_command_line_json_params(tmp_path):
    from trl import TrlParser

    (args,) = TrlParser((StareGRPOConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false", "--stare_objective", "stare",
         "--stare_params", '{"variant": "C2", "top_p_ratio": 0.2, "target_entropy": 0.5}',
         "--max_completion_length", "6", "--num_generations", "4", "--per_device_train_batch_size", "4",
         "--report_to", "none"])
    t = trainer(args)
    assert (t.objective_params.variant, t.objective_params.top_p_ratio) == ("C2", 0.2)
    assert t.controller.target_entropy == 0.5


# --- issue 13, part A: every loss-side method trains inside TRL (a smoke test: two steps, weights move)
PART_A = [("ar", {}), ("aepo_agentic_loss", {}), ("bapo", {}), ("aspo", {}), ("dppo", {}),
          ("one_shot_entropy", {"entropy_coeff": 0.01})]


@pytest.mark.parametrize("objective, params", PART_A)
def test_part_a_loss_side_methods_train(tmp_path, objective, params):
    t = trainer(config(tmp_path, stare_objective=objective, stare_params=params))
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, t.model.parameters()))
    assert all(math.isfinite(h["loss"]) for h in t.state.log_history if "loss" in h)


@pytest.mark.parametrize("objective", ["lp_reg", "siren", "lopti", "aepo_agentic"])
def test_part_a_trainer_only_methods_are_refused(tmp_path, objective):
    with pytest.raises(ValueError, match="only the stare trainer"):
        trainer(config(tmp_path, stare_objective=objective))
# --- Methods with step-level hooks (docs/methods.md §9.5-§9.7, §9.10, §10.7-§10.9): refused by name; HAPO's loss alone
# (``hapo_loss``: per-token clip bounds and advantage redistribution) trains inside TRL.


@pytest.mark.parametrize("objective", ["hapo", "empg", "gtpo", "grpo_s", "cure", "ttrl", "empo", "seed_grpo"])
def test_refuses_the_step_hook_methods_by_name(tmp_path, objective):
    with pytest.raises(ValueError, match=f"objective '{objective}' .* only the stare trainer"):
        trainer(config(tmp_path, stare_objective=objective))


def test_hapo_loss_trains(tmp_path):
    t = trainer(config(tmp_path, stare_objective="hapo_loss", stare_params={"signed_h": True}))
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.train()
    assert all(not torch.equal(p.detach(), before[n]) for n, p in t.model.named_parameters())
    logs = [h for h in t.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(0 < h["hapo/above_pivot_frac"] < 1 for h in logs)

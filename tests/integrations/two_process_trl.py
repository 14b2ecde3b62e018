"""Run by test_trl.py under ``accelerate launch --cpu --num_processes N`` (N = 1 or 2): two STARE-C2 steps
with the global selection scope on a fixed batch, then rank 0 saves the weights.

The batch is the same for any N: TRL's sampler hands the generation batch out in order (rank r holds
rows r*n .. r*n + n - 1), and the completions come from ``rollout_func`` (TRL's hook for custom
rollouts) as a fixed function of each row's global index and the step, not from sampling, whose random
stream would depend on N. Everything else (rewards, advantages, the old-log-prob pass, the gate, the
plan fitted over both ranks, the loss denominators, DDP's gradient averaging, the optimizer) is the
real code path. SGD keeps the update linear in the gradient, so rounding differences stay small.
"""

import json
import os
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny_lm import count_yes, prompts_dataset, tiny_model, tiny_tokenizer  # noqa: E402

from stare.integrations.trl import StareGRPOConfig, StareGRPOTrainer  # noqa: E402

out_dir = sys.argv[1]
calls = {"n": 0}


def fixed_rollouts(prompts, trainer):
    tok = trainer.processing_class
    first = trainer.accelerator.process_index * len(prompts)
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    completions = []
    for i in range(len(prompts)):
        g = torch.Generator().manual_seed(1000 * calls["n"] + first + i)
        length = int(torch.randint(2, 7, (1,), generator=g))
        ids = torch.randint(4, len(tok), (length,), generator=g).tolist()
        completions.append(ids[:-1] + [tok.eos_token_id] if length % 2 else ids)
    calls["n"] += 1
    return {"prompt_ids": prompt_ids, "completion_ids": completions, "logprobs": None}


def main():
    from accelerate import PartialState

    world = PartialState().num_processes
    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=0)
    args = StareGRPOConfig(
        output_dir=out_dir, max_completion_length=6, num_generations=4, per_device_train_batch_size=8 // world,
        gradient_accumulation_steps=1, max_steps=2, learning_rate=0.5, optim="sgd", report_to="none", use_cpu=True,
        logging_steps=1, save_strategy="no", seed=0, dataloader_num_workers=0, epsilon_high=0.28,
        stare_objective="stare", stare_params={"variant": "C2", "top_p_ratio": 0.2, "selection_scope": "global",
                                               "target_entropy": 100.0},
    )
    trainer = StareGRPOTrainer(model=model, reward_funcs=count_yes, args=args, train_dataset=prompts_dataset(16),
                               processing_class=tok, rollout_func=fixed_rollouts)
    initial = {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
    trainer.train()
    if trainer.accelerator.is_main_process:
        os.makedirs(out_dir, exist_ok=True)
        final = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        torch.save({k: v.detach().clone() for k, v in final.items()}, os.path.join(out_dir, "weights.pt"))
        torch.save(initial, os.path.join(out_dir, "initial.pt"))
        step1 = next(h for h in trainer.state.log_history if "loss" in h)
        with open(os.path.join(out_dir, "selected.json"), "w") as f:
            json.dump({"stare/pos_selected_frac": step1["stare/pos_selected_frac"]}, f)


if __name__ == "__main__":
    main()

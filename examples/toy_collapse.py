"""A seconds-long demonstration of the core API: entropy collapse under GRPO-ds and STARE's gate.

The "policy" is a table of logits, one softmax over V tokens per position (no model, no tokenizer), and
the verifiable reward is 1 when the sampled sequence's token sum is divisible by ``modulus``: many
distinct sequences are correct, so there is real exploration to lose. Each step samples G sequences for
each of P identical prompts, computes GRPO advantages, updates the table with ``policy_loss`` and
prints the batch entropy. GRPO-ds sharpens the table until entropy collapses; STARE-O1 with a target
entropy holds it near the target once the gate engages.

It uses exactly the pieces a trainer uses (``token_stats_from_logits``, ``grpo_advantages``,
``StareController``, ``policy_loss``), which is the point; the real trainer replaces it as ``stare demo``.
Run it with ``python examples/toy_collapse.py`` (seconds on a CPU).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from stare import (InertKnobWarning, PolicyBatch, StareController, StareParams, StepData, grpo_advantages, policy_loss,
                   token_stats_from_logits)


@dataclass
class ToyConfig:
    length: int = 6
    vocab: int = 8
    modulus: int = 4
    prompts: int = 8
    group: int = 8
    steps: int = 150
    lr: float = 0.3
    seed: int = 0


def run(method: str, cfg: ToyConfig, target_ratio: float = 0.5, reweight_w: float = 4.0) -> list[dict]:
    """Train the table with ``method`` in {"grpo_ds", "stare_o1"}; returns per-step metrics."""
    g = torch.Generator().manual_seed(cfg.seed)
    logits = torch.zeros(cfg.length, cfg.vocab, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=cfg.lr)
    n = cfg.prompts * cfg.group
    groups = torch.arange(cfg.prompts).repeat_interleave(cfg.group)
    controller = None
    history = []
    for step in range(cfg.steps):
        with torch.no_grad():
            probs = torch.softmax(logits, -1)
            tokens = torch.multinomial(probs.repeat(n, 1), 1, generator=g).view(n, cfg.length)
        reward = (tokens.sum(-1) % cfg.modulus == 0).float()
        z = logits.unsqueeze(0).expand(n, -1, -1)
        stats = token_stats_from_logits(z, tokens)
        mask = torch.ones(n, cfg.length)
        batch_entropy = stats.entropy.detach().mean().item()
        params = StareParams(top_p_ratio=0.1, reweight_w=reweight_w, target_entropy_ratio=target_ratio)
        if method == "stare_o1":
            if controller is None:
                controller = StareController(params)  # target: a ratio of the first step's entropy
            controller.update(StepData(batch_entropy=batch_entropy, step=step))
        adv = grpo_advantages(reward, groups)
        batch = PolicyBatch(stats.log_prob, adv, mask, entropy=stats.entropy)
        if method == "stare_o1":
            out = policy_loss("stare", batch, params, state=controller.state())
        else:
            out = policy_loss("ppo", batch, dict(clip_ratio_high=0.28, clip_ratio_c=10.0))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append({"step": step, "entropy": batch_entropy, "reward": reward.mean().item(),
                        "gate_on": bool(controller.gate_on) if controller else False})
    return history


def main(cfg: ToyConfig | None = None) -> dict[str, list[dict]]:
    cfg = cfg or ToyConfig()
    warnings.simplefilter("ignore", InertKnobWarning)
    runs = {m: run(m, cfg) for m in ("grpo_ds", "stare_o1")}
    print(f"toy policy: {cfg.length} positions x {cfg.vocab} tokens, reward = [sum % {cfg.modulus} == 0], "
          f"{cfg.prompts} prompts x {cfg.group} samples, lr {cfg.lr}, seed {cfg.seed}")
    print(f"{'step':>5} | {'GRPO-ds entropy':>15} {'reward':>6} | {'STARE-O1 entropy':>16} {'reward':>6} {'gate':>4}")
    for i in list(range(0, cfg.steps, max(1, cfg.steps // 10))) + [cfg.steps - 1]:
        a, b = runs["grpo_ds"][i], runs["stare_o1"][i]
        print(f"{i:>5} | {a['entropy']:>15.3f} {a['reward']:>6.2f} | {b['entropy']:>16.3f} {b['reward']:>6.2f} "
              f"{'on' if b['gate_on'] else 'off':>4}")
    return runs


if __name__ == "__main__":
    main()

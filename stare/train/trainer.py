"""The single-process GRPO-family trainer. Reads top to bottom: ``Trainer.train`` -> ``step``.

One training step (docs/methods.md §0, verl's order), each stage a method below:

 1. rollout      ``n`` responses per prompt (the method's rollout hook, or ``default_rollout``: KV cache,
                 temperature, top-p, tool episodes), scored by the task's verifier (or the method's group
                 reward); with dynamic sampling, groups whose outcomes do not vary are dropped and more
                 prompts generated, at most ``max_gen_rounds`` rounds (DAPO)
 2. old pass     old log-probs, per-token entropy at the rollout temperature, the method's logit
                 statistics, and the reference model's log-probs (``kl_coef > 0``)
 3. step data    rewards (+ the method's reward shaping), the default advantages, batch entropy
 4. controller   the method's controller updated from this step's data, read by this step's update
 5. advantages   the method's advantage hook, or the default (GRPO / Dr.GRPO / batch std)
 6. update       per pass of the method's schedule (one by default), epoch and mini-batch: one optimizer
                 step; micro-batches accumulate gradients with the mini-batch's exact token-mean
                 normaliser; global selection scope fits the objective's plan once per mini-batch. A
                 non-finite loss or gradient skips the optimizer step (counted, logged); K in a row abort,
                 the last checkpoint untouched.

On-policy (one pass, one mini-batch, one epoch) the ratio's denominator is the current log-prob, as verl
does, so ratio == 1; if the whole batch also fits one micro-batch, the old pass *is* the update's forward
(``fuse_old_pass``): it runs with gradients and the update reuses it, so the step makes one forward.
Any registered method runs by name with no code here that knows it; any Hugging Face causal LM runs (CPU
or CUDA, fp32/bf16, optional LoRA); the testbed builds its own tiny model.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..advantages import group_advantages
from ..checks import ConfigError
from ..env.base import Example, score_all, tool_env_of
from ..env.overlong import OverlongConfig
from ..lm import PackedBatch, pack, response_stats
from ..metrics import StatAccumulator
from ..objectives import PolicyBatch, RolloutRequest, StepData, fit_plan, get_objective, make_controller, make_params, policy_loss
from ..objectives.contract import split_metrics
from ..surrogate import LossNormalizer
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config
from .diagnostics import StepDiagnostics, reflection_stats, write_token_dump
from .evaluate import summarize_by_source
from .logging import MetricsLogger
from .models import load_model
from .rollout import TrainerSampler, default_rollout, make_backend
from .guards import IdleGuard, TrainingAborted
from .runfolder import claim_run_folder, reconcile_resume
from .validate import preflight, seed_numpy
from .tasks import encode_prompt, make_task

__all__ = ["OldPass", "StepBatch", "Trainer", "TrainingAborted"]


# --------------------------------------------------------------------------------------------- the batch


@dataclasses.dataclass
class StepBatch:
    """The training rows of one step, on the model's device, grouped by prompt."""

    packed: PackedBatch  # [B, P + T] contexts and responses; response tensors [B, T]
    examples: list[Example]
    group_ids: torch.Tensor  # [B]
    rewards: torch.Tensor  # [B] verifier (or group) reward, with overlong shaping
    acc: torch.Tensor  # [B] verifier accuracy
    truncated: torch.Tensor  # [B] bool
    texts: list[str]
    preds: list[str | None]  # the answers the verifier extracted
    aux: dict[str, torch.Tensor]  # [B, T] rollout extras: rollout_log_prob, segment_ids, hook values


@dataclasses.dataclass
class OldPass:
    """The pre-update policy's per-token statistics of a ``StepBatch``."""

    log_prob: torch.Tensor  # [B, T'] (T' <= T: fused passes are trimmed of all-padding columns)
    entropy: torch.Tensor  # [B, T']
    aux: dict[str, torch.Tensor]  # the method's logit statistics, [B, T'] (or [B, T', k])
    ref_log_prob: torch.Tensor | None  # the reference model's log-probs (kl_coef > 0)
    live: Any = None  # fused: the forward with its graph, which the update consumes once


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
        r, rw = cfg.rollout, cfg.reward
        self.overlong = OverlongConfig(max_len=r.max_new_tokens, cache_len=rw.overlong_buffer or max(1, r.max_new_tokens // 5),
                                       penalty_factor=rw.overlong_penalty, soft_punishment=rw.overlong_shaping,
                                       mask_truncated=rw.mask_truncated)
        # the method: its parameters, controller and hooks (stare.objectives)
        self.objective = get_objective(cfg.algorithm.objective)
        self.params = make_params(self.objective, cfg.algorithm.params)
        if self.params.loss_agg_mode == "seq-mean-token-sum-norm" and self.params.loss_scale_factor is None:
            # Dr.GRPO's constant C is the maximum response length, not the padded length of each batch
            self.params = dataclasses.replace(self.params, loss_scale_factor=float(cfg.rollout.max_new_tokens))
        self.controller = make_controller(self.objective, self.params)
        self.needs_entropy = bool(self.objective.needs & {"entropy", "entropy_grad"})
        self.logit_stats = self.objective.logit_stats(self.params) if self.objective.logit_stats else {}
        self.train_stats = self.objective.train_stats(self.params) if self.objective.train_stats else {}
        self.passes = list(self.objective.schedule(self.params)) if self.objective.schedule else [{}]
        # the KL term's reference: the initial policy (with LoRA, the base model with adapters disabled)
        self.reference = None
        if self.params.kl_coef > 0 and not cfg.model.lora.enabled:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)

        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.trainable, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        warm = o.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)

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
            self.resume_step = self.step_idx
            reconcile_resume(self.run_dir, cfg, self.optimizer, self.scheduler, step=self.step_idx, log=log)
            if self.controller is not None:
                if state.get("controller") is None:
                    raise ConfigError(f"{ckpt} holds no controller state, but '{self.objective.name}' has a controller: "
                                      "was this run folder written by another method? Use a new output_dir.")
                self.controller.load_state_dict(state["controller"])
            log(f"resumed from {ckpt.name} (step {self.step_idx})")
        # the rollout engine, built with the (resumed) weights
        self.backend = make_backend(cfg, self.model, self.tokenizer)
        self.sampler = TrainerSampler(self.backend, tool_env_of(self.task))

    # ----------------------------------------------------------------------------------------- helpers

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

    def _state(self) -> dict:
        return {} if self.controller is None else self.controller.state()

    def _sample(self, examples: list[Example], n: int, temperature: float, top_p: float, hook=None):
        """(prompt ids, rows, scores): ``n`` responses per example from ``hook`` (default: n episodes each)."""
        prompt_ids = [encode_prompt(self.tokenizer, e, self.cfg.model.chat_template) for e in examples]
        request = RolloutRequest(examples, prompt_ids, n, self.cfg.rollout.max_new_tokens, temperature, top_p)
        rows = (hook or default_rollout)(request, self.sampler, self.params, self._state())
        scores = score_all(self.task, [examples[r.prompt_index] for r in rows], [r.text for r in rows])
        return prompt_ids, rows, scores

    # ------------------------------------------------------------------------------------------ 1. rollout

    def rollout(self) -> tuple[StepBatch | None, dict[str, float]]:
        """Sample and score until ``prompts_per_step`` prompts have a kept group (all groups a rollout hook
        made for a kept prompt ride along); with dynamic sampling a group whose outcomes do not vary is
        dropped."""
        r = self.cfg.rollout
        obj = self.objective
        groups: list[list[tuple]] = []  # kept groups: [(example, context ids, row, score, reward)]
        owners: list[tuple[int, int]] = []  # (round, prompt index) of each kept group
        rounds, generated, prompts_seen, all_solved, none_solved = 0, 0, 0, 0, 0
        while len(set(owners)) < r.prompts_per_step:
            if r.max_gen_rounds > 0 and rounds >= r.max_gen_rounds:
                break
            rounds += 1
            kept = len(set(owners))
            if not r.dynamic_sampling:
                per_round = r.prompts_per_step
            elif r.gen_prompts_per_round:  # DAPO: a fixed generation batch per round
                per_round = r.gen_prompts_per_round
            else:  # just enough for the shortfall at the observed share of kept prompts (this step's, else the last)
                rate = kept / prompts_seen if prompts_seen else self.keep_rate
                per_round = math.ceil((r.prompts_per_step - kept) / max(rate, 0.05))
            examples = self._next_examples(per_round)
            prompts_seen += len(examples)
            prompt_ids, rows, scores = self._sample(examples, r.n, r.temperature, r.top_p, obj.rollout)
            by_group: dict[int, list[int]] = {}  # group -> its rows, groups in order of first appearance
            for j, row in enumerate(rows):
                by_group.setdefault(row.prompt_index if row.group is None else row.group, []).append(j)
            for members in by_group.values():
                accs = [scores[j].acc for j in members]
                rewards = [scores[j].reward for j in members]
                if obj.group_rewards is not None:  # unsupervised: rewards from the group's own answers
                    rewards = [float(x) for x in obj.group_rewards([scores[j].pred for j in members],
                                                                   [rows[j].text for j in members], self.params)]
                generated += 1
                all_solved += all(a == 1 for a in accs)
                none_solved += all(a == 0 for a in accs)
                outcome = rewards if obj.group_rewards is not None else accs
                if r.dynamic_sampling and len(members) > 1 and len(set(outcome)) == 1:
                    continue
                first = rows[members[0]].prompt_index
                groups.append([(examples[rows[j].prompt_index], rows[j].context_ids or prompt_ids[rows[j].prompt_index],
                                rows[j], scores[j], reward) for j, reward in zip(members, rewards)])
                owners.append((rounds, first))
        if prompts_seen:
            self.keep_rate = len(set(owners)) / prompts_seen
        chosen = list(dict.fromkeys(owners))[: r.prompts_per_step]
        groups = [g for g, o in zip(groups, owners) if o in set(chosen)]
        metrics = {"batch/gen_rounds": rounds, "batch/kept_groups": len(groups), "batch/gen_prompts": prompts_seen,
                   "batch/full_solve_ratio": all_solved / max(generated, 1),
                   "batch/zero_solve_ratio": none_solved / max(generated, 1)}
        if not groups:
            return None, metrics
        return self._batch(groups), metrics

    def _batch(self, groups: list[list[tuple]]) -> StepBatch:
        """Pack kept groups into a ``StepBatch``: overlong shaping, loss masks, rollout extras as [B, T]."""
        contexts, responses, loss_masks, examples, gids, rewards, accs, truncs, texts, preds = ([] for _ in range(10))
        rows = []
        for g, members in enumerate(groups):
            for ex, context, row, score, reward in members:
                shaped, keep = self.overlong.shape(reward, len(row.response_ids), row.truncated)
                mask = row.loss_mask if row.loss_mask is not None else [1] * len(row.response_ids)
                contexts.append(context)
                responses.append(row.response_ids)
                loss_masks.append([int(m * keep) for m in mask])
                examples.append(ex)
                gids.append(g)
                rewards.append(shaped)
                accs.append(score.acc)
                truncs.append(row.truncated)
                texts.append(row.text)
                preds.append(score.pred)
                rows.append(row)
        packed = pack(contexts, responses, self.tokenizer.pad_token_id, loss_masks, device=self.device)
        return StepBatch(packed, examples, torch.tensor(gids), torch.tensor(rewards, dtype=torch.float32),
                         torch.tensor(accs, dtype=torch.float32), torch.tensor(truncs), texts, preds,
                         _rollout_aux(rows, packed.response_ids.shape, self.device))

    # ----------------------------------------------------------------------------------------- 2. old pass

    def old_pass(self, packed: PackedBatch, fused: bool) -> OldPass:
        """The pre-update policy's log-probs, entropies and logit statistics (+ the reference's log-probs).

        ``fused``: one forward with gradients over the whole batch, kept for the update (``OldPass.live``);
        otherwise a no-grad pass in micro-batches."""
        ref = self._reference_log_prob(packed) if self.params.kl_coef > 0 else None
        temperature = self.cfg.rollout.temperature
        if fused:
            self.model.train()
            sub = packed.rows(torch.arange(packed.response_ids.shape[0]))
            live = response_stats(self.model, sub, temperature, with_entropy=True, logit_stats=self.logit_stats,
                                  train_stats=self.train_stats)
            aux = {k: v.detach() for k, v in live.extra.items() if k in self.logit_stats}
            return OldPass(live.log_prob.detach(), live.entropy.detach(), aux, ref, live)
        mb = self.cfg.algorithm.micro_batch_size
        b, t = packed.response_ids.shape
        logp = torch.zeros(b, t, device=self.device)
        ent = torch.zeros(b, t, device=self.device)
        aux: dict[str, torch.Tensor] = {}
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            for s in range(0, b, mb):
                rows = torch.arange(s, min(b, s + mb))
                sub = packed.rows(rows)
                st = response_stats(self.model, sub, temperature, logit_stats=self.logit_stats)
                w = sub.response_ids.shape[1]
                logp[rows, :w] = st.log_prob
                ent[rows, :w] = st.entropy
                for name, value in st.extra.items():
                    if name not in aux:
                        aux[name] = torch.zeros((b, t, *value.shape[2:]), dtype=value.dtype, device=self.device)
                    aux[name][rows, :w] = value
        self.model.train(was)
        return OldPass(logp, ent, aux, ref)

    @torch.no_grad()
    def _reference_log_prob(self, packed: PackedBatch) -> torch.Tensor:
        """Log-probs of the reference model (the initial policy), [B, T], micro-batched."""
        mb = self.cfg.algorithm.micro_batch_size
        b, t = packed.response_ids.shape
        out = torch.zeros(b, t, device=self.device)
        was = self.model.training
        self.model.eval()
        for s in range(0, b, mb):
            rows = torch.arange(s, min(b, s + mb))
            sub = packed.rows(rows)
            if self.reference is not None:
                st = response_stats(self.reference, sub, self.cfg.rollout.temperature, with_entropy=False)
            else:  # LoRA: the base model is the model with its adapters switched off
                with self.model.disable_adapter():
                    st = response_stats(self.model, sub, self.cfg.rollout.temperature, with_entropy=False)
            out[rows, : sub.response_ids.shape[1]] = st.log_prob
        self.model.train(was)
        return out

    # ---------------------------------------------------------------------------------------------- step

    def step(self) -> dict[str, Any]:
        cfg, alg, obj = self.cfg, self.cfg.algorithm, self.objective
        t0 = time.perf_counter()

        # 1. rollout
        batch, metrics = self.rollout()
        metrics["timing_s/rollout"] = time.perf_counter() - t0
        if batch is None:
            self.log(f"step {self.step_idx + 1}: no group with mixed outcomes after "
                     f"{metrics['batch/gen_rounds']} rounds; no update this step")
            metrics["actor/skipped_no_signal"] = 1
            return metrics
        packed, mask = batch.packed, batch.packed.response_mask

        # 2. old pass (fused into the update's forward when on-policy and the batch is one micro-batch)
        on_policy = alg.mini_batches == 1 and alg.ppo_epochs == 1 and len(self.passes) == 1
        fused = alg.fuse_old_pass and on_policy and packed.response_ids.shape[0] <= alg.micro_batch_size
        t1 = time.perf_counter()
        old = self.old_pass(packed, fused)
        if not fused:
            metrics["timing_s/old_log_prob"] = time.perf_counter() - t1

        # 3. step data: rewards (and the method's shaping), default advantages, batch entropy
        m = mask[:, : old.entropy.shape[1]]
        data = StepData(
            batch_entropy=float((old.entropy * m).sum() / m.sum().clamp(min=1)), step=self.step_idx, seed=cfg.seed,
            rewards=batch.rewards, acc=batch.acc, group_ids=batch.group_ids, mask=m, old_log_prob=old.log_prob,
            old_entropy=old.entropy, advantages=self.default_advantages(batch.rewards, batch.group_ids),
            aux={**_trim(batch.aux, m.shape[1]), **old.aux}, texts=batch.texts, preds=batch.preds)
        if obj.shape_rewards is not None:
            rewards, shaping_metrics = split_metrics(obj.shape_rewards(data, self.params, self._state()))
            rewards = rewards.detach().to(torch.float32).cpu()
            data = dataclasses.replace(data, rewards=rewards, advantages=self.default_advantages(rewards, batch.group_ids))
            metrics.update(shaping_metrics)
        metrics["actor/entropy"] = data.batch_entropy

        # 4. controller, same step
        if self.controller is not None:
            self.controller.update(data)
        state = self._state()

        # 5. advantages (and what the method reports about its step)
        adv = data.advantages
        if obj.advantages is not None:
            adv, advantage_metrics = split_metrics(obj.advantages(data, self.params, state))
            adv = adv.to(self.device)
            metrics.update(advantage_metrics)
        if obj.step_metrics is not None:
            metrics.update(obj.step_metrics(dataclasses.replace(data, advantages=adv), self.params, state))

        # diagnostics (off by default): sensitivity and quadrants before the update, realised change after
        d = cfg.diagnostics
        diag = None
        if d.enabled:
            t3 = time.perf_counter()
            diag = StepDiagnostics(self.model, packed, torch.arange(min(d.rows, packed.response_ids.shape[0])), adv,
                                   cfg.rollout.temperature, params=self.trainable if d.param_space else ())
            t_diag = time.perf_counter() - t3

        # 6. update
        t2 = time.perf_counter()
        update = self.update(batch, adv, old, state, on_policy, diag)
        self.backend.sync_weights(self.model)  # a separate rollout engine takes the updated weights
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
        rewards = data.rewards
        metrics.update({
            "critic/score/mean": float(rewards.mean()),
            "critic/acc/mean": float(batch.acc.mean()),
            "critic/advantages/mean": float(adv.mean()),
            "critic/advantages/max": float(adv.max()),
            "critic/advantages/min": float(adv.min()),
            "response_length/mean": float(lengths.float().mean()),
            "response_length/max": float(lengths.max()),
            "response_length/clip_ratio": float(batch.truncated.float().mean()),
            "perf/tokens_per_s": float(mask.sum()) / max(metrics["timing_s/step"], 1e-9),
            **_rollout_mismatch(data),
            **update,
        })
        if self.controller is not None:
            metrics.update(self.controller.metrics())
        return metrics

    def default_advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        """GRPO / Dr.GRPO / batch-std advantages per the config's ``algorithm.advantage``, [B]."""
        a = self.cfg.algorithm.advantage
        return group_advantages(rewards, group_ids, norm_by_std=a.norm_by_std, std_scope=a.std_scope,
                                eps=a.eps).to(self.device)

    def update(self, batch: StepBatch, adv: torch.Tensor, old: OldPass, state: dict, on_policy: bool,
               diag: StepDiagnostics | None = None) -> dict[str, float]:
        """Passes x epochs x mini-batches of optimizer steps from the old pass's statistics and ``state``.
        The fused forward (``old.live``) serves the first micro-batch instead of a new forward."""
        alg = self.cfg.algorithm
        packed = batch.packed
        b = packed.response_ids.shape[0]
        scope_global = self.params.selection_scope == "global"
        mini_size = math.ceil(b / alg.mini_batches)
        live = old.live
        acc = StatAccumulator()
        totals = {"loss": 0.0, "grad_norm": [], "skipped": 0, "optimizer_steps": 0, "extra": {}}
        self.model.train()
        for overlay in self.passes:
            pass_state = {**state, **overlay}
            for epoch in range(alg.ppo_epochs):
                for m0 in range(0, b, mini_size):
                    mini_rows = torch.arange(m0, min(b, m0 + mini_size))
                    micro_rows = [mini_rows[i: i + alg.micro_batch_size] for i in range(0, len(mini_rows), alg.micro_batch_size)]
                    norm = LossNormalizer.from_masks(*[packed.response_mask[r] for r in micro_rows])
                    plan = None
                    if scope_global:
                        mini = packed.rows(mini_rows)
                        w = min(mini.response_ids.shape[1], old.log_prob.shape[1])
                        old_lp = old.log_prob[mini_rows, :w]
                        plan = fit_plan(self.objective, PolicyBatch(
                            old_lp, _rows(adv, mini_rows, w), mini.response_mask[:, :w], old_log_prob=old_lp,
                            old_entropy=old.entropy[mini_rows, :w], row_ids=mini_rows,
                            aux=_aux_rows(batch.aux, old.aux, mini_rows, w)), self.params, state=pass_state)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss_sum = 0.0
                    for rows in micro_rows:
                        sub = packed.rows(rows)
                        if live is not None:
                            st, live = live, None
                        else:
                            st = response_stats(self.model, sub, self.cfg.rollout.temperature,
                                                with_entropy=self.needs_entropy, train_stats=self.train_stats)
                        w = st.log_prob.shape[1]
                        pb = PolicyBatch(st.log_prob, _rows(adv, rows, w), sub.response_mask, old_log_prob=old.log_prob[rows, :w],
                                         entropy=st.entropy, old_entropy=old.entropy[rows, :w], on_policy=on_policy,
                                         row_ids=rows,
                                         ref_log_prob=None if old.ref_log_prob is None else old.ref_log_prob[rows, :w],
                                         aux={**_aux_rows(batch.aux, old.aux, rows, w),
                                              **{k: st.extra[k] for k in self.train_stats}})
                        out = policy_loss(self.objective, pb, self.params, state=pass_state, plan=plan, normalizer=norm,
                                          validate=False)
                        out.loss.backward()
                        if diag is not None and epoch == 0:
                            diag.record_weights(rows, out.weights)
                        loss_sum += float(out.loss.detach())
                        acc.add(out.stats)
                        for k, v in out.extra_losses.items():
                            totals["extra"][k] = totals["extra"].get(k, 0.0) + float(v.detach())
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.grad_clip))
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
        out.update({f"actor/{k}": v for k, v in totals["extra"].items()})
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
        _, rows, scores = self._sample(examples, t.eval_n, t.eval_temperature, t.eval_top_p)
        torch.set_rng_state(state)
        per_prompt = [[] for _ in examples]
        for row, sc in zip(rows, scores):
            per_prompt[row.prompt_index].append(sc.acc)
        sources = [ex.source for ex in examples]
        out = {f"val/{k}": v for k, v in summarize_by_source(per_prompt, sources).items()}
        out["val/response_length/mean"] = sum(len(r.response_ids) for r in rows) / len(rows)
        return out

    # -------------------------------------------------------------------------------------------- train

    def save(self) -> Path:
        state = {"step": self.step_idx, "data_pos": self.data_pos, "skipped_steps": self.skipped_steps,
                 "consecutive_skips": self.consecutive_skips, "keep_rate": self.keep_rate}
        return save_checkpoint(self.ckpt_dir, self.step_idx, model=self.model, optimizer=self.optimizer,
                               scheduler=self.scheduler, trainer_state=state, keep_last=self.cfg.trainer.keep_last,
                               controller_state=None if self.controller is None else self.controller.state_dict())

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
            if t.export != "none" and self.step_idx == t.steps:
                from .export import export_run

                export_run(self.run_dir, adapter=t.export == "adapter", log=self.log)
        finally:
            self.logger.close()
        return history

    def _last_saved(self):
        ck = latest_checkpoint(self.ckpt_dir)
        return None if ck is None else int(ck.name.rsplit("_", 1)[1])


# ------------------------------------------------------------------------------------------- helpers


def _rollout_aux(rows, shape: tuple[int, int], device) -> dict[str, torch.Tensor]:
    """The rows' sampler log-probs, per-token and per-row values as [B, T] tensors (0 on padding)."""
    b, t = shape
    names = set()
    for row in rows:
        names.update(row.token_values)
        names.update(row.row_values)
    if all(row.log_probs is not None for row in rows):
        names.add("rollout_log_prob")
    out = {}
    for name in sorted(names):
        x = torch.zeros(b, t)
        for i, row in enumerate(rows):
            n = len(row.response_ids)
            if name == "rollout_log_prob":
                x[i, :n] = torch.tensor(row.log_probs[:n], dtype=torch.float32)
            elif name in row.token_values:
                x[i, :n] = torch.tensor(row.token_values[name][:n], dtype=torch.float32)
            elif name in row.row_values:
                x[i, :n] = float(row.row_values[name])
        out[name] = x.to(device)
    return out


def _rows(adv: torch.Tensor, rows: torch.Tensor, width: int) -> torch.Tensor:
    """Advantages of ``rows``: [B] per sequence, or [B, T] per token cut to the micro-batch's width."""
    return adv[rows] if adv.dim() == 1 else adv[rows, :width]


def _trim(aux: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    return {k: v[:, :width] for k, v in aux.items()}


def _aux_rows(rollout_aux: dict, old_aux: dict, rows: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
    """The ``aux`` inputs of a micro- or mini-batch: rollout extras and old-pass statistics of ``rows``."""
    return {k: v[rows, :width] for k, v in {**rollout_aux, **old_aux}.items()}


def _rollout_mismatch(data: StepData) -> dict[str, float]:
    """How far the sampler's probabilities are from the old pass's (verl's rollout-probs metrics)."""
    if "rollout_log_prob" not in data.aux:
        return {}
    m = data.mask.bool()
    if not bool(m.any()):
        return {}
    diff = (data.aux["rollout_log_prob"].exp() - data.old_log_prob.exp()).abs()[m]
    return {"training/rollout_probs_diff_mean": float(diff.mean()), "training/rollout_probs_diff_max": float(diff.max())}

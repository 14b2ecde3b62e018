"""TRL plug-in: ``StareGRPOTrainer``, a ``trl.GRPOTrainer`` that computes its loss with any loss-side
objective of ``stare.objectives`` and runs the method's controller (STARE's entropy gate, ...), saved with
each checkpoint.

TRL has no loss registry (docs/methods.md §E.2); the supported extension is a subclass that overrides
``_compute_loss``. This one keeps TRL's generation, rewards, advantages, batching, logging and
checkpointing, and changes three things:

1. After TRL has generated and scored a generation batch, ``_generate_and_score_completions`` runs one
   no-grad forward of the pre-update policy over it (the "old log-prob pass" of verl and of the STARE
   reference code) to get per-token log-probs and entropies. From them it takes the batch entropy (a
   token-weighted mean over all ranks), updates the method's controller (same step, no lag), fits the
   selection plan when ``selection_scope="global"`` (over the generation batch of every rank), and fixes
   the loss denominators of the optimizer step (``LossNormalizer``).
2. ``_compute_loss`` builds a ``PolicyBatch`` from TRL's tensors and returns ``stare.policy_loss``.
3. ``_save_checkpoint`` writes the controller to ``stare_controller.pt`` in the checkpoint folder and
   ``_load_optimizer_and_scheduler`` reads it back (as TRL keeps its own ``entropy_ctrl_state.json``).

Where it deviates from TRL's own behaviour:

* The clip bounds are TRL's ``epsilon`` / ``epsilon_high``; dual clip, which TRL lacks, is the
  objective's ``clip_ratio_c`` (STARE, STEER, STAPO, 80/20: 10, as their recipes).
* ``loss_type`` maps onto our aggregation modes: ``dapo`` and ``bnpo`` -> ``token-mean``, ``grpo`` ->
  ``seq-mean-token-mean``, ``dr_grpo`` -> ``seq-mean-token-sum-norm`` with C = ``max_completion_length``.
  The denominators are those of the whole optimizer step on all ranks (TRL's ``grpo``, ``bnpo`` and
  ``dr_grpo`` normalise each micro-batch by its own size). Other loss types are rejected.
* One extra forward per generation batch (the old log-prob pass) that TRL skips on-policy.
* TRL's KL term (``beta``, k3 estimator against its reference model) is the objective's ``kl_coef`` with
  ``kl_estimator="k3"``, aggregated with the step's denominators like the policy loss.
* The batch entropy that drives the gate is the token-weighted mean of the old pass; TRL's adaptive
  entropy coefficient uses the previous step's (docs/methods.md §E.3).
* Options whose effect lives inside TRL's own loss are refused with an error that names the objective
  to use instead: ``top_entropy_quantile`` (``forking``), ``entropy_coef`` / ``use_adaptive_entropy``
  (``entropy_bonus``), ``importance_sampling_level="sequence"`` (``gspo``), ``delta``,
  ``off_policy_mask_threshold`` and vLLM importance-sampling correction. Multimodal inputs are not
  supported. ``steps_per_generation`` must equal ``gradient_accumulation_steps`` (TRL's default), so
  that one generation batch is one optimizer step and the global scope and the denominators are exact.

Metric names follow TRL's flat convention (see ``TRL_METRIC_NAMES``); they are logged once per
optimizer step from statistics merged over every micro-batch and rank (token-weighted, not a mean of
means).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from trl import GRPOConfig, GRPOTrainer

from ..metrics import Stat, StatAccumulator, mean_stat
from ..objectives import PolicyBatch, StepData, fit_plan, load_controller, make_controller, policy_loss, save_controller
from ..surrogate import LossNormalizer
from . import CONTROLLER_FILE, as_mapping, build_params, check_loss_side

__all__ = ["StareGRPOConfig", "StareGRPOTrainer", "TRL_METRIC_NAMES", "trl_metric_name", "CONTROLLER_FILE"]

#: Our raw statistic names -> TRL's flat keys. Names not listed keep their own (``stare/...``,
#: ``quadrant/...``, ``clip_cov/...``): TRL has no counterpart, and they already carry a namespace.
#: ``entropy/mean`` (the entropy the selection read) is dropped: TRL's ``entropy`` (current forward) and
#: ``stare/batch_entropy`` (old pass) are logged instead.
TRL_METRIC_NAMES: dict[str, str | None] = {
    "entropy/mean": None,
    # verl's pg_clipfrac counts tokens whose clipped branch is active: A > 0 with r > 1 + eps_high or
    # A < 0 with r < 1 - eps_low, which is exactly TRL's clip_ratio/region_mean.
    "pg_clipfrac": "clip_ratio/region_mean",
    "pg_clipfrac_lower": "clip_ratio/dual_clip_mean",
    "ppo_kl": "ppo_kl",
    "kl_loss": "kl",
    "surprisal/mean": "surprisal",
    "weight/mean": "token_weight/mean",
    "weight/min": "token_weight/min",
    "weight/max": "token_weight/max",
}

_LOSS_TYPES = {"dapo": "token-mean", "bnpo": "token-mean", "grpo": "seq-mean-token-mean",
               "dr_grpo": "seq-mean-token-sum-norm"}


def trl_metric_name(raw: str) -> str | None:
    """TRL's name for one of our statistics (None: not logged)."""
    return TRL_METRIC_NAMES.get(raw, raw)


@dataclass
class StareGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the objective and its parameters, its controller's included (settable from a YAML
    file or the command line; a dict may be given as a JSON string)."""

    stare_objective: str = field(
        default="stare",
        metadata={"help": "Objective of stare.objectives (`stare objectives` lists them): stare, steer, stapo, "
                          "clip_cov, kl_cov, forking, ppo, gspo, entropy_bonus, entroadv."},
    )
    stare_params: dict | str | None = field(
        default=None,
        metadata={"help": "The objective's parameters (JSON object), e.g. {\"variant\": \"C2\", \"target_entropy\": "
                          "0.3}; for STARE they include the gate (target_entropy 0.3, adaptive false, alpha 0.01, w_max "
                          "1.5, m_min 0.5; hp-luo/STARE, docs/methods.md §3.5). Clip bounds, aggregation and the KL "
                          "term come from epsilon, epsilon_high, loss_type and beta."},
    )


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(f"StareGRPOTrainer: {message}")


class StareGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose loss is ``stare.policy_loss`` with the configured objective (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        if not isinstance(a, StareGRPOConfig):
            raise TypeError(f"StareGRPOTrainer needs args=StareGRPOConfig(...), got {type(a).__name__}")
        _refuse(a.loss_type not in _LOSS_TYPES,
                f"loss_type '{a.loss_type}' is not supported; valid: {', '.join(sorted(_LOSS_TYPES))}")
        _refuse(a.steps_per_generation != a.gradient_accumulation_steps,
                f"steps_per_generation ({a.steps_per_generation}) must equal gradient_accumulation_steps "
                f"({a.gradient_accumulation_steps}): one generation batch per optimizer step")
        _refuse(a.top_entropy_quantile < 1.0, "top_entropy_quantile is TRL's 80/20 mask; use stare_objective='forking'")
        _refuse(a.entropy_coef != 0.0 or a.use_adaptive_entropy,
                "entropy_coef / use_adaptive_entropy are TRL's entropy bonus; use stare_objective='entropy_bonus'")
        _refuse(a.importance_sampling_level != "token",
                "importance_sampling_level='sequence' is GSPO; use stare_objective='gspo'")
        _refuse(a.delta is not None, "delta (two-sided clipping) is not supported")
        _refuse(a.off_policy_mask_threshold is not None, "off_policy_mask_threshold is not supported")
        _refuse(a.use_vllm and a.vllm_importance_sampling_correction,
                "vLLM importance-sampling correction is not supported; set vllm_importance_sampling_correction=False")

        self.objective = check_loss_side(a.stare_objective, "TRL")
        mode = _LOSS_TYPES[a.loss_type]
        owned = {"clip_ratio_low": self.epsilon_low, "clip_ratio_high": self.epsilon_high, "loss_agg_mode": mode,
                 "kl_coef": float(self.beta), "kl_estimator": "k3"}
        where = {"clip_ratio_low": "GRPOConfig.epsilon", "clip_ratio_high": "GRPOConfig.epsilon_high",
                 "loss_agg_mode": "GRPOConfig.loss_type", "loss_scale_factor": "GRPOConfig.max_completion_length",
                 "kl_coef": "GRPOConfig.beta", "kl_estimator": "GRPOConfig.beta (TRL's k3 estimator)"}
        if a.loss_type == "dr_grpo":
            owned["loss_scale_factor"] = float(a.max_completion_length)
        self.objective_params = build_params(self.objective.name, as_mapping(a.stare_params, "stare_params"),
                                             owned, where)
        self.controller = make_controller(self.objective, self.objective_params)
        self._stare_plan: Any = None
        self._stare_normalizer: LossNormalizer | None = None
        self._stare_state: dict = {}
        self._stare_stats = StatAccumulator()

    # ------------------------------------------------------------------------------------ old pass

    def _distributed(self) -> bool:
        return self.accelerator.num_processes > 1 and dist.is_available() and dist.is_initialized()

    def _controller_state(self) -> dict:
        return {} if self.controller is None else self.controller.state()

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        if "pixel_values" in output:
            raise NotImplementedError("StareGRPOTrainer does not support multimodal inputs")
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attn = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        with torch.no_grad():
            old_lp, old_ent, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, attn, output["completion_ids"].size(1),
                batch_size=self.args.per_device_train_batch_size, compute_entropy=True,
            )
        n_local = mask.shape[0]
        rows = torch.arange(n_local, device=mask.device) + self.accelerator.process_index * n_local
        output["stare_old_log_prob"] = old_lp
        output["stare_old_entropy"] = old_ent
        output["stare_row_ids"] = rows

        h = mean_stat(old_ent, mask)
        totals = self.accelerator.reduce(torch.stack([h.value, h.count]), reduction="sum")
        batch_entropy = float(totals[0] / totals[1].clamp(min=1))
        metrics = self._metrics["train"]
        logged = {"stare/batch_entropy": batch_entropy}
        if self.controller is not None:
            self.controller.update(StepData(batch_entropy=batch_entropy, step=int(self.state.global_step)))
            logged.update(self.controller.metrics())
        for name, value in logged.items():
            metrics[name].append(value)
        self._stare_state = self._controller_state()

        group = True if self._distributed() else None
        self._stare_normalizer = LossNormalizer.from_masks(mask, group=group, grads_averaged_over_ranks=True)
        self._stare_plan = None
        if self.objective_params.selection_scope == "global":
            whole = PolicyBatch(old_lp, output["advantages"], mask, old_log_prob=old_lp, old_entropy=old_ent,
                                entropy=old_ent, row_ids=rows)
            self._stare_plan = fit_plan(self.objective, whole, self.objective_params, state=self._stare_state,
                                        group=group)
        return output

    # ---------------------------------------------------------------------------------------- loss

    def _compute_loss(self, model, inputs):
        train = self.model.training
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, ids, attn, inputs["completion_ids"].size(1), compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
        )
        trl_old = inputs.get("old_per_token_logps")
        old = trl_old if trl_old is not None else inputs.get("stare_old_log_prob")
        batch = PolicyBatch(
            logps, inputs["advantages"].to(logps.dtype), mask, old_log_prob=old, entropy=entropies,
            old_entropy=inputs.get("stare_old_entropy"), on_policy=trl_old is None, row_ids=inputs.get("stare_row_ids"),
            ref_log_prob=inputs.get("ref_per_token_logps") if self.beta != 0.0 else None,
        )
        out = policy_loss(
            self.objective, batch, self.objective_params,
            state=self._stare_state if train else self._controller_state(),
            plan=self._stare_plan if train else None,
            normalizer=self._stare_normalizer if train else None,
            validate=False,
        )
        loss = out.loss
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / (self.current_gradient_accumulation_steps if train else 1)

        acc = self._stare_stats
        acc.add(out.stats)
        acc.add({"entropy": mean_stat(entropies, mask)})
        acc.add({"policy_loss": _policy_loss_stat(out.pg_loss, self._stare_normalizer if train else None)})
        if not train or self.accelerator.sync_gradients:
            self._flush_stats("train" if train else "eval")
        return loss

    def _flush_stats(self, mode: str) -> None:
        acc = self._stare_stats
        if self._distributed():
            acc.all_reduce()
        for raw, value in acc.result().items():
            name = trl_metric_name(raw)
            if name is not None:
                self._metrics[mode][name].append(value)
        acc.clear()

    # ---------------------------------------------------------------------------------- checkpoint

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.controller is not None and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            save_controller(os.path.join(folder, CONTROLLER_FILE), self.controller)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.controller is not None and checkpoint is not None:
            path = os.path.join(checkpoint, CONTROLLER_FILE)
            if os.path.exists(path):
                load_controller(path, self.controller)


def _policy_loss_stat(pg_loss: torch.Tensor, normalizer: LossNormalizer | None) -> Stat:
    """The step's policy loss. With the step's denominators the micro-batch losses of all ranks add up to it
    (once the rank-averaging factor is taken out); without (eval), average the calls."""
    v = pg_loss.detach().to(torch.float64)
    if normalizer is None:
        return Stat(v, torch.ones_like(v), "mean")
    return Stat(v / normalizer.grad_scale, torch.ones_like(v), "sum")

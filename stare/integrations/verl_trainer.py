"""verl plug-in, driver side: the V1 trainer that runs a method's controller, e.g. STARE's gate
(``trainer.v1.trainer_mode=stare_sync``).

``StarePPOTrainer`` is verl's synchronous V1 trainer (``PPOTrainerSync``) with four additions, each a
thin override around verl's own method:

* ``_setup``: after verl has built the workers, installs ``stare.integrations.verl.stare_ppo_loss``
  as the actor's loss function (``set_loss_fn``), so that the policy loss sees per-token entropies,
  the controller state and the plan (verl's loss signature has none of them).
* ``_compute_old_log_prob``: after verl's old-log-prob pass, updates the method's controller (built by
  ``stare.make_controller``, whatever the method) with the batch entropy verl has just computed
  (``actor/entropy``: ``agg_loss`` of the old policy's per-token entropy over the training batch with
  the actor's ``loss_agg_mode``, the quantity the STARE reference trainer uses) and the step, and logs
  the controller's metrics (STARE: ``stare/gate_on``, ``stare/reweight_w``, ...). Same step, no lag.
* ``_update_actor``: puts the controller's state (gate, W, M; Clip-Cov's seed) in ``batch.extra_info``;
  with ``selection_scope="global"`` also numbers the rows (field ``stare_row_ids``) and fits the
  selection plan on the driver over the whole training batch (all ranks' data is there), then lets
  verl run the update.
* ``_save_checkpoint`` / ``_load_checkpoint``: the controller is saved as ``stare_controller.pt`` in
  ``global_step_N/`` and read back on resume.

Deviations: with several mini-batches per step (``ppo_mini_batch_size`` below the train batch, or
``ppo_epochs`` > 1) the global plan covers the whole step's batch rather than each mini-batch; the
STARE recipe has one mini-batch per step, where the two coincide. Rollout-correction bypass mode (no
old-log-prob pass) is refused. Only the V1 trainer (verl's default) is supported.

Importing this module imports verl's V1 trainer; verl does it through the ``verl.plugins`` entry point.
"""

from __future__ import annotations

import os
from functools import partial

import torch
import transfer_queue as tq
from omegaconf import open_dict
from tensordict import TensorDict
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils.config import omega_conf_to_dataclass

from ..objectives import PolicyBatch, StepData, fit_plan, get_objective, load_controller, make_controller, save_controller
from . import CONTROLLER_FILE
from .verl import objective_of, params_from_config, stare_ppo_loss

__all__ = ["StarePPOTrainer", "loss_settings", "driver_plan"]


def loss_settings(actor_config):
    """(objective, params, controller or None) from the actor config (``DictConfig`` or ``ActorConfig``)."""
    pl = actor_config.policy_loss
    objective = objective_of(pl.get("loss_mode") if hasattr(pl, "get") else pl.loss_mode)
    params = params_from_config(objective, actor_config, actor_config.get("loss_agg_mode", "token-mean"))
    return objective, params, make_controller(objective, params)


def driver_plan(objective: str, params, padded, row_ids: torch.Tensor, state: dict):
    """Fit the global selection plan over the whole training batch on the driver.

    ``padded`` holds the batch's ``old_log_probs``, ``entropy`` (old policy), ``advantages`` and
    ``response_mask`` as [B, T] tensors (right-padded responses, as verl stores them).
    """
    mask = padded["response_mask"].bool()
    old = padded["old_log_probs"].float()
    ent = padded["entropy"].float()
    whole = PolicyBatch(old, padded["advantages"].float(), mask, old_log_prob=old, old_entropy=ent, entropy=ent,
                        row_ids=row_ids)
    return fit_plan(objective, whole, params, state=state, group=None)


@register_trainer("stare_sync")
class StarePPOTrainer(PPOTrainerSync):
    """verl's synchronous V1 trainer with the method's controller (module docstring)."""

    def __init__(self, config):
        actor = config.actor_rollout_ref.actor
        self.stare_objective, self.stare_params, self.stare_controller = loss_settings(actor)
        needs = get_objective(self.stare_objective).needs
        if needs & {"entropy", "entropy_grad"} and not actor.calculate_entropy:
            with open_dict(config):
                actor.calculate_entropy = True  # the loss reads the current forward's entropy
        super().__init__(config)

    def _setup(self):
        super()._setup()
        actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        self.actor_rollout_wg.set_loss_fn(partial(stare_ppo_loss, config=actor_config))

    def _compute_old_log_prob(self, batch, metrics):
        batch = super()._compute_old_log_prob(batch, metrics)
        if "actor/entropy" not in metrics:
            raise ValueError("stare needs verl's old-log-prob pass (it yields the batch entropy); "
                             "rollout_correction.bypass_mode is not supported")
        if self.stare_controller is not None:
            self.stare_controller.update(StepData(batch_entropy=float(metrics["actor/entropy"]), step=int(self.global_steps)))
            metrics.update(self.stare_controller.metrics())
        return batch

    def _update_actor(self, batch, metrics):
        state = {} if self.stare_controller is None else self.stare_controller.state()
        batch.extra_info["stare_state"] = state
        if self.stare_params.selection_scope == "global":
            fields = ["old_log_probs", "entropy", "advantages", "response_mask"]
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
            rows = torch.arange(len(batch.keys), dtype=torch.int64)
            tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                            fields=TensorDict({"stare_row_ids": rows}, batch_size=[len(batch.keys)]))
            batch.extra_info["stare_plan"] = driver_plan(
                self.stare_objective, self.stare_params, data.to_padded_tensor(), rows, state
            )
        return super()._update_actor(batch, metrics)

    def _checkpoint_folder(self) -> str:
        trainer = self.config.trainer
        if trainer.resume_mode == "resume_path" and trainer.resume_from_path:
            folder = trainer.resume_from_path
        else:
            folder = os.path.join(trainer.default_local_dir, f"global_step_{self.global_steps}")
        return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)

    def _save_checkpoint(self):
        super()._save_checkpoint()
        if self.stare_controller is not None:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            os.makedirs(folder, exist_ok=True)
            save_controller(os.path.join(folder, CONTROLLER_FILE), self.stare_controller)

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.stare_controller is not None and self.global_steps > 0:
            path = os.path.join(self._checkpoint_folder(), CONTROLLER_FILE)
            if not os.path.exists(path):
                raise FileNotFoundError(f"no {CONTROLLER_FILE} in {self._checkpoint_folder()}: cannot resume the "
                                        f"controller of '{self.stare_objective}'")
            load_controller(path, self.stare_controller)

"""The verl plug-in against verl 0.9.1 itself (run in its own environment by ci/integrations.sh).

* The ``verl.plugins`` entry point registers every loss and the trainer on ``import verl``, leaving
  verl's own losses untouched.
* Each registered loss, called through ``get_policy_loss_fn`` with verl's own config objects on CPU
  tensors, equals ``stare.policy_loss`` to the last bit (loss, gradient, metrics), with verl's global
  batch info turned into the mini-batch denominators.
* Cross-checks against verl's own losses: ``stare_ppo`` and STARE with the gate closed equal verl's
  ``vanilla`` (clip, dual clip, every aggregation mode, metrics); ``stare_kl_cov`` equals ``kl_cov``.
* The worker-side loss function reads verl's real micro-batches (DataProto -> TensorDict -> no-padding ->
  micro-batches): entropies, state, plan and row ids reach the loss, and the global plan fitted on the
  driver gives every micro-batch the weights of the whole batch.
* The example configuration composes with verl's Hydra config and instantiates our config class.
"""

import math
import os

import pytest
import torch

verl = pytest.importorskip(
    "verl", reason="verl is not installed here: verl 0.9.1 pins transformers < 5.11, so ci/integrations.sh runs "
                   "these tests in their own environment (.venv-verl)"
)

from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, get_policy_loss_fn  # noqa: E402
from verl.workers.config import FSDPActorConfig  # noqa: E402

from stare import LossNormalizer, PolicyBatch, StatAccumulator, policy_loss  # noqa: E402
from stare.integrations.verl import (  # noqa: E402
    VERL_LOSS_NAMES,
    StarePolicyLossConfig,
    loss_inputs,
    stare_ppo_loss,
    verl_metric_name,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def actor_config(loss_mode, params=None, **actor):
    pl = StarePolicyLossConfig(loss_mode=loss_mode, params=dict(params or {}))
    kw = dict(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2, clip_ratio_low=0.2, clip_ratio_high=0.28,
              clip_ratio_c=10.0)
    kw.update(actor)
    return FSDPActorConfig(policy_loss=pl, **kw)


def tensors(seed=0, b=6, t=9, off_policy=True):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, t + 1, (b,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    old = -torch.rand(b, t, generator=g) * 4
    cur = old + (0.4 * torch.randn(b, t, generator=g) if off_policy else 0)
    adv = torch.randn(b, generator=g).unsqueeze(1).expand(b, t).contiguous()
    ent = torch.rand(b, t, generator=g) * 2
    return dict(old=old, cur=cur, adv=adv, mask=mask, ent=ent, old_ent=ent + 0.1 * torch.rand(b, t, generator=g))


# our objective, its core parameters written out (what the verl config below must translate to), verl config
CASES = [
    ("stare", dict(variant="O1", top_p_ratio=0.3, reweight_w=1.5), {"gate_on": True, "reweight_w": 1.7, "reweight_m": 0.9}),
    ("stare", dict(variant="C2", top_p_ratio=0.2, reweight_w=1.2, reweight_m=0.6), None),
    ("stare", dict(variant="C2", top_p_ratio=0.2, selection_scope="global"), None),
    ("steer", dict(mapping="exp"), None),
    ("steer", dict(mapping="linear", selection_scope="global"), None),
    ("stapo", dict(prob_threshold=0.2, entropy_quantile=0.5), None),
    ("forking", dict(top_entropy_ratio=0.3), None),
    ("ppo", {}, None),
    ("gspo", {}, None),
    ("entroadv", {}, None),
    ("clip_cov", {}, {"seed": 3}),
    ("kl_cov", {}, None),
    # issue 13, part A: the loss-side methods
    ("ar", dict(reweight_k=0.3, neg_adv_weight=0.8), None),
    ("aepo_agentic_loss", dict(entropy_adv_coef=0.5), None),
    ("aepo_agentic_loss", dict(grad_coef_low=0.5, selection_scope="global"), None),
    ("bapo", dict(target=1.0), None),
    ("aspo", {}, None),
    ("dppo", {}, None),
    ("dppo", dict(divergence="kl"), None),
]
PART_A_CLIPPED = ("ar", "aepo_agentic_loss", "bapo", "dppo")  # issue 13, part A: methods with verl's clip keys
CLIP = dict(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=10.0)


def core_params(name, params, mode):
    p = dict(params, loss_agg_mode=mode)
    if name == "clip_cov":  # verl's keys and defaults (PolicyLossConfig), no dual clip
        p.update(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0)
    elif name == "kl_cov":
        p.update(kl_cov_ratio=2e-4, ppo_kl_coef=0.1)
    elif name in ("stare", "steer", "stapo", "forking", "ppo", "entroadv"):
        p.update(CLIP)
    elif name == "gspo":
        p.update(clip_ratio_low=0.2, clip_ratio_high=0.28)
    elif name in PART_A_CLIPPED:
        p.update(CLIP)
    return p


def test_entry_point_registers_losses_and_trainer():
    from verl.trainer.ppo.v1 import get_trainer_cls

    from stare.integrations.verl_trainer import StarePPOTrainer

    for name, mode in VERL_LOSS_NAMES.items():
        assert POLICY_LOSS_REGISTRY[mode].__module__ == "stare.integrations.verl", mode
    for builtin in ("vanilla", "gspo", "clip_cov", "kl_cov"):
        assert POLICY_LOSS_REGISTRY[builtin].__module__ == "verl.trainer.ppo.core_algos", builtin
    assert get_trainer_cls("stare_sync") is StarePPOTrainer


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("name, params, state", CASES)
def test_registered_loss_equals_core(name, params, state, mode):
    x = tensors()
    cfg = actor_config(VERL_LOSS_NAMES[name], params)
    n_tok, n_seq = int(x["mask"].sum()) * 2, 12  # this rank holds half of the mini-batch
    cfg.global_batch_info.update(dp_size=2, batch_num_tokens=n_tok, global_batch_size=n_seq, loss_scale_factor=None)
    rows = torch.arange(6) + 6
    extras = dict(entropy=x["ent"], old_entropy=x["old_ent"], state=state, row_ids=rows)

    lp = x["cur"].clone().requires_grad_()
    if name == "gspo" and mode != "seq-mean-token-mean":  # GSPO is defined with one aggregation
        with pytest.raises(ValueError, match="seq-mean-token-mean"):
            get_policy_loss_fn("stare_gspo")(old_log_prob=x["old"], log_prob=lp, advantages=x["adv"],
                                             response_mask=x["mask"], loss_agg_mode=mode, config=cfg)
        return
    with loss_inputs(**extras):
        loss, metrics = get_policy_loss_fn(VERL_LOSS_NAMES[name])(
            old_log_prob=x["old"], log_prob=lp, advantages=x["adv"], response_mask=x["mask"], loss_agg_mode=mode,
            config=cfg,
        )
    loss.backward()

    ref_lp = x["cur"].clone().requires_grad_()
    batch = PolicyBatch(ref_lp, x["adv"], x["mask"], old_log_prob=x["old"], entropy=x["ent"], old_entropy=x["old_ent"],
                        row_ids=rows)
    norm = LossNormalizer(torch.tensor(float(n_tok), dtype=torch.float64), torch.tensor(float(n_seq), dtype=torch.float64),
                          9, 2.0)
    ref = policy_loss(name, batch, core_params(name, params, mode), state=state, normalizer=norm, validate=False)
    ref.loss.backward()
    assert torch.equal(loss, ref.loss), (name, mode, loss.item(), ref.loss.item())
    assert torch.equal(lp.grad, ref_lp.grad), (name, mode)
    acc = StatAccumulator()
    acc.add(ref.stats)
    want = {verl_metric_name(k): v for k, v in acc.result().items() if verl_metric_name(k) is not None}
    assert metrics.keys() == want.keys()
    for key in want:
        assert metrics[key] == want[key] or (math.isnan(metrics[key]) and math.isnan(want[key])), key
    if name in ("stare", "steer", "stapo", "forking", "clip_cov"):  # the objective acted: not a plain PPO loss
        assert not torch.equal(ref.weights[x["mask"]], torch.ones(int(x["mask"].sum()))) or name == "clip_cov"


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("loss_mode, params, state", [
    ("stare_ppo", {}, None),
    ("stare", dict(variant="C2", top_p_ratio=0.5), {"gate_on": False, "reweight_w": 1.5, "reweight_m": 0.5}),
    ("stare", dict(variant="C2", top_p_ratio=0.5, reweight_w=1.0, reweight_m=1.0), None),
])
def test_gate_closed_equals_verl_vanilla(loss_mode, params, state, mode):
    """STARE with the gate closed (or W = M = 1) and stare_ppo are verl's own dual-clip PPO loss."""
    x = tensors(seed=1)
    for info in ({}, dict(dp_size=4, batch_num_tokens=97, global_batch_size=20, loss_scale_factor=None)):
        cfg = actor_config(loss_mode, params)
        cfg.global_batch_info.update(info)
        grads, results = [], []
        for fn, ctx in ((get_policy_loss_fn("vanilla"), {}), (get_policy_loss_fn(loss_mode), {"state": state})):
            lp = x["cur"].clone().requires_grad_()
            with loss_inputs(**ctx):
                loss, metrics = fn(old_log_prob=x["old"], log_prob=lp, advantages=x["adv"], response_mask=x["mask"],
                                   loss_agg_mode=mode, config=cfg)
            loss.backward()
            grads.append(lp.grad)
            results.append((loss, metrics))
        (v_loss, v_m), (s_loss, s_m) = results
        assert v_m["actor/pg_clipfrac"] > 0  # the clip is active, so the comparison means something
        torch.testing.assert_close(s_loss, v_loss, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)
        for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl"):
            assert s_m[key] == pytest.approx(v_m[key], rel=1e-6, abs=1e-7), key


def test_kl_cov_equals_verl_kl_cov():
    x = tensors(seed=2, b=8, t=12)
    out = []
    for mode in ("kl_cov", "stare_kl_cov"):
        pl = StarePolicyLossConfig(loss_mode=mode, kl_cov_ratio=0.1, ppo_kl_coef=0.5)
        cfg = FSDPActorConfig(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2, policy_loss=pl)
        lp = x["cur"].clone().requires_grad_()
        loss, _ = get_policy_loss_fn(mode)(old_log_prob=x["old"], log_prob=lp, advantages=x["adv"],
                                           response_mask=x["mask"], loss_agg_mode="token-mean", config=cfg)
        loss.backward()
        out.append((loss, lp.grad))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------ worker-side loss function


def verl_micro_batches(x, n_micro, extra_info, prompt_len=3):
    """The actor's micro-batches as verl builds them: DataProto -> TensorDict -> no padding -> chunks."""
    from verl import DataProto
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    b, t = x["mask"].shape
    prompts = torch.randint(4, 30, (b, prompt_len))
    responses = torch.randint(4, 30, (b, t))
    attention = torch.cat([torch.ones(b, prompt_len, dtype=torch.int64), x["mask"].long()], dim=1)
    batch = DataProto.from_dict(tensors={
        "prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
        "attention_mask": attention, "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
        "response_mask": x["mask"].long(), "old_log_probs": x["old"], "advantages": x["adv"], "entropy": x["old_ent"],
        "stare_row_ids": torch.arange(b),
    })
    td = left_right_2_no_padding(batch.to_tensordict())
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=int(x["mask"].sum()), global_batch_size=b, **extra_info)
    return tu.chunk_tensordict(td, n_micro), prompt_len


def model_output(x, rows, micro, prompt_len):
    """What the engine returns: log-probs (and entropies) over each whole sequence, no padding."""
    lengths = x["mask"][rows].sum(-1)
    out = {}
    for key, src in (("log_probs", "cur"), ("entropy", "ent")):
        seqs = []
        for i, r in enumerate(rows):
            v = torch.zeros(prompt_len + int(lengths[i]))
            v[prompt_len - 1: prompt_len - 1 + int(lengths[i])] = x[src][r, : int(lengths[i])]
            seqs.append(v)
        values = torch.cat(seqs).requires_grad_(key == "log_probs")
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths + prompt_len, 0)])
        out[key] = torch.nested.nested_tensor_from_jagged(values, offsets=offsets)
    return out


@pytest.mark.parametrize("name, params, state", [
    ("steer", dict(mapping="linear", selection_scope="global"), None),
    ("stare", dict(variant="C2", top_p_ratio=0.25, reweight_w=2.0, reweight_m=0.5, selection_scope="global"),
     {"gate_on": True, "reweight_w": 2.0, "reweight_m": 0.5}),
    ("stare", dict(variant="O1", top_p_ratio=0.3), {"gate_on": False, "reweight_w": 1.3, "reweight_m": 0.9}),
    ("forking", dict(top_entropy_ratio=0.3), None),
])
def test_worker_loss_reads_verl_micro_batches(name, params, state):
    from stare.integrations.verl_trainer import driver_plan

    x = tensors(seed=4, b=8, t=7, off_policy=False)
    cfg = actor_config(VERL_LOSS_NAMES[name], params, calculate_entropy=True)
    mode, b = "token-mean", 8
    p = core_params(name, params, mode)
    rows_all = torch.arange(b)
    padded = {"old_log_probs": x["old"], "entropy": x["old_ent"], "advantages": x["adv"], "response_mask": x["mask"]}
    plan = driver_plan(name, p, padded, rows_all, state or {}) if params.get("selection_scope") == "global" else None
    extra = {"stare_state": state} if state else {}
    if plan is not None:
        extra["stare_plan"] = plan
    micros, prompt_len = verl_micro_batches(x, 2, extra)
    full = policy_loss(name, PolicyBatch(x["cur"].clone(), x["adv"], x["mask"], old_log_prob=x["old"],
                                         entropy=x["ent"], old_entropy=x["old_ent"], row_ids=rows_all), p, state=state)
    total = 0.0
    for k, micro in enumerate(micros):
        rows = list(range(4 * k, 4 * k + 4))
        out = model_output(x, rows, micro, prompt_len)
        loss, metrics = stare_ppo_loss(cfg, out, micro)
        total = total + loss.detach()
        width = int(x["mask"][rows].sum(-1).max())
        ref = policy_loss(name, PolicyBatch(x["cur"][rows, :width].clone(), x["adv"][rows, :width], x["mask"][rows, :width],
                                            old_log_prob=x["old"][rows, :width], entropy=x["ent"][rows, :width],
                                            old_entropy=x["old_ent"][rows, :width], row_ids=torch.tensor(rows)),
                          p, state=state, plan=plan,
                          normalizer=LossNormalizer(torch.tensor(float(x["mask"].sum()), dtype=torch.float64),
                                                    torch.tensor(float(b), dtype=torch.float64), width, 1.0),
                          validate=False)
        assert "actor/stare/pos_selected_frac" in metrics or name != "stare"
        torch.testing.assert_close(loss.detach(), ref.loss.detach(), rtol=0, atol=0)
        if plan is not None:  # global scope: each micro-batch gets the whole batch's weights
            m = x["mask"][rows, :width]
            assert torch.equal(ref.weights[m], full.weights[rows][:, :width][m])
    if plan is not None:
        torch.testing.assert_close(total, full.loss.detach(), rtol=1e-6, atol=1e-7)


def test_example_config_composes_with_verls_hydra_config():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    from stare.integrations.verl_trainer import loss_settings

    with initialize_config_dir(config_dir=os.path.join(ROOT, "configs", "verl"), version_base=None):
        cfg = compose(config_name="stare_7b_short_cot", overrides=["data.train_files=x.parquet", "data.val_files=y.parquet"])
    OmegaConf.resolve(cfg)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, StarePolicyLossConfig)
    objective, params, ctrl = loss_settings(actor)
    assert objective == "stare"
    assert (params.variant, params.top_p_ratio, params.reweight_w, params.reweight_m) == ("O1", 0.1, 1.1, 0.9)
    assert (params.clip_ratio_low, params.clip_ratio_high, params.clip_ratio_c) == (0.2, 0.28, 10.0)
    assert (ctrl.target_entropy, params.adaptive, ctrl.reweight_w) == (0.3, False, 1.1)
    assert cfg.trainer.v1.trainer_mode == "stare_sync"
    assert (cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n, cfg.data.max_response_length) == (64, 8, 3072)
    assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6
    x = tensors()
    loss, metrics = get_policy_loss_fn(actor.policy_loss.loss_mode)(
        old_log_prob=x["old"], log_prob=x["cur"], advantages=x["adv"], response_mask=x["mask"],
        loss_agg_mode=actor.loss_agg_mode, config=actor)
    assert torch.isfinite(loss) and "actor/stare/pos_selected_frac" in metrics


def test_controller_comes_from_the_registry_and_sees_the_step():
    from stare import StepData
    from stare.integrations.verl_trainer import loss_settings

    _, params, ctrl = loss_settings(actor_config("stare", {"adaptive": True, "target_entropy": 0.3}))
    for h in (0.5, 0.2, 0.1):
        ctrl.update(StepData(batch_entropy=h, step=1))
    assert ctrl.reweight_w != 1.1 and ctrl.metrics()["stare/batch_entropy"] == 0.1
    _, _, seed = loss_settings(actor_config("stare_clip_cov"))
    seed.update(StepData(batch_entropy=0.5, step=7))
    assert seed.state() == {"seed": 7}  # Clip-Cov: a new random subset each global step
    assert loss_settings(actor_config("steer"))[2] is None


def test_a_method_defined_in_one_file_registers_as_a_verl_loss():
    """A throwaway method registered after ``import verl`` becomes a verl loss with register_losses()."""
    import dataclasses

    from stare.integrations.verl import register_losses
    from stare.objectives import ClipParams, Objective, Terms, register_objective, unregister_objective
    from stare.surrogate import clipped_surrogate, surrogate_stats

    @dataclasses.dataclass(frozen=True)
    class HalfParams(ClipParams):
        scale: float = 0.5

    def half_terms(batch, view, p, state, plan):
        """Half: the clipped surrogate times a constant."""
        s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, p.clip_ratio_low,
                              p.clip_ratio_high, p.clip_ratio_c)
        return Terms(pg_loss=s.loss * p.scale, stats=surrogate_stats(s, batch.valid))

    register_objective(Objective("half_verl_test", params=HalfParams, terms=half_terms))
    try:
        assert register_losses()["half_verl_test"] == "half_verl_test"
        x = tensors()
        call = dict(old_log_prob=x["old"], log_prob=x["cur"], advantages=x["adv"], response_mask=x["mask"])
        half, _ = get_policy_loss_fn("half_verl_test")(**call, config=actor_config("half_verl_test"))
        full, _ = get_policy_loss_fn("stare_ppo")(**call, config=actor_config("stare_ppo"))
        torch.testing.assert_close(half, 0.5 * full)
    finally:
        unregister_objective("half_verl_test")


def test_bad_configuration_names_the_key():
    x = tensors()
    call = dict(old_log_prob=x["old"], log_prob=x["cur"], advantages=x["adv"], response_mask=x["mask"])
    with pytest.raises(ValueError, match="top_p_ratio"):
        get_policy_loss_fn("stare")(**call, config=actor_config("stare", {"top_p": 0.1}))
    with pytest.raises(ValueError, match="actor_rollout_ref.actor.clip_ratio_high"):
        get_policy_loss_fn("stare")(**call, config=actor_config("stare", {"clip_ratio_high": 0.3}))
    with pytest.raises(ValueError, match="token-sum"):
        get_policy_loss_fn("stare")(**call, loss_agg_mode="token-sum", config=actor_config("stare"))
    with pytest.raises(ValueError, match="entropy"):
        get_policy_loss_fn("steer")(**call, config=actor_config("steer"))
    with pytest.raises(ValueError, match="use_kl_loss"):
        get_policy_loss_fn("stare")(**call, config=actor_config("stare", {"kl_coef": 0.1}))
    with pytest.raises(NotImplementedError, match="rollout_correction"):
        get_policy_loss_fn("stare")(**call, config=actor_config("stare"), rollout_is_weights=torch.ones_like(x["old"]))


# --- Methods with step-level hooks (docs/methods.md §9.5-§9.7, §9.10, §10.7-§10.9): verl registers their losses but
# refuses to run them (their rollout, rewards or advantages need the stare trainer); ``hapo_loss``, HAPO's loss
# alone, runs and equals the core.


@pytest.mark.parametrize("name", ["hapo", "empg", "gtpo", "grpo_s", "cure", "ttrl", "empo", "seed_grpo"])
def test_step_hook_methods_are_refused_by_name(name):
    x = tensors()
    with pytest.raises(ValueError, match=f"objective '{name}' .* only the stare trainer"):
        get_policy_loss_fn(VERL_LOSS_NAMES[name])(old_log_prob=x["old"], log_prob=x["cur"], advantages=x["adv"],
                                                  response_mask=x["mask"], config=actor_config(VERL_LOSS_NAMES[name]))


@pytest.mark.parametrize("signed", [False, True])
def test_hapo_loss_equals_core(signed):
    x = tensors()
    params = {"signed_h": signed}
    cfg = actor_config(VERL_LOSS_NAMES["hapo_loss"], params)
    lp = x["cur"].clone().requires_grad_()
    with loss_inputs(entropy=x["ent"], old_entropy=x["old_ent"]):
        loss, metrics = get_policy_loss_fn(VERL_LOSS_NAMES["hapo_loss"])(
            old_log_prob=x["old"], log_prob=lp, advantages=x["adv"], response_mask=x["mask"], loss_agg_mode="token-mean",
            config=cfg)
    ref = policy_loss("hapo_loss", PolicyBatch(x["cur"], x["adv"], x["mask"], old_log_prob=x["old"], entropy=x["ent"],
                                               old_entropy=x["old_ent"]), dict(params, **CLIP), validate=False)
    torch.testing.assert_close(loss.detach(), ref.loss.detach(), rtol=1e-6, atol=1e-7)
    assert "actor/hapo/redistributed_frac" in metrics

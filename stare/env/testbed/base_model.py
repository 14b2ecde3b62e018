"""The testbed's base model: a tiny Llama trained by supervised learning on varied, imperfect traces.

``load_or_build(cfg)`` returns (model, tokenizer), building the model on first use and caching it under
``$STARE_CACHE`` (default ``~/.cache/stare``) in a folder named by the hash of its configuration
(``TestbedConfig`` or ``ExploreConfig``; ``cache_name()``). The
folder is written to a temporary name and renamed when complete, so an interrupted build leaves nothing
that looks finished. Deterministic given the seed (on one machine and thread count). The model is
always returned as loaded from the cache folder, and a build leaves torch's global generator as it
found it, so a run that builds the model and one that finds it cached are the same run.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch

from ...lm import pack, response_stats
from ..cache import cache_root
from .task import TestbedConfig, build_tokenizer

__all__ = ["load_or_build", "build_model", "sft"]


def build_model(cfg, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    mcfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=3 * cfg.hidden_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(mcfg)


def encode_pairs(tokenizer, pairs):
    prompts = [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False).input_ids for p, _ in pairs]
    responses = [tokenizer(r, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for _, r in pairs]
    return prompts, responses


def sft(model, tokenizer, pairs, *, steps: int, batch_size: int, lr: float, seed: int, log=print) -> list[float]:
    """Next-token cross-entropy on response tokens, AdamW with linear warm-up and cosine decay."""
    g = random.Random(seed)
    torch.manual_seed(seed)
    prompts, responses = encode_pairs(tokenizer, pairs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    model.train()
    losses = []
    t0 = time.time()
    for step in range(steps):
        idx = [g.randrange(len(pairs)) for _ in range(batch_size)]
        batch = pack([prompts[i] for i in idx], [responses[i] for i in idx], tokenizer.pad_token_id)
        stats = response_stats(model, batch, temperature=1.0, with_entropy=False)
        loss = -(stats.log_prob * batch.response_mask).sum() / batch.response_mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and (step % max(1, steps // 10) == 0 or step == steps - 1):
            log(f"  sft step {step:>5}/{steps}  loss {loss.item():.4f}  ({time.time() - t0:.0f} s)")
    model.eval()
    return losses


def load_or_build(cfg=None, *, cache_dir: Path | None = None, log=print):
    """(model, tokenizer) of the testbed base model for ``cfg`` (a ``TestbedConfig`` or ``ExploreConfig``;
    default the addition testbed), from the cache or freshly trained."""
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    cfg = cfg or TestbedConfig()
    root = Path(cache_dir) if cache_dir else cache_root()
    final = root / cfg.cache_name()
    if not (final / "build.json").exists():
        # the build seeds and draws from torch's global generator: fork it, so that a run that builds the
        # model samples exactly what a run that finds it in the cache samples
        with torch.random.fork_rng(devices=[]):
            _build(cfg, root, final, log)
    tok = PreTrainedTokenizerFast.from_pretrained(final)
    tok.padding_side = "left"
    model = LlamaForCausalLM.from_pretrained(final, use_safetensors=True).eval()
    return model, tok


def _build(cfg, root: Path, final: Path, log) -> None:
    log and log(f"building the testbed base model (config {cfg.digest()}), cached in {final}")
    tok = build_tokenizer(cfg.charset)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tok)
    task = cfg.make_task()
    t0 = time.time()
    losses = sft(model, tok, task.sft_texts(), steps=cfg.sft_steps, batch_size=cfg.sft_batch, lr=cfg.sft_lr,
                 seed=cfg.seed, log=log)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    info = {"testbed": cfg.kind, "config": cfg.__dict__, "final_loss": losses[-1], "seconds": time.time() - t0,
            "parameters": sum(p.numel() for p in model.parameters())}
    (tmp / "build.json").write_text(json.dumps(info, indent=2))
    if final.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)

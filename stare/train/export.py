"""Export a training run's checkpoint as a Hugging Face model folder: ``stare export RUN_DIR``.

    stare export runs/testbed                          # newest checkpoint -> runs/testbed/export/global_step_N
    stare export runs/lora --step 200 --adapter        # LoRA kept as a PEFT adapter instead of merged
    stare export runs/lora --push-to-hub me/model      # also upload (needs network and a token)

The folder holds ``model.safetensors`` (or, with ``adapter=True``, ``adapter_model.safetensors`` and
``adapter_config.json``), ``config.json``, the tokenizer, ``generation_config.json`` and
``stare_export.json`` (where it came from); ``AutoModelForCausalLM.from_pretrained(folder)`` loads it.

How. The model is rebuilt exactly as the trainer built it (``stare.train.models.load_model`` on the
run's ``config.yaml``, model section only, on the CPU): the base model, then the LoRA wrapper when the
run used one. The checkpoint's trainable weights (``<run>/checkpoints/global_step_N/model.safetensors``,
stare.train.checkpoint) are copied in by name, every checkpoint tensor must find its parameter. A LoRA
model is then merged into its base (``merge_and_unload``) unless ``adapter`` is set. A testbed or SmolLM2
run needs its base model in the stare cache (rebuilt deterministically if it is missing). An adapter
export refers to its base by ``base_model_name_or_path``, a local cache folder for those two.

Generation config: the run's rollout sampling (temperature, top-p, max_new_tokens) with ``do_sample``,
and the tokenizer's BOS / EOS / PAD ids, so that a plain ``generate`` samples as the policy was trained.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["ExportError", "ExportResult", "export_run", "push_to_hub"]

MARKER = "stare_export.json"


class ExportError(ValueError):
    """A problem with the run folder, the checkpoint or the destination, stated in one line."""


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    step: int
    merged: bool  # LoRA merged into the base (False: an adapter folder, or a run without LoRA)
    adapter: bool


def _run_config(run_dir: Path):
    """The run's resolved configuration, model section only (the rest plays no part in the weights)."""
    from .config import Config

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ExportError(f"{run_dir} has no config.yaml: give the folder of a `stare train` run (its output_dir)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ExportError(f"{path}: no 'model' section")
    try:
        cfg = Config.model_validate({"model": raw["model"], "rollout": raw.get("rollout", {})})
    except Exception as e:  # pydantic's message is long; keep its first line
        raise ExportError(f"{path}: invalid model section: {str(e).splitlines()[0]}") from None
    cfg.model.device = "cpu"
    return cfg


def _checkpoint(run_dir: Path, step: int | None) -> Path:
    from .checkpoint import latest_checkpoint

    root = run_dir / "checkpoints"
    if step is None:
        ckpt = latest_checkpoint(root)
        if ckpt is None:
            raise ExportError(f"{run_dir} has no complete checkpoint under checkpoints/ (train first, or check RUN_DIR)")
        return ckpt
    ckpt = root / f"global_step_{step}"
    if not (ckpt / "COMPLETE").exists():
        have = sorted(int(p.name.rsplit("_", 1)[1]) for p in root.glob("global_step_*") if (p / "COMPLETE").exists())
        raise ExportError(f"--step {step}: no complete checkpoint {ckpt}; available steps: {have or 'none'}")
    return ckpt


def _load_trained(cfg, ckpt: Path, log):
    """The run's model with the checkpoint's trainable weights, and its tokenizer."""
    import torch
    from safetensors.torch import load_file

    from .models import load_model

    model, tok = load_model(cfg, log=log)
    weights = load_file(ckpt / "model.safetensors")
    params = dict(model.named_parameters())
    unknown = [k for k in weights if k not in params]
    if unknown:
        raise ExportError(f"{ckpt}/model.safetensors has tensors the run's model does not: {unknown[:3]} "
                          f"(was config.yaml edited after training?)")
    with torch.no_grad():
        for name, value in weights.items():
            if params[name].shape != value.shape:
                raise ExportError(f"{ckpt}: tensor {name} has shape {tuple(value.shape)}, the model "
                                  f"{tuple(params[name].shape)}")
            params[name].copy_(value)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(weights))
    if missing:
        raise ExportError(f"{ckpt}/model.safetensors lacks trainable weights of the model: {missing[:3]}")
    return model.eval(), tok


def _base_reference(cfg) -> str:
    """Where an adapter's base model is found: the cache folder for the testbed and SmolLM2, else the name."""
    name = cfg.model.name_or_path
    if name == "testbed":
        from ..env.cache import cache_root

        return str(cache_root() / f"testbed-{cfg.model.testbed_config().digest()}")
    if name == "smollm2":
        from .smollm2 import smollm2_path

        return str(smollm2_path(log=None))
    return name


def _generation_config(cfg, tok):
    from transformers import GenerationConfig

    r = cfg.rollout
    return GenerationConfig(do_sample=True, temperature=r.temperature, top_p=r.top_p, top_k=0,
                            max_new_tokens=r.max_new_tokens, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _prepare_destination(out: Path) -> Path:
    """A temporary sibling folder to write into; ``out`` may only exist empty or as an earlier export."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise ExportError(f"--out {out} exists and is not an earlier stare export; choose another folder")
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def export_run(run_dir: str | Path, *, step: int | None = None, out: str | Path | None = None, adapter: bool = False,
               log=print) -> ExportResult:
    """Write ``run_dir``'s checkpoint (newest, or ``step``) as a Hugging Face model folder; see the module doc."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"RUN_DIR {run_dir} is not a folder")
    cfg = _run_config(run_dir)
    lora = cfg.model.lora.enabled
    if adapter and not lora:
        raise ExportError(f"--adapter needs a LoRA run; {run_dir}/config.yaml has model.lora.enabled: false")
    ckpt = _checkpoint(run_dir, step)
    n = int(ckpt.name.rsplit("_", 1)[1])
    out = Path(out) if out is not None else run_dir / "export" / (f"global_step_{n}" + ("-adapter" if adapter else ""))
    tmp = _prepare_destination(out)
    try:
        model, tok = _load_trained(cfg, ckpt, log)
        gen = _generation_config(cfg, tok)
        if lora and not adapter:
            model = model.merge_and_unload()
        elif adapter:  # the adapter names its base; a freshly built testbed model has no name of its own
            for peft_cfg in model.peft_config.values():
                peft_cfg.base_model_name_or_path = _base_reference(cfg)
        model.generation_config = gen
        model.save_pretrained(tmp, safe_serialization=True)
        if adapter:  # the PEFT folder has no generation config of its own
            gen.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({
            "run": run_dir.name, "checkpoint": ckpt.name, "step": n, "base_model": cfg.model.name_or_path,
            "dtype": cfg.model.dtype, "lora": lora, "merged": lora and not adapter, "adapter": adapter}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, n, merged=lora and not adapter, adapter=adapter)


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = True) -> str:
    """Upload an exported folder to the Hugging Face hub (a new repository is private). Returns its URL.

    Fails with one line when the hub is unreachable by configuration (``HF_HUB_OFFLINE``), no token is
    set up, or the upload itself fails.
    """
    from huggingface_hub import HfApi, get_token

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ExportError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, the hub is not reachable; the export "
                          f"is in {folder}, upload it later with `hf upload {repo_id} {folder}`")
    if not get_token():
        raise ExportError(f"--push-to-hub {repo_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN); "
                          f"the export is in {folder}")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=f"stare export of {Path(folder).name}")
    except Exception as e:  # network, auth or permission: one line, the export stays on disk
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"--push-to-hub {repo_id} failed ({type(e).__name__}: {first}); the export is in "
                          f"{folder}") from None
    return str(getattr(info, "commit_url", None) or repo_id)

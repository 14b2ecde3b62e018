"""Atomic checkpoints: a crash or kill during a write never damages the last good checkpoint.

Layout (verl-like): ``<run>/checkpoints/global_step_<N>/`` holding

    model.safetensors     trainable weights (all of them, or the LoRA adapters' and the rest frozen)
    optimizer.pt          optimizer and scheduler state (loaded with weights_only=True)
    trainer_state.json    step, data position, counters
    controller.pt         the method's controller state (torch format: it may hold tensors), if it has one
    rng.pt                python / numpy / torch (and CUDA) generator states
    COMPLETE              written last

A checkpoint is written into ``.tmp-global_step_<N>``, every file fsynced, the folder renamed into place
and the parent fsynced; ``latest_checkpointed_iteration.txt`` is then replaced atomically. Loading
takes the newest folder that has ``COMPLETE``; older ones beyond ``keep_last`` are removed after a
successful write.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "latest_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

LATEST = "latest_checkpointed_iteration.txt"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    """Generator states in a form ``torch.load(weights_only=True)`` accepts (tensors, lists, numbers)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _trainable_state(model) -> dict[str, torch.Tensor]:
    """Trainable parameters (deduplicated: tied weights are stored once)."""
    out, seen = {}, set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out[name] = p.detach().to("cpu").contiguous().clone()
    return out


def save_checkpoint(root: Path, step: int, *, model, optimizer, scheduler, trainer_state: dict[str, Any],
                    keep_last: int = 2, hook=None, controller_state: dict | None = None) -> Path:
    """Write checkpoint ``step`` atomically. ``hook(stage)`` is called between files (for tests)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"global_step_{step}"
    tmp = root / f".tmp-global_step_{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = []
    save_file(_trainable_state(model), tmp / "model.safetensors")
    files.append("model.safetensors")
    hook and hook("model")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    files.append("optimizer.pt")
    hook and hook("optimizer")
    torch.save(rng_state(), tmp / "rng.pt")
    files.append("rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    files.append("trainer_state.json")
    if controller_state is not None:
        torch.save(controller_state, tmp / "controller.pt")
        files.append("controller.pt")
    hook and hook("state")
    (tmp / "COMPLETE").write_text(str(step))
    files.append("COMPLETE")
    for f in files:
        _fsync_file(tmp / f)
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    latest_tmp = root / (LATEST + ".tmp")
    latest_tmp.write_text(str(step))
    _fsync_file(latest_tmp)
    os.replace(latest_tmp, root / LATEST)
    _fsync_dir(root)
    for old in _complete(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(root: Path) -> list[Path]:
    found = []
    for d in Path(root).glob("global_step_*"):
        if (d / "COMPLETE").exists():
            try:
                found.append((int(d.name.rsplit("_", 1)[1]), d))
            except ValueError:
                continue
    return [d for _, d in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    """Newest complete checkpoint folder under ``root`` (None if there is none)."""
    if not Path(root).exists():
        return None
    done = _complete(root)
    return done[-1] if done else None


def load_checkpoint(path: Path, *, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG states; returns the trainer state dict, with the
    controller state under ``"controller"`` (None when the checkpoint has none)."""
    path = Path(path)
    weights = load_file(path / "model.safetensors")
    params = dict(model.named_parameters())
    missing = [k for k in weights if k not in params]
    if missing:
        raise ValueError(f"{path}: checkpoint has parameters the model does not: {missing[:5]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    opt = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    state = json.loads((path / "trainer_state.json").read_text())
    ctrl = path / "controller.pt"
    state["controller"] = torch.load(ctrl, weights_only=True) if ctrl.exists() else None
    return state

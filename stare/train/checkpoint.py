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
successful write, each first renamed to ``.del-global_step_<N>`` (atomic) and then deleted, so a kill
while deleting never leaves a half-deleted folder that looks complete. A checkpoint that already
exists under the same step is moved aside (``.old-global_step_<N>``) before the new one takes its name
and deleted after; if a kill falls between the two renames, ``latest_checkpoint`` still finds the one
moved aside. Leftovers of interrupted writes (``.tmp-*``, ``.del-*``, ``.old-*``) are cleared at the
next save.
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
    """Write checkpoint ``step`` atomically, with the controller's state if given. ``hook(stage)`` is called
    between the stages (for tests and experiments/kill9.py): "model", "optimizer", "state", "complete" (all
    written and fsynced), "renamed", "pointer", "pruned" (after each old checkpoint removed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(root)
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
    _fsync_dir(root)
    hook and hook("complete")
    old = root / f".old-global_step_{step}"
    if final.exists():  # the same step saved again: move the old one aside, never delete it first
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        _fsync_dir(root)
    os.replace(tmp, final)
    _fsync_dir(root)
    hook and hook("renamed")
    latest_tmp = root / (LATEST + ".tmp")
    latest_tmp.write_text(str(step))
    _fsync_file(latest_tmp)
    os.replace(latest_tmp, root / LATEST)
    _fsync_dir(root)
    hook and hook("pointer")
    for done in _complete(root)[:-keep_last]:
        _discard(done)
        hook and hook("pruned")
    _clear_leftovers(root)
    return final


def _discard(folder: Path) -> None:
    """Rename ``global_step_N`` to ``.del-global_step_N`` (atomic), then delete it."""
    gone = folder.with_name(".del-" + folder.name)
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(folder, gone)
    _fsync_dir(folder.parent)
    shutil.rmtree(gone, ignore_errors=True)


def _clear_leftovers(root: Path) -> None:
    """Delete what interrupted saves left; an ``.old-`` checkpoint whose replacement never took its name
    gets its name back."""
    for d in Path(root).glob(".*-global_step_*"):
        if d.name.startswith(".old-"):
            main = root / d.name[len(".old-"):]
            if (main / "COMPLETE").exists():
                shutil.rmtree(d, ignore_errors=True)
            elif (d / "COMPLETE").exists():
                shutil.rmtree(main, ignore_errors=True)
                os.replace(d, main)
        elif d.name.startswith((".tmp-", ".del-")):
            shutil.rmtree(d, ignore_errors=True)


def _step_of(name: str) -> int | None:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _complete(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first: ``global_step_N`` with ``COMPLETE``, or, where a kill fell
    between moving an old ``global_step_N`` aside and renaming its replacement, ``.old-global_step_N``."""
    found = {}
    for d in Path(root).glob("global_step_*"):
        step = _step_of(d.name)
        if step is not None and (d / "COMPLETE").exists():
            found[step] = d
    for d in Path(root).glob(".old-global_step_*"):
        step = _step_of(d.name)
        if step is not None and step not in found and (d / "COMPLETE").exists():
            found[step] = d
    return [found[k] for k in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    """Newest complete checkpoint folder under ``root`` (None if there is none)."""
    if not Path(root).exists():
        return None
    done = _complete(root)
    return done[-1] if done else None


def load_checkpoint(path: Path, *, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG states; returns the trainer state dict, with the
    controller state under ``"controller"`` when the checkpoint has one."""
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
    if ctrl.exists():
        state["controller"] = torch.load(ctrl, weights_only=True)
    return state

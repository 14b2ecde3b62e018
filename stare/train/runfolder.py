"""A run folder belongs to one run: claiming it, resuming it, and what a resume can change.

``output_dir`` holds one run: its resolved ``config.yaml``, ``metrics.jsonl``, ``tensorboard/``,
``token_dumps/``, ``checkpoints/`` and (after ``stare compare``) ``DONE``. Two runs never share it:

* ``claim_run_folder`` (called by ``Trainer.train`` before it writes anything) lets a run start in an
  empty folder, continue its own checkpoint, or start over in a folder whose earlier attempt of the
  same run left no checkpoint (saying what it replaces). A folder that holds another run, or any run
  when ``trainer.resume`` is false, is refused with a one-line ``ConfigError`` unless
  ``trainer.overwrite`` (``--overwrite``) is set; then the old run's files, and only those, are removed
  and the console says which. Before this, ``resume=false`` into a used folder mixed two runs:
  checkpoint pruning by step number deleted the new run's checkpoints and kept the old one's, and a
  later resume loaded the other run's checkpoint.
* ``reconcile_resume`` (called after a checkpoint is loaded) compares the config with the run's
  ``config.yaml``. A change that the checkpoint would silently undo is refused: ``seed`` (the
  generators and the data order come from the checkpoint), the model (``model.name_or_path``,
  ``model.testbed.*``, ``model.lora.*``: its weights), ``task.*`` (its data position) and
  ``algorithm.objective``, and ``algorithm.params`` of a method with a controller (its state). Optimizer settings that the optimizer's
  saved state would bring back (``optim.lr``, ``optim.betas``, ``optim.weight_decay``) are applied to the
  restored optimizer and reported; everything else is read afresh each step and simply applies.

``config.yaml`` is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import yaml

__all__ = ["RUN_ARTEFACTS", "atomic_write_text", "claim_run_folder", "reconcile_resume", "run_artefacts"]

RUN_ARTEFACTS = ("config.yaml", "metrics.jsonl", "tensorboard", "token_dumps", "checkpoints", "DONE")
# config keys a resumed run cannot change: the checkpoint fixes them
FIXED_AT_RESUME = ("seed", "model.name_or_path", "model.testbed.", "model.lora.", "task.", "algorithm.objective")
# keys that never make two runs different
IGNORED = ("method", "method_overrides", "output_dir", "trainer.resume", "trainer.overwrite")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (or a kill) sees the old file or the new one, whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run_artefacts(run_dir: Path) -> list[str]:
    """The run files present in ``run_dir`` (an empty ``checkpoints/`` does not count)."""
    run_dir = Path(run_dir)
    present = []
    for name in RUN_ARTEFACTS:
        p = run_dir / name
        if name == "checkpoints":
            if p.is_dir() and any(c.name.startswith("global_step_") for c in p.iterdir()):
                present.append(name)
        elif p.exists():
            present.append(name)
    return present


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: data}


def _differences(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return {k: (a.get(k), b.get(k)) for k in keys
            if a.get(k) != b.get(k) and not any(k == i or k.startswith(i + ".") for i in IGNORED)}


def _fixed(diffs: dict[str, tuple[Any, Any]], cfg=None) -> dict[str, tuple[Any, Any]]:
    """The differences a checkpoint fixes: ``FIXED_AT_RESUME``, and the parameters of a method with a
    controller (its restored state was built from them: STARE's W and target, for example)."""
    fixed = ("algorithm.params.",) if cfg is not None and _has_controller(cfg) else ()
    return {k: v for k, v in diffs.items()
            if any(k == f.rstrip(".") or k.startswith(f) for f in (*FIXED_AT_RESUME, *fixed))}


def _has_controller(cfg) -> bool:
    from ..objectives import get_objective

    return get_objective(cfg.algorithm.objective).controller is not None


def _stored_config(run_dir: Path) -> dict | None:
    try:
        data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _describe(run_dir: Path) -> str:
    """What the folder holds, in a few words: '12 metric records, checkpoints 10, 12'."""
    parts = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        with open(metrics, "rb") as f:
            parts.append(f"{sum(1 for ln in f if ln.strip())} metric records")
    ckpts = sorted(int(p.name.rsplit("_", 1)[1]) for p in (run_dir / "checkpoints").glob("global_step_*")
                   if p.name.rsplit("_", 1)[1].isdigit()) if (run_dir / "checkpoints").is_dir() else []
    if ckpts:
        parts.append("checkpoint" + ("s " if len(ckpts) > 1 else " ") + ", ".join(map(str, ckpts)))
    stored = _stored_config(run_dir)
    if stored is not None:
        parts.append(f"seed {stored.get('seed')}")
    return ", ".join(parts) or ", ".join(run_artefacts(run_dir))


def _show(diffs: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    shown = [f"{k} {a!r} -> {b!r}" for k, (a, b) in list(diffs.items())[:limit]]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(shown) + more


def _remove(run_dir: Path, names: list[str]) -> None:
    """Remove run files: each is first renamed away (atomic), then deleted."""
    stamp = f"{os.getpid()}-{time.time_ns()}"
    for name in names:
        src = run_dir / name
        trash = run_dir / f".removed-{name}-{stamp}"
        os.replace(src, trash)
        if trash.is_dir():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)


def claim_run_folder(run_dir: Path, cfg, *, resumed: bool, log: Callable[[str], None] = print) -> None:
    """Make ``run_dir`` this run's, or refuse; then write its ``config.yaml`` (atomically).

    resumed: a checkpoint of this folder was loaded (``reconcile_resume`` has checked the config).
    """
    from ..checks import ConfigError
    from .config import dump_config

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    present = run_artefacts(run_dir)
    overwrite = bool(getattr(cfg.trainer, "overwrite", False))
    if present and not resumed:
        what = _describe(run_dir)
        if overwrite:
            log(f"overwrite: removing the previous run in {run_dir} ({what}): {', '.join(present)}")
            _remove(run_dir, present)
        elif not cfg.trainer.resume:
            raise ConfigError(
                f"output_dir '{run_dir}' already holds a run ({what}) and trainer.resume is false: continue it "
                f"with trainer.resume=true, replace it with --overwrite (trainer.overwrite=true), or choose "
                f"another output_dir")
        else:
            stored = _stored_config(run_dir)
            new = cfg.model_dump(mode="json")
            fixed = _fixed(_differences(stored, new)) if stored is not None else {"config.yaml": (None, None)}
            if fixed:
                why = "has no readable config.yaml" if stored is None else f"holds another run ({_show(fixed)})"
                raise ConfigError(
                    f"output_dir '{run_dir}' {why} and no checkpoint to resume ({what}): replace it with "
                    f"--overwrite (trainer.overwrite=true) or choose another output_dir")
            stale = [n for n in present if n in ("metrics.jsonl", "tensorboard", "token_dumps", "DONE")]
            if stale:
                log(f"no checkpoint in {run_dir / 'checkpoints'}: starting this run over; the interrupted "
                    f"attempt's {', '.join(stale)} ({what}) are replaced")
                _remove(run_dir, stale)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))


def reconcile_resume(run_dir: Path, cfg, optimizer, scheduler, *, step: int,
                     log: Callable[[str], None] = print) -> None:
    """After a checkpoint was loaded: refuse config changes it cannot honour, apply the optimizer's."""
    from ..checks import ConfigError

    run_dir = Path(run_dir)
    stored = _stored_config(run_dir)
    if stored is None:
        log(f"resume: {run_dir / 'config.yaml'} is missing or unreadable; the config cannot be compared with "
            f"the checkpoint's run")
    else:
        fixed = _fixed(_differences(stored, cfg.model_dump(mode="json")), cfg)
        if fixed:
            raise ConfigError(
                f"trainer.resume: the run in '{run_dir}' (checkpoint of step {step}) cannot change "
                f"{', '.join(fixed)} ({_show(fixed)}); the checkpoint fixes them. Keep the run's values, replace "
                f"the run with --overwrite (trainer.overwrite=true), or choose another output_dir")
    apply_optim_config(cfg, optimizer, scheduler, step=step, log=log)


def apply_optim_config(cfg, optimizer, scheduler, *, step: int, log: Callable[[str], None] = print) -> list[str]:
    """Set the learning rate, betas and weight decay of a restored optimizer to the config's (its saved
    state would otherwise bring the old values back). Untouched when they already agree, so a plain
    resume stays bit-identical. Returns the names of the settings changed."""
    o = cfg.optim
    changed = []
    base = list(getattr(scheduler, "base_lrs", [g["lr"] for g in optimizer.param_groups]))
    if any(b != o.lr for b in base):
        changed.append(f"optim.lr {base[0]:g} -> {o.lr:g}")
        scheduler.base_lrs = [o.lr for _ in base]
        for g in optimizer.param_groups:
            g["initial_lr"] = o.lr
        # the schedule's factor at its current position, applied to the new base rate
        factors = [lam(scheduler.last_epoch) for lam in scheduler.lr_lambdas] if hasattr(scheduler, "lr_lambdas") \
            else [1.0] * len(base)
        for g, f in zip(optimizer.param_groups, factors):
            g["lr"] = o.lr * f
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    betas = tuple(float(b) for b in o.betas)
    for name, value in (("betas", betas), ("weight_decay", float(o.weight_decay))):
        old = [tuple(g[name]) if name == "betas" else g[name] for g in optimizer.param_groups]
        if any(v != value for v in old):
            changed.append(f"optim.{name} {old[0]} -> {value}")
            for g in optimizer.param_groups:
                g[name] = value
    if changed:
        log(f"resume: applied from step {step + 1}: {'; '.join(changed)}")
    return changed

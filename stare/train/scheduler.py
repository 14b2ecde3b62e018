"""The run scheduler: train methods x seeds, each in its own process, resumable.

Each (method, seed) trains in a spawned process (one torch thread; as many at once as ``workers``,
default the number of cores) into ``OUT/<method>/seed_<s>`` (``stare.report.runs.plan_runs``). A finished
run leaves a ``DONE`` file and is skipped next time; an unfinished one resumes from its last checkpoint,
so an interrupted comparison continues where it stopped. The pseudo-method ``base`` trains nothing: it
evaluates the untrained model once per seed (``base_evaluation``, cached under ``$STARE_CACHE/evals``).
``stare compare`` and ``stare demo`` both run their grids through ``run_grid``; the results are read back
by ``stare.report``. A run's inert-knob warnings (``stare.inert``: a knob that cannot act in this setting)
go to its folder's ``warnings.log``, and the grid prints each distinct one once, naming the method.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Sequence

from ..report.runs import RunSpec

__all__ = ["BASE", "base_evaluation", "run_grid"]

#: The pseudo-method of a comparison that trains nothing: the untrained model, evaluated once per seed
#: (``stare.train.evaluate.base_evaluation``, cached), one record at step 0 in ``OUT/base/seed_<s>``.
BASE = "base"
WARNINGS_FILE = "warnings.log"


def _print_new_warnings(spec: RunSpec, shown: set[str], console) -> None:
    """Print the inert-knob warnings of a finished run that no earlier run of the grid gave."""
    from rich.markup import escape

    path = spec.out_dir / WARNINGS_FILE
    if not path.exists():
        return
    for message in path.read_text(encoding="utf-8").splitlines():
        if message and message not in shown:
            shown.add(message)
            console.print(f"[yellow]warning[/yellow] ({escape(spec.method)}): {escape(message)}", highlight=False)


def _run_one(config_path: str | None, overrides: list[str], spec_json: str) -> None:
    import warnings

    from ..inert import InertKnobWarning
    from .config import load_config
    from .logging import quiet_transformers
    from .trainer import Trainer

    quiet_transformers()
    spec = json.loads(spec_json)
    shown_elsewhere = warnings.showwarning

    def to_run_folder(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, InertKnobWarning):
            return shown_elsewhere(message, category, filename, lineno, file, line)
        with open(Path(spec["out_dir"]) / WARNINGS_FILE, "a", encoding="utf-8") as f:
            f.write(" ".join(str(message).split()) + "\n")

    # inert-knob warnings go to the run's folder; run_grid prints each distinct one once for the grid
    warnings.showwarning = to_run_folder
    run = [f"seed={spec['seed']}", f"output_dir={spec['out_dir']}", "trainer.threads=1", "trainer.resume=true",
           "logging.progress=false"]
    if spec["method"] == BASE:
        cfg = load_config(config_path, list(overrides) + run)
        record = {"step": 0, **base_evaluation(cfg)}
        (Path(spec["out_dir"]) / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    else:
        cfg = load_config(config_path, list(overrides) + [f"method={spec['method']}"] + run)
        Trainer(cfg, log=lambda m: None).train()
    (Path(spec["out_dir"]) / "DONE").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))


def base_evaluation(cfg, log=None) -> dict[str, float]:
    """Held-out ``val/*`` metrics of the config's *untrained* model (the base model every method starts
    from), with the config's evaluation settings and seed, cached under ``$STARE_CACHE/evals`` by the hash
    of what determines them (model, task, evaluation settings, seed), so a comparison or the demo
    evaluates the base model once."""
    import hashlib
    import json

    from ..env.cache import cache_root

    t = cfg.trainer
    model = cfg.model.testbed_config().cache_name() if cfg.model.name_or_path == "testbed" else cfg.model.name_or_path
    key = {"model": model, "dtype": cfg.model.dtype, "chat_template": cfg.model.chat_template,
           "task": cfg.task.model_dump(mode="json"), "max_new_tokens": cfg.rollout.max_new_tokens,
           "eval": [t.eval_prompts, t.eval_n, t.eval_temperature, t.eval_top_p], "seed": cfg.seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "evals" / f"base-{digest}.json"
    if path.exists():
        return json.loads(path.read_text())["metrics"]
    from .trainer import Trainer

    from .runfolder import atomic_write_text

    metrics = Trainer(cfg, log=log or (lambda m: None)).evaluate()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"key": key, "metrics": metrics}, indent=1))
    return metrics


def _lines(path: Path) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def run_grid(config_path: str | None, specs: Sequence[RunSpec], overrides: Sequence[str] = (), workers: int | None = None,
             total_steps: int | None = None, console=None, target=None) -> list[RunSpec]:
    """Train every unfinished run; returns the runs that failed (their folders keep their logs).
    ``target(config_path, overrides, spec_json)`` runs one spec in its process (default ``_run_one``; a
    module-level function, as spawned processes import it)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    workers = workers or max(1, os.cpu_count() or 1)
    todo = [s for s in specs if not s.done]
    ctx = mp.get_context("spawn")
    failed: list[RunSpec] = []
    running: dict[RunSpec, mp.Process] = {}
    shown: set[str] = set()  # inert-knob warnings printed so far
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False) as progress:
        overall = progress.add_task(f"{len(specs)} runs ({len(specs) - len(todo)} already done)", total=len(specs),
                                    completed=len(specs) - len(todo))
        bars = {}
        while todo or running:
            while todo and len(running) < workers:
                spec = todo.pop(0)
                spec.out_dir.mkdir(parents=True, exist_ok=True)
                p = ctx.Process(target=target or _run_one, args=(config_path, list(overrides), json.dumps(
                    {"method": spec.method, "seed": spec.seed, "out_dir": str(spec.out_dir)})))
                p.start()
                running[spec] = p
                bars[spec] = progress.add_task(f"  {spec.method} seed {spec.seed}", total=total_steps)
            for spec, p in list(running.items()):
                progress.update(bars[spec], completed=_lines(spec.out_dir / "metrics.jsonl"))
                if not p.is_alive():
                    p.join()
                    if p.exitcode != 0 or not spec.done:
                        failed.append(spec)
                    _print_new_warnings(spec, shown, progress.console)
                    progress.update(overall, advance=1)
                    progress.remove_task(bars[spec])
                    del running[spec]
            time.sleep(0.5)
    return failed

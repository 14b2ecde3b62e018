"""Kill -9 at every moment that writes run state, resume, and compare with a run that was never killed.

    python experiments/kill9.py [--jobs 2] [--out FILE] [--only NAME ...] [--keep DIR]

A short testbed run (a small ``model.testbed`` so the base model builds in seconds; ``STARE_CACHE`` in a
temporary folder; STARE-O1 with its controller; 6 steps, a checkpoint every 2, ``keep_last`` 1 so every save also prunes, an evaluation
at steps 3 and 6) is trained once without interruption: the reference. Then, for each scenario, the same
command runs in a fresh folder with a SIGKILL injected at one moment (the child process patches the
library function at that point and kills itself with ``os.kill(getpid(), SIGKILL)``; nothing is
cleaned up), then is started again, as a user would, until it finishes. A scenario passes when

* every injected kill happened (the attempt ended by SIGKILL) and every later attempt exited 0,
* ``metrics.jsonl`` holds steps 1..6 once each and every record equals the reference's (timings
  excepted), bit for bit,
* the final checkpoint (weights, optimizer and scheduler state, random generator states, trainer
  state) equals the reference's, bit for bit.

Prints a Markdown table (and writes it with ``--out``); exits 1 if any scenario fails. About 5 minutes
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a base model that builds in seconds and is right often enough (15% at T = 1) for most groups to be mixed
TESTBED = {"max_value": 5, "hidden_size": 48, "layers": 2, "heads": 2, "sft_steps": 200, "sft_examples": 2000,
           "train_prompts": 200, "test_prompts": 16}
STEPS = 6
ARGS = ["model.testbed={" + ", ".join(f"{k}: {v}" for k, v in TESTBED.items()) + "}", "method=stare_o1",
        "algorithm.params.target_entropy_ratio=1.5", f"trainer.steps={STEPS}", "trainer.save_every=2",
        "trainer.keep_last=1", "trainer.eval_every=3", "trainer.eval_prompts=8", "trainer.eval_n=2",
        "rollout.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=16", "algorithm.micro_batch_size=8",
        "trainer.threads=1", "logging.progress=false", "seed=3"]
STOCHASTIC = ("timing_s/", "perf/")

# scenario name -> the kill point of each attempt in turn (None: run to the end); a final attempt with no
# kill is added until the run finishes
SCENARIOS: dict[str, list[str | None]] = {
    "startup: model loaded, nothing written yet": ["model_loaded"],
    "startup: config.yaml written, no step yet": ["claimed"],
    "mid-step: rollout of step 3": ["rollout:3"],
    "mid-step: update of step 5": ["update:5"],
    "checkpoint 4: weights written": ["ckpt:4:model"],
    "checkpoint 4: optimizer written": ["ckpt:4:optimizer"],
    "checkpoint 4: trainer state written": ["ckpt:4:state"],
    "checkpoint 4: COMPLETE and fsync, before the rename": ["ckpt:4:complete"],
    "checkpoint 4: renamed, before the pointer": ["ckpt:4:renamed"],
    "checkpoint 4: pointer file written, before its rename": ["pointer_rename:4"],
    "checkpoint 4: pointer renamed, before pruning": ["ckpt:4:pointer"],
    "checkpoint 4: old checkpoint moved aside, not yet deleted": ["prune_delete:4"],
    "metrics: mid-append of step 5's record": ["torn_append:5"],
    "metrics: resume rewrite, temporary file written, before its rename": ["update:6", "metrics_rename:before"],
    "metrics: resume rewrite, just after its rename": ["update:6", "metrics_rename:after"],
    "resume: killed while loading the checkpoint": ["update:5", "checkpoint_load"],
    "resume: killed in the first resumed step": ["update:5", "update:5"],
    "last step: after the final checkpoint": ["ckpt:6:pruned"],
}


# ------------------------------------------------------------------------------------------- the child


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(point: str) -> None:
    """Patch the library so that this process SIGKILLs itself at ``point``."""
    import shutil

    from stare.train import checkpoint, logging as mlog, runfolder, trainer

    kind, _, arg = point.partition(":")
    if kind == "model_loaded":
        real_load = trainer.load_model

        def load_model(*a, **k):
            out = real_load(*a, **k)
            _die()
            return out

        trainer.load_model = load_model
    elif kind == "claimed":
        real_claim = trainer.claim_run_folder

        def claim(*a, **k):
            real_claim(*a, **k)
            _die()

        trainer.claim_run_folder = claim
    elif kind in ("rollout", "update"):
        step = int(arg)
        real = getattr(trainer.Trainer, kind)

        def phase(self, *a, **k):
            if self.step_idx + 1 >= step:  # the first update at or after that step (a step may have none)
                _die()
            return real(self, *a, **k)

        setattr(trainer.Trainer, kind, phase)
    elif kind == "ckpt":
        step, stage = arg.split(":")
        real_save = trainer.save_checkpoint

        def save(root, n, **k):
            if n == int(step):
                k["hook"] = lambda s: s == stage and _die()
            return real_save(root, n, **k)

        trainer.save_checkpoint = save
    elif kind in ("pointer_rename", "prune_delete", "metrics_rename"):
        real_replace, real_rmtree = os.replace, shutil.rmtree

        def replace(src, dst, *a, **k):
            src, dst = str(src), str(dst)
            if kind == "pointer_rename" and src.endswith(checkpoint.LATEST + ".tmp") and Path(src).read_text() == arg:
                _die()
            if kind == "metrics_rename" and dst.endswith("metrics.jsonl"):
                if arg == "before":
                    _die()
                real_replace(src, dst, *a, **k)
                _die()
            return real_replace(src, dst, *a, **k)

        def rmtree(path, *a, **k):
            if kind == "prune_delete" and Path(path).name.startswith(".del-global_step_") and \
                    (Path(path).parent / f"global_step_{arg}").exists():
                _die()
            return real_rmtree(path, *a, **k)

        os.replace = replace
        checkpoint.shutil.rmtree = rmtree
    elif kind == "torn_append":
        step = int(arg)
        real_write = os.write

        def write(fd, data):
            if data.startswith(b'{"step": %d,' % step):
                real_write(fd, data[: len(data) // 2])
                _die()
            return real_write(fd, data)

        mlog.os.write = write  # the logger's module sees the patched os.write (one os module)
    elif kind == "checkpoint_load":
        real_load_ckpt = trainer.load_checkpoint

        def load(path, *, model, optimizer, scheduler):
            from safetensors.torch import load_file

            weights = load_file(Path(path) / "model.safetensors")
            params = dict(model.named_parameters())
            import torch

            with torch.no_grad():
                for name, value in weights.items():
                    params[name].copy_(value)  # the weights are in, the rest is not
            _die()
            return real_load_ckpt(path, model=model, optimizer=optimizer, scheduler=scheduler)

        trainer.load_checkpoint = load
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    del runfolder, mlog


def child(point: str | None, args: list[str]) -> int:
    if point:
        _install(point)
    from stare.cli import main

    return main(["train", str(ROOT / "stare" / "configs" / "testbed.yaml"), *args])


# ------------------------------------------------------------------------------------------ the parent


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARE_")}
    env.update(PYTHONPATH=str(ROOT), STARE_CACHE=str(cache), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1")
    return env


def _attempt(point: str | None, run: Path, cache: Path) -> tuple[int, str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", point or "", "--", *ARGS, f"output_dir={run}"]
    p = subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=900)
    return p.returncode, p.stderr[-3000:]


def _deterministic(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(STOCHASTIC)} for r in records]


def _final_state(run: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    ck = run / "checkpoints" / f"global_step_{STEPS}"
    return {"model": load_file(ck / "model.safetensors"),
            "optimizer": torch.load(ck / "optimizer.pt", weights_only=True),
            "rng": torch.load(ck / "rng.pt", weights_only=True),
            "trainer_state": json.loads((ck / "trainer_state.json").read_text())}


def _equal(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
            a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def run_scenario(name: str, points: list[str | None], work: Path, cache: Path, reference: dict) -> dict:
    from stare.report.runs import read_metrics

    run = work / "run"
    attempts, problems = [], []
    t0 = time.monotonic()
    for point in points:
        rc, err = _attempt(point, run, cache)
        attempts.append(rc)
        if rc != -signal.SIGKILL:
            problems.append(f"the kill at {point} did not happen (exit {rc}): {err.strip().splitlines()[-1:]}")
    for _ in range(3):  # start again until it finishes
        rc, err = _attempt(None, run, cache)
        attempts.append(rc)
        if rc == 0:
            break
        problems.append(f"a resume exited {rc}: {err.strip().splitlines()[-1:]}")
    records = read_metrics(run / "metrics.jsonl", missing_ok=True)
    steps = [r.get("step") for r in records]
    same_records = _deterministic(records) == reference["records"]
    try:
        same_state = _equal(_final_state(run), reference["state"])
    except (OSError, RuntimeError, ValueError) as e:
        same_state, problems = False, problems + [f"final checkpoint unreadable: {e}"]
    ok = not problems and steps == list(range(1, STEPS + 1)) and same_records and same_state
    return {"scenario": name, "kills": [p for p in points if p], "exits": attempts, "steps": steps,
            "records_equal": same_records, "state_equal": same_state, "ok": ok, "problems": problems,
            "seconds": round(time.monotonic() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    ap.add_argument("--only", nargs="*", default=None, help="scenario names (substrings)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    ap.add_argument("rest", nargs="*")
    args = ap.parse_args()
    if args.child is not None:
        return child(args.child or None, args.rest)

    sys.path.insert(0, str(ROOT))
    scenarios = {k: v for k, v in SCENARIOS.items() if not args.only or any(o in k for o in args.only)}
    tmp = tempfile.mkdtemp(prefix="stare-kill9-") if args.keep is None else str(args.keep)
    base = Path(tmp)
    cache = base / "cache"
    t0 = time.monotonic()
    rc, err = _attempt(None, base / "reference" / "run", cache)
    if rc != 0:
        print(err, file=sys.stderr)
        return 1
    from stare.report.runs import read_metrics

    reference = {"records": _deterministic(read_metrics(base / "reference" / "run" / "metrics.jsonl")),
                 "state": _final_state(base / "reference" / "run")}
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda kv: run_scenario(kv[0], kv[1], base / f"s{list(scenarios).index(kv[0])}",
                                                        cache, reference), scenarios.items()))
    rows = ["| scenario (kill -9 at) | attempts: exit codes | steps in metrics.jsonl | records = reference | "
            "final checkpoint = reference | result |", "|---|---|---|---|---|---|"]
    for r in results:
        steps = f"{r['steps'][0]}..{r['steps'][-1]} ({len(r['steps'])})" if r["steps"] else "none"
        rows.append(f"| {r['scenario']} | {', '.join(map(str, r['exits']))} | {steps} | "
                    f"{'yes' if r['records_equal'] else 'NO'} | {'yes' if r['state_equal'] else 'NO'} | "
                    f"{'survived' if r['ok'] else 'FAILED: ' + '; '.join(r['problems'])[:200]} |")
    ok = sum(r["ok"] for r in results)
    summary = (f"{ok} of {len(results)} kill scenarios survived: every kill happened, every resume finished, "
               f"metrics and final checkpoint bit-identical to the uninterrupted run "
               f"({time.monotonic() - t0:.0f} s, {args.jobs} scenarios at a time)" if ok == len(results) else
               f"{len(results) - ok} of {len(results)} kill scenarios FAILED")
    table = "\n".join(rows)
    print(table + "\n\n" + summary)
    if args.out:
        args.out.write_text(f"{summary}.\n\n{table}\n")
    if args.keep is None:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

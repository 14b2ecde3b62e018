"""Bad inputs to ``stare train``: each one run as a user would, with the message it gets recorded.

    python experiments/bad_inputs.py [--out docs/errors.md] [--jobs 2] [--only ID ...]

Every case runs ``python -m stare.cli train CONFIG key=value ...`` in a fresh process (a temporary
working folder, ``STARE_CACHE`` in a temporary folder, the testbed with a small ``model.testbed`` so that
the base model builds in seconds), with a time limit. A case passes when the command exits non-zero
with no traceback, its error is one line, and that line names the field it is about. The script
prints the table (and writes it with ``--out``) and exits 1 if any case fails. About 3 minutes on
2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.testbed={hidden_size: 32, layers: 1, heads: 2, sft_steps: 20, sft_examples: 500, "
        "train_prompts: 200, test_prompts: 16}"]
BASE = TINY + ["trainer.steps=2", "trainer.eval_prompts=4", "trainer.eval_n=2", "trainer.save_every=0",
               "rollout.prompts_per_step=2", "rollout.n=2", "logging.tensorboard=false",
               "logging.progress=false", "trainer.threads=1"]
LIMIT_S = 120


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _math(d: Path, rows: list | None = None, name: str = "d.jsonl") -> list[str]:
    f = _jsonl(d / name, rows if rows is not None else [{"problem": "1+1?", "answer": "2"},
                                                         {"problem": "2+2?", "answer": "4"}])
    return ["task.name=math", f"task.options={{train: {f}, test: {f}}}"]


@dataclass
class Case:
    id: str
    what: str  # the input, as the table shows it
    field: str  # what the message must name
    args: list[str] = field(default_factory=list)
    setup: Callable[[Path], list[str]] | None = None  # files it needs; returns extra arguments
    config: str | None = None  # YAML text of the config file (default: an empty mapping)
    no_config: bool = False


def _used_folder(d: Path) -> list[str]:
    run = d / "run"
    subprocess.run([sys.executable, "-m", "stare.cli", "train", str(d / "c.yaml"), *BASE, f"output_dir={run}",
                    "trainer.save_every=1"], cwd=d, env=_env(d), capture_output=True, timeout=LIMIT_S)
    return [f"output_dir={run}"]


CASES = [
    # the YAML file and the command line
    Case("yaml-file", "config file with a YAML syntax error", "c.yaml", config="rollout: {n: 4\noptim: [\n"),
    Case("yaml-override", "`rollout.n=[1,`", "rollout.n", ["rollout.n=[1,"]),
    Case("no-file", "config file that does not exist", "nope.yaml", no_config=True, args=["nope.yaml"]),
    Case("top-list", "config file whose top level is a list", "top level", config="- 1\n- 2\n"),
    Case("no-equals", "override `steps` without `=`", "key=value", ["steps"]),
    Case("unknown-key", "`optim.lrr=1`", "optim.lr", ["optim.lrr=1"]),
    Case("wrong-section", "`algorithm.lr=1e-3`", "optim.lr", ["algorithm.lr=1e-3"]),
    Case("section-scalar", "`optim=3`", "optim", ["optim=3"]),
    Case("method", "`method=stare_o3`", "stare_o3", ["method=stare_o3"]),
    Case("seed-text", "`seed=abc`", "seed", ["seed=abc"]),
    # optimizer
    Case("lr-neg", "`optim.lr=-1`", "optim.lr", ["optim.lr=-1"]),
    Case("lr-text", "`optim.lr=fast`", "optim.lr", ["optim.lr=fast"]),
    Case("betas-range", "`optim.betas=[0.9, 1.5]`", "optim.betas", ["optim.betas=[0.9, 1.5]"]),
    Case("betas-neg", "`optim.betas=[-0.1, 0.999]`", "optim.betas", ["optim.betas=[-0.1, 0.999]"]),
    Case("betas-len", "`optim.betas=[0.9]`", "optim.betas", ["optim.betas=[0.9]"]),
    Case("wd-neg", "`optim.weight_decay=-0.1`", "optim.weight_decay", ["optim.weight_decay=-0.1"]),
    Case("clip-zero", "`optim.grad_clip=0`", "optim.grad_clip", ["optim.grad_clip=0"]),
    Case("warmup-neg", "`optim.warmup_steps=-5`", "optim.warmup_steps", ["optim.warmup_steps=-5"]),
    # rollout
    Case("n-zero", "`rollout.n=0`", "rollout.n", ["rollout.n=0"]),
    Case("pps-neg", "`rollout.prompts_per_step=-1`", "rollout.prompts_per_step", ["rollout.prompts_per_step=-1"]),
    Case("temp-zero", "`rollout.temperature=0`", "rollout.temperature", ["rollout.temperature=0"]),
    Case("top-p", "`rollout.top_p=1.5`", "rollout.top_p", ["rollout.top_p=1.5"]),
    Case("mnt-zero", "`rollout.max_new_tokens=0`", "rollout.max_new_tokens", ["rollout.max_new_tokens=0"]),
    Case("mnt-context", "`rollout.max_new_tokens=100` (testbed context: 64 positions)", "rollout.max_new_tokens",
         ["rollout.max_new_tokens=100"]),
    Case("gen-neg", "`rollout.gen_prompts_per_round=-4`", "rollout.gen_prompts_per_round",
         ["rollout.gen_prompts_per_round=-4"]),
    Case("gen-zero", "`rollout.gen_prompts_per_round=0`", "rollout.gen_prompts_per_round",
         ["rollout.gen_prompts_per_round=0"]),
    Case("bs-neg", "`rollout.batch_size=-2`", "rollout.batch_size", ["rollout.batch_size=-2"]),
    Case("bs-zero", "`rollout.batch_size=0`", "rollout.batch_size", ["rollout.batch_size=0"]),
    Case("rounds-text", "`rollout.max_gen_rounds=many`", "rollout.max_gen_rounds", ["rollout.max_gen_rounds=many"]),
    # algorithm
    Case("objective", "`algorithm.objective=starr`", "algorithm.objective", ["algorithm.objective=starr"]),
    Case("param-name", "`algorithm.params={reweigth_w: 2}`", "reweigth_w", ["algorithm.params={reweigth_w: 2}"]),
    Case("param-value", "`method=grpo_ds algorithm.params.clip_ratio_c=0.5`", "clip_ratio_c",
         ["method=grpo_ds", "algorithm.params.clip_ratio_c=0.5"]),
    Case("micro-zero", "`algorithm.micro_batch_size=0`", "algorithm.micro_batch_size", ["algorithm.micro_batch_size=0"]),
    Case("epochs-zero", "`algorithm.ppo_epochs=0`", "algorithm.ppo_epochs", ["algorithm.ppo_epochs=0"]),
    Case("reward-buffer", "`reward.overlong_buffer=0`", "reward.overlong_buffer", ["reward.overlong_buffer=0"]),
    # trainer, logging, diagnostics
    Case("steps-zero", "`trainer.steps=0`", "trainer.steps", ["trainer.steps=0"]),
    Case("threads-neg", "`trainer.threads=-1`", "trainer.threads", ["trainer.threads=-1"]),
    Case("threads-zero", "`trainer.threads=0`", "trainer.threads", ["trainer.threads=0"]),
    Case("keep-zero", "`trainer.keep_last=0`", "trainer.keep_last", ["trainer.keep_last=0"]),
    Case("eval-n", "`trainer.eval_n=0`", "trainer.eval_n", ["trainer.eval_n=0"]),
    Case("eval-prompts", "`trainer.eval_prompts=0`", "trainer.eval_prompts", ["trainer.eval_prompts=0"]),
    Case("save-neg", "`trainer.save_every=-1`", "trainer.save_every", ["trainer.save_every=-1"]),
    Case("skips-zero", "`trainer.max_consecutive_skips=0`", "trainer.max_consecutive_skips",
         ["trainer.max_consecutive_skips=0"]),
    Case("diag-rows", "`diagnostics.rows=0`", "diagnostics.rows", ["diagnostics.rows=0"]),
    Case("wandb", "`logging.wandb=true` without the wandb package", "logging.wandb", ["logging.wandb=true"]),
    # the model
    Case("dtype", "`model.dtype=float8`", "model.dtype", ["model.dtype=float8"]),
    Case("device", "`model.device=tpu`", "model.device", ["model.device=tpu"]),
    Case("cuda", "`model.device=cuda:7` on a machine without that GPU", "model.device", ["model.device=cuda:7"]),
    Case("model-path", "`model.name_or_path=/nonexistent/model`", "model.name_or_path",
         ["model.name_or_path=/nonexistent/model"]),
    Case("model-rel", "`model.name_or_path=./no/such/folder`", "model.name_or_path",
         ["model.name_or_path=./no/such/folder"]),
    Case("model-id", "`model.name_or_path=not/a/valid/id`", "model.name_or_path",
         ["model.name_or_path=not/a/valid/id"]),
    Case("model-empty-dir", "`model.name_or_path=<an empty folder>`", "model.name_or_path",
         setup=lambda d: (d / "empty").mkdir() or [f"model.name_or_path={d / 'empty'}"]),
    Case("lora-r", "`model.lora.r=0`", "model.lora.r", ["model.lora.r=0"]),
    Case("tb-heads", "`model.testbed.heads=3` (hidden size 32)", "model.testbed", ["model.testbed.heads=3"]),
    Case("tb-hidden", "`model.testbed.hidden_size=0`", "model.testbed.hidden_size", ["model.testbed.hidden_size=0"]),
    Case("tb-layers", "`model.testbed.layers=-1`", "model.testbed.layers", ["model.testbed.layers=-1"]),
    Case("tb-prompts", "`model.testbed.test_prompts=100000` (only 9,261 distinct prompts)", "model.testbed.test_prompts",
         ["model.testbed.test_prompts=100000"]),
    Case("tb-corrupt", "`model.testbed.corrupt_frac=1.5`", "model.testbed.corrupt_frac", ["model.testbed.corrupt_frac=1.5"]),
    Case("tb-max", "`model.testbed.max_value=-1`", "model.testbed.max_value", ["model.testbed.max_value=-1"]),
    Case("tb-risk", "`model.testbed.pair_risk=[1, 2]`", "model.testbed.pair_risk", ["model.testbed.pair_risk=[1, 2]"]),
    # the task and its data
    Case("task-name", "`task.name=nope`", "task.name", ["task.name=nope"]),
    Case("task-import", "`task.name=no_such_module:factory`", "task.name", ["task.name=no_such_module:factory"]),
    Case("task-options", "`task.options={foo: 1}` (testbed)", "task.options", ["task.options={foo: 1}"]),
    Case("math-no-train", "`task.name=math` without data", "task.options.train", ["task.name=math"]),
    Case("math-missing", "`task.options.train=/nonexistent.jsonl`", "task.options.train",
         ["task.name=math", "task.options={train: /nonexistent.jsonl}"]),
    Case("math-option", "`task.options.templat=boxed` (math)", "templat",
         setup=lambda d: _math(d) + ["task.options.templat=boxed"]),
    Case("math-bad-row", "a JSONL row without an answer", "answer",
         setup=lambda d: _math(d, [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?"}])),
    Case("math-empty", "an empty JSONL file", "no rows", setup=lambda d: _math(d, [""])),
    Case("math-utf8", "a JSONL file with invalid UTF-8", "not valid UTF-8",
         setup=lambda d: (d / "u.jsonl").write_bytes(b'{"problem": "\xff", "answer": "1"}\n') and
         ["task.name=math", f"task.options={{train: {d / 'u.jsonl'}}}"]),
    Case("math-1mb", "a 1 MB prompt", "prompt",
         setup=lambda d: _math(d, [{"problem": "x" * 1_000_000, "answer": "1"}, {"problem": "2+2?", "answer": "4"}])),
    Case("math-limit", "`task.options.limit=-1`", "task.options.limit",
         setup=lambda d: _math(d) + ["task.options.limit=-1"]),
    Case("gym-names", "`task.name=gym task.options.names=[no_such_task]`", "task.options.names",
         ["task.name=gym", "task.options={names: [no_such_task]}"]),
    Case("tool-turns", "`task.name=tool_use task.options.max_turns=-1`", "task.options.max_turns",
         setup=lambda d: ["task.name=tool_use", f"task.options={{train: {_jsonl(d / 't.jsonl', [{'problem': 'p', 'answer': '1'}])}, max_turns: -1}}"]),
    Case("tool-workers", "`task.options.sandbox_workers=0` (tool use)", "task.options.sandbox_workers",
         setup=lambda d: ["task.name=tool_use", f"task.options={{train: {_jsonl(d / 't.jsonl', [{'problem': 'p', 'answer': '1'}])}, sandbox_workers: 0}}"]),
    # the run folder
    Case("used-folder", "`trainer.resume=false` into a folder that holds a run", "trainer.resume",
         setup=lambda d: _used_folder(d) + ["trainer.resume=false"]),
    Case("resume-seed", "resume a seed-0 run with `seed=1`", "seed", setup=lambda d: _used_folder(d) + ["seed=1", "trainer.steps=3"]),
    Case("resume-model", "resume with another `model.testbed`", "model.testbed",
         setup=lambda d: _used_folder(d) + ["trainer.steps=3", "model.testbed.sft_steps=21"]),
]


def _env(d: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARE_")}
    env.update(PYTHONPATH=str(ROOT), STARE_CACHE=str(d.parent / "cache"), OMP_NUM_THREADS="1",
               OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    return env


def run_case(case: Case, root: Path) -> dict:
    d = root / case.id
    d.mkdir(parents=True)
    (d / "c.yaml").write_text(case.config if case.config is not None else "{}\n")
    extra = case.setup(d) if case.setup else []
    config = case.args[0] if case.no_config else str(d / "c.yaml")
    args = case.args[1:] if case.no_config else case.args
    cmd = [sys.executable, "-m", "stare.cli", "train", config, *BASE, f"output_dir={d / 'out'}", *args, *extra]
    t = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=d, env=_env(d), capture_output=True, text=True, timeout=LIMIT_S)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = None, (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    seconds = time.monotonic() - t
    lines = [ln for ln in err.splitlines() if ln.strip()]
    traceback = any(ln.startswith("Traceback") for ln in lines)
    ours = [ln for ln in lines if ln.startswith("stare: ")]
    raised = [ln for ln in lines if re.match(r"[\w.]+(Error|Exception|Interrupt)\b", ln)]
    message = ours[-1] if ours else raised[-1] if traceback and raised else (lines[-1] if lines else "")
    if rc is None:
        verdict = f"hangs (killed after {LIMIT_S} s)"
    elif rc == 0:
        verdict = "accepted (exit 0)"
    elif traceback:
        verdict = "traceback"
    elif len(ours) != 1:
        verdict = "no one-line error"
    elif case.field.lower() not in message.lower():
        verdict = f"one line, does not name {case.field}"
    else:
        verdict = "ok"
    return {"id": case.id, "input": case.what, "field": case.field, "rc": rc, "seconds": round(seconds, 1),
            "verdict": verdict, "message": message.replace(str(d), "<tmp>"), "stderr_lines": len(lines)}


def _cell(text: str, limit: int = 260) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    ap.add_argument("--json", type=Path, default=None, help="write the full records here")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--before", type=Path, default=None,
                    help="the --json of a run on other code (e.g. before a change): its results become a column")
    args = ap.parse_args()
    cases = [c for c in CASES if not args.only or c.id in args.only]
    with tempfile.TemporaryDirectory(prefix="stare-bad-inputs-") as tmp:
        root = Path(tmp) / "cases"
        root.mkdir()
        # build the tiny base model once, so the cases do not race to build it
        (Path(tmp) / "warm").mkdir()
        subprocess.run([sys.executable, "-c", "from stare.env.testbed import TestbedConfig, load_or_build; "
                        "load_or_build(TestbedConfig(hidden_size=32, layers=1, heads=2, sft_steps=20, "
                        "sft_examples=500, train_prompts=200, test_prompts=16), log=None)"],
                       env=_env(Path(tmp) / "warm"), check=True)
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda c: run_case(c, root), cases))
        total = time.monotonic() - t0
    ok = sum(r["verdict"] == "ok" for r in results)
    before = {r["id"]: r for r in json.loads(args.before.read_text())} if args.before else None
    rows = ["| # | input | result | message (stderr) |" + (" before |" if before else ""),
            "|---|---|---|---|" + ("---|" if before else "")]
    for i, r in enumerate(results, 1):
        old = ""
        if before is not None:
            b = before.get(r["id"])
            old = " — |" if b is None else f" {b['verdict'] if b['verdict'] != 'ok' else 'ok'}" + (
                f": {_cell(b['message'], 90)}" if b["verdict"] in ("traceback", "no one-line error") and b["message"]
                else "") + " |"
        rows.append(f"| {i} | {_cell(r['input'])} | {r['verdict']} | {_cell(r['message'] or '(none)')} |{old}")
    table = "\n".join(rows)
    summary = (f"{ok} of {len(results)} inputs get a one-line error that names the field "
               f"({total:.0f} s, {args.jobs} at a time)")
    if before is not None:
        summary += (f"; before: {sum(b['verdict'] == 'ok' for b in before.values())} of {len(before)} "
                    f"(the last column, from `--before`)")
    print(table)
    print()
    print(summary)
    if args.out:
        args.out.write_text(
            "# Bad inputs and the messages they get\n\n"
            "Each input below was given to `stare train` in a fresh process (a small testbed, the other settings "
            "valid), as a user would; the message is what it printed on stderr (`<tmp>`: the temporary folder). "
            "A row is ok when the command exited non-zero without a traceback and its error is one line naming "
            "the field. Generated by `python experiments/bad_inputs.py --out docs/errors.md` "
            f"(machine load average {os.getloadavg()[0]:.1f})"
            + (", the last column with `--before` from the same script run on the code before issue 15 "
               "(commit efce0f8)" if before else "") + ". The rules are in docs/training.md (Errors).\n\n"
            f"{summary}.\n\n{table}\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

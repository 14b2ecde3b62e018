"""Benchmark of the core: chunked vs naive token statistics, and the cost of token weighting.

Prints, measured side by side in one run:

1. Peak memory of the token statistics (log-prob + entropy) from hidden states and the LM head,
   chunked (``stare.stats.token_stats_from_hidden``) vs naive (full logits, log-softmax, softmax),
   forward and forward+backward. Goal: chunked <= 1/8 of naive. On the CPU each variant runs in a fresh
   subprocess and the peak is the kernel's high-water mark of resident memory (VmHWM, reset through
   /proc/self/clear_refs after the inputs exist); on CUDA it is ``torch.cuda.max_memory_allocated``.
2. Throughput (tokens/s) of the same, interleaved repeats, median. Goal: chunked >= 1.0x naive. Also
   the LM-head matmul alone (1 matmul forward, 3 forward+backward) as the bound no method can beat.
3. Cost of the STARE / STEER / Clip-Cov weighting (``policy_loss`` on the per-token tensors, with its
   backward) relative to the chunked token statistics forward of the same batch. Goal: <= 2%. And the
   number of host synchronisations on that hot path (goal: 0), counted with ``stare.debug``.

    python benchmarks/bench_core.py                      # N = 8192, d = 512, V = 32000, fp32, CPU
    python benchmarks/bench_core.py --device cuda        # where a GPU is available
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from stare import PolicyBatch, policy_loss
from stare.debug import record_host_syncs
from stare.stats import default_chunk_rows, token_stats_from_hidden, token_stats_reference


def make_inputs(n: int, d: int, vocab: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, d, generator=g) ).to(device).requires_grad_()
    weight = (torch.randn(vocab, d, generator=g) / d**0.5 * 2).to(device).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g).to(device)
    return hidden, weight, targets


def run_stats(variant: str, hidden, weight, targets, backward: bool, chunk_size: int | None):
    if variant == "chunked":
        with torch.set_grad_enabled(backward):
            s = token_stats_from_hidden(hidden, weight, targets, chunk_size=chunk_size)
    elif variant == "naive":
        with torch.set_grad_enabled(backward):
            s = token_stats_reference(hidden @ weight.T, targets)
    elif variant == "matmul":  # the LM-head matmul alone: the bound
        with torch.set_grad_enabled(backward):
            logits = hidden @ weight.T
        if backward:
            logits.backward(torch.ones_like(logits))
        return
    else:
        raise ValueError(variant)
    if backward:
        (s.log_prob.sum() + s.entropy.sum()).backward()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(args) -> None:
    """Run one variant once in this (fresh) process and print its peak extra memory in MiB."""
    torch.set_num_threads(args.threads)
    hidden, weight, targets = make_inputs(args.n, args.d, args.vocab, args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_stats(args.child, hidden, weight, targets, args.backward, args.chunk_size)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the resident-set high-water mark to the current size
        base = _rss_kib("VmRSS") * 1024
        run_stats(args.child, hidden, weight, targets, args.backward, args.chunk_size)
        peak = _rss_kib("VmHWM") * 1024 - base
    print(json.dumps({"peak_mib": peak / 2**20}))


def measure_memory(args, variant: str, backward: bool) -> float:
    cmd = [sys.executable, __file__, "--child", variant, "--n", str(args.n), "--d", str(args.d), "--vocab",
           str(args.vocab), "--device", args.device, "--threads", str(args.threads)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    if backward:
        cmd.append("--backward")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def time_interleaved(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so that drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def weighting_inputs(n: int, device: str, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    b = 16
    t = n // b
    lp = (-torch.rand(b, t, generator=g) * 4).to(device)
    ent = (torch.rand(b, t, generator=g) * 2).to(device)
    adv = torch.randn(b, generator=g).to(device)
    mask = torch.ones(b, t, device=device)
    return lp, ent, adv, mask


def weighting_call(name: str, lp, ent, adv, mask):
    lp = lp.clone().requires_grad_()
    batch = PolicyBatch(lp, adv, mask, entropy=ent, old_entropy=ent)
    state = {"seed": 3} if name == "clip_cov" else None
    out = policy_loss(name, batch, state=state, validate=False)
    out.loss.backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192, help="tokens")
    ap.add_argument("--d", type=int, default=512, help="hidden size")
    ap.add_argument("--vocab", type=int, default=32000, help="vocabulary size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk (default: ~64 MiB buffers)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_memory(args)

    torch.set_num_threads(args.threads)
    warnings_off()
    chunk = args.chunk_size or default_chunk_rows(args.vocab)
    print(f"# stare core benchmark  N={args.n} d={args.d} V={args.vocab} fp32 device={args.device} "
          f"threads={args.threads} chunk={chunk} tokens")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs" + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""))

    print("\n## 1. Peak extra memory (MiB)")
    print("| pass | naive | chunked | chunked / naive |")
    print("|---|---|---|---|")
    for backward in (False, True):
        naive = measure_memory(args, "naive", backward)
        chunked = measure_memory(args, "chunked", backward)
        print(f"| {'forward+backward' if backward else 'forward'} | {naive:.0f} | {chunked:.0f} | {chunked / naive:.3f} |")

    print("\n## 2. Throughput (tokens/s, median of interleaved repeats)")
    hidden, weight, targets = make_inputs(args.n, args.d, args.vocab, args.device)
    print("| pass | naive | chunked | chunked / naive | matmul bound | chunked / bound |")
    print("|---|---|---|---|---|---|")
    fwd_chunked = None
    for backward in (False, True):
        def reset():
            hidden.grad = None
            weight.grad = None

        fns = {v: (lambda v=v: (reset(), run_stats(v, hidden, weight, targets, backward, args.chunk_size)))
               for v in ("naive", "chunked", "matmul")}
        t = time_interleaved(fns, args.repeats, args.device)
        if not backward:
            fwd_chunked = t["chunked"]
        tput = {k: args.n / v for k, v in t.items()}
        print(f"| {'forward+backward' if backward else 'forward'} | {tput['naive']:.0f} | {tput['chunked']:.0f} | "
              f"{tput['chunked'] / tput['naive']:.2f} | {tput['matmul']:.0f} | {tput['chunked'] / tput['matmul']:.2f} |")

    print("\n## 3. Token weighting vs the token statistics forward of the same batch")
    lp, ent, adv, mask = weighting_inputs(args.n, args.device)
    print("| objective | seconds | share of token-stats forward | host syncs |")
    print("|---|---|---|---|")
    for name in ("ppo", "stare", "steer", "clip_cov"):
        t = time_interleaved({name: lambda name=name: weighting_call(name, lp, ent, adv, mask)}, 20, args.device)[name]
        with record_host_syncs() as found:
            weighting_call(name, lp, ent, adv, mask)
        print(f"| {name} | {t:.5f} | {100 * t / fwd_chunked:.2f}% | {len(found)} |")


def warnings_off() -> None:
    import warnings

    from stare.inert import InertKnobWarning

    warnings.simplefilter("ignore", InertKnobWarning)


if __name__ == "__main__":
    main()

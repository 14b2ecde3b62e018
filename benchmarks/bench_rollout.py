"""Rollout throughput on the testbed model: KV-cached sampling vs recomputing the full prefix each token.

Same prompts, same number of new tokens (EOS suppressed so both generate exactly ``--new-tokens``),
interleaved repeats, median. Goal: cached >= 5x the tokens/s of full recomputation.

    python benchmarks/bench_rollout.py                 # 16 prompts x 8 samples, 32 new tokens, 1 thread
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from stare.env.testbed import AdditionTask
    from stare.env.testbed import load_or_build

    model, tok = load_or_build()
    task = AdditionTask()
    prompts = [[tok.bos_token_id] + tok(e.prompt, add_special_tokens=False).input_ids
               for e in task.examples("test")[: args.prompts]]
    rows = [p for p in prompts for _ in range(args.n)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    attn = torch.zeros_like(ids)
    for i, p in enumerate(rows):
        ids[i, width - len(p):] = torch.tensor(p)
        attn[i, width - len(p):] = 1

    def run(use_cache: bool) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=attn, do_sample=True, max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, use_cache=use_cache, top_k=0,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        return time.perf_counter() - t0

    run(True), run(False)  # warm-up
    times = {True: [], False: []}
    for _ in range(args.repeats):
        for uc in (True, False):
            times[uc].append(run(uc))
    tokens = len(rows) * args.new_tokens
    cached, full = (tokens / statistics.median(times[uc]) for uc in (True, False))
    print(f"# rollout on the testbed model ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params), "
          f"{len(rows)} sequences x {args.new_tokens} new tokens, prompts of {width} tokens, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    print("| generation | tokens/s |")
    print("|---|---|")
    print(f"| KV cache | {cached:.0f} |")
    print(f"| full recomputation | {full:.0f} |")
    print(f"| ratio | {cached / full:.2f}x |")


if __name__ == "__main__":
    main()

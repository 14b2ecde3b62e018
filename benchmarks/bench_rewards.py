"""Measured figures for the verifier, the calculator sandbox and reasoning-gym scoring (CPU).

    python benchmarks/bench_rewards.py [--data DIR]     # DIR: the verl math parquet folder

DIR defaults to $STARE_MATH_DATA, else ../shared/data/math beside the repository. Prints Markdown
tables: adversarial answers (seconds each, main thread and a worker thread), math-verify latency on
the reference answers, agreement counts (reference as response; swapped answers), sandbox latencies.
About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stare.env.data import load_examples  # noqa: E402
from stare.env.answers import normalize_answer
from stare.env.verifiers.math import MathVerifier  # noqa: E402
from stare.env.tasks.gym import GymTask  # noqa: E402
from stare.env.tools import Sandbox  # noqa: E402

ADVERSARIAL = {
    "9^{9^{9}}": r"\boxed{9^{9^{9}}}",
    "2^{ten thousand 9s}": r"\boxed{2^{" + "9" * 10_000 + "}}",
    "5,000 nested parentheses": r"\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "(10^{10})!": r"\boxed{(10^{10})!}",
    "1 MB string": "7" * 1_000_000,
    "1 MB boxed": r"\boxed{" + "1" * 1_000_000 + "}",
    "invalid UTF-8": b"\\boxed{4\xff\xfe2} Answer: \xc3\x28",
    "unbalanced braces": r"\boxed{\frac{1}{2",
}


def timed(fn, *args):
    t = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - t


def adversarial(v: MathVerifier) -> None:
    rows = {}
    for name, resp in ADVERSARIAL.items():
        s, dt = timed(v.score, "42", resp)
        rows[name] = [dt, s.acc]
    out = {}

    def in_thread():
        for name, resp in ADVERSARIAL.items():
            out[name] = timed(v.score, "42", resp)

    th = threading.Thread(target=in_thread)
    th.start()
    th.join()
    print("\n| adversarial answer (reference 42) | main thread s | worker thread s | acc |")
    print("|---|---|---|---|")
    for name, (dt, acc) in rows.items():
        print(f"| {name} | {dt:.3f} | {out[name][1]:.3f} | {acc:.0f} |")


def references(v: MathVerifier, data: Path) -> None:
    golds = []
    for name in ("aime24", "aime25", "math500"):
        golds += [e.answer for e in load_examples(data / f"{name}.parquet")]
    scores = v.score_many(golds, ["\\boxed{" + a + "}" for a in golds])
    ok_pipeline = sum(s.acc == 1.0 for s in scores)
    lat = []
    ok_mv = 0
    for a in golds:
        value, dt = timed(v.pool.call, "equivalent", a, a)
        lat.append(dt)
        ok_mv += bool(value["equal"])
    n = len(golds)
    swapped = []
    for i, a in enumerate(golds):
        j = next(k % n for k in range(i + 1, i + n) if normalize_answer(golds[k % n]) != normalize_answer(a))
        swapped.append(golds[j])
    t = time.monotonic()
    rej = sum(s.acc == 0.0 for s in v.score_many(golds, ["\\boxed{" + b + "}" for b in swapped]))
    swap_s = time.monotonic() - t
    lat.sort()
    print(f"\nAIME24 + AIME25 + MATH-500 reference answers: {n}")
    print(f"- reference as \\boxed{{}} response, whole scorer: {ok_pipeline}/{n} score 1")
    print(f"- reference vs itself through math-verify (no fast path): {ok_mv}/{n} equal")
    print(f"- swapped with the next problem's different answer: {rej}/{n} rejected ({swap_s:.1f} s, 2 workers)")
    print(f"- math-verify call latency (one worker, sequential): median {statistics.median(lat) * 1e3:.1f} ms, "
          f"p99 {lat[int(0.99 * (n - 1))] * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms")
    print(f"- verifier counters: {v.stats}")


def sandbox() -> None:
    s = Sandbox()
    _, start = timed(s.pool.wait_ready)
    cases = {
        "print(sum(k * k for k in range(1, 101)))": None,
        "import os": None,
        "open('/etc/passwd')": None,
        "__import__('os')": None,
        "().__class__.__bases__[0].__subclasses__()": None,
        "while True: pass": None,
        "x = [[0] * 100000 for _ in range(100000)]": None,
        "9 ** 9 ** 9": None,
    }
    print(f"\nSandbox (worker start {start:.2f} s)\n\n| code | seconds | reply |\n|---|---|---|")
    for code in cases:
        out, dt = timed(s.run, code)
        print(f"| `{code}` | {dt:.3f} | {out.strip()[:70]} |")
    print(f"\npool counters: {s.pool.stats}")
    s.close()


def gym() -> None:
    t = GymTask(["chain_sum", "word_sorting", "sokoban"], size=50, test_size=1)
    ex = t.examples("train")
    _, start = timed(t.pool.wait_ready)
    _, dt = timed(t.score_batch, ex, [f"<answer>{e.answer}</answer>" for e in ex])
    print(f"\nreasoning-gym: worker start {start:.2f} s; {len(ex)} oracle answers scored in {dt:.2f} s")
    t.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    default = os.environ.get("STARE_MATH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "math"
    parser.add_argument("--data", type=Path, default=Path(default))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    v = MathVerifier()
    _, start = timed(v.pool.wait_ready)
    print(f"math-verify pool: 2 workers ready in {start:.2f} s (each {v.timeout_s:g} s per check)")
    adversarial(v)
    if (args.data / "aime24.parquet").is_file():
        references(v, args.data)
    else:
        print(f"\n(no reference data at {args.data}: agreement skipped)")
    v.close()
    sandbox()
    gym()


if __name__ == "__main__":
    main()

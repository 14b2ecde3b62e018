"""The calculator under hostile programs, and tool-episode throughput with parallel sandbox workers.

    python benchmarks/bench_tools.py [--repeat 3] [--episodes 32] [--workers 4] [--code DIR]

1. Every program of ``HOSTILE`` (our own: growth paths of the interpreter, hash collisions, deep
   nesting, big-number paths) runs through ``Sandbox.run`` (the real worker process and its limits);
   the table gives the slowest of ``--repeat`` runs, to the reply (the refusal, or the result), and the
   reply's first line. The interpreter's own budget should stop each well under a second; the 5 s wall
   clock and the 3 CPU-second limit are the backstop.
2. A batch of ``--episodes`` tool-use episodes (a scripted policy whose two tool calls per episode run a
   mix of ordinary and hostile programs) through ``run_tool_episodes``, with a sandbox of one worker and
   of ``--workers`` workers, side by side: wall-clock seconds and episodes per second.

``--code DIR`` imports ``stare`` from another checkout (e.g. ``git worktree add ../before efce0f8``, the
code before issue 15, for the "before" column of docs/data_and_rewards.md). Prints Markdown; under a
minute on 2 cores with the metering, about 2 minutes without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

_code = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv else str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _code)

from stare.env.base import Example  # noqa: E402
from stare.env.tasks.tool_use import CalculatorEnv, Generation, run_tool_episodes  # noqa: E402
from stare.env.tools import Sandbox  # noqa: E402

# equal but distinct elements (identical ones would let C code skip the comparison)
_DAG = ("a = [10 ** 20 + i * 0 for i in range(1000)]\nb = [a] * 1000\n"
        "a2 = [10 ** 20 + i * 0 for i in range(1000)]\nb2 = [a2] * 1000\n")
# equal to b2 up to its very last element: each comparison with b2 makes 10^6 element comparisons
_DIFFERS = "a3 = [10 ** 20 + i * 0 for i in range(1000)]\na3[-1] = 0\nb3 = [a] * 999 + [a3]\n"
# 135,000 levels: 90 per statement (the expression-depth limit is 100), 1,500 statements
_DEEP_TUPLE = "t = ()\nfor i in range(1500):\n    t = " + "(" * 90 + "t" + ",)" * 90 + "\n"
_COLLIDE = "P = 2 ** 61 - 1\n"

HOSTILE = {
    # membership and equality that the C level runs element by element
    "float in a huge range": "print(1.5 in range(10 ** 15))",
    "Fraction in a huge range": "print(Fraction(1, 2) in range(10 ** 15))",
    "equal nested lists (10^9 compares)": _DAG + "c = [b] * 1000\nc2 = [b2] * 1000\nprint(c == c2)",
    "ordering nested lists": _DAG + "c = [b] * 1000\nc2 = [b2] * 1000\nprint(c <= c2)",
    "membership in nested lists": _DAG + _DIFFERS + "L = [b2] * 1000\nprint(b3 in L)",
    # list methods
    "list.count of nested lists": _DAG + "L = [b2] * 1000\nprint(L.count(b))",
    "list.index of nested lists": _DAG + _DIFFERS + "L = [b2] * 999 + [b3]\nprint(L.index(b3))",
    "list.insert and pop at the front": "L = [0] * 99000\nfor i in range(200000):\n    L.insert(0, i)\n"
                                        "    L.pop(0)\nprint(len(L))",
    "list.sort of nested lists": _DAG + "L = [b2, b] * 500\nL.sort()\nprint(len(L))",
    "sorted / max of nested lists": _DAG + "L = [b2, b] * 500\nprint(max(L) is b)",
    # sums and big numbers
    "sum of lists": "print(len(sum([[1] * 1000] * 1000, [])))",
    "sum of strings": "print(len(sum(['x' * 1000] * 1000, '')))",
    "Fraction exponent": "print(3 ** Fraction(10 ** 7))",
    "Fraction ** Fraction": "print(Fraction(3) ** Fraction(10 ** 7))",
    "Fraction parsing an exponent": "print(Fraction('1e100000000'))",
    "Fraction parsing a negative exponent": "print(Fraction('1e-100000000'))",
    "three-argument pow": "print(pow(3, 10 ** 4000, 10 ** 4000 + 7))",
    "three-argument pow in a loop": "m = 10 ** 2000 + 7\nfor i in range(1000):\n    x = pow(3 + i, 10 ** 2000, m)\nprint(x % 10)",
    "big division in a loop": "x = 10 ** 4100\ny = 10 ** 2050 + 7\nfor i in range(100000):\n    z = x % y\nprint(z % 10)",
    "big divmod in a loop": "x = 10 ** 4100\ny = 10 ** 2050 + 7\nfor i in range(100000):\n    q, r = divmod(x, y)\nprint(r % 10)",
    "str of a big int in a loop": "x = 7 ** 4900\nfor i in range(100000):\n    s = str(x)\nprint(len(s))",
    "int of a long string in a loop": "s = '7' * 4200\nfor i in range(100000):\n    x = int(s)\nprint(x % 10)",
    # hashing
    "set of colliding integers": _COLLIDE + "print(len({P * k for k in range(1, 40000)}))",
    "set() of colliding integers": _COLLIDE + "L = [P * k for k in range(1, 40000)]\nprint(len(set(L)))",
    "membership in a colliding set": _COLLIDE + "S = {P * k for k in range(1, 2000)}\nn = 0\n"
                                     "for i in range(100000):\n    n += (P * 2001) in S\nprint(n)",
    "set union of colliding sets": _COLLIDE + "A = {P * k for k in range(1, 1500)}\nB = {P * k for k in range(1500, 3000)}\n"
                                   "for i in range(100):\n    C = A | B\nprint(len(C))",
    "deeply nested tuple in a set": _DEEP_TUPLE + "print(len({t}))",
    "deeply nested tuple compared": _DEEP_TUPLE + "print(t == (t,))",
    "deeply nested tuple printed": _DEEP_TUPLE + "print(t)",
    "self-containing list compared": "a = [0]\na[0] = a\nb = [0]\nb[0] = b\nprint(a == b)",
    # loops and allocation (already bounded before; kept as controls)
    "while True": "while True:\n    pass",
    "memory bomb": "x = [0] * 99999\nwhile True:\n    x = x + [0]",
    "big power": "print(9 ** 9 ** 9)",
    "factorial": "print(factorial(10 ** 6))",
}

ORDINARY = ["print(sum(i * i for i in range(100)))", "print(comb(30, 12), gcd(84, 36))",
            "x = Fraction(1, 3) + Fraction(1, 6)\nprint(x)", "print(sorted([5, 3, 9, 1]))"]


def hostile_table(sandbox: Sandbox, repeat: int) -> list[tuple[str, float, str]]:
    rows = []
    for name, code in HOSTILE.items():
        worst, reply = 0.0, ""
        for _ in range(repeat):
            t = time.monotonic()
            reply = sandbox.run(code)
            worst = max(worst, time.monotonic() - t)
        rows.append((name, worst, reply.strip().splitlines()[-1][:110] if reply.strip() else ""))
    return rows


class ScriptedPolicy:
    """Two tool calls per episode, then an answer; programs cycle through ordinary and hostile ones."""

    def __init__(self, programs: list[str]):
        self.programs = programs

    def __call__(self, contexts, budgets, stops):
        out = []
        for ctx in contexts:
            text = "".join(map(chr, ctx))
            k = int(text.split("|", 1)[0])
            turn = text.count("<output>")
            if turn < 2:
                body = f"<code>{self.programs[(2 * k + turn) % len(self.programs)]}</code>"
                out.append(Generation(list(map(ord, body)), body, "stop"))
            else:
                out.append(Generation(list(map(ord, " \\boxed{1}")), " \\boxed{1}", "eos"))
        return out


def throughput(workers: int, episodes: int, programs: list[str]) -> float:
    sandbox = Sandbox(num_workers=workers)
    try:
        sandbox.pool.wait_ready()
        env = CalculatorEnv(sandbox, max_turns=2)
        examples = [Example(f"{k}|", "1") for k in range(episodes)]
        prompts = [list(map(ord, f"{k}|")) for k in range(episodes)]
        t = time.monotonic()
        eps = run_tool_episodes(ScriptedPolicy(programs), lambda s: list(map(ord, s)), env, examples, prompts,
                                max_new_tokens=100_000, max_parallel_steps=workers)
        took = time.monotonic() - t
        assert all(e.tool_calls == 2 for e in eps)
    finally:
        sandbox.close()
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--code", default=None, help="a checkout whose stare package to import")
    args = ap.parse_args()
    import stare

    print(f"stare from {Path(stare.__file__).parent.parent.name}; {os.cpu_count()} logical CPUs; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    sandbox = Sandbox()
    try:
        sandbox.pool.wait_ready()
        rows = hostile_table(sandbox, args.repeat)
    finally:
        sandbox.close()
    print(f"| hostile program | seconds to the reply (worst of {args.repeat}) | reply |")
    print("|---|---|---|")
    for name, seconds, reply in rows:
        print(f"| {name} | {seconds:.3f} | {reply.replace('|', '/')} |")
    worst = max(rows, key=lambda r: r[1])
    print(f"\nworst case: {worst[0]}, {worst[1]:.3f} s ({len(rows)} programs)\n")

    mix = ORDINARY * 3 + [HOSTILE["while True"], HOSTILE["set of colliding integers"], HOSTILE["sum of lists"],
                          HOSTILE["Fraction exponent"]]
    one = throughput(1, args.episodes, mix)
    many = throughput(args.workers, args.episodes, mix)
    calls = 2 * args.episodes
    print(f"| sandbox workers | seconds for {args.episodes} episodes ({calls} tool calls) | episodes / s |")
    print("|---|---|---|")
    print(f"| 1 | {one:.2f} | {args.episodes / one:.1f} |")
    print(f"| {args.workers} | {many:.2f} | {args.episodes / many:.1f} |")
    print(f"\nspeed-up {one / many:.2f}x with {args.workers} workers on {os.cpu_count()} logical CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``stare demo`` and ``stare objectives``."""

from __future__ import annotations

import argparse
import dataclasses
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    from .toy import ToyConfig, main

    main(ToyConfig(seed=args.seed, steps=args.steps))
    return 0


def _cmd_objectives(args: argparse.Namespace) -> int:
    from .objectives import get_objective, list_objectives

    for name in list_objectives():
        obj = get_objective(name)
        print(f"{name}: {obj.summary}")
        print(f"    acts at: {', '.join(obj.acts_at)}" + (f"; needs: {', '.join(sorted(obj.needs))}" if obj.needs else ""))
        defaults = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(obj.params))
        print(f"    params: {defaults}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stare", description="Entropy-stable RLVR: STARE and its peers.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="GRPO-ds vs STARE-O1 on a toy policy (seconds, CPU)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=150)
    demo.set_defaults(func=_cmd_demo)
    objs = sub.add_parser("objectives", help="list the registered objectives with their defaults")
    objs.set_defaults(func=_cmd_objectives)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

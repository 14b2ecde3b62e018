"""A stand-in for a calculator with a bug: code that the real interpreter refuses runs here, so the
process limits of the sandbox (CPU time, memory, wall clock, no file writes) can be tested."""

import os
import sys


def run(code):
    if code == "spin":
        while True:
            pass
    if code == "allocate":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 24))
    if code == "segfault":
        os.kill(os.getpid(), 11)
    if code.startswith("write "):
        with open(code[len("write "):], "w") as f:
            f.write("data" * 1000)
        return "written"
    if code == "modules":
        return ",".join(sorted(m for m in ("torch", "stare") if m in sys.modules)) or "none"
    return "ok"


HANDLERS = {"run": run}

"""Handler for tests/rewards/test_procpool.py: loaded by path in a worker process."""

import os
import sys
import time


def echo(x):
    return x


def pid():
    return os.getpid()


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def spin():
    while True:
        pass


def allocate(mb):
    return len(bytearray(mb << 20))


def die():
    os._exit(3)


def fail():
    raise ValueError("bad input")


def noisy():
    print("library chatter on stdout")
    sys.stdout.flush()
    return "clean"


def use_eval():
    try:
        return eval("1 + 1")
    except RuntimeError as e:
        return f"refused: {e}"


def loaded_modules():
    return sorted(m for m in ("torch", "stare", "numpy") if m in sys.modules)


def write_file(path):
    with open(path, "w") as f:
        f.write("x" * 100)
    return "written"


def big_reply():
    return "y" * (2 << 20)


HANDLERS = {f.__name__: f for f in (echo, pid, sleep, spin, allocate, die, fail, noisy, use_eval,
                                     loaded_modules, write_file, big_reply)}

"""Handler for tests/env/test_procpool.py: a worker whose start-up takes $STARE_TEST_WARMUP_S seconds."""

import os
import time


def warmup():
    time.sleep(float(os.environ.get("STARE_TEST_WARMUP_S", "2")))


def echo(x):
    return x


HANDLERS = {"echo": echo}

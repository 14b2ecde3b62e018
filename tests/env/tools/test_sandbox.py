"""The sandbox process: hostile code gets a clean error, the process limits hold even if the
interpreter had a bug, and the caller keeps going.

Run: python -m pytest -q tests/tools/test_sandbox.py   (CPU; about 10 s: deliberate CPU-limit waits)."""

import time
from pathlib import Path

import pytest

from stare.env.tools import Sandbox

HOSTILE = Path(__file__).with_name("_hostile_handler.py")


@pytest.fixture(scope="module")
def sandbox():
    s = Sandbox()
    yield s
    s.close()


@pytest.mark.parametrize(
    "code, message",
    [
        ("import os", "imports are not allowed"),
        ("open('/etc/passwd').read()", "name 'open' is not defined"),
        ("__import__('os').system('echo pwned')", "names starting with '__' are not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "is not allowed"),
        ("while True:\n    pass", "step limit reached"),
        ("x = [[0] * 100000 for _ in range(100000)]", "step limit reached"),
        ("9 ** 9 ** 9", "result too large"),
        ("'x' * 10 ** 10", "sequence too long"),
    ],
)
def test_hostile_code_gets_a_clean_error(sandbox, code, message):
    deaths = sandbox.pool.stats.deaths + sandbox.pool.stats.timeouts
    t = time.monotonic()
    out = sandbox.run(code)
    assert message in out and "Error" in out
    assert time.monotonic() - t < 5
    assert sandbox.pool.stats.deaths + sandbox.pool.stats.timeouts == deaths  # refused, not killed
    assert sandbox.run("print(6 * 7)") == "42\n"  # and the next call is served


def test_process_limits_hold_if_the_interpreter_fails():
    # Each case ends the worker or its call; a fresh worker answers the next call.
    with_cpu = Sandbox(handler=HOSTILE, timeout_s=20, cpu_s=1, memory_mb=256)
    try:
        t = time.monotonic()
        assert "CPU-time or memory limit" in with_cpu.run("spin")  # SIGXCPU after ~2 CPU-seconds
        assert time.monotonic() - t < 10
        assert "MemoryError" in with_cpu.run("allocate")  # 256 MiB address space
        assert "process was stopped" in with_cpu.run("segfault")
        assert with_cpu.run("fine") == "ok"
        assert with_cpu.run("modules") == "none"  # the worker never imported stare or torch
    finally:
        with_cpu.close()
    wall = Sandbox(handler=HOSTILE, timeout_s=1, cpu_s=None)
    try:
        t = time.monotonic()
        assert wall.run("spin") == "Error: time limit exceeded (1 s); the calculator was restarted"
        assert time.monotonic() - t < 2
        assert wall.run("fine") == "ok"
    finally:
        wall.close()


def test_no_file_writes(tmp_path):
    s = Sandbox(handler=HOSTILE)
    try:
        target = tmp_path / "loot.txt"
        assert "File too large" in s.run(f"write {target}")
        assert not target.exists() or target.stat().st_size == 0
    finally:
        s.close()

"""ProcessPool: time limits that hold from any thread, crash and limit handling, the JSON protocol.

Run: python -m pytest -q tests/rewards/test_procpool.py   (CPU; about 15 s, most of it deliberate
waits on time limits)."""

import threading
import time
from pathlib import Path

import pytest

from stare.env.procpool import CallTimeout, ProcessPool, WorkerDied, WorkerError

HANDLER = Path(__file__).with_name("_pool_handler.py")


@pytest.fixture(scope="module")
def pool():
    p = ProcessPool(HANDLER, num_workers=2, timeout_s=1.0, memory_mb=512, cpu_s=2,
                    disable_builtins=("eval",), max_reply_bytes=1 << 20)
    p.wait_ready()
    yield p
    p.close()


def test_round_trip_keeps_values(pool):
    value = {"a": [1, 2.5, None, True], "text": "ünïcode \udcff lone surrogate"}
    assert pool.call("echo", value) == value


def test_worker_is_a_bare_interpreter(pool):
    # The handler is loaded by path: neither stare nor torch is imported in the worker.
    assert pool.call("loaded_modules") == []


def test_handler_exception_is_reported_and_worker_survives(pool):
    with pytest.raises(WorkerError, match="ValueError: bad input"):
        pool.call("fail")
    before = pool.stats.spawned
    assert pool.call("echo", 7) == 7
    assert pool.stats.spawned == before  # nobody was replaced


def test_timeout_kills_and_replaces_the_worker(pool):
    t = time.monotonic()
    with pytest.raises(CallTimeout):
        pool.call("spin")
    assert time.monotonic() - t < 1.5  # limit 1.0 s plus the kill
    assert pool.call("echo", "after") == "after"
    assert pool.call("sleep", 0.05, timeout_s=5.0) == 0.05  # per-call override


def test_timeout_holds_from_a_worker_thread(pool):
    result = {}

    def worker():
        t = time.monotonic()
        try:
            pool.call("spin")
        except CallTimeout:
            result["elapsed"] = time.monotonic() - t

    th = threading.Thread(target=worker)
    th.start()
    th.join(10)
    assert not th.is_alive()
    assert result["elapsed"] < 1.5


def test_cpu_limit_ends_a_worker_that_the_wall_clock_would_let_run():
    with ProcessPool(HANDLER, timeout_s=20.0, cpu_s=1) as p:
        t = time.monotonic()
        with pytest.raises(WorkerDied):
            p.call("spin")
        # RLIMIT_CPU is re-armed to used + 1 + 1 s (whole seconds, rounded up): the kernel's SIGXCPU
        # arrives after about 2 CPU-seconds, long before the 20 s wall clock.
        assert time.monotonic() - t < 10
        assert p.call("echo", 1) == 1


def test_memory_limit_gives_memory_error(pool):
    with pytest.raises(WorkerError, match="MemoryError"):
        pool.call("allocate", 1024)  # 1 GiB > 512 MiB address space
    assert pool.call("allocate", 16) == 16 << 20


def test_crash_is_reported_and_replaced(pool):
    with pytest.raises(WorkerDied):
        pool.call("die")
    assert pool.call("echo", "alive") == "alive"


def test_stdout_chatter_does_not_corrupt_the_protocol(pool):
    assert pool.call("noisy") == "clean"


def test_disabled_eval_raises_inside_the_worker(pool):
    assert pool.call("use_eval") == "refused: this builtin is disabled in this worker"


def test_file_writes_are_refused(pool, tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(WorkerError, match="File too large"):
        pool.call("write_file", str(target))
    assert not target.exists() or target.stat().st_size == 0


def test_oversized_reply_counts_as_a_dead_worker(pool):
    with pytest.raises(WorkerDied, match="reply"):
        pool.call("big_reply")  # 2 MiB of JSON > max_reply_bytes = 1 MiB
    assert pool.call("echo", 1) == 1


def test_unknown_function_lists_the_known_ones(pool):
    with pytest.raises(WorkerError, match=r"unknown function 'nope'.*'echo'"):
        pool.call("nope")


def test_map_keeps_order_and_maps_errors(pool):
    out = pool.map("echo", [(i,) for i in range(6)])
    assert out == list(range(6))
    out = pool.map("sleep", [(0.01,), (5.0,)], on_error=lambda e, a: type(e).__name__)
    assert out == [0.01, "CallTimeout"]


def test_startup_failure_names_the_handler(tmp_path):
    broken = tmp_path / "broken_handler.py"
    broken.write_text("import not_a_module_anywhere\nHANDLERS = {}\n")
    with ProcessPool(broken, startup_timeout_s=30) as p:
        with pytest.raises(RuntimeError, match="broken_handler.py failed to start"):
            p.call("anything")


def test_bad_arguments_and_closed_pool(tmp_path):
    with pytest.raises(FileNotFoundError):
        ProcessPool(tmp_path / "missing.py")
    with pytest.raises(ValueError, match="num_workers"):
        ProcessPool(HANDLER, num_workers=0)
    p = ProcessPool(HANDLER)
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.call("echo", 1)


def test_a_spare_replaces_a_killed_worker():
    with ProcessPool(HANDLER, timeout_s=0.5, spares=1) as p:
        spare_pid = p._spares[0].proc.pid
        first = p.call("pid")
        with pytest.raises(CallTimeout):
            p.call("spin")
        assert p.call("pid") == spare_pid != first  # the started spare took over
        assert len(p._spares) == 1 and p._spares[0].proc.pid != spare_pid  # and a new spare waits


# -- issue 15: the limit counts from the call, start-up included; workers start with the pool ----------

SLOW = Path(__file__).with_name("_slow_start_handler.py")


def test_the_limit_counts_from_the_call_while_the_worker_is_still_starting(monkeypatch):
    monkeypatch.setenv("STARE_TEST_WARMUP_S", "2.5")
    with ProcessPool(SLOW, timeout_s=0.5, memory_mb=None) as p:
        t = time.monotonic()
        with pytest.raises(CallTimeout) as e:
            p.call("echo", 1)  # waited for the whole start-up before
        assert time.monotonic() - t < 0.9 and e.value.startup
        assert p.stats.timeouts == 1 and p.stats.waits_timed_out == 1 and p.stats.spawned == 1  # nothing killed
        p.wait_ready()  # the same worker finishes starting (spawned with the pool, not at the first call)
        assert p.stats.spawned == 1 and p.call("echo", 2) == 2


def test_a_worker_that_never_starts_costs_each_caller_only_its_limit(monkeypatch):
    monkeypatch.setenv("STARE_TEST_WARMUP_S", "600")
    born = time.monotonic()
    with ProcessPool(SLOW, timeout_s=0.3, memory_mb=None, startup_timeout_s=1.5) as p:
        for _ in range(2):
            t = time.monotonic()
            with pytest.raises(CallTimeout):
                p.call("echo", 1)
            assert time.monotonic() - t < 0.7
        time.sleep(max(0.0, born + 1.6 - time.monotonic()))
        with pytest.raises(RuntimeError, match="failed to start .*not started within 1.5 s"):
            p.call("echo", 1)  # past its own start-up limit: replaced, and the caller told why
        assert p.stats.spawned == 2


def test_waiting_for_a_free_worker_counts_against_the_limit(pool):
    results = []

    def busy():
        results.append(pool.call("sleep", 0.8, timeout_s=5.0))

    threads = [threading.Thread(target=busy) for _ in range(2)]  # both workers busy for 0.8 s
    for th in threads:
        th.start()
    time.sleep(0.1)
    t = time.monotonic()
    with pytest.raises(CallTimeout) as e:
        pool.call("echo", 1, timeout_s=0.3)
    assert time.monotonic() - t < 0.6 and e.value.startup
    for th in threads:
        th.join()
    assert results == [0.8, 0.8]

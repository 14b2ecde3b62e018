"""Worker entry point of ``stare.env.procpool.ProcessPool``; run by path, never imported by stare.

Usage: ``python -I _procworker.py HANDLER_FILE [LIMITS_JSON]``. Standard library only, and it loads
nothing from the ``stare`` package (whose ``__init__`` imports torch): only the handler file, by path.

Order of events: keep private copies of stdin/stdout for the protocol and point fds 0/1 at
/dev/null and stderr (so a library that prints cannot corrupt the frames, and a handler cannot read
them); set resource limits (address space; no core files; no file writes); load the handler and run
its ``warmup()``; replace the builtins named in ``disable_builtins`` (e.g. ``eval``) by a function that
raises and counts (``eval_attempts``); say ready; then serve requests until stdin
closes. Each request is ``(name, args, cpu_seconds)``; before running it the CPU-time limit is re-armed
to the CPU time used so far plus ``cpu_seconds`` (the kernel then kills the process with SIGXCPU).
"""

import builtins
import importlib.util
import json
import os
import pickle
import resource
import struct
import sys
import traceback

_HEADER = struct.Struct(">I")

# Calls to disabled builtins refused since the worker started; handlers read it to report them.
eval_attempts = 0


def _refuse(*args, **kwargs):
    global eval_attempts
    eval_attempts += 1
    raise RuntimeError("this builtin is disabled in this worker")


def _read_exact(f, n):
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _send(f, text):
    data = text.encode("utf-8")
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:  # a raw pipe write may be partial
        view = view[f.write(view):]


def _write(f, obj):
    _send(f, json.dumps(obj))


def _set_limit(kind, soft):
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def main(argv):
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)

    limits = json.loads(argv[2]) if len(argv) > 2 else {}
    try:
        _set_limit(resource.RLIMIT_CORE, 0)
        if limits.get("memory_mb"):
            _set_limit(resource.RLIMIT_AS, int(limits["memory_mb"]) << 20)
        _set_limit(resource.RLIMIT_FSIZE, 0)  # writing to any file fails with EFBIG
        spec = importlib.util.spec_from_file_location("_stare_handler", argv[1])
        handler = importlib.util.module_from_spec(spec)
        sys.modules["_stare_handler"] = handler
        spec.loader.exec_module(handler)
        handlers = dict(handler.HANDLERS)
        if hasattr(handler, "warmup"):
            handler.warmup()
        for name in limits.get("disable_builtins", ()):
            setattr(builtins, name, _refuse)
    except BaseException:
        _write(proto_out, {"ready": False, "error": traceback.format_exc(limit=3)})
        return 1
    _write(proto_out, {"ready": True})

    while True:
        header = _read_exact(proto_in, _HEADER.size)
        if header is None:
            return 0
        body = _read_exact(proto_in, _HEADER.unpack(header)[0])
        if body is None:
            return 0
        name, args, cpu_s = pickle.loads(body)  # from the parent process, which is trusted
        if cpu_s:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            _set_limit(resource.RLIMIT_CPU, int(usage.ru_utime + usage.ru_stime) + int(cpu_s) + 1)
        try:
            fn = handlers[name]
        except KeyError:
            _write(proto_out, {"ok": False, "error": f"unknown function {name!r}; known: {sorted(handlers)}"})
            continue
        try:
            data = json.dumps({"ok": True, "value": fn(*args)})
        except MemoryError:
            data = json.dumps({"ok": False, "error": "MemoryError: the worker's memory limit was reached"})
        except BaseException as e:  # noqa: BLE001 - everything goes back to the caller as text
            data = json.dumps({"ok": False, "error": f"{type(e).__name__}: {str(e)[:2000]}"})
        _send(proto_out, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Find host synchronisations in tensor code, on any device (CPU included).

A host sync (``.item()``, ``nonzero``, boolean-mask indexing, ``torch.equal``...) stalls a GPU pipeline
once per call; inside a per-micro-batch loss it costs throughput. On the CPU nothing visibly stalls, so
the usual tool (``torch.cuda.set_sync_debug_mode``) cannot be used in CPU tests. ``record_host_syncs``
instead watches the ATen operators that are dispatched and records those whose result size or value has
to be read back by the host, whatever the device, and the Tensor methods that read memory directly.

    with record_host_syncs() as syncs:
        policy_loss("stare", batch, validate=False)
    assert not syncs, syncs
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["record_host_syncs", "SYNCING_OPS"]

# Operators whose output the host must read (a value, or a data-dependent shape).
SYNCING_OPS = {
    "aten::_local_scalar_dense",  # .item(), float(t), int(t), bool(t), .tolist()
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::equal",
    "aten::unique",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::repeat_interleave",
}


def _has_bool_index(args) -> bool:
    for a in args:
        if isinstance(a, (list, tuple)):
            if _has_bool_index(a):
                return True
        elif isinstance(a, torch.Tensor) and a.dtype == torch.bool:
            return True
    return False


class _SyncRecorder(TorchDispatchMode):
    def __init__(self, found: list[str]) -> None:
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in SYNCING_OPS:
            self.found.append(name)
        elif name in ("aten::index", "aten::index_put_", "aten::index_put") and _has_bool_index(args[1:2]):
            self.found.append(f"{name} (boolean mask)")
        return func(*args, **(kwargs or {}))


# Tensor methods that read memory on the host without dispatching an operator for CPU tensors.
_READ_BACK_METHODS = ("tolist", "numpy", "__array__")


@contextmanager
def record_host_syncs() -> Iterator[list[str]]:
    """Context manager yielding a list that fills with the names of syncing operators dispatched inside
    (plus ``Tensor.tolist`` / ``numpy`` calls, which read a CPU tensor without dispatching)."""
    found: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in _READ_BACK_METHODS}

    def spy(name, original):
        def method(self, *args, **kwargs):
            found.append(f"Tensor.{name}")
            return original(self, *args, **kwargs)

        return method

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, spy(name, original))
        with _SyncRecorder(found):
            yield found
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)

"""Peak memory measured on any device: the largest sum of live tensor storage bytes.

:class:`LiveTensorBytes` is a ``TorchDispatchMode`` that sees every tensor an op returns
(forward, backward and custom autograd functions alike), adds the bytes of each storage
the first time it appears and subtracts them when the storage is freed (a weak reference
to the storage's Python object, which torch keeps alive exactly as long as the storage).
Tensors that existed before (parameters, buffers, inputs) are added with :meth:`track`.

A dispatch mode sees an op's outputs, not the tensors allocated while the op runs.  MUSE's
own custom ops (``muse::*``, the Triton kernels of :mod:`muse.kernels`) are covered: while
the tracker is entered it listens to :func:`muse.kernels.scratch.scratch`, through which
every kernel wrapper passes what it allocates (the Hebbian backward's per-tile partial
sums, ``.contiguous()`` copies, its outputs), so those count from allocation until freed.

It counts what ``torch.cuda.max_memory_allocated`` counts except the allocator's
rounding (512-byte blocks), library workspaces (cuBLAS, cuDNN) and temporaries inside
opaque ops that are not MUSE's (e.g. torch's ``linear_cross_entropy`` custom op, whose
chunk logits are internal), or inside a MUSE wrapper's own torch calls (e.g. a
reduction's workspace).  The benchmark therefore measures the fused loss on the chunked
path, whose every tensor is an op output.  On CUDA the runner reports both measures and
their ratio.
"""

from __future__ import annotations

import json
import tempfile
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from muse.kernels.scratch import add_listener, remove_listener


class LiveTensorBytes(TorchDispatchMode):
    """Tracks ``current`` and ``peak`` live storage bytes while active (``with LiveTensorBytes() as m``)."""

    def __init__(self):
        super().__init__()
        self._live: dict[int, tuple[weakref.ref, int]] = {}  # id(storage) -> (weakref, nbytes)
        self.current = 0
        self.peak = 0

    def track(self, tensors: Iterable[torch.Tensor | None]) -> None:
        """Count storages that already exist (parameters, buffers, gradients, inputs)."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._add(t)

    def __enter__(self):
        mode = super().__enter__()
        add_listener(self._add)  # the tensors MUSE's kernel wrappers make inside custom ops
        return mode

    def __exit__(self, exc_type, exc_val, exc_tb):
        remove_listener(self._add)
        return super().__exit__(exc_type, exc_val, exc_tb)

    def reset_peak(self) -> None:
        self.peak = self.current

    def _add(self, t: torch.Tensor) -> None:
        if t.is_meta or t.layout != torch.strided:
            return
        storage = t.untyped_storage()
        key = id(storage)
        entry = self._live.get(key)
        if entry is not None and entry[0]() is storage:
            if storage.nbytes() != entry[1]:  # resized in place (``out=`` ops)
                self.current += storage.nbytes() - entry[1]
                self._live[key] = (entry[0], storage.nbytes())
                self.peak = max(self.peak, self.current)
            return
        ref = weakref.ref(storage, lambda _ref, key=key: self._free(key, _ref))
        self._live[key] = (ref, storage.nbytes())
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)

    def _free(self, key: int, ref: weakref.ref) -> None:
        entry = self._live.get(key)
        if entry is not None and entry[0] is ref:
            del self._live[key]
            self.current -= entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out


__all__ = ["LiveTensorBytes", "allocator_peak_bytes"]


def allocator_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of the CPU allocator's allocated bytes above the start, over one ``fn()``.

    torch.profiler's allocator events (``profile_memory=True``) see every allocation and free,
    including those inside compiled code, which a dispatch-mode tracker cannot see; used to check
    what a compiled graph holds.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = [e for e in json.loads(path.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    if not events:
        return 0
    start = events[0]["args"]["Total Allocated"] - events[0]["args"]["Bytes"]
    return max(e["args"]["Total Allocated"] for e in events) - start

"""The tensors a kernel wrapper makes inside a custom op, shown to memory trackers.

A ``TorchDispatchMode`` sees what a ``muse::*`` custom op returns, not the tensors its wrapper
allocates while it runs (the Hebbian backward's per-tile partial sums, ``.contiguous()`` copies).
Every wrapper in :mod:`muse.kernels._triton` passes those through :func:`scratch`, which hands
them to the registered listeners (``benchmarks.memory.LiveTensorBytes`` joins while it is
entered).  With no listener it is one test of an empty list; the fake implementations that
``torch.compile`` traces never call it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Listener = Callable[[torch.Tensor], None]

_listeners: list[Listener] = []


def scratch(t: torch.Tensor, *sources: torch.Tensor | None) -> torch.Tensor:
    """``t`` (made by a wrapper), after every listener has seen it.  With ``sources`` (what ``t`` was
    made from by ``.contiguous()`` or ``.reshape()``, which may return a view) listeners see ``t``
    only when it is a copy: its storage is none of theirs."""
    if _listeners:
        storage = t.untyped_storage()
        if not any(s is not None and s.untyped_storage() is storage for s in sources):
            for listener in tuple(_listeners):
                listener(t)
    return t


def add_listener(listener: Listener) -> None:
    """Call ``listener(t)`` for every tensor passed to :func:`scratch` until :func:`remove_listener`."""
    if not callable(listener):
        raise TypeError(f"listener must be callable, got {type(listener).__name__}")
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    """Undo one :func:`add_listener` of ``listener``; a listener that is not registered is a ValueError."""
    for i, registered in enumerate(_listeners):
        if registered == listener:  # bound methods: a new object at each access, equal
            del _listeners[i]
            return
    raise ValueError(f"listener {listener!r} is not registered")


def listener_count() -> int:
    """How many listeners are registered (0 when no tracker is active)."""
    return len(_listeners)


__all__ = ["Listener", "add_listener", "listener_count", "remove_listener", "scratch"]

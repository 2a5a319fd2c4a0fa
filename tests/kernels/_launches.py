"""What the kernel test files share: the device parametrisation and a launch counter."""

from __future__ import annotations

import pytest
import torch

from muse import kernels

CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda,
                                                  pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")])]


def count_launches(monkeypatch, kernel_device: str, names: tuple[str, ...]) -> dict[str, int]:
    """Kernels on (for CPU the interpreter must be on, see verification.plugin; else the test is
    skipped); every call of the ``muse.kernels._triton`` wrappers ``names`` is counted by name."""
    if kernel_device == "cpu" and not kernels.interpreting():
        pytest.skip("Triton kernels on CPU need TRITON_INTERPRET=1 before triton is imported")
    monkeypatch.setenv(kernels.ENV, "1")
    from muse.kernels import _triton

    counts: dict[str, int] = {}  # only what ran: a test may compare it with {}
    for name in names:
        fn = getattr(_triton, name)

        def counted(*args, _fn=fn, _name=name, **kw):
            counts[_name] = counts.get(_name, 0) + 1
            return _fn(*args, **kw)

        monkeypatch.setattr(_triton, name, counted)
    return counts

"""numpy <-> muse glue for the tests: build inputs on a device, bring results back as numpy."""

from __future__ import annotations

import os

import numpy as np
import torch

import muse.complex as C


def ct(planes: np.ndarray, device: str) -> C.ComplexTensor:
    """A ComplexTensor on ``device`` from planes (2, *shape) (dtype kept)."""
    return C.ComplexTensor(torch.from_numpy(np.array(planes, order="C")).to(device))


def tensor(values: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.array(values, order="C")).to(device)


def planes(z: C.ComplexTensor) -> np.ndarray:
    """Planes of a ComplexTensor as a numpy array on the host (dtype kept)."""
    return z.planes.detach().cpu().numpy()


def host(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()





# --------------------------------------------------------------- implementations
IMPLS = ("eager", "compiled", "triton")
IMPL_ENV = "MUSE_VERIFY_IMPL"


def impl_label(device: str, impl: str) -> str:
    """The device column of the report: ``cpu`` for the eager PyTorch path, ``cpu+triton`` etc. otherwise."""
    return device if impl == "eager" else f"{device}+{impl}"


def impl_unavailable(device: str, impl: str) -> str | None:
    """Why ``impl`` cannot run on ``device`` here (None when it can)."""
    from muse import kernels

    if impl == "triton":
        if not kernels.HAS_TRITON:
            return "triton is not installed"
        if device == "cpu" and not kernels.interpreting():
            return "Triton on CPU needs TRITON_INTERPRET=1 before triton is imported"
    if impl == "compiled" and device == "cpu" and "compiled" not in os.environ.get(IMPL_ENV, ""):
        # Inductor compiles C++ per input rank and argument kind: minutes per property on a CI CPU.
        return f"compiled on CPU is opt-in ({IMPL_ENV}=eager,compiled,triton)"
    return None


_COMPILED: dict = {}


def _compiled(op, args: tuple):
    """``op`` under torch.compile (inductor, fullgraph), with its non-tensor arguments (eps, None)
    as constants of the compiled function: one compiled function per op and constant pattern."""
    slots = tuple(i for i, a in enumerate(args) if isinstance(a, (torch.Tensor, C.ComplexTensor)))
    consts = tuple((i, a) for i, a in enumerate(args) if i not in slots)
    key = (op, slots, consts)
    if key not in _COMPILED:
        def call(*tensors):
            full = dict(consts)
            full.update(zip(slots, tensors, strict=True))
            return op(*(full[i] for i in range(len(args))))

        C.set_gemm_policy()
        _COMPILED[key] = torch.compile(call, fullgraph=True)
    return _COMPILED[key], tuple(args[i] for i in slots)


def run(impl: str, op, *args):
    """Call the functional op ``op`` under one implementation: ``eager`` (the PyTorch path, kernels
    off), ``compiled`` (that path under torch.compile) or ``triton`` (the kernels, where they exist)."""
    from muse import kernels

    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    with kernels.environment(MUSE_KERNELS="1" if impl == "triton" else "0"):
        if impl != "compiled":
            return op(*args)
        fn, tensors = _compiled(op, args)
        # Hypothesis draws many ranks and argument kinds: each is one more graph, never a failure;
        # eps stays a constant (argument checks run on Python floats).
        patch = {k: v for k, v in (("recompile_limit", 1024), ("accumulated_recompile_limit", 4096),
                                   ("specialize_float", True)) if hasattr(torch._dynamo.config, k)}
        with torch._dynamo.config.patch(**patch):
            return fn(*tensors)


def run_grads(impl: str, op, args: tuple, grad_outputs: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """Gradients of ``op(*args)`` under ``impl`` with respect to its floating-point tensor arguments (a
    ComplexTensor's planes), in argument order, for the upstream gradients ``grad_outputs`` (one per output:
    a tensor, a ComplexTensor's planes, or None to skip it; an output that no argument reaches is skipped, its
    gradients being zero). Backward runs under the same implementation
    (the compiled graph's backward, the kernels' backward)."""
    from muse import kernels

    leaves, call = [], []
    for a in args:
        if isinstance(a, C.ComplexTensor) or (isinstance(a, torch.Tensor) and a.is_floating_point()):
            leaf = (a.planes if isinstance(a, C.ComplexTensor) else a).detach().clone().requires_grad_(True)
            leaves.append(leaf)
            call.append(C.ComplexTensor(leaf) if isinstance(a, C.ComplexTensor) else leaf)
        else:
            call.append(a)
    out = run(impl, op, *call)
    outs = out if isinstance(out, tuple) else (out,)
    pairs = [(o.planes if isinstance(o, C.ComplexTensor) else o, g)
             for o, g in zip(outs, grad_outputs, strict=True) if g is not None]
    pairs = [(o, g) for o, g in pairs if o.requires_grad]  # an output no input reaches (an empty scan's state)
    if not pairs:
        return [None] * len(leaves)
    with kernels.environment(MUSE_KERNELS="1" if impl == "triton" else "0"):
        return list(torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True))


__all__ = ["IMPLS", "IMPL_ENV", "ct", "host", "impl_label", "impl_unavailable", "planes", "run", "run_grads",
           "tensor"]

"""``torch.compile`` for MUSE models: one default, one way to compile, compile time kept apart.

Models are compile-clean: Stage 1 and Phase 2 trace with ``fullgraph=True`` (no ``.item()`` in
forward, counters on the device, the token-id range check a device assert under compile).
The default is compiled on CUDA and eager elsewhere (inductor's CPU compile of the seed
model takes minutes).  The compiled wrapper shares its parameters with the model; save and
load the model itself (``unwrap``), never the wrapper, so checkpoint keys carry no ``_orig_mod.``.
Compiling sets the GEMM policy process-wide (``muse.complex.set_gemm_policy``): a graph cannot
flip cuBLAS flags per op as eager code does.
"""

from __future__ import annotations

import time

import torch
from torch import nn

import muse.complex as C
from muse._checks import check_float, check_type

BACKENDS = ("inductor", "aot_eager", "eager")
#: torch.compile modes: None or "default" (torch's default); "reduce-overhead" (inductor replays CUDA
#: graphs, which removes the per-kernel launch cost that bounds a compiled training step on CUDA);
#: "max-autotune" (CUDA graphs too, and inductor times Triton GEMM templates against cuBLAS for every
#: matrix product, fusing element-wise neighbours into the template it picks; minutes of compile time).
MODES = (None, "default", "reduce-overhead", "max-autotune")
#: the modes that replay CUDA graphs (inductor only)
GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_mode(mode: object, name: str = "compile mode") -> str | None:
    """A compile mode of :data:`MODES` (``name``: the argument, for the error)."""
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return mode


def resolve_compile_mode(mode: str | None, *, compiled: bool, device: torch.device | str,
                         distributed: bool = False, backend: str = "inductor") -> str | None:
    """The mode a compiled training step runs under: ``mode`` when given; else "reduce-overhead" for one
    process compiling with inductor on CUDA, "default" for any other compiled run; None for an eager run.

    CUDA graphs are the single-process CUDA default because the compiled step is bound by the host without
    them: the seed-size ``mix`` step at B 8, S 1024 trains at 105k-109k tok/s in the default mode against
    342k-385k with CUDA graphs (H100, docs/performance.md, forty-third session).  Gradient accumulation
    trains under them as in the default mode, bit for bit (H100, forty-fourth session), since the optimizers
    take each micro-batch's gradients out of the graph's memory at once.  DDP accepts a CUDA-graph mode but
    keeps torch's default until a run of NCCL on two GPUs measures it (only gloo ranks sharing one GPU ran)."""
    check_mode(mode)
    if not compiled:
        return None
    if mode is not None:
        return mode
    single_cuda = torch.device(device).type == "cuda" and not distributed and backend == "inductor"
    return "reduce-overhead" if single_cuda else "default"


def set_memory_budget(budget: float | None) -> float:
    """Set the partitioner's activation memory budget process-wide and return the previous one.

    ``torch._functorch.config.activation_memory_budget``: 1.0 (torch's default) saves for backward
    whatever is cheapest in time; lower values make inductor's min-cut partitioner recompute more and
    keep less (it is read when a graph compiles, so set it before the first compiled call).  ``None``
    leaves it as it is.  On the CPU 0.1 takes ``mix-tiny``'s compiled step below the eager one; on CUDA
    it leaves the seed-size Stage 1 step's peak as it is and slows it by 31-43 % (docs/performance.md,
    fortieth and forty-first sessions), so torch's 1.0 stays the default."""
    import torch._functorch.config as functorch_config

    previous = functorch_config.activation_memory_budget
    if budget is not None:
        functorch_config.activation_memory_budget = check_memory_budget(budget)
    return previous


def check_memory_budget(budget: object, name: str = "memory_budget") -> float:
    """A fraction in (0, 1]."""
    return check_float(name, budget, min_value=0.0, min_inclusive=False, max_value=1.0)


def resolve_compile(flag: bool | None, device: torch.device | str) -> bool:
    """``flag`` when given, else True on CUDA and False elsewhere."""
    if flag is not None:
        check_type("compile", flag, bool, "a bool or None")
        return flag
    return torch.device(device).type == "cuda"


def compile_model(model: nn.Module, *, backend: str = "inductor", fullgraph: bool = False,
                  mode: str | None = None) -> nn.Module:
    """``torch.compile(model)``; ``backend`` is one of BACKENDS (aot_eager/eager: fast checks on CPU),
    ``mode`` one of MODES (inductor only)."""
    check_type("model", model, nn.Module, "an nn.Module")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_mode(mode)
    if mode in GRAPH_MODES and backend != "inductor":
        raise ValueError(f"mode={mode!r} needs backend='inductor', got {backend!r}")
    C.set_gemm_policy()  # compiled GEMMs read the process-wide cuBLAS flags when they run
    return torch.compile(model, backend=backend, fullgraph=fullgraph, mode=mode)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile`` and DDP wrappers (whose state_dict has plain keys)."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work (a no-op on CPU), so host clocks measure it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, *args, device: torch.device | str = "cpu", **kwargs):
    """(fn(*args, **kwargs), seconds) with the device synchronised before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    synchronize(device)
    return out, time.perf_counter() - t0


__all__ = ["BACKENDS", "GRAPH_MODES", "MODES", "compile_model", "resolve_compile", "resolve_compile_mode", "synchronize",
           "timed", "unwrap"]

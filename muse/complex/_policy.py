"""The precision policy in one place: fp16 storage, fp32 arithmetic, one final rounding.

Every op in :mod:`muse.complex` upcasts its fp16 (or fp32) inputs to the *compute
dtype*, does all arithmetic there, and rounds the result to the storage dtype once.
GEMMs are the one exception to "upcast first": on CUDA an fp16 GEMM already
accumulates in fp32 and rounds once, so we feed it fp16 operands and only make sure
that no reduced-precision reduction (fp16 split-K) or TF32 is allowed while it runs.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator

import torch
import torch.nn.functional as F


def compute_dtype(storage: torch.dtype) -> torch.dtype:
    """float64 storage computes in float64; float16 and float32 storage compute in float32."""
    return torch.float64 if storage == torch.float64 else torch.float32


def tiny(storage: torch.dtype) -> float:
    """Smallest positive subnormal of ``storage`` (2**-24 for float16)."""
    info = torch.finfo(storage)
    return info.smallest_normal * info.eps


def set_gemm_policy() -> None:
    """Set process-wide what compiled MUSE code needs to keep the precision policy, so every compiled
    path calls this before compiling (``compile_model``):

    - what :func:`fp32_accumulation` sets around each eager GEMM, no fp16 split-K reductions and no
      TF32 (compiled code cannot change these flags inside a graph; its GEMMs read them when they run);
    - inductor's ``emulate_precision_casts``: without it inductor keeps a value that eager code rounds
      to fp16 in fp32 when it fuses the rounding with the op that reads it (e.g. the residual sum
      before a LayerNorm, ``layer_norm(z, residual=r)``), which breaks that op's bound;
    - on x86 CPUs, inductor's C++ code at most 256 bits wide (AVX2; :func:`_cpu_vector_width`).
    """
    matmul = torch.backends.cuda.matmul
    matmul.allow_fp16_reduced_precision_reduction = False
    matmul.allow_tf32 = False
    import torch._inductor.config as inductor_config

    if hasattr(inductor_config, "emulate_precision_casts"):
        inductor_config.emulate_precision_casts = True
    _keep_narrowing_casts()
    _cpu_vector_width(inductor_config)


#: inductor's ``cpp.simdlen`` on x86 unless the user set one: AVX2 code, not AVX-512
CPU_SIMDLEN = 256


def _cpu_vector_width(inductor_config) -> None:
    """Inductor's AVX-512 C++ code loads an fp16 tile through a transpose where an fp16 tensor is read
    transposed, widened and multiplied (``(x.float().transpose(-1, -2) * w).sum(0)``; the chunked scans' layout);
    built by GCC 12.2 at inductor's -O3, that kernel returns garbage (NaN, zeros) where the same source at -O2 or
    with -fno-tree-slp-vectorize is right (torch 2.13, 2026-12-06; docs/numerics.md).  Compiled CPU training of
    ``mix-tiny`` then skipped every step for non-finite gradients.  The AVX2 code is right, so x86 builds get it
    when ``cpp.simdlen`` is unset (other architectures have no AVX-512 and keep their default)."""
    cpp = getattr(inductor_config, "cpp", None)
    if cpp is not None and getattr(cpp, "simdlen", 0) is None and platform.machine().lower() in ("x86_64", "amd64"):
        cpp.simdlen = CPU_SIMDLEN


def _not_narrowing(match) -> bool:
    """False for a chain x.to(narrower).to(wider): the narrower value is a rounding eager code performs."""
    return match.kwargs["dtype1"].itemsize >= match.kwargs["dtype2"].itemsize


def _keep_narrowing_casts() -> None:
    """Inductor's joint-graph pattern ``pointless_convert`` in torch 2.11 folds x.to(float16).to(float32) into
    x.to(float32) even with ``emulate_precision_casts``, so a value eager code rounds to float16 (the residual sum
    before a LayerNorm) stays float32 in the fused kernel: ``muse verify`` failed layer_norm with a residual
    and layer_norm_pair under ``compiled`` on an H100 (twenty-ninth session).  Newer torch keeps a narrower
    intermediate; this gives the older pattern the same check (a no-op where torch already has it)."""
    try:
        from torch._inductor.fx_passes import joint_graph
    except ImportError:
        return
    handler = getattr(joint_graph, "pointless_convert", None)
    for entries in getattr(getattr(joint_graph, "patterns", None), "patterns", {}).values():
        for entry in entries:
            if handler is not None and getattr(entry, "handler", None) is handler:
                entry.extra_check = _not_narrowing


def gemm_policy_set() -> bool:
    """True when the process-wide cuBLAS flags already hold the policy (:func:`set_gemm_policy`)."""
    matmul = torch.backends.cuda.matmul
    return not matmul.allow_fp16_reduced_precision_reduction and not matmul.allow_tf32


@contextlib.contextmanager
def fp32_accumulation(device: torch.device) -> Iterator[None]:
    """Run GEMMs with full fp32 accumulation: no fp16 split-K reductions, no TF32, no autocast.

    Eager CUDA code sets the cuBLAS flags for the block and restores them after.  While
    ``torch.compile`` traces, the flags must already be set process-wide (a graph cannot change
    them): RuntimeError otherwise, naming :func:`set_gemm_policy`.
    """
    if device.type == "cuda" and torch.compiler.is_compiling() and not gemm_policy_set():
        raise RuntimeError("compiling MUSE ops on CUDA needs the GEMM policy set process-wide first: call "
                           "muse.complex.set_gemm_policy() before torch.compile (muse.models.compile_model does)")
    if device.type != "cuda" or torch.compiler.is_compiling():
        with torch.autocast(device.type, enabled=False):
            yield
        return
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_fp16_reduced_precision_reduction, matmul.allow_tf32)
    matmul.allow_fp16_reduced_precision_reduction = False
    matmul.allow_tf32 = False
    try:
        with torch.autocast("cuda", enabled=False):
            yield
    finally:
        matmul.allow_fp16_reduced_precision_reduction, matmul.allow_tf32 = saved


def magnitude(re: torch.Tensor, im: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    """|re + i im| in the compute dtype: sqrt(re^2 + im^2) for float16 storage (the squares are exact in
    fp32 and cannot overflow there), ``hypot`` otherwise."""
    if storage == torch.float16:
        return torch.sqrt(re * re + im * im)
    return torch.hypot(re, im)


def gemm_dtype(storage: torch.dtype, device: torch.device) -> torch.dtype:
    """Operand dtype for a GEMM: 16-bit storage stays 16-bit on CUDA (fp32 accumulate in cuBLAS; bfloat16
    only reaches here from the loss), else the compute dtype."""
    if storage in (torch.float16, torch.bfloat16) and device.type == "cuda":
        return storage
    return compute_dtype(storage)


def gemm_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` with fp32 accumulation and one rounding to ``out_dtype`` (default
    ``x.dtype``; pass the storage dtype when x is already in the GEMM operand dtype)."""
    storage = x.dtype if out_dtype is None else out_dtype
    gd = gemm_dtype(storage, x.device)
    with fp32_accumulation(x.device):
        y = F.linear(x.to(gd), weight.to(gd), None if bias is None else bias.to(gd))
    return y.to(storage)


def gemm_matmul(a: torch.Tensor, b: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    """``a @ b`` with fp32 accumulation and one rounding to ``storage``."""
    gd = gemm_dtype(storage, a.device)
    with fp32_accumulation(a.device):
        y = torch.matmul(a.to(gd), b.to(gd))
    return y.to(storage)

"""Triton kernels behind the functional ops of :mod:`muse.complex`, and the one switch that picks them.

The rule (like nanoGPT's ``self.flash``): an op runs its Triton kernel when Triton is
importable and its tensors are on CUDA, or when ``TRITON_INTERPRET=1`` (Triton's CPU
interpreter, used by the tests); ``MUSE_KERNELS=0`` turns every kernel off.  The kernels
cover float16 planes (LayerNorm, also with a residual added in the same pass; modReLU; the complex
GEMM of ``linear``), the chunk bodies of the loss (:mod:`muse.train.loss`: log-sum-exp and softmax
gradient of fp16/bf16/fp32 logits), complex64 (the BK-Core resolvent of :mod:`muse.scan.bk`) and float32 (the decayed linear attention of :mod:`muse.scan.hebbian`,
the selective diagonal scan of :mod:`muse.scan.selective_diag`);
every other case, and the reference for every kernel, is the PyTorch code in :mod:`muse.complex` and :mod:`muse.scan`.  Both environment variables are read at each eager
call; a compiled graph reads them once, when it is traced.  Inside a compiled graph an element-wise op
runs its kernel only when ``MUSE_KERNELS_IN_COMPILE`` (a comma-separated list; unset:
``layer_norm,modrelu``) names it, and otherwise leaves the work to the compiler, which fuses it with
its neighbours.  The default is measured: compiled Stage 1 training with CUDA graphs on the H200 ran
985k-1,020k tok/s with those two kernels in the graph against 898k-922k without (docs/performance.md,
twelfth session); the bias-gradient sum (``sum_rows``) is faster as the compiler's reduction.
``MUSE_KERNELS_IN_COMPILE=`` (empty) leaves every element-wise op to the compiler.

Each kernel is wrapped in a ``torch.library.custom_op`` (``muse::<name>``) with a fake
implementation, so a model that uses kernels still compiles with ``fullgraph=True``; eager calls with
grad mode off (inside MUSE's autograd functions) and nothing tracing or watching skip the custom op's
dispatch and call the Triton wrapper directly (:mod:`muse.kernels.ops`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

ENV = "MUSE_KERNELS"
IN_COMPILE_ENV = "MUSE_KERNELS_IN_COMPILE"
IN_COMPILE_DEFAULT = "layer_norm,modrelu"
INTERPRET_ENV = "TRITON_INTERPRET"
HAS_TRITON = importlib.util.find_spec("triton") is not None
SELECTIVE_TILE = 128  # tokens per tile of the selective scan kernels (their error bound counts the tiles)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get(INTERPRET_ENV, "0") == "1"


def enabled(*tensors: torch.Tensor, in_compile: bool = False) -> bool:
    """The switch: Triton importable, ``MUSE_KERNELS`` not ``0``, not inside ``torch.compile`` (the
    compiler fuses the elementwise ops faster than the kernels: docs/performance.md) unless
    ``in_compile`` (a sequential scan, which the compiler cannot fuse; the environment is then read
    when the graph is traced), and every tensor on CUDA or the interpreter on."""
    if not HAS_TRITON or os.environ.get(ENV, "1") == "0":
        return False
    if torch.compiler.is_compiling() and not in_compile:
        return False
    return interpreting() or all(t.device.type == "cuda" for t in tensors)


def use_kernel(planes: torch.Tensor, *others: torch.Tensor | None, op: str | None = None) -> bool:
    """``enabled`` for an op on float16 ``planes`` (the only storage the kernels cover); inside a
    compiled graph only when ``op`` is listed in ``MUSE_KERNELS_IN_COMPILE``."""
    if planes.dtype != torch.float16:
        return False
    in_compile = op is not None and op in os.environ.get(IN_COMPILE_ENV, IN_COMPILE_DEFAULT).split(",")
    return enabled(planes, *(t for t in others if t is not None), in_compile=in_compile)


def settings() -> dict:
    """The switches as they stand (for a report's environment): Triton present, MUSE_KERNELS, and the
    ops whose kernels run inside compiled graphs."""
    return {"triton": HAS_TRITON, ENV: os.environ.get(ENV, "1"),
            IN_COMPILE_ENV: os.environ.get(IN_COMPILE_ENV, IN_COMPILE_DEFAULT)}


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables such as MUSE_KERNELS for a block; restore after."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = ["ENV", "HAS_TRITON", "IN_COMPILE_DEFAULT", "IN_COMPILE_ENV", "INTERPRET_ENV", "enabled", "environment", "interpreting", "settings",
            "use_kernel"]

from muse.kernels.ops import (  # noqa: E402
    add_layer_norm_fwd,
    add_layer_norm_pair_fwd,
    bk_green_bwd,
    bk_green_fwd,
    complex_mm,
    hebbian_bwd,
    hebbian_fwd,
    layer_norm_bwd,
    layer_norm_flag_fwd,
    layer_norm_fwd,
    lse_rows,
    modrelu_bwd,
    modrelu_fwd,
    selective_scan_bwd,
    selective_scan_fwd,
    softmax_grad,
    sum_rows,
)

__all__ += ["add_layer_norm_fwd", "add_layer_norm_pair_fwd", "bk_green_bwd", "bk_green_fwd", "complex_mm", "hebbian_bwd", "hebbian_fwd", "layer_norm_bwd", "layer_norm_flag_fwd", "layer_norm_fwd", "lse_rows",
            "modrelu_bwd", "modrelu_fwd", "selective_scan_bwd", "selective_scan_fwd", "softmax_grad", "sum_rows"]

"""Host time per call of the eager CUDA path, layer by layer (is eager MUSE bound by Python, and where?).

    python3 scripts/launch_overhead.py [--calls 300]

Small shapes, so the GPU finishes each kernel before the host issues the next and the wall time per call is
the host's: an aten op, a trivial Triton kernel, the complex GEMM and LayerNorm at each layer of their stack
(Triton wrapper, ``muse::`` custom op, the autograd function, the ComplexTensor op). One JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import triton
import triton.language as tl

import muse.complex as C
from muse.kernels import _triton as K
from muse.kernels import ops


@triton.jit
def _touch(x_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1.0, mask=i < n)


def host_us(fn, calls: int) -> float:
    """Mean µs of wall time per call over ``calls`` calls, after warm-up, synchronised at both ends."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def no_grad(fn):
    def call():
        with torch.no_grad():
            return fn()
    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    dev = torch.device("cuda")
    C.set_gemm_policy()
    a = torch.randn(2, 64, 64, device=dev).half()
    w = torch.randn(2, 64, 64, device=dev).half()
    bias = torch.randn(2, 64, device=dev).half()
    m = torch.randn(64, 64, device=dev).half()
    flat = torch.zeros(4096, device=dev)
    ln_w = torch.ones(64, device=dev).half()
    ln_b = torch.zeros(64, device=dev).half()
    xc, wc, bc = C.ComplexTensor(a), C.ComplexTensor(w), C.ComplexTensor(bias)
    xg = C.ComplexTensor(a.clone().requires_grad_())
    rows = {
        "aten mm (64 x 64 fp16)": lambda: torch.mm(m, m),
        "aten add": lambda: flat.add_(1.0),
        "torch.cuda.get_device_properties": lambda: torch.cuda.get_device_properties(dev),
        "triton: trivial kernel, 2 args": lambda: _touch[(4,)](flat, 4096, BLOCK=1024),
        "complex_mm: _split_k only": lambda: K._split_k(dev, 64, 64, 64),
        "complex_mm: Triton wrapper (autotuned kernel)": lambda: K.complex_mm(a, w.transpose(1, 2), bias, False, False),
        "complex_mm: muse.kernels op, grad mode (the custom op)": lambda: ops.complex_mm(a, w.transpose(1, 2), bias,
                                                                                        False, False),
        "complex_mm: muse.kernels op, no grad (direct where allowed)": no_grad(
            lambda: ops.complex_mm(a, w.transpose(1, 2), bias, False, False)),
        "C.linear, no grad": lambda: C.linear(xc, wc, bc),
        "C.linear, input requires grad (autograd function, recipe)": lambda: C.linear(xg, wc, bc),
        "layer_norm: Triton wrapper": lambda: K.layer_norm_forward(a, ln_w, ln_b, 1e-5),
        "layer_norm: muse.kernels op, grad mode (the custom op)": lambda: ops.layer_norm_fwd(a, ln_w, ln_b, 1e-5),
        "layer_norm: muse.kernels op, no grad (direct where allowed)": no_grad(
            lambda: ops.layer_norm_fwd(a, ln_w, ln_b, 1e-5)),
    }
    for name, fn in rows.items():
        print(json.dumps({"row": name, "host_us": round(host_us(fn, args.calls), 1)}), flush=True)


if __name__ == "__main__":
    main()

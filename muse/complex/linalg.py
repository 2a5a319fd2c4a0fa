"""Complex matrix products as ONE real GEMM on the block form.

For a = ar + i ai and b = br + i bi,

    [ar, ai] @ [[br, bi], [-bi, br]] = [ar br - ai bi, ar bi + ai br]

so a complex product of sizes M x K x N is one real M x 2K x 2N GEMM, accumulated in
fp32 and rounded once (measured on an H100 as faster and more accurate than four real
GEMMs, Gauss's 3M or complex64; see docs/numerics.md).

``linear`` on float16 planes runs a Triton kernel where ``muse.kernels.enabled`` says so (CUDA, or
the interpreter; also inside torch.compile, whose GEMM needs the same copies): the same complex
GEMM straight on the planes (``muse.kernels.complex_mm``), without the block form's operand and
output copies, for the forward and both gradient GEMMs.  The PyTorch code here is the reference
and the fallback.
"""

from __future__ import annotations

import math

import torch

from muse import kernels
from muse._checks import check_real_tensor, check_same_device, check_type
from muse.complex import recompute
from muse.complex._policy import gemm_dtype, gemm_linear, gemm_matmul
from muse.complex.tensor import ComplexTensor


def _block(br: torch.Tensor, bi: torch.Tensor) -> torch.Tensor:
    """[[br, bi], [-bi, br]] along the last two dims: (..., K, N) -> (..., 2K, 2N)."""
    top = torch.cat((br, bi), dim=-1)
    bottom = torch.cat((-bi, br), dim=-1)
    return torch.cat((top, bottom), dim=-2)


def matmul(a, b) -> ComplexTensor:
    """Complex ``a @ b`` with torch.matmul's shape rules; either side may be a real tensor."""
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, (ComplexTensor, torch.Tensor)):
            raise TypeError(f"{name} must be a ComplexTensor or a real tensor, got {type(v).__name__}")
        if isinstance(v, torch.Tensor):
            check_real_tensor(name, v)
        if v.dim() == 0:
            raise ValueError(f"{name} must be at least 1-D for matmul, got a 0-d tensor")
    if not isinstance(a, ComplexTensor) and not isinstance(b, ComplexTensor):
        raise TypeError("at least one of a, b must be a ComplexTensor")
    check_same_device([("a", a.device), ("b", b.device)])
    _check_matmul_shapes(tuple(a.shape), tuple(b.shape))
    storage = torch.promote_types(a.dtype, b.dtype)
    if not isinstance(b, ComplexTensor):
        return _stack(gemm_matmul(a.real, b, storage), gemm_matmul(a.imag, b, storage))
    if not isinstance(a, ComplexTensor):
        return _stack(gemm_matmul(a, b.real, storage), gemm_matmul(a, b.imag, storage))
    squeeze_a, squeeze_b = a.dim() == 1, b.dim() == 1
    ar, ai = (a.real.unsqueeze(0), a.imag.unsqueeze(0)) if squeeze_a else (a.real, a.imag)
    br, bi = (b.real.unsqueeze(-1), b.imag.unsqueeze(-1)) if squeeze_b else (b.real, b.imag)
    n = br.shape[-1]
    y = gemm_matmul(torch.cat((ar, ai), dim=-1), _block(br, bi), storage)  # (..., M, 2N)
    re, im = y[..., :n], y[..., n:]
    if squeeze_a:  # drop a's M = 1 dim first: it is -2 only while b's N dim is still there
        re, im = re.squeeze(-2), im.squeeze(-2)
    if squeeze_b:
        re, im = re.squeeze(-1), im.squeeze(-1)
    return _stack(re, im)


def _check_matmul_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    """ValueError naming both shapes unless torch.matmul's rules accept them."""
    ok = a[-1] == (b[0] if len(b) == 1 else b[-2])
    try:
        torch.broadcast_shapes(a[:-2], b[:-2])
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"matmul shape mismatch: a has shape {a}, b has shape {b} "
                         f"(a's last dim must equal b's {'only' if len(b) == 1 else 'second-to-last'} dim "
                         "and batch dims must broadcast)")


def _stack(re: torch.Tensor, im: torch.Tensor) -> ComplexTensor:
    return ComplexTensor(torch.stack((re, im)))


def linear(x: ComplexTensor, weight: ComplexTensor, bias: ComplexTensor | None = None) -> ComplexTensor:
    """y = x W^T + b for complex x (..., in), W (out, in), b (out,): one GEMM, one rounding.

    The bias is added inside the GEMM's fp32 epilogue, so it costs no extra rounding.
    """
    check_type("x", x, ComplexTensor, "a ComplexTensor")
    check_type("weight", weight, ComplexTensor, "a ComplexTensor")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    out_f, in_f = weight.shape
    if x.dim() == 0 or x.shape[-1] != in_f:
        raise ValueError(f"x must have {in_f} features in its last dim, got shape {tuple(x.shape)}")
    named = [("x", x.device), ("weight", weight.device)]
    if bias is not None:
        check_type("bias", bias, ComplexTensor, "a ComplexTensor or None")
        if tuple(bias.shape) != (out_f,):
            raise ValueError(f"bias must have shape ({out_f},), got {tuple(bias.shape)}")
        named.append(("bias", bias.device))
    check_same_device(named)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}; convert one explicitly")
    planes = (x.planes, weight.planes, None if bias is None else bias.planes)
    if x.dtype == torch.float16 and kernels.enabled(*(p for p in planes if p is not None), in_compile=True):
        # x's planes are kept as a recipe where they are a remembered output (a LayerNorm's: its input is kept)
        return ComplexTensor(recompute.rebuilt(lambda xp: _LinearKernel.apply(xp, *planes[1:]), (_same, (x.planes,))))
    return ComplexTensor(_linear_planes(*planes))


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _linear_planes(xp: torch.Tensor, wp: torch.Tensor, bp: torch.Tensor | None) -> torch.Tensor:
    """The PyTorch form of :func:`linear` on checked planes: the block GEMM, output planes (2, ..., out)."""
    out_f = wp.shape[1]
    gd = gemm_dtype(xp.dtype, xp.device)
    b_cat = None if bp is None else bp.reshape(2 * out_f)
    # the GEMM's operand copies are rebuilt in backward from the planes they came from
    y = recompute.rebuilt(lambda xc, wb: gemm_linear(xc, wb, b_cat, xp.dtype),
                          (_cat_parts, (xp, gd)), (_block_weight, (wp, gd)))
    return y.unflatten(-1, (2, out_f)).movedim(-2, 0).contiguous()


class _LinearKernel(torch.autograd.Function):
    """:func:`linear` through ``muse.kernels.complex_mm``: y = x W^T + b, and with PyTorch's convention
    (grad = dL/dRe + i dL/dIm, which the block form's autograd gives) dx = dy conj(W),
    dW = dy^T conj(x) summed over every row, db = the sum of dy over the rows (fp32, rounded once).
    Saves only the planes of x (or their recipe: :func:`linear`), W (and b); a backward that must itself be differentiable
    (create_graph=True) differentiates the PyTorch form instead."""

    @staticmethod
    def forward(ctx, xp, wp, bp):
        ctx.save_for_backward(xp, wp, bp)
        out_f, in_f = wp.shape[1], wp.shape[2]
        lead = xp.shape[1:-1]
        x2 = xp.reshape(2, math.prod(lead), in_f)
        return kernels.complex_mm(x2, wp.transpose(1, 2), bp, False, False).reshape(2, *lead, out_f)

    @staticmethod
    def backward(ctx, grad):
        xp, wp, bp = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _reference_grads(xp, wp, bp, grad, ctx.needs_input_grad)
        out_f, in_f = wp.shape[1], wp.shape[2]
        rows = math.prod(xp.shape[1:-1])
        g2 = grad.reshape(2, rows, out_f)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = kernels.complex_mm(g2, wp, None, False, True).reshape(xp.shape)
        if ctx.needs_input_grad[1]:
            gw = kernels.complex_mm(g2.transpose(1, 2), xp.reshape(2, rows, in_f), None, False, True)
        if bp is not None and ctx.needs_input_grad[2]:
            # eager: the kernel (H200, 4096 x 512: 9.2 µs against 15.9); compiled, the compiler's reduction
            # is faster (the complex linear's fwd+bwd 65.6 µs with it, 71.5 with the kernel)
            gb = (kernels.sum_rows(g2, bp.dtype) if kernels.use_kernel(g2, op="sum_rows")
                  else g2.sum(dim=1, dtype=torch.float32).to(bp.dtype))  # fp32 accumulation, no fp32 copy of dy
        return gx, gw, gb


def _reference_grads(xp, wp, bp, grad, needs) -> tuple:
    """(dx, dW, db) by autograd of :func:`_linear_planes` with create_graph (double backward)."""
    inputs = [t for t, need in zip((xp, wp, bp), needs, strict=True) if t is not None and need]
    found = iter(torch.autograd.grad(_linear_planes(xp, wp, bp), inputs, grad, create_graph=True,
                                     allow_unused=True))
    return tuple(next(found) if t is not None and need else None for t, need in zip((xp, wp, bp), needs, strict=True))


def _cat_parts(planes: torch.Tensor, gd: torch.dtype) -> torch.Tensor:
    """[x_r, x_i] along the last dim, in the GEMM operand dtype: (2, ..., in) -> (..., 2in)."""
    return torch.cat((planes[0], planes[1]), dim=-1).to(gd)


def _block_weight(w: torch.Tensor, gd: torch.dtype) -> torch.Tensor:
    """[[W_r, -W_i], [W_i, W_r]] of planar W (2, out, in), in the GEMM operand dtype: (2out, 2in)."""
    wr, wi = w[0], w[1]
    return torch.cat((torch.cat((wr, -wi), dim=1), torch.cat((wi, wr), dim=1)), dim=0).to(gd)

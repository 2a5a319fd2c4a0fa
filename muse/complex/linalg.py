"""Complex matrix products as ONE real GEMM on the block form.

For a = ar + i ai and b = br + i bi,

    [ar, ai] @ [[br, bi], [-bi, br]] = [ar br - ai bi, ar bi + ai br]

so a complex product of sizes M x K x N is one real M x 2K x 2N GEMM, accumulated in
fp32 and rounded once (measured on an H100 as faster and more accurate than four real
GEMMs, Gauss's 3M or complex64; see docs/numerics.md).
"""

from __future__ import annotations

import torch

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
    gd = gemm_dtype(x.dtype, x.device)
    b_cat = None if bias is None else bias.planes.reshape(2 * out_f)
    # the GEMM's operand copies are rebuilt in backward from the planes they came from
    y = recompute.rebuilt(lambda xc, wb: gemm_linear(xc, wb, b_cat, x.dtype),
                           (_cat_parts, (x.planes, gd)), (_block_weight, (weight.planes, gd)))
    return ComplexTensor(y.unflatten(-1, (2, out_f)).movedim(-2, 0).contiguous())


def _cat_parts(planes: torch.Tensor, gd: torch.dtype) -> torch.Tensor:
    """[x_r, x_i] along the last dim, in the GEMM operand dtype: (2, ..., in) -> (..., 2in)."""
    return torch.cat((planes[0], planes[1]), dim=-1).to(gd)


def _block_weight(w: torch.Tensor, gd: torch.dtype) -> torch.Tensor:
    """[[W_r, -W_i], [W_i, W_r]] of planar W (2, out, in), in the GEMM operand dtype: (2out, 2in)."""
    wr, wi = w[0], w[1]
    return torch.cat((torch.cat((wr, -wi), dim=1), torch.cat((wi, wr), dim=1)), dim=0).to(gd)

"""Elementwise arithmetic, reductions, construction and interop for ``ComplexTensor``.

Every op: inputs -> compute dtype (float32 for float16/float32 planes) -> arithmetic
-> ONE rounding to the result's storage dtype.  Operands may be ComplexTensors, real
floating tensors or Python numbers (real or complex); they broadcast like torch
tensors.  The result dtype follows ``torch.promote_types`` over tensor operands;
Python numbers are rounded to the compute dtype and do not promote.

Non-finite contract: IEEE semantics of the stated formula.  A NaN in any input
component yields a NaN in at least one output component; no op turns a NaN or Inf
into a silent finite value except where the formula itself does (e.g. ``x / inf``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from muse._checks import (
    FLOAT_DTYPES,
    check_float_tensor,
    check_real_tensor,
    check_same_device,
    check_type,
)
from muse.complex._policy import compute_dtype, magnitude
from muse.complex._shape import plane_dim, shape_args
from muse.complex.tensor import ComplexTensor, plane_dtype

Operand = ComplexTensor | torch.Tensor | numbers.Number


class _Operand:
    """One normalised operand: storage tensors (or Python numbers) for its parts."""

    __slots__ = ("name", "re", "im", "dtype", "device", "shape")

    def __init__(self, name: str, value: object):
        self.name = name
        if isinstance(value, ComplexTensor):
            self.re, self.im = value.real, value.imag
            self.dtype, self.device, self.shape = value.dtype, value.device, value.shape
        elif isinstance(value, torch.Tensor):
            check_real_tensor(name, value)
            self.re, self.im = value, None
            self.dtype, self.device, self.shape = value.dtype, value.device, value.shape
        elif isinstance(value, numbers.Number) and not isinstance(value, bool):
            c = complex(value)
            self.re, self.im = c.real, (c.imag if isinstance(value, complex) else None)
            self.dtype = self.device = self.shape = None
        else:
            raise TypeError(
                f"{name} must be a ComplexTensor, a real floating torch.Tensor or a number, "
                f"got {type(value).__name__}"
            )

    @property
    def is_tensor(self) -> bool:
        return self.dtype is not None

    def parts(self, cd: torch.dtype, device: torch.device):
        """(re, im) as compute-dtype tensors on ``device``; im is None for real operands."""
        return _as(self.re, cd, device), None if self.im is None else _as(self.im, cd, device)


def _as(x, cd: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(cd)
    return torch.tensor(x, dtype=cd, device=device)


def _prepare(*named: tuple[str, object]):
    """Normalise operands; check devices; return (operands, storage dtype, compute dtype, device)."""
    ops = [_Operand(n, v) for n, v in named]
    tensors = [o for o in ops if o.is_tensor]
    if not tensors:
        raise TypeError("at least one operand must be a ComplexTensor or a tensor")
    device = check_same_device((o.name, o.device) for o in tensors)
    try:
        torch.broadcast_shapes(*(o.shape for o in tensors))
    except RuntimeError:
        shapes = ", ".join(f"{o.name} has shape {tuple(o.shape)}" for o in tensors)
        raise ValueError(f"operand shapes do not broadcast: {shapes}") from None
    dtype = tensors[0].dtype
    for o in tensors[1:]:
        dtype = torch.promote_types(dtype, o.dtype)
    return ops, dtype, compute_dtype(dtype), device


def _assemble(re: torch.Tensor, im: torch.Tensor | None, dtype: torch.dtype) -> ComplexTensor:
    """Stack compute-dtype parts into planes and round once to ``dtype``."""
    if im is None:
        im = torch.zeros((), dtype=re.dtype, device=re.device)
    shape = torch.broadcast_shapes(re.shape, im.shape)
    return ComplexTensor(torch.stack((re.expand(shape), im.expand(shape))).to(dtype))


def _add_parts(x, y, sign: float):
    if x is None:
        return None if y is None else (y if sign > 0 else -y)
    if y is None:
        return x
    return x + y if sign > 0 else x - y


def add(a: Operand, b: Operand) -> ComplexTensor:
    """a + b, componentwise, rounded once."""
    (A, B), dtype, cd, dev = _prepare(("a", a), ("b", b))
    ar, ai = A.parts(cd, dev)
    br, bi = B.parts(cd, dev)
    return _assemble(ar + br, _add_parts(ai, bi, 1.0), dtype)


def sub(a: Operand, b: Operand) -> ComplexTensor:
    """a - b, componentwise, rounded once."""
    (A, B), dtype, cd, dev = _prepare(("a", a), ("b", b))
    ar, ai = A.parts(cd, dev)
    br, bi = B.parts(cd, dev)
    return _assemble(ar - br, _add_parts(ai, bi, -1.0), dtype)


def mul(a: Operand, b: Operand) -> ComplexTensor:
    """(ar + i ai)(br + i bi) = (ar br - ai bi) + i (ar bi + ai br); products of fp16 are exact in fp32."""
    (A, B), dtype, cd, dev = _prepare(("a", a), ("b", b))
    ar, ai = A.parts(cd, dev)
    br, bi = B.parts(cd, dev)
    if ai is None and bi is None:
        return _assemble(ar * br, None, dtype)
    if bi is None:
        return _assemble(ar * br, ai * br, dtype)
    if ai is None:
        return _assemble(ar * br, ar * bi, dtype)
    return _assemble(ar * br - ai * bi, ar * bi + ai * br, dtype)


def _pow2_scale(br: torch.Tensor, bi: torch.Tensor) -> torch.Tensor:
    """2**-e with max(|br|, |bi|) in [2**(e-1), 2**e): an exact scaling that keeps |b'|^2 in [1/4, 2]."""
    m = torch.maximum(br.abs(), bi.abs())
    finite_nonzero = torch.isfinite(m) & (m > 0)
    _, e = torch.frexp(torch.where(finite_nonzero, m, torch.ones_like(m)))
    return torch.ldexp(torch.ones_like(m), -e)


def div(a: Operand, b: Operand) -> ComplexTensor:
    """a / b = a conj(b) / |b|^2, with b scaled by an exact power of two so |b|^2 cannot overflow.

    Division by 0 gives non-finite components (0/0 -> NaN), never a finite value.
    """
    (A, B), dtype, cd, dev = _prepare(("a", a), ("b", b))
    ar, ai = A.parts(cd, dev)
    br, bi = B.parts(cd, dev)
    if bi is None:
        return _assemble(ar / br, None if ai is None else ai / br, dtype)
    s = _pow2_scale(br, bi)
    br, bi = br * s, bi * s
    den = br * br + bi * bi
    if ai is None:
        re, im = ar * br, -(ar * bi)
    else:
        re, im = ar * br + ai * bi, ai * br - ar * bi
    return _assemble((re / den) * s, (im / den) * s, dtype)


def neg(z: ComplexTensor) -> ComplexTensor:
    """-z (exact)."""
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    return ComplexTensor(-z.planes)


def conj(z: ComplexTensor) -> ComplexTensor:
    """re - i im: bitwise exact (the sign of zero flips with the imaginary part)."""
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    return ComplexTensor(torch.stack((z.real, -z.imag)))


def abs(z: ComplexTensor) -> torch.Tensor:  # noqa: A001 - the op's natural name
    """|z| as a real tensor; no overflow for any finite fp16 input (|z| <= 65504*sqrt(2) rounds to inf only when the exact value does)."""
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    cd = compute_dtype(z.dtype)
    return magnitude(z.real.to(cd), z.imag.to(cd), z.dtype).to(z.dtype)


def abs2(z: ComplexTensor) -> torch.Tensor:
    """|z|^2 = re^2 + im^2 as a real tensor (overflows to inf exactly when the exact value exceeds the format)."""
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    cd = compute_dtype(z.dtype)
    re, im = z.real.to(cd), z.imag.to(cd)
    return (re * re + im * im).to(z.dtype)


def angle(z: ComplexTensor) -> torch.Tensor:
    """arg z = atan2(im, re) in (-pi, pi], IEEE signed-zero conventions."""
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    cd = compute_dtype(z.dtype)
    return torch.atan2(z.imag.to(cd), z.real.to(cd)).to(z.dtype)


def exp(z: ComplexTensor) -> ComplexTensor:
    """e^re (cos im + i sin im); exp(x + 0i) = e^x + 0i even when e^x overflows."""
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    cd = compute_dtype(z.dtype)
    re, im = z.real.to(cd), z.imag.to(cd)
    m = torch.exp(re)
    out_im = torch.where(im == 0, im, m * torch.sin(im))
    return _assemble(m * torch.cos(im), out_im, z.dtype)


def polar(magnitude: torch.Tensor, phase: torch.Tensor) -> ComplexTensor:
    """magnitude * (cos phase + i sin phase) from two real tensors (broadcast), rounded once."""
    check_float_tensor("magnitude", magnitude)
    check_float_tensor("phase", phase)
    check_same_device([("magnitude", magnitude.device), ("phase", phase.device)])
    dtype = torch.promote_types(magnitude.dtype, phase.dtype)
    cd = compute_dtype(dtype)
    r, t = magnitude.to(cd), phase.to(cd)
    return _assemble(r * torch.cos(t), r * torch.sin(t), dtype)


def _logical_dims(z: ComplexTensor, dim) -> tuple[int, ...] | None:
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(plane_dim(z.ndim, d) for d in dims)


def _reduce(z: ComplexTensor, dim, keepdim: bool, reduction: str) -> ComplexTensor:
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    dims = _logical_dims(z, dim)
    p = z.planes.to(compute_dtype(z.dtype))
    if dims is None:
        dims = tuple(range(1, p.dim()))
    if not dims:
        return ComplexTensor(p.to(z.dtype))
    return ComplexTensor(getattr(p, reduction)(dim=dims, keepdim=keepdim).to(z.dtype))


def sum(z: ComplexTensor, dim=None, keepdim: bool = False) -> ComplexTensor:  # noqa: A001
    """Sum over ``dim`` (all dims if None), accumulated in fp32, rounded once."""
    return _reduce(z, dim, keepdim, "sum")


def mean(z: ComplexTensor, dim=None, keepdim: bool = False) -> ComplexTensor:
    """Mean over ``dim`` (all dims if None): fp32 sum / count, rounded once."""
    return _reduce(z, dim, keepdim, "mean")


def eq(a, b) -> torch.Tensor:
    """Elementwise equality as a bool tensor (both parts equal), like torch's complex ``==``."""
    if not isinstance(b, (ComplexTensor, torch.Tensor, numbers.Number)) or isinstance(b, bool):
        return NotImplemented
    (x, y), _, cd, dev = _prepare(("a", a), ("b", b))
    xr, xi = x.parts(cd, dev)
    yr, yi = y.parts(cd, dev)
    zero = torch.zeros((), dtype=cd, device=dev)
    return (xr == yr) & ((zero if xi is None else xi) == (zero if yi is None else yi))


def ne(a, b) -> torch.Tensor:
    """Elementwise inequality: ``~eq(a, b)``."""
    same = eq(a, b)
    return same if same is NotImplemented else ~same


def cat(tensors: Sequence[ComplexTensor], dim: int = 0) -> ComplexTensor:
    """Concatenate along logical ``dim`` (exact)."""
    zs = _sequence("tensors", tensors)
    d = plane_dim(zs[0].ndim, dim) - 1
    first = tuple(zs[0].shape)
    for i, z in enumerate(zs[1:], 1):
        shape = tuple(z.shape)
        if len(shape) != len(first) or any(a != b for k, (a, b) in enumerate(zip(shape, first, strict=True)) if k != d):
            raise ValueError(f"cat along dim {dim}: tensors[{i}] has shape {shape} but tensors[0] has "
                             f"{first}; all dims but {dim} must match")
    return ComplexTensor(torch.cat([z.planes for z in zs], dim=d + 1))


def stack(tensors: Sequence[ComplexTensor], dim: int = 0) -> ComplexTensor:
    """Stack along a new logical ``dim`` (exact)."""
    zs = _sequence("tensors", tensors)
    for i, z in enumerate(zs[1:], 1):
        if z.shape != zs[0].shape:
            raise ValueError(f"stack: tensors[{i}] has shape {tuple(z.shape)} but tensors[0] has "
                             f"{tuple(zs[0].shape)}; all must match")
    return ComplexTensor(torch.stack([z.planes for z in zs], dim=plane_dim(zs[0].ndim, dim, extra=1)))


def _sequence(name: str, tensors) -> list[ComplexTensor]:
    if isinstance(tensors, ComplexTensor) or not isinstance(tensors, Sequence) or not tensors:
        raise TypeError(f"{name} must be a non-empty sequence of ComplexTensors")
    for i, z in enumerate(tensors):
        check_type(f"{name}[{i}]", z, ComplexTensor, "a ComplexTensor")
    dtypes = {z.dtype for z in tensors}
    if len(dtypes) > 1:
        raise TypeError(f"{name} must share one dtype, got {sorted(map(str, dtypes))}")
    check_same_device((f"{name}[{i}]", z.device) for i, z in enumerate(tensors))
    return list(tensors)


# ---------------------------------------------------------------- construction
def from_complex(t: torch.Tensor, dtype: torch.dtype = torch.float16) -> ComplexTensor:
    """Native complex tensor -> planar; exact when ``dtype`` can hold both parts."""
    if not isinstance(t, torch.Tensor) or not t.is_complex():
        raise TypeError(f"t must be a complex torch.Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    dtype = plane_dtype(dtype)
    if t.dtype == torch.complex32:
        t = t.to(torch.complex64)
    return ComplexTensor(torch.stack((t.real, t.imag)).to(dtype))


def to_complex(z: ComplexTensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Planar -> native complex (complex64 for fp16/fp32 planes, complex128 for fp64); exact."""
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    if dtype is None:
        dtype = torch.complex128 if z.dtype == torch.float64 else torch.complex64
    if dtype not in (torch.complex64, torch.complex128, torch.complex32):
        raise TypeError(f"dtype must be a complex dtype, got {dtype}")
    work = torch.float64 if dtype == torch.complex128 else torch.float32
    out = torch.complex(z.real.to(work), z.imag.to(work))
    return out if dtype != torch.complex32 else out.to(torch.complex32)


def from_real(x: torch.Tensor, dtype: torch.dtype | None = None) -> ComplexTensor:
    """Real tensor -> complex with zero imaginary part (rounded once to ``dtype``)."""
    check_float_tensor("x", x)
    dtype = x.dtype if dtype is None else plane_dtype(dtype)
    return ComplexTensor(torch.stack((x, torch.zeros_like(x))).to(dtype))


def zeros(*shape, dtype: torch.dtype = torch.float16, device=None) -> ComplexTensor:
    """A zero ComplexTensor of logical ``shape``."""
    dtype = plane_dtype(dtype)
    return ComplexTensor(torch.zeros(2, *shape_args(shape), dtype=dtype, device=device))


def randn(*shape, dtype: torch.dtype = torch.float16, device=None, generator=None) -> ComplexTensor:
    """Standard complex normal: re, im ~ N(0, 1/2) so E|z|^2 = 1, rounded once to ``dtype``."""
    dtype = plane_dtype(dtype)
    p = torch.randn(2, *shape_args(shape), dtype=compute_dtype(dtype), device=device, generator=generator)
    return ComplexTensor((p * 0.5**0.5).to(dtype))


__all__ = [
    "FLOAT_DTYPES", "abs", "abs2", "add", "angle", "cat", "conj", "div", "exp", "from_complex",
    "from_real", "mean", "mul", "neg", "polar", "randn", "stack", "sub", "sum", "to_complex", "zeros",
]

"""Autograd through planar ops and layers == native complex128 autograd (PyTorch's convention).

For a real loss L the gradient of a complex input is dL/dRe + i dL/dIm, both in native
complex autograd and on the planes.  Every computation here uses float64 planes, where
every op computes in float64, so the comparisons are tight.
"""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import native, planar_grad_vs_native

import muse.complex as C
from muse.complex import ComplexTensor

F64 = torch.float64


def _c(*shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64))


def _probe(shape, seed=99) -> torch.Tensor:
    return _c(*shape, seed=seed)


def _planar_loss(y: ComplexTensor, c: torch.Tensor) -> torch.Tensor:
    """Re(sum(conj(c) * y)) on the planes."""
    return (y.real * c.real + y.imag * c.imag).sum()


def _native_loss(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (y * c.conj()).real.sum()


def test_abs2_gradient_convention():
    z = ComplexTensor(torch.tensor([1.0, 2.0], dtype=F64)).requires_grad_()  # 1 + 2i
    C.abs2(z).backward()
    assert native(z.grad).item() == 2 + 4j
    n = torch.tensor(1 + 2j, dtype=torch.complex128, requires_grad=True)
    (n.abs() ** 2).backward()
    assert n.grad.item() == 2 + 4j


UNARY = {
    "mul": (lambda z: C.mul(z, 0.5 - 2j), lambda z: z * (0.5 - 2j)),
    "div-by": (lambda z: C.div(1.5 + 1j, z), lambda z: (1.5 + 1j) / z),
    "conj": (C.conj, torch.conj),
    "neg": (C.neg, torch.neg),
    "exp": (C.exp, torch.exp),
    "sum-dim": (lambda z: C.sum(z, 1), lambda z: z.sum(1)),
    "mean-keepdim": (lambda z: C.mean(z, 0, True), lambda z: z.mean(0, keepdim=True)),
    "transpose-slice": (lambda z: z.T[1:], lambda z: z.T[1:]),
    "getitem-index": (lambda z: z[torch.tensor([2, 0, 2])], lambda z: z[torch.tensor([2, 0, 2])]),
    "add-real-tensor": (lambda z: C.add(torch.arange(4, dtype=F64), z), lambda z: torch.arange(4, dtype=F64) + z),
    "real-tensor-div": (lambda z: C.div(z, torch.arange(1, 5, dtype=F64)), lambda z: z / torch.arange(1, 5, dtype=F64)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_op_gradients_equal_complex128_autograd(name):
    pf, nf = UNARY[name]
    x = _c(3, 4)
    c = _probe(tuple(nf(x).shape))
    planar_grad_vs_native(lambda z: _planar_loss(pf(z), c), lambda z: _native_loss(nf(z), c), x)


@pytest.mark.parametrize("name, pf, nf", [
    ("abs", C.abs, torch.abs),
    ("abs2", C.abs2, lambda z: z.abs() ** 2),
    ("angle", C.angle, torch.angle),
])
def test_real_valued_op_gradients(name, pf, nf):
    x = _c(5)
    w = torch.randn(5, dtype=F64)
    planar_grad_vs_native(lambda z: (pf(z) * w).sum(), lambda z: (nf(z) * w).sum(), x)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_op_gradients_both_operands(op):
    fn = getattr(C, op)
    nfn = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}[op]
    a, b = _c(3, 4), _c(4, seed=1)  # broadcasting: b's grad is reduced over rows
    c = _probe((3, 4))
    planar_grad_vs_native(lambda x, y: _planar_loss(fn(x, y), c), lambda x, y: _native_loss(nfn(x, y), c), a, b)


@pytest.mark.parametrize("a_shape, b_shape", [((3, 4), (4, 2)), ((4,), (4,)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3))])
def test_matmul_gradients(a_shape, b_shape):
    a, b = _c(*a_shape), _c(*b_shape, seed=1)
    c = _probe(tuple(torch.matmul(a, b).shape))
    planar_grad_vs_native(lambda x, y: _planar_loss(C.matmul(x, y), c),
                          lambda x, y: _native_loss(torch.matmul(x, y), c), a, b)


def test_matmul_real_operand_gradient():
    a, r = _c(3, 4), torch.randn(4, 2, dtype=F64)
    c = _probe((3, 2))
    r1, r2 = r.clone().requires_grad_(), r.clone().requires_grad_()
    planar_grad_vs_native(lambda x: _planar_loss(C.matmul(x, r1), c), lambda x: _native_loss(x @ r2.to(x.dtype), c), a)
    torch.testing.assert_close(r1.grad, r2.grad)


def test_linear_gradients():
    x, w, b = _c(2, 3, 5), _c(4, 5, seed=1), _c(4, seed=2)
    c = _probe((2, 3, 4))
    planar_grad_vs_native(lambda x_, w_, b_: _planar_loss(C.linear(x_, w_, b_), c),
                          lambda x_, w_, b_: _native_loss(x_ @ w_.T + b_, c), x, w, b)


def test_cat_stack_gradients():
    a, b = _c(2, 3), _c(2, 3, seed=1)
    c = _probe((2, 2, 3))
    planar_grad_vs_native(lambda x, y: _planar_loss(C.stack([x, y], 1), c) + C.abs(C.cat([x, y])).sum(),
                          lambda x, y: _native_loss(torch.stack([x, y], 1), c) + torch.cat([x, y]).abs().sum(), a, b)


# ------------------------------------------------------------------ layers vs native complex128
def _ln_native(z, w, b, eps=1e-5):
    mu = z.mean(-1, keepdim=True)
    cc = z - mu
    var = (cc.abs() ** 2).mean(-1, keepdim=True)
    return cc / torch.sqrt(var + eps) * w + b


def test_layer_norm_gradients_equal_complex128_autograd():
    x = _c(2, 3, 8)
    w0, b0 = torch.rand(8, dtype=F64) + 0.5, torch.randn(8, dtype=F64)
    wp, bp = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    wn, bn = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    c = _probe((2, 3, 8))
    planar_grad_vs_native(lambda z: _planar_loss(C.layer_norm(z, wp, bp), c),
                          lambda z: _native_loss(_ln_native(z, wn, bn), c), x)
    torch.testing.assert_close(wp.grad, wn.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bp.grad, bn.grad, rtol=1e-10, atol=1e-12)


def test_layer_norm_gradients_without_affine():
    x = _c(4, 6)
    c = _probe((4, 6))
    planar_grad_vs_native(lambda z: _planar_loss(C.layer_norm(z), c),
                          lambda z: _native_loss(_ln_native(z, 1.0, 0.0), c), x)


def _modrelu_native(z, b):
    r = z.abs()
    return torch.relu(r + b) * z / r


def _modrelu_inputs():
    """|z| in [0.05, 0.2] (inactive for b = -0.3) or [0.5, 2] (active), never near |z| = -b or 0."""
    g = torch.Generator().manual_seed(5)
    r = torch.cat([torch.rand(6, generator=g, dtype=F64) * 0.15 + 0.05, torch.rand(10, generator=g, dtype=F64) * 1.5 + 0.5])
    th = torch.rand(16, generator=g, dtype=F64) * 2 * math.pi - math.pi
    return torch.polar(r, th).reshape(2, 8)


def test_modrelu_gradients_equal_complex128_autograd():
    x = _modrelu_inputs()
    b0 = torch.full((8,), -0.3, dtype=F64)
    bp, bn = b0.clone().requires_grad_(), b0.clone().requires_grad_()
    c = _probe((2, 8))
    planar_grad_vs_native(lambda z: _planar_loss(C.modrelu(z, bp), c),
                          lambda z: _native_loss(_modrelu_native(z, bn), c), x)
    torch.testing.assert_close(bp.grad, bn.grad, rtol=1e-10, atol=1e-12)


def test_modrelu_scalar_bias_gradient():
    x = _modrelu_inputs()
    bp, bn = torch.tensor(0.2, dtype=F64, requires_grad=True), torch.tensor(0.2, dtype=F64, requires_grad=True)
    c = _probe((2, 8))
    planar_grad_vs_native(lambda z: _planar_loss(C.modrelu(z, bp), c),
                          lambda z: _native_loss(_modrelu_native(z, bn), c), x)
    assert bp.grad.shape == () and torch.allclose(bp.grad, bn.grad)


def test_dropout_gradient_uses_the_same_mask():
    x = _c(20, 10)
    z = ComplexTensor(torch.stack((x.real, x.imag))).requires_grad_()
    y = C.dropout(z, 0.4, generator=torch.Generator().manual_seed(1))
    keep = (y.real != 0).to(F64)
    c = _probe((20, 10))
    _planar_loss(y, c).backward()
    torch.testing.assert_close(native(z.grad), c * keep / 0.6)


def test_embedding_gradients_equal_complex128_autograd():
    w = _c(7, 4)
    ids = torch.tensor([[1, 3, 1], [6, 0, 1]])
    pos0 = torch.randn(3, 4, dtype=F64)
    pp, pn = pos0.clone().requires_grad_(), pos0.clone().requires_grad_()
    phase = 0.7
    rot = complex(math.cos(phase), math.sin(phase))
    c = _probe((2, 3, 4))
    planar_grad_vs_native(lambda ww: _planar_loss(C.embedding(ids, ww, pp, phase), c),
                          lambda ww: _native_loss((ww[ids] + pn) * rot, c), w)
    torch.testing.assert_close(pp.grad, pn.grad)


# ------------------------------------------------------------------ gradcheck / gradgradcheck
def _ln_planes(p, w, b):
    return C.layer_norm(ComplexTensor(p), w, b).planes


def _modrelu_planes(p, b):
    return C.modrelu(ComplexTensor(p), b).planes


def test_layer_norm_gradcheck_and_gradgradcheck():
    x = _c(2, 5)
    p = torch.stack((x.real, x.imag)).requires_grad_()
    w = (torch.rand(5, dtype=F64) + 0.5).requires_grad_()
    b = torch.randn(5, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(_ln_planes, (p, w, b))
    assert torch.autograd.gradgradcheck(_ln_planes, (p, w, b))
    assert torch.autograd.gradcheck(lambda q: _ln_planes(q, None, None), (p,))


def test_modrelu_gradcheck_and_gradgradcheck():
    x = _modrelu_inputs()
    p = torch.stack((x.real, x.imag)).requires_grad_()
    b = torch.full((8,), -0.3, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(_modrelu_planes, (p, b))
    assert torch.autograd.gradgradcheck(_modrelu_planes, (p, b))
    b0 = torch.tensor(0.25, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(_modrelu_planes, (p, b0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_modrelu_in_place_backward_equals_the_differentiable_one(dtype):
    """The plain backward reuses its buffers in place (two planes of temporaries instead of ten); with
    create_graph it builds the same formula out of place. Same operations, same order: equal bits,
    including zeros, inactive entries and a bias that switches entries off."""
    gen = torch.Generator().manual_seed(3)
    planes = torch.randn(2, 64, 16, generator=gen).to(dtype)
    planes[:, 0, 0] = 0.0
    bias = (torch.randn(16, generator=gen) - 0.5).to(dtype)
    grad = torch.randn(2, 64, 16, generator=gen).to(dtype)
    results = []
    for create_graph in (False, True):
        x = planes.clone().requires_grad_()
        b = bias.clone().requires_grad_()
        out = C.modrelu(ComplexTensor(x), b).planes
        gx, gb = torch.autograd.grad(out, (x, b), grad, create_graph=create_graph)
        results.append((gx.detach(), gb.detach()))
    for got, want in zip(results[0], results[1], strict=True):
        assert torch.equal(got, want)
    assert (results[0][0] == 0).any() and (results[0][0] != 0).any()

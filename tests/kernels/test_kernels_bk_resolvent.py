"""The Triton kernel of the BK-Core resolvent (muse.scan.bk_green_scan on complex64) against the
sequential definition in complex128 (CPU: Triton's interpreter).

Tolerances are first-order rounding-error bounds evaluated along each lane from the complex128
reference (u = 2**-24, the fp32 unit roundoff), then doubled for higher-order terms:

forward, with E_i the error of G_i: the kernel forms r_i = ((a_i - z) - G_{i-1}) (each rounding
u times its result, plus u|z| for z rounded to fp32) and G_i = 1/r_i by an exact power-of-two
scaling and 4 roundings per part (|r|^2 2u, the quotient u, the product u: muse/kernels/_triton.py),
and dG_i = -G_i^2 dr_i, so

    E_i <= |G_i|^2 (E_{i-1} + u (|z| + |a_i - z| + |r_i|)) + 4 u |G_i|,   |G_i|^2 |r_i| = |G_i|.

backward, with D_i the error of mu_i = lambda_i conj(G_i)^2 (grad_a_i = -mu_i, grad_G0 = mu_1),
lambda_i = grad_i + mu_{i+1}: the addition costs u |lambda_i|, conj(G)^2 from the kernel's G
costs 2 |G_i| E_i + 2.1 u |G_i|^2, the complex product 3 u |lambda_i| |G_i|^2, so

    D_i <= |G_i|^2 (D_{i+1} + u |lambda_i|) + |lambda_i| (2 |G_i| E_i + 5.1 u |G_i|^2).

Every case checks that the kernel ran (a counter on the launch functions), so a silent fallback
to the PyTorch scan cannot pass.  Sizes stay small: the interpreter is slow.
"""

from __future__ import annotations

import pytest
import torch

from muse import kernels
from muse.scan import bk_diagonal, bk_green_adjoint, bk_green_scan, bk_green_sequential
from tests.kernels._launches import DEVICES, count_launches

U = 2.0**-24

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)


@pytest.fixture
def launches(monkeypatch, kernel_device):
    """Kernels on; counts the wrappers' launches (tests/kernels/_launches.py)."""
    counts = count_launches(monkeypatch, kernel_device, ("bk_green_forward", "bk_green_backward"))
    return counts


def _diagonal(shape, seed, device="cpu"):
    """A dissipative complex64 diagonal a = V + 2 - i Gamma (Im a <= 0), as BKCore builds it."""
    g = torch.Generator().manual_seed(seed)
    v = 1.5 * torch.randn(shape, generator=g)
    gamma = torch.nn.functional.softplus(torch.randn(shape, generator=g))
    return bk_diagonal(v, gamma).to(device)  # complex64


def _cplx(shape, seed, scale=1.0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn((*shape, 2), generator=g)).to(device).contiguous().view(torch.complex64)[..., 0]


def _reference(a, z, g0, w):
    """(G, grad_a, grad_G0) in complex128 from the same complex64 values; loss Re sum(G * w)."""
    a64 = a.detach().cpu().to(torch.complex128).requires_grad_(True)
    g064 = None if g0 is None else g0.detach().cpu().to(torch.complex128).requires_grad_(True)
    g = bk_green_sequential(a64, z, g064)
    (g * w.cpu().to(torch.complex128)).real.sum().backward()
    return g.detach(), a64.grad, None if g0 is None else g064.grad


def _bounds(a, z, g0, w, g, grad_a):
    """(E, D): the forward and backward bounds of the module docstring along each lane, float64."""
    a = a.detach().cpu().to(torch.complex128)
    lam_in = w.cpu().to(torch.complex128).conj()  # grad of Re sum(G w) w.r.t. G (PyTorch's convention)
    n = a.shape[-1]
    prev = torch.zeros(a.shape[:-1], dtype=torch.float64)
    e = torch.zeros(a.shape, dtype=torch.float64)
    for i in range(n):
        gi = g[..., i].abs()
        prev = gi**2 * (prev + U * (abs(z) + (a[..., i] - z).abs() + 1.0 / gi)) + 4 * U * gi
        e[..., i] = prev
    d = torch.zeros(a.shape, dtype=torch.float64)
    nxt = torch.zeros(a.shape[:-1], dtype=torch.float64)
    for i in reversed(range(n)):
        gi = g[..., i].abs()
        lam = (lam_in[..., i] - (grad_a[..., i + 1] if i + 1 < n else 0.0)).abs()  # |grad_i + mu_{i+1}|
        nxt = gi**2 * (nxt + U * lam) + lam * (2 * gi * e[..., i] + 5.1 * U * gi**2)
        d[..., i] = nxt
    return 2 * e, 2 * d


def _check(a, z, g0, launches, *, seed=7):
    """Kernel values and gradients within the bounds, elementwise, on every lane and step."""
    w = _cplx(a.shape, seed, device=a.device)
    ak = a.clone().requires_grad_(True)
    g0k = None if g0 is None else g0.clone().requires_grad_(True)
    gk = bk_green_scan(ak, z, g0k)
    (gk * w).real.sum().backward()
    assert launches.get("bk_green_forward", 0) == 1 and launches.get("bk_green_backward", 0) == 1, launches
    assert gk.dtype == torch.complex64 and gk.shape == a.shape and ak.grad.shape == a.shape
    g, grad_a, grad_g0 = _reference(a, z, g0, w)
    e, d = _bounds(a, z, g0, w, g, grad_a)
    err = (gk.detach().cpu().to(torch.complex128) - g).abs()
    assert (err <= e).all(), float((err / e).max())
    gerr = (ak.grad.cpu().to(torch.complex128) - grad_a).abs()
    assert (gerr <= d).all(), float((gerr / d).max())
    if g0 is not None and a.shape[-1] == 0:
        assert torch.equal(g0k.grad, torch.zeros_like(g0))  # G_0 reaches no output
    elif g0 is not None:
        assert g0k.grad.shape == g0.shape
        g0err = (g0k.grad.cpu().to(torch.complex128) - grad_g0).abs()
        assert (g0err <= d[..., 0]).all(), float((g0err / d[..., 0]).max())
    return gk.detach()


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 5, 70), (37, 24), (1, 40), (33,)], ids=str)
@pytest.mark.parametrize("z", [1j, 0.3 + 0.7j], ids=["z=1j", "z=0.3+0.7j"])
def test_bk_kernel_matches_sequential_reference(kernel_device, shape, z, launches):
    """Lane counts 15, 37 (> one block of 32, the second partial), 1 and a 1-D sequence."""
    _check(_diagonal(shape, seed=1, device=kernel_device), z, None, launches)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize(("scale", "z"), [(1e25, 1j), (1e-25, 1e-25j)], ids=["huge", "tiny"])
def test_bk_kernel_extreme_magnitudes(kernel_device, scale, z, launches):
    """|r| ~ 1e25 or 1e-25: |r|^2 would overflow or underflow in fp32 without the kernel's scaling.
    Values only: the gradients hold G^2 ~ 1e-50 or 1e50, outside fp32's range whatever the method."""
    a = scale * _diagonal((3, 20), seed=14, device=kernel_device)
    g = bk_green_scan(a, z)
    assert launches == {"bk_green_forward": 1}
    w = torch.zeros(a.shape, dtype=torch.complex64)
    ref, grad_a, _ = _reference(a, z, None, w)
    e, _ = _bounds(a, z, None, w, ref, grad_a)
    err = (g.cpu().to(torch.complex128) - ref).abs()
    assert torch.isfinite(g).all() and (err <= e).all(), float((err / e).max())


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_bk_kernel_initial_state(kernel_device, launches):
    """A continued sequence: values and the gradient reaching G_0 within the bounds."""
    a = _diagonal((2, 3, 30), seed=2, device=kernel_device)
    g0 = _cplx((2, 3), seed=3, scale=0.4, device=kernel_device)
    _check(a, 1j, g0, launches)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("n", [0, 1])
def test_bk_kernel_short_sequences(kernel_device, n, launches):
    """S = 1 is one division; S = 0 gives an empty G and a zero gradient for G_0."""
    a = _diagonal((4, n), seed=4, device=kernel_device)
    g0 = _cplx((4,), seed=5, scale=0.4, device=kernel_device)
    g = _check(a, 1j, g0, launches)
    if n == 1:
        expected = 1.0 / ((a[:, 0].cpu().to(torch.complex128) - 1j) - g0.cpu().to(torch.complex128))
        assert torch.allclose(g[:, 0].cpu().to(torch.complex128), expected, rtol=16 * U, atol=0)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_bk_kernel_non_contiguous_input(kernel_device, launches):
    """BKCore's diagonal is a transposed view (B, S, C) -> (B, C, S): same values as a contiguous copy."""
    a = _diagonal((2, 50, 6), seed=6, device=kernel_device).transpose(1, 2)
    assert not a.is_contiguous()
    g = bk_green_scan(a, 1j)
    assert torch.equal(g, bk_green_scan(a.contiguous(), 1j))
    assert launches["bk_green_forward"] == 2


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_bk_kernel_bad_input_errors_unchanged(kernel_device, launches):
    a = _diagonal((2, 8), seed=7, device=kernel_device)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        bk_green_scan(a, 1j, initial_state=a[:, :2])
    with pytest.raises(ValueError, match="initial_state must have shape"):
        bk_green_scan(a, 1j, initial_state=a[:, 0].to(torch.complex128))
    with pytest.raises(ValueError, match="Im z > 0"):
        bk_green_scan(a, 1.0 + 0j)
    with pytest.raises(TypeError, match="a must have dtype complex64 or complex128"):
        bk_green_scan(a.real, 1j)
    assert launches == {}


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_bk_kernel_complex128_uses_the_scan(kernel_device, launches):
    bk_green_scan(_diagonal((2, 8), seed=8, device=kernel_device).to(torch.complex128), 1j)
    assert launches == {}


def test_bk_adjoint_matches_autograd():
    """bk_green_adjoint (the kernel's backward in PyTorch) equals autograd of the sequential loop."""
    a = _diagonal((3, 2, 25), seed=9).to(torch.complex128)
    g0 = _cplx((3, 2), seed=10, scale=0.4).to(torch.complex128)
    w = _cplx((3, 2, 25), seed=11).to(torch.complex128)
    g, grad_a, grad_g0 = _reference(a, 0.2 + 1j, g0, w)
    adj_a, adj_g0 = bk_green_adjoint(g, w.conj())
    assert torch.allclose(adj_a, grad_a, rtol=1e-12, atol=1e-14)
    assert torch.allclose(adj_g0, grad_g0, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_bk_kernel_double_backward_takes_the_pytorch_adjoint(kernel_device, launches):
    """create_graph=True: the differentiable bk_green_adjoint runs instead of the backward kernel, and
    grad-of-grad matches the sequential loop's in complex128 (to fp32 rounding)."""
    a = _diagonal((2, 12), seed=12, device=kernel_device)
    ak = a.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(bk_green_scan(ak, 1j).abs().pow(2).sum(), ak, create_graph=True)
    assert launches.get("bk_green_backward", 0) == 0 and launches["bk_green_forward"] == 1
    (gg,) = torch.autograd.grad(ga.abs().pow(2).sum(), ak)
    a64 = a.cpu().to(torch.complex128).requires_grad_(True)
    (ga64,) = torch.autograd.grad(bk_green_sequential(a64, 1j).abs().pow(2).sum(), a64, create_graph=True)
    (gg64,) = torch.autograd.grad(ga64.abs().pow(2).sum(), a64)
    assert torch.allclose(gg.cpu().to(torch.complex128), gg64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_bk_kernel_runs_inside_torch_compile(kernel_device, launches):
    """The scan is the one op the compiler cannot fuse, so the kernel stays on inside torch.compile:
    a fullgraph compile traces the custom op (its fake impl), runs the kernels, and matches eager."""
    torch._dynamo.reset()
    a = _diagonal((3, 20), seed=13, device=kernel_device)

    def f(x):
        return bk_green_scan(x, 1j).abs().pow(2).sum()

    ac = a.clone().requires_grad_(True)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(ac)
    out.backward()
    assert launches["bk_green_forward"] >= 1 and launches["bk_green_backward"] >= 1
    ae = a.clone().requires_grad_(True)
    f(ae).backward()
    assert torch.equal(out.detach(), f(a).detach()) and torch.equal(ac.grad, ae.grad)

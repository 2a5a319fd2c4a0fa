"""The Triton kernels of the selective diagonal scan (muse.scan.selective_diag on float32) against the
chunked PyTorch form in float64 (CPU: Triton's interpreter).

Bound: the kernel scans h_t = a_t h_{t-1} + x_t with a_t = exp(l_t) (libdevice's expf, e ulps:
verification.bounds.LIBM_ULPS) in tiles of T tokens, so |h_t - exact| <= gamma_{(e + 2)(t + 1) + 2 ceil((t + 1) / T)}
sum_s a(s..t) |x_s| in first order (docs/numerics.md); the tests use ((e + 2) S + 2 ceil(S / T) + 8) u M_t with M_t
that magnitude sum (float64), plus 2^-120 M_t for what float32 flushes
to zero (exp(ld) below its smallest normal), and the same count over |dy| for the gradients
(the reverse recurrence G_t = dy_t + a_{t+1} G_{t+1} has the same form; dl_t adds two products and a
sum).  Every case checks that the kernels ran.
"""

from __future__ import annotations

import math

import pytest
import torch

import muse.complex as C
from muse import kernels
from muse.scan import selective_diag_scan
from tests.kernels._launches import DEVICES, count_launches
from verification.bounds import LIBM_ULPS

U = 2.0**-24
TINY = 2.0**-120  # float32 underflow: exp(ld) below the smallest normal (a decay of exp(-157) is 0 there)

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)


@pytest.fixture
def launches(monkeypatch, kernel_device):
    return count_launches(monkeypatch, kernel_device, ("selective_scan_forward", "selective_scan_backward"))


def _inputs(lead, s, d, seed, device):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((2, *lead, s, d), generator=g, dtype=torch.float64)
    rates = torch.tensor([1e-3, 0.05, 0.5, 4.0, 200.0], dtype=torch.float64)[torch.arange(d) % 5]
    ld = -(1.0 - torch.rand((*lead, s, d), generator=g, dtype=torch.float64)) * rates
    h0 = torch.randn((2, *lead, d), generator=g, dtype=torch.float64)
    return tuple(t.float().double().to(device) for t in (x, ld, h0))  # exact in float32: one set of inputs


def _magnitude(x, ld, h0):
    """M_t = sum_s a(s..t) (|Re x_s| + |Im x_s|) + a(0..t) |h0|_1, float64 (x (2, ..., S, D))."""
    a = torch.exp(ld)
    m = h0.abs().sum(0)
    xs = x.abs().sum(0)
    out = []
    for t in range(x.shape[-2]):
        m = a[..., t, :] * m + xs[..., t, :]
        out.append(m)
    return torch.stack(out, dim=-2)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("tile", [8, kernels.SELECTIVE_TILE])
@pytest.mark.parametrize("lead, s, d, with_h0", [((2,), 37, 40, True), ((1, 3), 16, 5, False), ((2,), 1, 33, True)])
def test_forward_and_gradients_match_the_chunked_form(launches, monkeypatch, kernel_device, tile, lead, s, d,
                                                      with_h0):
    """Tiles of 8 tokens: several tiles, a ragged last one (S = 37) and an exact fit (S = 16)."""
    monkeypatch.setattr("muse.kernels._triton.SEL_CHUNK", tile)
    x, ld, h0 = _inputs(lead, s, d, 0, kernel_device)
    h0 = h0 if with_h0 else None
    x32 = x.float().requires_grad_(True)
    l32 = ld.float().requires_grad_(True)
    h32 = None if h0 is None else h0.float().requires_grad_(True)
    y, hs = selective_diag_scan(C.ComplexTensor(x32), l32, None if h32 is None else C.ComplexTensor(h32),
                                output_final_state=True, out_dtype=torch.float32)
    assert launches == {"selective_scan_forward": 1}
    g = torch.Generator().manual_seed(5)
    dy = torch.randn(y.planes.shape, generator=g, dtype=torch.float64).to(kernel_device)
    dhs = torch.randn(hs.planes.shape, generator=g, dtype=torch.float64).to(kernel_device)
    torch.autograd.backward([y.planes, hs.planes], [dy.float(), dhs.float()])
    assert launches == {"selective_scan_forward": 1, "selective_scan_backward": 1}

    with kernels.environment(**{kernels.ENV: "0"}):
        xr, lr = x.clone().requires_grad_(True), ld.clone().requires_grad_(True)
        hr = None if h0 is None else h0.clone().requires_grad_(True)
        yr, hsr = selective_diag_scan(C.ComplexTensor(xr), lr, None if hr is None else C.ComplexTensor(hr),
                                      output_final_state=True, chunk_size=8)
        torch.autograd.backward([yr.planes, hsr.planes], [dy, dhs])
    zero = torch.zeros_like(x[0, ..., 0, :])
    mag = _magnitude(x, ld, zero.unsqueeze(0).expand(2, *zero.shape) if h0 is None else h0)
    # docs/numerics.md: gamma_((e+2)(t+1) + 2 ceil((t+1)/T)), e = expf's ulps
    eps = ((LIBM_ULPS[kernel_device]["exp"] + 2) * s + 2 * math.ceil(s / tile) + 8) * U
    assert ((y.planes.double() - yr.planes).abs() <= eps * mag + TINY * mag).all()
    assert ((hs.planes.double() - hsr.planes).abs() <= (eps + TINY) * mag[..., -1, :]).all()
    # gradients: the reverse recurrence over |dy| (and |dh_S|), the same form
    rev = _magnitude(dy.flip(-2), ld.flip(-2).roll(1, -2), dhs).flip(-2)
    assert ((x32.grad.double() - xr.grad).abs() <= (eps + TINY) * rev).all()
    prev = torch.cat([(zero if h0 is None else h0.abs().sum(0)).unsqueeze(-2), mag[..., :-1, :]], dim=-2)
    assert ((l32.grad.double() - lr.grad).abs() <= (2 * eps * torch.exp(ld) + TINY) * rev * prev).all()
    if h0 is not None:
        torch.testing.assert_close(h32.grad.double(), hr.grad, rtol=eps * 4, atol=eps * float(rev.max()))


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("tile", [8, kernels.SELECTIVE_TILE])
def test_kernel_is_causal_bit_for_bit_and_finite_for_strong_decays(launches, monkeypatch, kernel_device, tile):
    """Changes after t inside t's tile (tile 64) and in later tiles (tile 8) leave y up to t bit-identical."""
    monkeypatch.setattr("muse.kernels._triton.SEL_CHUNK", tile)
    x, ld, _ = _inputs((2,), 50, 7, 1, kernel_device)
    x, ld = x.float(), ld.float() * 50  # decays down to exp(-10^4) per token
    y, _ = selective_diag_scan(C.ComplexTensor(x), ld)
    assert torch.isfinite(y.planes).all()
    for t in (0, 20, 48):
        xc, lc = x.clone(), ld.clone()
        xc[..., t + 1:, :] += 1.0
        lc[..., t + 1:, :] *= 0.5
        y2, _ = selective_diag_scan(C.ComplexTensor(xc), lc)
        assert torch.equal(y.planes[..., : t + 1, :], y2.planes[..., : t + 1, :])
    assert launches["selective_scan_forward"] == 4


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_double_backward_equals_the_pytorch_form(launches, kernel_device):
    """create_graph=True: the first backward differentiates the PyTorch form, so second derivatives exist."""
    x, ld, _ = _inputs((1,), 6, 3, 2, kernel_device)
    grads = []
    for env in ("1", "0"):
        with kernels.environment(**{kernels.ENV: env}):
            xp, lp = x.float().requires_grad_(True), ld.float().clamp(min=-3).requires_grad_(True)
            y, _ = selective_diag_scan(C.ComplexTensor(xp), lp)
            (gl,) = torch.autograd.grad(y.planes.square().sum(), lp, create_graph=True)
            gl.sum().backward()
            grads.append((gl.detach(), xp.grad, lp.grad))
    assert launches["selective_scan_forward"] == 1
    for got, want in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_phase_runs_the_kernel_on_the_counter_rotated_inputs(launches, kernel_device):
    """With a per-token phase the kernels scan exp(-i Phi) x and the result is turned back: the same values and
    gradients as the PyTorch form, within the kernel's bound widened by the two rotations (a few ulps of M)."""
    x, ld, h0 = _inputs((2,), 37, 10, 3, kernel_device)
    ph = (3.0 * torch.randn(ld.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)).float().double()
    ph = ph.to(kernel_device)
    got = []
    for env in ("1", "0"):
        with kernels.environment(**{kernels.ENV: env}):
            xp, lp, pp = (t.float().requires_grad_(True) for t in (x, ld, ph))
            y, hs = selective_diag_scan(C.ComplexTensor(xp), lp, C.ComplexTensor(h0.float()), output_final_state=True,
                                        phase=pp)
            (y.planes.sum() + hs.planes.square().sum()).backward()
            got.append((y.planes.detach(), hs.planes.detach(), xp.grad, lp.grad, pp.grad))
    assert launches == {"selective_scan_forward": 1, "selective_scan_backward": 1}
    mag = _magnitude(x, ld, h0)
    eps = ((LIBM_ULPS[kernel_device]["exp"] + 2) * 37 + 2 * math.ceil(37 / kernels.SELECTIVE_TILE) + 40) * U
    assert ((got[0][0].double() - got[1][0].double()).abs() <= 2 * eps * mag).all()
    assert ((got[0][1].double() - got[1][1].double()).abs() <= 2 * eps * mag[..., -1, :]).all()
    for a, b in zip(got[0][2:], got[1][2:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_the_kernel_inside_a_recomputed_region_under_inductor(launches, monkeypatch, kernel_device):
    """``MUSE_RECOMPUTE_IN_COMPILE=1`` keeps the recurrence's region checkpointed under torch.compile, with the scan
    kernel inside it (the CUDA path's structure): the step compiles, runs the kernels, and gives eager's loss and
    gradients."""
    from muse.complex import recompute
    from muse.models import build_model
    from muse.train.loss import compile_model_loss, model_loss

    monkeypatch.setenv(recompute.IN_COMPILE_ENV, "1")
    torch.manual_seed(0)
    model = build_model("stage1", "mix-tiny", n_layers=1, dropout=0.0, device=kernel_device)
    ids = torch.randint(0, model.config.vocab_size, (1, 33), generator=torch.Generator().manual_seed(0))
    inputs, targets = ids[:, :-1].to(kernel_device), ids[:, 1:].to(kernel_device)
    torch._dynamo.reset()
    compiled = compile_model_loss(model)(inputs, targets)
    compiled.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert launches.get("selective_scan_forward", 0) >= 1 and launches.get("selective_scan_backward", 0) >= 1
    model.zero_grad(set_to_none=True)
    eager = model_loss(model, inputs, targets)
    eager.backward()
    assert torch.allclose(compiled.detach(), eager.detach(), rtol=1e-6, atol=0)
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, g in grads.items():
        torch.testing.assert_close(g.float(), model.get_parameter(name).grad.float(), rtol=1e-3, atol=1e-5, msg=name)

"""The Triton kernel of the decayed linear attention (muse.scan.hebbian on float32) against the PyTorch
form in float64 (CPU: Triton's interpreter).

Tolerances are mixed bounds, E = 2 eps M, with M the same computation on |q|, |k|, |v|, |W_0|
(and |dy|, |dW_S| for the gradients) in float64 -- the sum of the magnitudes of every term -- and
eps the first-order count of fp32 roundings on the longest path of the kernel (u = 2**-24, gamma_n
= n u; chunks of BT = 16 positions (the kernel's HEBB_CHUNK), N of them):

- y: q.k (gamma_{d_k}), times the decay and eta (3u), the chunk sum (gamma_BT), the state read
  q e^g W (gamma_{d_k + 2}); the state after n chunks carries gamma_{n (BT + 5)};
  eps_y = gamma_{2 d_k + BT + N (BT + 5) + 6} + (N + 1) 2 gamma_BT Lambda, where the last term is
  the decays' error: they are exp(g_t - g_s) of in-chunk cumulative sums, whose error is at most
  gamma_BT Lambda, Lambda = the largest sum of |log_decay| over one chunk (twice per decay, once
  per chunk crossing);
- dq, dk, dv, dW_0: two state passes, eps_g = gamma_{2 d + BT + 2 N (BT + 5) + 10} + (N + 1) 2 gamma_BT
  Lambda (d = max(d_k, d_v));
- d(log_decay): q . dq - k . dk and a reverse sum over S positions, eps_l = eps_g + gamma_{d_k + S + 2}
  against M_l = sum_{t >= r} (|q_t| . M_dq_t + |k_t| . M_dk_t) (+ |dW_S| . M_W at t = S).

The kernel splits d_v into tiles of BV columns (HEBB_TILE_V): the sums over d_v in dq and dk become BV-term
dots plus a sum of the T = ceil(d_v / BV) tiles' partials, BV + T - 1 <= d_v roundings when T > 1 (none
added when T = 1), so the counts above still cover them.

Every case checks that the kernel ran (a counter on the launch functions).  Sizes stay small.
"""

from __future__ import annotations

import math

import pytest
import torch

from muse import kernels
from muse.scan import hebbian_parallel, hebbian_parallel_with_state, hebbian_sequential
from muse.scan.hebbian import hebbian_reference_with_state
from tests.kernels._launches import DEVICES, count_launches

U = 2.0**-24
BT = 16  # muse.kernels._triton.HEBB_CHUNK

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)


@pytest.fixture
def launches(monkeypatch, kernel_device):
    """Kernels on; counts the wrappers' launches (tests/kernels/_launches.py)."""
    counts = count_launches(monkeypatch, kernel_device, ("hebbian_forward", "hebbian_backward"))
    from muse.kernels import _triton

    assert _triton.HEBB_CHUNK == BT
    return counts


def _inputs(lead, s, d_k, d_v, seed, device="cpu", decay_scale=0.3):
    g = torch.Generator().manual_seed(seed)
    q = 0.25 * torch.randn((*lead, s, d_k), generator=g)
    k = torch.randn((*lead, s, d_k), generator=g)
    v = torch.randn((*lead, s, d_v), generator=g)
    log_decay = -decay_scale * torch.nn.functional.softplus(torch.randn((*lead, s), generator=g))
    w0 = 0.2 * torch.randn((*lead, d_k, d_v), generator=g)
    dy = torch.randn((*lead, s, d_v), generator=g)
    dw = torch.randn((*lead, d_k, d_v), generator=g)
    return [t.to(device) for t in (q, k, v, log_decay, w0, dy, dw)]


def _grads(fn, q, k, v, ld, w0, dy, dw, eta, dtype):
    """(y, W_S, dq, dk, dv, dlog_decay, dW_0) of sum(y dy) + sum(W_S dW) (dW None: W_S unused)."""
    ts = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v, ld)]
    w = None if w0 is None else w0.detach().to(dtype).requires_grad_(True)
    y, ws = fn(*ts, eta, w)
    loss = (y * dy.to(dtype)).sum() + (0.0 if dw is None else (ws * dw.to(dtype)).sum())
    loss.backward()
    grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in ts]  # S = 0: nothing reaches them
    grads.append(None if w is None else w.grad)
    return [y.detach(), ws.detach()] + grads


def _bounds(q, k, v, ld, w0, dy, dw, eta):
    """Mixed error bounds (module docstring) for (y, W_S, dq, dk, dv, dlog_decay, dW_0)."""
    s, d_k, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
    n = max(1, math.ceil(s / BT))
    pad = n * BT - s
    lam = float(torch.nn.functional.pad(ld.abs().double(), (0, pad)).reshape(*ld.shape[:-1], n, BT).sum(-1).max()) \
        if s else 0.0
    dexp = (n + 1) * 2 * BT * U * lam
    eps_y = (2 * d_k + BT + n * (BT + 5) + 6) * U + dexp
    eps_g = (2 * max(d_k, d_v) + BT + 2 * n * (BT + 5) + 10) * U + dexp
    eps_l = eps_g + (d_k + s + 2) * U
    absd = [t.abs().double().cpu() for t in (q, k, v)]
    m = _grads(hebbian_reference_with_state, *absd, ld.double().cpu(), None if w0 is None else w0.abs().double().cpu(),
               dy.abs().double().cpu(), None if dw is None else dw.abs().double().cpu(), eta, torch.float64)
    my, mw, mdq, mdk, mdv, _, mdw0 = m
    m_cum = (absd[0] * mdq).sum(-1) + (absd[1] * mdk).sum(-1)  # (..., S)
    if dw is not None and s:
        m_cum[..., -1] += (dw.abs().double().cpu() * mw).sum((-2, -1))
    mdl = m_cum.flip(-1).cumsum(-1).flip(-1)
    return [2 * eps_y * my, 2 * eps_y * mw, 2 * eps_g * mdq, 2 * eps_g * mdk, 2 * eps_g * mdv, 2 * eps_l * mdl,
            None if mdw0 is None else 2 * eps_g * mdw0]


def _check(inputs, launches, *, with_w0=True, with_dw=True, eta=0.7):
    q, k, v, ld, w0, dy, dw = inputs
    w0 = w0 if with_w0 else None
    dw = dw if with_dw else None
    got = _grads(lambda *a: hebbian_parallel_with_state(*a[:5], 32, a[5]), q, k, v, ld, w0, dy, dw, eta,
                 torch.float32)
    assert launches.get("hebbian_forward", 0) == 1 and launches.get("hebbian_backward", 0) == 1, launches
    ref = _grads(hebbian_reference_with_state, q, k, v, ld, w0, dy, dw, eta, torch.float64)
    bounds = _bounds(q, k, v, ld, w0, dy, dw, eta)
    names = ["y", "W_S", "dq", "dk", "dv", "dlog_decay", "dW_0"]
    for name, g, r, b in zip(names, got, ref, bounds, strict=True):
        if r is None:
            assert g is None, name
            continue
        assert g.dtype == torch.float32 and g.shape == r.shape, name
        err = (g.cpu().double() - r.cpu()).abs()
        assert (err <= b).all(), (name, float((err / b.clamp_min(1e-300)).max()))


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize(("lead", "s", "d_k", "d_v"), [((2, 3), 150, 16, 16), ((1,), 16, 16, 16),
                                                        ((2,), 70, 20, 12), ((), 33, 16, 32), ((1,), 48, 64, 64)],
                         ids=str)
def test_hebbian_kernel_matches_reference(kernel_device, lead, s, d_k, d_v, launches):
    """S over several chunks and not a multiple of 16, exactly one chunk, head sizes that are not powers
    of two (masked), no leading dims, the seed preset's d_head = 64; with W_0 and a gradient reaching W_S."""
    _check(_inputs(lead, s, d_k, d_v, seed=1, device=kernel_device), launches)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize(("lead", "s", "d_k", "d_v", "ragged"), [((2,), 50, 64, 40, True), ((1,), 37, 16, 96, False),
                                                                  ((1, 2), 70, 32, 64, False), ((2,), 21, 20, 24, True)],
                         ids=str)
def test_hebbian_kernel_value_tiles(kernel_device, lead, s, d_k, d_v, ragged, launches):
    """d_v over several value tiles (the backward sums the tiles' partial dq and dk), a last tile that is only
    partly inside d_v, S not a multiple of the chunk; with and without W_0 / a gradient reaching W_S."""
    from muse.kernels import _triton

    bv = _triton._hebb_blocks(d_k, d_v)[1]
    assert d_v > bv and (d_v % bv != 0) == ragged and s % BT != 0
    inputs = _inputs(lead, s, d_k, d_v, seed=9, device=kernel_device)
    _check(inputs, launches)
    launches.clear()
    _check(inputs, launches, with_w0=False, with_dw=False)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_hebbian_kernel_empty_value_dim(kernel_device, launches):
    """d_v = 0: no value tile, y and W_S empty, dq = dk = 0."""
    _check(_inputs((2,), 20, 16, 0, seed=10, device=kernel_device), launches)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_hebbian_kernel_without_state(kernel_device, launches):
    """W_0 = 0 and W_S unused (the training path); strong decays (Lambda ~ 13 per chunk)."""
    _check(_inputs((2,), 100, 16, 16, seed=2, device=kernel_device, decay_scale=1.0), launches,
           with_w0=False, with_dw=False)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("s", [0, 1])
def test_hebbian_kernel_short_sequences(kernel_device, s, launches):
    _check(_inputs((2,), s, 16, 16, seed=3, device=kernel_device), launches)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_hebbian_parallel_dispatches_and_ignores_chunk_size(kernel_device, launches):
    """hebbian_parallel takes the kernel too; chunk_size shapes only the PyTorch form."""
    q, k, v, ld, *_ = _inputs((2, 2), 90, 16, 16, seed=4, device=kernel_device)
    ys = [hebbian_parallel(q, k, v, ld, 1.0, c) for c in (None, 7, 128)]
    assert launches == {"hebbian_forward": 3}
    assert all(torch.equal(ys[0], y) for y in ys[1:])
    ref = hebbian_sequential(q.double().cpu(), k.double().cpu(), v.double().cpu(), ld.double().cpu())
    bound = _bounds(q, k, v, ld, None, torch.ones_like(v), None, 1.0)[0]
    assert ((ys[0].cpu().double() - ref).abs() <= bound).all()


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_hebbian_kernel_bad_input_errors_unchanged(kernel_device, launches):
    q, k, v, ld, w0, *_ = _inputs((2,), 8, 16, 16, seed=5, device=kernel_device)
    with pytest.raises(ValueError, match="q and k must have the same shape"):
        hebbian_parallel(q, k[..., :4], v, ld)
    with pytest.raises(ValueError, match="log_decay must have shape"):
        hebbian_parallel(q, k, v, ld[..., :3])
    with pytest.raises(TypeError, match="must share one dtype"):
        hebbian_parallel(q, k, v.double(), ld)
    with pytest.raises((TypeError, ValueError), match="chunk_size"):
        hebbian_parallel(q, k, v, ld, 1.0, 0)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        hebbian_parallel_with_state(q, k, v, ld, 1.0, None, w0[..., :3])
    assert launches == {}


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_hebbian_float64_uses_the_pytorch_form(kernel_device, launches):
    q, k, v, ld, *_ = _inputs((2,), 8, 16, 16, seed=6, device=kernel_device)
    hebbian_parallel(q.double(), k.double(), v.double(), ld.double())
    assert launches == {}


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_hebbian_kernel_double_backward_takes_the_pytorch_form(kernel_device, launches):
    q, k, v, ld, w0, *_ = _inputs((1,), 20, 16, 16, seed=7, device=kernel_device)
    qq = q.clone().requires_grad_(True)
    y, ws = hebbian_parallel_with_state(qq, k, v, ld, 1.0, None, w0)
    (gq,) = torch.autograd.grad(y.pow(2).sum() + ws.pow(2).sum(), qq, create_graph=True)
    assert launches.get("hebbian_backward", 0) == 0 and launches["hebbian_forward"] == 1
    (ggq,) = torch.autograd.grad(gq.pow(2).sum(), qq)
    q64 = q.double().cpu().requires_grad_(True)
    y64, ws64 = hebbian_reference_with_state(q64, k.double().cpu(), v.double().cpu(), ld.double().cpu(), 1.0,
                                             w0.double().cpu())
    (gq64,) = torch.autograd.grad(y64.pow(2).sum() + ws64.pow(2).sum(), q64, create_graph=True)
    (ggq64,) = torch.autograd.grad(gq64.pow(2).sum(), q64)
    assert torch.allclose(ggq.cpu().double(), ggq64, rtol=1e-4, atol=1e-4 * float(ggq64.abs().max()))


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_hebbian_kernel_runs_inside_torch_compile(kernel_device, launches):
    torch._dynamo.reset()
    q, k, v, ld, *_ = _inputs((2,), 40, 16, 16, seed=8, device=kernel_device)

    def f(q):
        return hebbian_parallel(q, k, v, ld, 1.0, 16).pow(2).sum()

    qc = q.clone().requires_grad_(True)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(qc)
    out.backward()
    assert launches["hebbian_forward"] >= 1 and launches["hebbian_backward"] >= 1
    qe = q.clone().requires_grad_(True)
    f(qe).backward()
    assert torch.equal(out.detach(), f(q).detach()) and torch.equal(qc.grad, qe.grad)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_dissipative_hebbian_module_with_kernels(kernel_device, launches):
    """The mixer (expanded per-head decays, transposed head views, RMS norm) gives the PyTorch form's
    output and gradients with the kernel on: a wiring check.  At these sizes the scan bounds above are
    below 5e-5 of the magnitudes; 1e-4 of the largest entry leaves room for the fp32 rounding of the
    RMS norm and the linears around the scan, the same in both runs."""
    from muse.nn.mixers import DissipativeHebbian

    torch.manual_seed(0)
    layer = DissipativeHebbian(32, 2, chunk_size=16, norm=True, device=kernel_device)
    x = torch.randn(2, 70, 32, device=kernel_device)
    outs = []
    for env in ("1", "0"):
        with kernels.environment(MUSE_KERNELS=env):
            xx = x.clone().requires_grad_(True)
            layer.zero_grad()
            y = layer(xx)
            y.pow(2).sum().backward()
            outs.append([y.detach(), xx.grad] + [p.grad.clone() for p in layer.parameters()])
    assert launches == {"hebbian_forward": 1, "hebbian_backward": 1}
    for a, b in zip(*outs, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())), float((a - b).abs().max())

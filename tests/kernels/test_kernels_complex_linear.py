"""The complex GEMM kernel (muse.kernels.complex_mm) and ``linear`` through it, against exact products
and against the PyTorch block-GEMM path (CPU: Triton's interpreter, 16 x 16 x 16 tiles, so the small
shapes here span several tiles, K steps and ragged edges).

Bounds (docs/numerics.md, "GEMM: matmul and linear"; verification/bounds.py): every output component is
a sum of n exact products (and the bias), accumulated in fp32 and rounded once, so
abs(out - exact) <= ``bounds.mixed``(abs(exact), ``bounds.gemm_abs``(S, n)) with S the sum of the
absolute values of the terms: n = 2 K + 1 with a bias (forward, K = in), n = 2 out for dx = dy conj(W),
n = 2 rows for dW = dy^T conj(x); db (muse.kernels.sum_rows) is an fp32 sum of the rows (``bounds.sum_abs``).  The "exact" value
is float64 arithmetic on the fp16 inputs (exact products, float64 sums: 2 n 2**-53 S more, added).
The PyTorch path's dW sums two separately rounded fp16 halves (dy_r^T x_r and dy_i^T x_i, each at most S
in magnitude: 0.5 ulp(S + E) + E each), then rounds their sum once more; the two paths are compared
within the sum of their bounds.

Every case checks that the kernel ran (a counter on the launch function).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import muse.complex as C
from muse import kernels
from tests.kernels._launches import DEVICES, count_launches
from verification import bounds
from verification.ulp import F16, ulp

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)


@pytest.fixture
def launches(monkeypatch, kernel_device):
    """Kernels on; counts the wrappers' launches (tests/kernels/_launches.py)."""
    counts = count_launches(monkeypatch, kernel_device, ("complex_mm", "sum_rows"))
    counts["complex_mm"] = counts["sum_rows"] = 0
    return counts


def _rand(*shape, device, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(torch.float16).to(device)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _product(a: np.ndarray, b: np.ndarray, conj_a: bool, conj_b: bool) -> tuple[np.ndarray, np.ndarray]:
    """(exact planes, sums of |terms|) of op(a) @ op(b) for float64 planes a (2, M, K), b (2, K, N)."""
    za = a[0] - 1j * a[1] if conj_a else a[0] + 1j * a[1]
    zb = b[0] - 1j * b[1] if conj_b else b[0] + 1j * b[1]
    z = za @ zb
    aa, ab = np.abs(a), np.abs(b)
    s = np.stack((aa[0] @ ab[0] + aa[1] @ ab[1], aa[0] @ ab[1] + aa[1] @ ab[0]))
    return np.stack((z.real, z.imag)), s


def _gemm_err(s: np.ndarray, n_terms: int, device: str) -> np.ndarray:
    """E: |fp32 n-term dot product - float64 value| (the GEMM model plus the float64 sums' own error)."""
    return bounds.gemm_abs(s, n_terms, device) + 2 * n_terms * 2.0**-53 * s


def _gemm_bound(exact: np.ndarray, s: np.ndarray, n_terms: int, device: str) -> np.ndarray:
    """Bound on |computed - float64 value| for one rounding of an n-term fp32 dot product."""
    return bounds.mixed(exact, _gemm_err(s, n_terms, device))


def _within(got: torch.Tensor, exact: np.ndarray, bound: np.ndarray, what: str) -> None:
    err = np.abs(_np(got) - exact)
    assert got.shape == exact.shape, (what, got.shape, exact.shape)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert (err <= bound).all(), (what, worst, err[worst], bound[worst])


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("conj_a", [False, True])
@pytest.mark.parametrize("conj_b", [False, True])
@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("neg_acc", [True, False], ids=["neg_acc", "negated_tile"])
def test_complex_mm_conj_flags_views_and_split_k(kernel_device, conj_a, conj_b, split_k, neg_acc, launches, monkeypatch):
    """op(a) @ op(b) + bias on transposed views (a's K and b's N dims strided), K = 150 in 3 slices; the
    minus-signed products in their own accumulator or on a negated A tile."""
    from muse.kernels import _triton

    monkeypatch.setattr(_triton, "CMM_NEG_ACC", neg_acc)

    m, k, n = 21, 150, 19
    a = _rand(2, k, m, device=kernel_device, seed=1).transpose(1, 2)  # (2, M, K), M contiguous
    b = _rand(2, n, k, device=kernel_device, scale=0.5, seed=2).transpose(1, 2)  # (2, K, N), K contiguous
    bias = _rand(2, n, device=kernel_device, seed=3)
    out = _triton.complex_mm(a, b, bias, conj_a, conj_b, split_k=split_k)
    exact, s = _product(_np(a), _np(b), conj_a, conj_b)
    exact, s = exact + _np(bias)[:, None, :], s + np.abs(_np(bias))[:, None, :]
    _within(out, exact, _gemm_bound(exact, s, 2 * k + 1, kernel_device), "complex_mm")
    assert launches["complex_mm"] == 1


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("lead,d", [((300,), 8), ((7, 50), 33), ((1,), 5), ((0,), 4)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_sum_rows_within_the_bound_and_deterministic(kernel_device, lead, d, dtype, launches):
    """The bias gradient's kernel: the fp32 sum over every row of both planes, rounded once to ``dtype``, within
    ``bounds.sum_abs`` of the float64 sum; several row tiles per program (300 rows), programs' partial rows
    summed by the second kernel, ragged columns, no rows (zeros); two calls give the same bits."""
    from muse.kernels import _triton

    g = _rand(2, *lead, d, device=kernel_device, seed=7)
    got = _triton.sum_rows(g, dtype)
    assert got.dtype == dtype and got.shape == (2, d)
    g2 = _np(g).reshape(2, -1, d)
    exact = g2.sum(axis=1)
    rows = g2.shape[1]
    e = bounds.sum_abs(np.abs(g2).sum(axis=1), max(rows, 1)) + 2 * rows * 2.0**-53 * np.abs(g2).sum(axis=1)
    bound = bounds.mixed(exact, e) if dtype == torch.float16 else e  # fp32: the accumulator itself
    _within(got, exact, bound, "sum_rows")
    assert torch.equal(_triton.sum_rows(g, dtype), got)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("by_kernel", [True, False], ids=["finishing_kernel", "torch_sum"])
@pytest.mark.parametrize("n_parts,width", [(3, 40), (1, 7), (1500, 33)], ids=str)
def test_sum_partials_both_forms_within_the_bound(kernel_device, by_kernel, n_parts, width, launches, monkeypatch):
    """The last step of every partial-sum kernel (LayerNorm's and modReLU's parameter gradients, sum_rows):
    the column sums of fp32 partial rows rounded once to fp16, by the finishing kernel (more rows than one
    load at 1,500) or by torch's sum and a cast; each within ``bounds.sum_abs`` of the float64 sum."""
    from muse.kernels import _triton

    monkeypatch.setattr(_triton, "PARTIALS_BY_KERNEL", by_kernel)
    g = torch.Generator().manual_seed(11)
    part = torch.randn(n_parts, width, generator=g).to(kernel_device)
    got = _triton.sum_partials(part, torch.float16)
    assert got.dtype == torch.float16 and got.shape == (width,)
    p = _np(part)
    exact = p.sum(axis=0)
    e = bounds.sum_abs(np.abs(p).sum(axis=0), n_parts) + 2 * n_parts * 2.0**-53 * np.abs(p).sum(axis=0)
    _within(got, exact, bounds.mixed(exact, e), "sum_partials")


def _linear_case(lead, fin, fout, with_bias, device, seed=0):
    x = _rand(2, *lead, fin, device=device, seed=seed)
    w = _rand(2, fout, fin, device=device, scale=fin**-0.5, seed=seed + 1)
    b = _rand(2, fout, device=device, seed=seed + 2) if with_bias else None
    dy = _rand(2, *lead, fout, device=device, seed=seed + 3)
    return x, w, b, dy


def _run_linear(x, w, b, dy, kernels_on: bool):
    """Output planes and [dx, dW (, db)] with kernels on or off."""
    with kernels.environment(MUSE_KERNELS="1" if kernels_on else "0"):
        leaves = [None if t is None else t.clone().requires_grad_(True) for t in (x, w, b)]
        xl, wl, bl = leaves
        y = C.linear(C.ComplexTensor(xl), C.ComplexTensor(wl), None if bl is None else C.ComplexTensor(bl)).planes
        y.backward(dy)
    return y.detach(), [t.grad for t in leaves if t is not None]


def _linear_exact(x, w, b, dy, device):
    """[(exact, bound for one rounding, bound for the PyTorch path)] for y, dx, dW (and db)."""
    fin, fout = w.shape[2], w.shape[1]
    rows = x[0].numel() // max(fin, 1)
    x2, w2, dy2 = _np(x).reshape(2, rows, fin), _np(w), _np(dy).reshape(2, rows, fout)
    y, sy = _product(x2, w2.transpose(0, 2, 1), False, False)
    if b is not None:
        y, sy = y + _np(b)[:, None, :], sy + np.abs(_np(b))[:, None, :]
    by = _gemm_bound(y, sy, 2 * fin + (b is not None), device)
    dx, sx = _product(dy2, w2, False, True)
    bx = _gemm_bound(dx, sx, 2 * fout, device)
    dw, sw = _product(dy2.transpose(0, 2, 1), x2, False, True)
    bw = _gemm_bound(dw, sw, 2 * rows, device)
    # two halves, each of |value| <= S rounded once (0.5 ulp(S + E_j) + E_j), then their sum rounded once
    e_w = _gemm_err(sw, 2 * rows, device)
    halves = ulp(sw + e_w, F16) + e_w
    bw_torch = halves + 0.5 * ulp(np.abs(dw) + halves, F16)
    cases = [(y.reshape(2, *x.shape[1:-1], fout), by.reshape(2, *x.shape[1:-1], fout), None),
             (dx.reshape(x.shape), bx.reshape(x.shape), None), (dw, bw, bw_torch)]
    if b is not None:
        db = dy2.sum(axis=1)
        e = bounds.sum_abs(np.abs(dy2).sum(axis=1), rows) + 2 * rows * 2.0**-53 * np.abs(dy2).sum(axis=1)
        cases.append((db, bounds.mixed(db, e), None))
    return cases


LINEAR_SHAPES = [((), 19, 7), ((5,), 33, 40), ((3, 7), 16, 17), ((2, 1), 1, 3)]


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("lead,fin,fout", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_linear_kernel_forward_and_gradients_within_the_bound(kernel_device, lead, fin, fout, with_bias, launches):
    """Kernel and PyTorch path each within their bound of the exact y, dx, dW, db; hence of each other."""
    x, w, b, dy = _linear_case(lead, fin, fout, with_bias, kernel_device)
    k_out, k_grads = _run_linear(x, w, b, dy, kernels_on=True)
    assert launches["complex_mm"] == 3  # y, dx, dW
    assert launches["sum_rows"] == with_bias  # db
    e_out, e_grads = _run_linear(x, w, b, dy, kernels_on=False)
    assert launches["complex_mm"] == 3 and launches["sum_rows"] == with_bias
    names = ["y", "dx", "dW", "db"][:1 + len(k_grads)]
    for name, got_k, got_e, (exact, bound, bound_torch) in zip(names, [k_out, *k_grads], [e_out, *e_grads],
                                                               _linear_exact(x, w, b, dy, kernel_device), strict=True):
        bound_torch = bound if bound_torch is None else bound_torch
        assert got_k.dtype == torch.float16 and got_k.shape == got_e.shape
        _within(got_k, exact, bound, f"kernel {name}")
        _within(got_e, exact, bound_torch, f"pytorch {name}")
        assert (np.abs(_np(got_k) - _np(got_e)) <= bound + bound_torch).all(), name


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_linear_kernel_takes_views_and_expanded_gradients(kernel_device, launches):
    """A non-contiguous x (a transposed view) and the stride-0 gradient of a sum: the same as the PyTorch path."""
    x = _rand(2, 16, 6, device=kernel_device, seed=4).transpose(1, 2)  # (2, 6, 16)
    w = _rand(2, 5, 16, device=kernel_device, scale=0.25, seed=5)
    outs = []
    for on in (True, False):
        with kernels.environment(MUSE_KERNELS="1" if on else "0"):
            xl, wl = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
            assert not xl.is_contiguous()
            y = C.linear(C.ComplexTensor(xl), C.ComplexTensor(wl))
            y.planes.sum().backward()  # an expanded (stride-0) gradient
            outs.append((y.planes.detach(), xl.grad, wl.grad))
    assert launches["complex_mm"] == 3
    for got_k, got_e in zip(*outs, strict=True):
        ref = got_e.double().abs() + 1
        assert (((got_k.double() - got_e.double()).abs()) <= 2.0**-8 * ref).all()


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_linear_kernel_empty_rows(kernel_device, launches):
    x = torch.zeros(2, 0, 8, dtype=torch.float16, device=kernel_device, requires_grad=True)
    w = _rand(2, 3, 8, device=kernel_device, seed=6).requires_grad_(True)
    b = _rand(2, 3, device=kernel_device, seed=7).requires_grad_(True)
    y = C.linear(C.ComplexTensor(x), C.ComplexTensor(w), C.ComplexTensor(b))
    assert y.shape == (0, 3)
    y.planes.sum().backward()
    assert x.grad.shape == x.shape and not w.grad.any() and not b.grad.any()


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_linear_bad_input_raises_as_the_pytorch_path(kernel_device, launches):
    """The checks run before the dispatch: the same exceptions and messages, and no launch."""
    z = C.ComplexTensor(_rand(2, 3, 4, device=kernel_device))
    w = C.ComplexTensor(_rand(2, 5, 4, device=kernel_device))
    bad = [
        (lambda: C.linear(z.planes, w), TypeError, "x"),
        (lambda: C.linear(z, w.planes), TypeError, "weight"),
        (lambda: C.linear(z, C.ComplexTensor(_rand(2, 5, 4, 1, device=kernel_device))), ValueError, "weight"),
        (lambda: C.linear(C.ComplexTensor(_rand(2, 3, 5, device=kernel_device)), w), ValueError, "x"),
        (lambda: C.linear(z, w, C.ComplexTensor(_rand(2, 4, device=kernel_device))), ValueError, "bias"),
        (lambda: C.linear(z, w, _rand(2, 5, device=kernel_device)), TypeError, "bias"),
        (lambda: C.linear(z, C.ComplexTensor(w.planes.float())), TypeError, "weight"),
    ]
    for call, exc, name in bad:
        messages = []
        for on in ("1", "0"):
            with kernels.environment(MUSE_KERNELS=on), pytest.raises(exc) as info:
                call()
            messages.append(str(info.value))
        assert messages[0] == messages[1] and name in messages[0]
    assert launches["complex_mm"] == 0


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_float32_planes_use_the_pytorch_path(kernel_device, launches):
    x = C.ComplexTensor(torch.randn(2, 3, 8, device=kernel_device))
    w = C.ComplexTensor(torch.randn(2, 4, 8, device=kernel_device))
    C.linear(x, w)
    assert launches["complex_mm"] == 0


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_linear_kernel_double_backward_takes_the_pytorch_path(kernel_device, launches):
    """create_graph=True: the backward differentiates the PyTorch form, so grad-of-grad matches it (the
    second backward reaches y's own backward too: that one, without create_graph, runs the kernel)."""
    x, w, b, _ = _linear_case((3,), 8, 5, True, kernel_device, seed=8)
    results = []
    for on in ("1", "0"):
        with kernels.environment(MUSE_KERNELS=on):
            xl, wl = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
            y = C.linear(C.ComplexTensor(xl), C.ComplexTensor(wl), C.ComplexTensor(b))
            (gx,) = torch.autograd.grad(y.planes.float().pow(2).sum(), xl, create_graph=True)
            if on == "1":
                assert launches["complex_mm"] == 1  # the forward only
            (gw,) = torch.autograd.grad(gx.float().pow(2).sum(), wl)
            results.append(gw)
    ref = results[1].double()
    assert torch.isfinite(results[0]).all()
    assert ((results[0].double() - ref).abs() <= 2.0**-6 * (ref.abs() + ref.abs().max())).all()


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_linear_kernel_runs_inside_torch_compile(kernel_device, launches):
    """fullgraph=True traces the custom op (fake implementation); forward and backward launch the kernel
    and give the eager kernel path's bits.  The bias gradient is the compiler's reduction there (sum_rows
    only in eager code): both within db's bound."""
    torch._dynamo.reset()
    x, w, b, dy = _linear_case((2, 3), 16, 9, True, kernel_device, seed=9)

    def f(xp, wp, bp):
        return C.linear(C.ComplexTensor(xp), C.ComplexTensor(wp), C.ComplexTensor(bp)).planes

    leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(*leaves)
    out.backward(dy)
    assert launches["complex_mm"] == 3 and launches["sum_rows"] == 0
    eager = [t.clone().requires_grad_(True) for t in (x, w, b)]
    ref = f(*eager)
    ref.backward(dy)
    assert launches["complex_mm"] == 6 and launches["sum_rows"] == 1
    assert torch.equal(out.detach(), ref.detach())
    assert torch.equal(leaves[0].grad, eager[0].grad) and torch.equal(leaves[1].grad, eager[1].grad)
    db_exact, db_bound, _ = _linear_exact(x, w, b, dy, kernel_device)[3]
    for got in (leaves[2].grad, eager[2].grad):
        _within(got, db_exact, db_bound, "db")


@pytest.mark.parametrize("kernel_device", DEVICES[1:])  # cuda only
def test_linear_kernel_at_the_benchmark_shape_on_cuda(kernel_device, launches):
    """The issue's shape (4096 rows, 512 -> 512, bias) through the autotuned kernel: y, dx and dW (split-K
    on an H200: 16 output tiles of 128 x 128) within the CUDA GEMM bound of the exact values."""
    x, w, b, dy = _linear_case((4096,), 512, 512, True, kernel_device, seed=10)
    k_out, k_grads = _run_linear(x, w, b, dy, kernels_on=True)
    assert launches["complex_mm"] == 3
    for name, got, (exact, bound, _) in zip(["y", "dx", "dW", "db"], [k_out, *k_grads],
                                            _linear_exact(x, w, b, dy, "cuda"), strict=True):
        _within(got, exact, bound, f"kernel {name}")


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_linear_kernel_keeps_no_layer_norm_output(kernel_device, launches):
    """After a LayerNorm the kernel path keeps what the PyTorch path keeps (the norm's input, through the
    recipe of muse.complex.recompute), not the norm's output: that is freed after the forward."""
    import gc
    import weakref

    from muse.nn import ComplexLayerNorm, ComplexLinear

    torch.manual_seed(0)
    norm = ComplexLayerNorm(32, device=kernel_device).half()
    lin = ComplexLinear(32, 16, device=kernel_device).half()
    x = _rand(2, 4, 24, 32, device=kernel_device, seed=11).requires_grad_(True)
    for on in ("1", "0"):
        with kernels.environment(MUSE_KERNELS=on):
            z = norm(C.ComplexTensor(x))
            ref = weakref.ref(z.planes)
            y = lin(z)
            del z
            gc.collect()
            assert ref() is None, f"MUSE_KERNELS={on}: the LayerNorm output outlived the forward"
            x.grad = None
            y.planes.float().sum().backward()  # through the rebuilt norm output
            assert torch.isfinite(x.grad).all()
    assert launches["complex_mm"] == 3


def test_split_k_partials_stay_within_their_memory_budget(monkeypatch):
    """On a 132-SM GPU the weight gradient of a small output splits K (about a quarter wave of 128 x 128
    tiles), never with more fp32 partial planes than SPLIT_K_BYTES allows."""
    from muse.kernels import _triton

    monkeypatch.setattr(_triton, "interpreting", lambda: False)
    monkeypatch.setattr(_triton, "_sms", lambda device: 132)
    cuda = torch.device("cuda")
    for m, n, k, expected in ((512, 512, 4096, 2), (512, 512, 8192, 2), (1024, 512, 4096, 1), (64, 64, 65536, 16),
                              (2048, 2048, 65536, 1)):
        split = _triton._split_k(cuda, m, n, k)
        assert split == expected, (m, n, k, split)
        assert split == 1 or split * 2 * m * n * 4 <= _triton.SPLIT_K_BYTES, (m, n, k, split)  # 1: no partials
    monkeypatch.setattr(_triton, "SPLIT_K_BYTES", 2**20)  # 512 x 512 fp32 partial planes are 2 MiB each
    assert _triton._split_k(cuda, 512, 512, 4096) == 1
    assert _triton._split_k(cuda, 4096, 4096, 4096) == 1  # enough tiles already
    assert _triton._split_k(cuda, 64, 64, 512) == 1  # K too short to split
    assert _triton._split_k(torch.device("cpu"), 64, 64, 65536) == 1

"""The complex diagonal recurrence (muse.scan.complex_diag): chunked form vs the sequential reference.

The accuracy bound itself (vs mpmath) is checked in verification/test_scan.py; here the
two forms are held against each other, through autograd, over long sequences, across
state passing, and for causality.
"""

from __future__ import annotations

import math

import pytest
import torch

import muse.complex as C
from muse.scan import complex_diag_scan, complex_diag_scan_sequential, complex_diag_step
from muse.scan.complex_diag import _chunked_planes, default_chunk_size

U32 = 2.0**-24


def _decay(radii, dtype=torch.float32, seed=0):
    """nu, omega (D,) for the given |lambda| values, omega uniform in (0, pi]."""
    r = torch.as_tensor(radii, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    omega = (1.0 - torch.rand(r.shape, generator=gen, dtype=torch.float64)) * math.pi
    return torch.log(-torch.log(r)).to(dtype), omega.to(dtype)


def _x(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return C.ComplexTensor(torch.randn(2, *shape, generator=gen, dtype=torch.float64).to(dtype))


def _weight_sum(x: C.ComplexTensor, nu: torch.Tensor, h0: C.ComplexTensor | None = None) -> torch.Tensor:
    """M_t = sum_{s <= t} |lambda|^(t-s) (|Re x_s| + |Im x_s|) + |lambda|^(t+1) |h0|_1, in float64."""
    r = torch.exp(-torch.exp(nu.double()))
    l1 = x.planes.double().abs().sum(0)  # (B, S, D)
    m = torch.zeros(l1.shape[0], l1.shape[2], dtype=torch.float64) if h0 is None else h0.planes.double().abs().sum(0)
    out = torch.empty_like(l1)
    for t in range(l1.shape[1]):
        m = r * m + l1[:, t]
        out[:, t] = m
    return out


def _bound_units(seq: int, chunk: int) -> int:
    """(4L + 2 n_c + 19): the chunked form's error in units of u M_t (docs/numerics.md)."""
    return 4 * chunk + 2 * (-(-seq // chunk)) + 19


RADII = [0.0001, 0.3, 0.9, 0.99, 0.999, 0.9999]


@pytest.mark.parametrize("chunk", [None, 1, 3, 8, 16, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_equals_reference_float64(chunk, with_state):
    nu, omega = _decay(RADII, torch.float64)
    x = _x((2, 45, len(RADII)), torch.float64)
    h0 = _x((2, len(RADII)), torch.float64, seed=1) if with_state else None
    y_ref, f_ref = complex_diag_scan_sequential(x, nu, omega, h0, output_final_state=True)
    y, f = complex_diag_scan(x, nu, omega, h0, output_final_state=True, chunk_size=chunk)
    assert y.dtype == torch.float64 and f.dtype == torch.float64
    torch.testing.assert_close(y.planes, y_ref.planes, rtol=0, atol=1e-12)
    torch.testing.assert_close(f.planes, f_ref.planes, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_chunked_within_bound_of_float64_reference(dtype):
    """fp32/fp16 inputs: |y - exact| <= (4L + 2 n_c + 19) u M_t (+ one fp16 rounding for fp16 output)."""
    nu, omega = _decay(RADII)
    x = _x((2, 300, len(RADII)), dtype)
    y, _ = complex_diag_scan(x, nu, omega)
    assert y.dtype == dtype
    exact, _ = complex_diag_scan_sequential(x.double(), nu.double(), omega.double())
    e = _bound_units(300, default_chunk_size(300)) * U32 * _weight_sum(x, nu)
    if dtype == torch.float16:
        e = e + 2.0**-11 * (exact.planes.abs() + e)
    err = (y.planes.double() - exact.planes).abs()
    assert torch.all(err <= e), float((err / e).max())


def test_float32_chunked_is_no_less_accurate_than_the_float32_loop():
    """With |lambda| -> 1 the fp32 loop's error grows with t; the chunked form's does not."""
    nu, omega = _decay([0.9999] * 4)
    x = _x((1, 4096, 4))
    exact, _ = complex_diag_scan_sequential(x.double(), nu.double(), omega.double())
    y_chunk, _ = complex_diag_scan(x, nu, omega)
    y_loop, _ = complex_diag_scan_sequential(x, nu, omega)
    err_chunk = (y_chunk.planes.double() - exact.planes).abs().max()
    err_loop = (y_loop.planes.double() - exact.planes).abs().max()
    assert err_chunk <= err_loop, (float(err_chunk), float(err_loop))


@pytest.mark.parametrize("radius", [0.9999, 1.0 - 2.0**-20])
def test_long_sequence_stays_finite_and_accurate(radius):
    seq = 8192
    nu, omega = _decay([radius, 0.999, 0.5])
    x = _x((1, seq, 3), torch.float16)
    y, f = complex_diag_scan(x, nu, omega, output_final_state=True, out_dtype=torch.float32)
    assert torch.isfinite(y.planes).all() and torch.isfinite(f.planes).all()
    exact, _ = complex_diag_scan_sequential(x.double(), nu.double(), omega.double())
    e = _bound_units(seq, default_chunk_size(seq)) * U32 * _weight_sum(x, nu)
    assert torch.all((y.planes.double() - exact.planes).abs() <= e)


def test_long_sequence_gradients_are_finite():
    nu, omega = _decay([0.9999, 0.99, 0.5])
    nu.requires_grad_(True)
    omega.requires_grad_(True)
    x = _x((1, 8192, 3)).requires_grad_(True)
    y, _ = complex_diag_scan(x, nu, omega)
    y.planes.square().mean().backward()
    for g in (x.planes.grad, nu.grad, omega.grad):
        assert torch.isfinite(g).all()
    assert nu.grad.abs().min() > 0 and omega.grad.abs().min() > 0


def test_state_passing_chains_halves():
    """Scanning [0, s) then [s, S) from the first half's final state equals scanning [0, S)."""
    nu, omega = _decay(RADII)
    x = _x((3, 70, len(RADII)))
    h0 = _x((3, len(RADII)), seed=2)
    y, f = complex_diag_scan(x, nu, omega, h0, output_final_state=True)
    for s in (1, 29, 64):
        y1, f1 = complex_diag_scan(x[:, :s], nu, omega, h0, output_final_state=True)
        y2, f2 = complex_diag_scan(x[:, s:], nu, omega, f1, output_final_state=True)
        joined = torch.cat([y1.planes, y2.planes], dim=2)
        torch.testing.assert_close(joined, y.planes, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(f2.planes, f.planes, rtol=1e-5, atol=1e-5)


def test_step_matches_scan():
    nu, omega = _decay(RADII)
    x = _x((2, 20, len(RADII)))
    y, _ = complex_diag_scan(x, nu, omega)
    state = None
    for t in range(20):
        state = complex_diag_step(x[:, t], nu, omega, state)
        torch.testing.assert_close(state.planes, y.planes[:, :, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [None, 1, 5, 16])
def test_future_inputs_leave_earlier_outputs_bit_identical(chunk):
    nu, omega = _decay(RADII)
    x = _x((2, 50, len(RADII)), torch.float16)
    y, _ = complex_diag_scan(x, nu, omega, chunk_size=chunk)
    for t in (0, 7, 31, 48):
        changed = x.planes.clone()
        changed[:, :, t + 1:] = torch.randn_like(changed[:, :, t + 1:]) * 100
        y2, _ = complex_diag_scan(C.ComplexTensor(changed), nu, omega, chunk_size=chunk)
        assert torch.equal(y.planes[:, :, : t + 1], y2.planes[:, :, : t + 1])
        assert not torch.equal(y.planes[:, :, t + 1:], y2.planes[:, :, t + 1:])


def test_gradients_match_the_reference():
    nu0, omega0 = _decay(RADII)
    x0 = _x((2, 40, len(RADII)))
    h00 = _x((2, len(RADII)), seed=3)
    cot = torch.randn(2, 2, 40, len(RADII), generator=torch.Generator().manual_seed(4))
    grads = {}
    for name, fn, dtype in (("chunked", complex_diag_scan, torch.float32),
                            ("reference", complex_diag_scan_sequential, torch.float64)):
        x = C.ComplexTensor(x0.planes.to(dtype).clone()).requires_grad_(True)
        h0 = C.ComplexTensor(h00.planes.to(dtype).clone()).requires_grad_(True)
        nu = nu0.to(dtype).clone().requires_grad_(True)
        omega = omega0.to(dtype).clone().requires_grad_(True)
        y, f = fn(x, nu, omega, h0, output_final_state=True)
        ((y.planes * cot.to(dtype)).sum() + f.planes.sum()).backward()
        grads[name] = [t.grad.double() for t in (x.planes, h0.planes, nu, omega)]
    for got, want in zip(grads["chunked"], grads["reference"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3 * float(want.abs().max()))


@pytest.mark.parametrize("fn", [complex_diag_scan, complex_diag_scan_sequential])
def test_gradcheck_float64(fn):
    nu, omega = _decay([0.5, 0.9, 0.99], torch.float64)
    x = _x((2, 11, 3), torch.float64).planes.requires_grad_(True)
    h0 = _x((2, 3), torch.float64, seed=1).planes.requires_grad_(True)
    nu.requires_grad_(True)
    omega.requires_grad_(True)

    def f(xp, h0p, nu_, om_):
        y, fs = fn(C.ComplexTensor(xp), nu_, om_, C.ComplexTensor(h0p), output_final_state=True)
        return y.planes, fs.planes

    assert torch.autograd.gradcheck(f, (x, h0, nu, omega))
    if fn is complex_diag_scan:
        def g(xp, h0p, nu_, om_):
            return complex_diag_scan(C.ComplexTensor(xp), nu_, om_, C.ComplexTensor(h0p), chunk_size=4)[0].planes

        assert torch.autograd.gradcheck(g, (x, h0, nu, omega))


def test_batch_dims_and_empty_sequence():
    nu, omega = _decay([0.5, 0.9])
    x = _x((2, 3, 9, 2))
    y, f = complex_diag_scan(x, nu, omega, output_final_state=True)
    y_flat, f_flat = complex_diag_scan(x.reshape(6, 9, 2), nu, omega, output_final_state=True)
    assert y.shape == (2, 3, 9, 2) and f.shape == (2, 3, 2)
    assert torch.equal(y.planes.reshape(2, 6, 9, 2), y_flat.planes)
    h0 = _x((4, 2))
    for fn in (complex_diag_scan, complex_diag_scan_sequential):
        y0, f0 = fn(_x((4, 0, 2)), nu, omega, h0, output_final_state=True)
        assert y0.shape == (4, 0, 2) and torch.equal(f0.planes, h0.planes)


def test_default_chunk_size():
    assert default_chunk_size(1) == 8
    assert default_chunk_size(1024) == 32
    assert default_chunk_size(8192) == 64


def test_default_chunk_size_is_the_power_of_two_nearest_sqrt():
    for s in range(1 << 14):
        want = 8 if s <= 64 else min(64, 2 ** round(math.log2(math.sqrt(s))))
        assert default_chunk_size(s) == want, s


def test_dynamic_length_puts_no_symbolic_float_in_the_graph():
    """With a dynamic S the chunk length is a constant under guards: sqrt/log2 of S (symbolic floats) in the graph
    broke torch 2.11's Triton code generator (an fp64 floor division; muse verify on an H100, thirtieth session)."""
    nu, omega = _decay(RADII)
    calls, symbolic_floats = [], []

    def backend(gm, _inputs):
        calls.extend(n for n in gm.graph.nodes if n.op == "call_function")
        symbolic_floats.extend(str(n.target) for n in gm.graph.nodes
                               if isinstance(n.meta.get("example_value"), torch.SymFloat))
        return gm

    compiled = torch.compile(lambda x: complex_diag_scan(x, nu, omega)[0].planes, backend=backend, dynamic=True,
                             fullgraph=True)
    for seq in (70, 90):
        x = _x((2, seq, len(RADII)))
        torch.testing.assert_close(compiled(x), complex_diag_scan(x, nu, omega)[0].planes, rtol=0, atol=0)
    assert calls and symbolic_floats == []


@pytest.mark.slow
def test_inductor_backward_follows_a_dynamic_length():
    """Lengths 5, 30, 17 (the second makes S dynamic; 17 has fewer chunks than 30) with an initial state, gradients
    through inductor: before the thirty-fourth session its backward asserted the strides of the first dynamic length
    (the chunk-end slice) or failed with a ValueRangeError (h0 as chunk -1 of an (nc + 1)^2 product).  Found by
    verification/test_grads.py under ``compiled``."""
    C.set_gemm_policy()
    nu, omega = _decay(RADII)
    compiled = torch.compile(lambda x, h: complex_diag_scan(x, nu, omega, h)[0].planes, fullgraph=True)
    for seq in (5, 30, 17):
        x, h0 = _x((2, seq, len(RADII)), seed=seq), _x((2, len(RADII)), seed=1)
        leaves = [x.planes.float().requires_grad_(True), h0.planes.float().requires_grad_(True)]
        grad = torch.randn(2, 2, seq, len(RADII), generator=torch.Generator().manual_seed(seq))
        got = torch.autograd.grad(compiled(C.ComplexTensor(leaves[0]), C.ComplexTensor(leaves[1])), leaves, grad)
        want = torch.autograd.grad(complex_diag_scan(C.ComplexTensor(leaves[0]), nu, omega,
                                                     C.ComplexTensor(leaves[1]))[0].planes, leaves, grad)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)  # regression tolerance: fp32 reorderings


def test_bad_input_is_rejected_with_a_named_error():
    nu, omega = _decay([0.5, 0.9])
    x = _x((1, 4, 2))
    with pytest.raises(TypeError, match="x must be a ComplexTensor"):
        complex_diag_scan(x.planes, nu, omega)
    with pytest.raises(ValueError, match=r"nu must have shape \(2,\)"):
        complex_diag_scan(x, nu[:1], omega)
    with pytest.raises(TypeError, match="omega must have dtype"):
        complex_diag_scan(x, nu, omega.to(torch.int64))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        complex_diag_scan(x, nu, omega, _x((2, 2)))
    with pytest.raises(ValueError, match="x must have shape"):
        complex_diag_scan(_x((4,)), nu, omega)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        complex_diag_scan(x, nu, omega, chunk_size=0)
    with pytest.raises(TypeError, match="out_dtype must be float16"):
        complex_diag_scan(x, nu, omega, out_dtype=torch.int32)
    with pytest.raises(TypeError, match="output_final_state must be a bool"):
        complex_diag_scan(x, nu, omega, output_final_state=1)


@pytest.mark.slow
def test_compiles_fullgraph():
    nu, omega = _decay(RADII)
    x = _x((2, 50, len(RADII)))
    h0 = _x((2, len(RADII)), seed=1)
    compiled = torch.compile(_chunked_planes, fullgraph=True)
    got, _ = compiled(x.planes, nu, omega, h0.planes, 16)
    want, _ = _chunked_planes(x.planes, nu, omega, h0.planes, 16)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_zero_phase_is_two_real_recurrences(chunk):
    """omega = 0 (a real lambda, ComplexRecurrence's lambda_kind="real"): the real and imaginary
    planes decay independently, h_t = |lambda| h_{t-1} + x_t each; scan and step agree."""
    nu, _ = _decay(RADII, torch.float64)
    omega = torch.zeros_like(nu)
    x = _x((2, 30, len(RADII)), torch.float64)
    y, final = complex_diag_scan(x, nu, omega, output_final_state=True, chunk_size=chunk)
    r = torch.exp(-torch.exp(nu))
    h = torch.zeros(2, 2, len(RADII), dtype=torch.float64)
    want = torch.empty_like(x.planes)
    for t in range(30):
        h = r * h + x.planes[:, :, t]
        want[:, :, t] = h
    torch.testing.assert_close(y.planes, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final.planes, want[:, :, -1], rtol=1e-12, atol=1e-12)
    state = None
    for t in range(30):
        state = complex_diag_step(x[:, t], nu, omega, state)
        torch.testing.assert_close(state.planes, want[:, :, t], rtol=1e-12, atol=1e-12)
    real_only = C.ComplexTensor(torch.stack((x.planes[0], torch.zeros_like(x.planes[1]))))
    assert not complex_diag_scan(real_only, nu, omega, chunk_size=chunk)[0].planes[1].any()


def test_each_power_is_evaluated_once_in_float64():
    """The float64 work of the chunked scan, forward and backward, covers only the distinct powers
    (L + 1 and n_c of them), never the (L, L) or (n_c, n_c) Toeplitz matrices themselves."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestFloat64(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    self.largest = max(self.largest, t.numel())
            return out

    seq, chunk, channels = 256, 16, 8
    nu, omega = _decay([0.5, 0.9, 0.99, 0.999] * 2)
    nu.requires_grad_(True)
    omega.requires_grad_(True)
    x = _x((2, seq, channels))
    with LargestFloat64() as mode:
        y, _ = complex_diag_scan(x, nu, omega, chunk_size=chunk)
        y.planes.sum().backward()
    assert nu.grad is not None and omega.grad is not None
    assert mode.largest == max(chunk + 1, seq // chunk) * channels  # L + 1 = 17 powers, n_c = 16 (was L² = 256)

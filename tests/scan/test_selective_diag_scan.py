"""The diagonal recurrence with a per-token decay (muse.scan.selective_diag): chunked vs sequential.

The two forms are held against each other in float64 and against a float64 reference in float32
(bound: docs/numerics.md, "Selective diagonal recurrence"), through autograd (gradcheck), across
state passing, for strong decays (no overflow), and for causality bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from _helpers import cuda_test

import muse.complex as C
from muse.scan import selective_diag_scan, selective_diag_scan_sequential, selective_diag_step
from muse.scan.selective_diag import _cumsum_seq

U32 = 2.0**-24
RATES = torch.tensor([1e-4, 1e-2, 0.3, 3.0, 300.0])  # -log a per token, scaled: from |a| ~ 1 to a ~ 0


def _x(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return C.ComplexTensor(torch.randn(2, *shape, generator=gen, dtype=torch.float64).to(dtype))


def _log_decay(shape, dtype=torch.float32, seed=1):
    """(..., S, D) log-decays <= 0: channel d draws -log a uniformly in (0, 2 RATES[d % 5]]."""
    gen = torch.Generator().manual_seed(seed)
    rates = RATES.double()[torch.arange(shape[-1]) % len(RATES)]
    return (-(1.0 - torch.rand(shape, generator=gen, dtype=torch.float64)) * 2 * rates).to(dtype)


@pytest.mark.parametrize("chunk", [1, 5, 8, 32, 64, 200])
@pytest.mark.parametrize("seq", [1, 31, 64, 97])
def test_chunked_equals_sequential_float64(chunk, seq):
    x, ld = _x((3, seq, 10), torch.float64), _log_decay((3, seq, 10), torch.float64)
    h0 = _x((3, 10), torch.float64, seed=2)
    y1, s1 = selective_diag_scan_sequential(x, ld, h0, output_final_state=True)
    y2, s2 = selective_diag_scan(x, ld, h0, output_final_state=True, chunk_size=chunk)
    torch.testing.assert_close(y2.planes, y1.planes, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2.planes, s1.planes, rtol=1e-12, atol=1e-12)


def test_float32_error_against_float64_is_a_few_ulps_of_the_weight_sum():
    """|y32 - y64| <= 4 L u M_t, M_t = sum_s a(s..t) |x_s|: the in-chunk sums have at most L terms,
    each exponent a short segment sum (docs/numerics.md)."""
    seq, chunk = 300, 32
    x64, l64 = _x((2, seq, 10), torch.float64), _log_decay((2, seq, 10), torch.float64)
    x32 = C.ComplexTensor(x64.planes.float())
    l32 = l64.float()
    y64, _ = selective_diag_scan_sequential(C.ComplexTensor(x32.planes.double()), l32.double())
    y32, _ = selective_diag_scan(x32, l32, chunk_size=chunk)
    weight = torch.zeros(2, 10, dtype=torch.float64)
    bound = torch.empty(2, seq, 10, dtype=torch.float64)
    a = torch.exp(l32.double())
    mag = x32.planes.double().abs().amax(0)
    for t in range(seq):
        weight = a[:, t] * weight + mag[:, t]
        bound[:, t] = weight
    err = (y32.planes.double() - y64.planes).abs().amax(0)
    assert (err <= 4 * (chunk + 4) * U32 * bound + 1e-30).all()


def test_strong_decays_stay_finite_and_forget():
    """a ~ exp(-3000) per token: every exponent is a sum of its own terms, so nothing overflows."""
    x = _x((1, 200, 4))
    ld = torch.full((1, 200, 4), -3000.0)
    y, s = selective_diag_scan(x, ld, _x((1, 4), seed=3), output_final_state=True)
    assert torch.isfinite(y.planes).all() and torch.isfinite(s.planes).all()
    torch.testing.assert_close(y.planes, x.planes, rtol=0, atol=0)  # h_t = x_t exactly
    y1, _ = selective_diag_scan(x, torch.zeros_like(ld))  # a = 1: a running sum
    torch.testing.assert_close(y1.planes, x.planes.cumsum(-2), rtol=1e-5, atol=1e-4)


def test_future_inputs_leave_earlier_outputs_bit_identical():
    x, ld = _x((2, 100, 6)), _log_decay((2, 100, 6))
    y, _ = selective_diag_scan(x, ld)
    for t in (0, 31, 32, 77):
        xc, lc = x.planes.clone(), ld.clone()
        xc[..., t + 1:, :] = torch.randn_like(xc[..., t + 1:, :])
        lc[..., t + 1:, :] = -5 * torch.rand_like(lc[..., t + 1:, :])
        y2, _ = selective_diag_scan(C.ComplexTensor(xc), lc)
        assert torch.equal(y.planes[..., : t + 1, :], y2.planes[..., : t + 1, :]), t


def test_split_sequence_and_steps_continue_the_state():
    x, ld = _x((2, 45, 6), torch.float64), _log_decay((2, 45, 6), torch.float64)
    y, s = selective_diag_scan(x, ld, output_final_state=True)
    y1, s1 = selective_diag_scan(x[:, :20], ld[:, :20], output_final_state=True)
    y2, s2 = selective_diag_scan(x[:, 20:], ld[:, 20:], s1, output_final_state=True)
    torch.testing.assert_close(torch.cat([y1.planes, y2.planes], -2), y.planes, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2.planes, s.planes, rtol=1e-12, atol=1e-12)
    h = None
    for t in range(45):
        h = selective_diag_step(x[:, t], ld[:, t], h)
        torch.testing.assert_close(h.planes, y.planes[..., t, :], rtol=1e-12, atol=1e-12)


def test_gradcheck_float64():
    x = _x((1, 9, 3), torch.float64).planes.requires_grad_(True)
    ld = _log_decay((1, 9, 3), torch.float64).clamp(min=-4.0).requires_grad_(True)
    h0 = _x((1, 3), torch.float64, seed=4).planes.requires_grad_(True)

    def f(xp, ld, hp):
        y, s = selective_diag_scan(C.ComplexTensor(xp), ld, C.ComplexTensor(hp), output_final_state=True, chunk_size=4)
        return y.planes, s.planes

    assert torch.autograd.gradcheck(f, (x, ld, h0))


def test_float16_input_rounds_once_to_its_dtype_and_empty_sequences():
    x, ld = _x((2, 7, 3), torch.float16), _log_decay((2, 7, 3))
    y, _ = selective_diag_scan(x, ld)
    ref, _ = selective_diag_scan(x, ld, out_dtype=torch.float32)
    assert y.dtype == torch.float16 and torch.equal(y.planes, ref.planes.half())
    e, s = selective_diag_scan(_x((2, 0, 3)), torch.zeros(2, 0, 3), output_final_state=True)
    assert e.shape == (2, 0, 3) and torch.equal(s.planes, torch.zeros(2, 2, 3))


def test_bad_input_is_named():
    x, ld = _x((2, 5, 3)), _log_decay((2, 5, 3))
    with pytest.raises(TypeError, match="x must be a ComplexTensor"):
        selective_diag_scan(x.planes, ld)
    with pytest.raises(ValueError, match="log_decay must have x's shape"):
        selective_diag_scan(x, ld[:, :4])
    with pytest.raises(TypeError, match="log_decay must be torch.float32"):
        selective_diag_scan(x, ld.double())
    with pytest.raises(ValueError, match="initial_state must have shape"):
        selective_diag_scan(x, ld, _x((2, 4)))
    with pytest.raises(ValueError, match="chunk_size"):
        selective_diag_scan(x, ld, chunk_size=0)
    with pytest.raises(TypeError, match="out_dtype must be"):
        selective_diag_scan(x, ld, out_dtype=torch.int32)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., seq, channels\)"):
        selective_diag_scan(_x((3,)), torch.zeros(3))


def test_compiled_chunked_form_survives_a_change_of_shape(monkeypatch):
    """torch.compile (inductor) re-traces with dynamic sizes when the shape changes; the chunked form then still
    compiles, forward and backward, and agrees with eager (its chunk count as -(-S // L), and the inter-chunk
    product over N + 1 entries, made inductor fail here: 'Invalid ranges')."""
    monkeypatch.setenv("MUSE_KERNELS", "0")
    torch._dynamo.reset()

    def grads(fn, x, ld):
        xp, lp = x.planes.clone().requires_grad_(), ld.clone().requires_grad_()
        y, h = fn(C.ComplexTensor(xp), lp)
        (y.planes.sum() + (h.planes * 0.5).sum()).backward()
        return y.planes.detach(), h.planes.detach(), xp.grad, lp.grad

    def scan(x, ld):
        return selective_diag_scan(x, ld, output_final_state=True)
    compiled = torch.compile(scan, fullgraph=True)
    for batch, seq, d in ((1, 26, 4), (2, 70, 3)):  # the second call is the dynamic-shape graph
        x, ld = _x((batch, seq, d)), _log_decay((batch, seq, d))
        for got, want in zip(grads(compiled, x, ld), grads(scan, x, ld), strict=True):
            # float32 both ways, summed in other orders by the compiler (the bound's check is muse verify's)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compiled_backward_writes_every_position_of_a_partial_last_chunk(monkeypatch):
    """Inductor on the CPU, static shapes, S = 70 in three chunks of 32: with the padding after the end, its backward
    left dx of the last chunk's real positions (64..69) unwritten (garbage up to 1e42); the form pads in front since
    the thirty-fourth session.  Found by verification/test_grads.py under ``compiled``."""
    monkeypatch.setenv("MUSE_KERNELS", "0")
    C.set_gemm_policy()

    def scan(x, ld):
        y, h = selective_diag_scan(x, ld, output_final_state=True)
        return y.planes, h.planes

    compiled = torch.compile(scan, fullgraph=True, dynamic=False)
    x, ld = _x((1, 70, 2)), _log_decay((1, 70, 2))
    leaves = [x.planes.clone().requires_grad_(True), ld.clone().requires_grad_(True)]
    upstream = [torch.randn(2, 1, 70, 2, generator=torch.Generator().manual_seed(3)), torch.ones(2, 1, 2)]
    got = torch.autograd.grad(compiled(C.ComplexTensor(leaves[0]), leaves[1]), leaves, upstream)
    want = torch.autograd.grad(scan(C.ComplexTensor(leaves[0]), leaves[1]), leaves, upstream)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)  # regression tolerance: fp32 reorderings


@pytest.mark.slow
def test_compiled_phase_backward_follows_a_dynamic_length(monkeypatch):
    """With a phase, chunks of 4 and lengths 20, 34, 43 (the second makes S dynamic): the turn saved the chunked
    form's transposed output for backward, and inductor fixed that view's strides at S = 34, so S = 43 failed
    ('expected size 2==2, stride 43==34'); the chunked output is contiguous since the thirty-fourth session."""
    monkeypatch.setenv("MUSE_KERNELS", "0")
    C.set_gemm_policy()

    def scan(x, ld, ph):
        y, h = selective_diag_scan(x, ld, output_final_state=True, chunk_size=4, phase=ph)
        return y.planes, h.planes

    compiled = torch.compile(scan, fullgraph=True)
    for seq in (20, 34, 43):
        x, ld, ph = _x((1, seq, 2)), _log_decay((1, seq, 2)), _phase((1, seq, 2))
        leaves = [x.planes.clone().requires_grad_(True), ld.clone().requires_grad_(True), ph.clone().requires_grad_(True)]
        upstream = [torch.ones(2, 1, seq, 2), torch.ones(2, 1, 2)]
        got = torch.autograd.grad(compiled(C.ComplexTensor(leaves[0]), *leaves[1:]), leaves, upstream)
        want = torch.autograd.grad(scan(C.ComplexTensor(leaves[0]), *leaves[1:]), leaves, upstream)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)  # regression tolerance: fp32 reorderings


def _phase(shape, dtype=torch.float32, seed=5, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)


def _complex_definition(x, ld, phase, h0):
    """h_t = exp(l_t + i theta_t) h_{t-1} + x_t with torch's complex128, one step per token."""
    xc = torch.complex(x.planes[0], x.planes[1])
    h = torch.zeros_like(xc[..., 0, :]) if h0 is None else torch.complex(h0.planes[0], h0.planes[1])
    lam, outs = torch.exp(torch.complex(ld, phase)), []
    for t in range(xc.shape[-2]):
        h = lam[..., t, :] * h + xc[..., t, :]
        outs.append(h)
    return torch.stack(outs, -2), h


@pytest.mark.parametrize("chunk", [1, 8, 32, 200])
@pytest.mark.parametrize("seq", [1, 31, 97])
def test_phase_turns_the_state_by_its_definition(chunk, seq):
    """With ``phase``, the sequential form is the complex recurrence, and the chunked form (the real scan of the
    counter-rotated inputs) agrees with it in float64."""
    x, ld, ph = _x((3, seq, 10), torch.float64), _log_decay((3, seq, 10), torch.float64), _phase((3, seq, 10), torch.float64)
    h0 = _x((3, 10), torch.float64, seed=2)
    want_y, want_s = _complex_definition(x, ld, ph, h0)
    y1, s1 = selective_diag_scan_sequential(x, ld, h0, output_final_state=True, phase=ph)
    y2, s2 = selective_diag_scan(x, ld, h0, output_final_state=True, chunk_size=chunk, phase=ph)
    for y, s in ((y1, s1), (y2, s2)):
        torch.testing.assert_close(torch.complex(y.planes[0], y.planes[1]), want_y, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.complex(s.planes[0], s.planes[1]), want_s, rtol=1e-12, atol=1e-12)


def test_phase_zero_is_the_real_scan_and_steps_continue_the_state():
    x, ld = _x((2, 45, 6), torch.float64), _log_decay((2, 45, 6), torch.float64)
    y0, s0 = selective_diag_scan(x, ld, output_final_state=True)
    yz, sz = selective_diag_scan(x, ld, output_final_state=True, phase=torch.zeros_like(ld))
    torch.testing.assert_close(yz.planes, y0.planes, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sz.planes, s0.planes, rtol=1e-12, atol=1e-12)
    ph = _phase((2, 45, 6), torch.float64)
    y, s = selective_diag_scan(x, ld, output_final_state=True, phase=ph)
    y1, s1 = selective_diag_scan(x[:, :20], ld[:, :20], output_final_state=True, phase=ph[:, :20])
    y2, s2 = selective_diag_scan(x[:, 20:], ld[:, 20:], s1, output_final_state=True, phase=ph[:, 20:])
    torch.testing.assert_close(torch.cat([y1.planes, y2.planes], -2), y.planes, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2.planes, s.planes, rtol=1e-12, atol=1e-12)
    h = None
    for t in range(45):
        h = selective_diag_step(x[:, t], ld[:, t], h, phase=ph[:, t])
        torch.testing.assert_close(h.planes, y.planes[..., t, :], rtol=1e-12, atol=1e-12)


def test_phase_float32_over_long_sequences_keeps_its_angle():
    """S = 8192 tokens of up to 3 rad each with |a| = 1 - 1e-4: the running angle reaches ~1e4 rad, summed in
    float64 and reduced mod 2 pi, so float32 stays within 1e-6 of the float64 run per unit of weight (measured
    1.1e-7; a float32 running sum of the angles gives 9.1e-6 here)."""
    seq = 8192
    x = _x((1, seq, 4), torch.float64)
    ld = torch.full((1, seq, 4), -1e-4, dtype=torch.float64)
    ph = _phase((1, seq, 4), torch.float64, scale=1.0).abs() + 1.0
    y64, _ = selective_diag_scan_sequential(x, ld, phase=ph)
    y32, _ = selective_diag_scan(C.ComplexTensor(x.planes.float()), ld.float(), phase=ph.float())
    weight = torch.cumsum(x.planes.abs().sum(0), dim=-2)  # >= M_t (|a| <= 1)
    err = (y32.planes.double() - y64.planes).abs().amax(0)
    assert bool((err <= 1e-6 * weight).all()), float((err / weight).max())
    assert float(ph.sum(-2).max()) > 1e4


def test_phase_gradcheck_float64():
    x = _x((1, 9, 3), torch.float64).planes.requires_grad_(True)
    ld = _log_decay((1, 9, 3), torch.float64).clamp(min=-4.0).requires_grad_(True)
    ph = _phase((1, 9, 3), torch.float64).requires_grad_(True)
    h0 = _x((1, 3), torch.float64, seed=4).planes.requires_grad_(True)

    def f(xp, ld, ph, hp):
        y, s = selective_diag_scan(C.ComplexTensor(xp), ld, C.ComplexTensor(hp), output_final_state=True,
                                   chunk_size=4, phase=ph)
        return y.planes, s.planes

    assert torch.autograd.gradcheck(f, (x, ld, ph, h0))


def test_phase_causal_bit_for_bit_and_bad_phase_is_named():
    x, ld, ph = _x((2, 100, 6)), _log_decay((2, 100, 6)), _phase((2, 100, 6))
    y, _ = selective_diag_scan(x, ld, phase=ph)
    for t in (0, 31, 77):
        pc = ph.clone()
        pc[..., t + 1:, :] = torch.randn_like(pc[..., t + 1:, :])
        y2, _ = selective_diag_scan(x, ld, phase=pc)
        assert torch.equal(y.planes[..., : t + 1, :], y2.planes[..., : t + 1, :]), t
    with pytest.raises(ValueError, match="phase must have x's shape"):
        selective_diag_scan(x, ld, phase=ph[:, :4])
    with pytest.raises(TypeError, match="phase must be torch.float32"):
        selective_diag_scan(x, ld, phase=ph.double())
    with pytest.raises(TypeError, match="phase must be"):
        selective_diag_scan_sequential(x, ld, phase=[0.0])


@pytest.mark.parametrize("seq", [1, 32, 33, 1025, 33000])
def test_running_angle_is_a_float64_sum_of_short_scans(seq):
    """The running angle is summed as scans of at most 32 (blocks, then blocks of block totals: three levels at
    33,000), and each entry is its exact sum within float64 rounding of the terms' magnitudes."""
    v = _phase((2, seq, 3), torch.float64, scale=30.0)
    exact = torch.cumsum(v.to(torch.float64), dim=-2)
    scale = torch.cumsum(v.abs(), dim=-2)
    err = (_cumsum_seq(v) - exact).abs()
    assert bool((err <= 64 * 2.0**-53 * scale).all()), float((err / scale).max())
    t = seq // 2  # causal bit for bit: later terms leave the earlier sums unchanged
    later = torch.cat([v[:, : t + 1], 7.0 * v[:, t + 1:]], dim=-2)
    assert torch.equal(_cumsum_seq(later)[:, : t + 1], _cumsum_seq(v)[:, : t + 1])


@cuda_test
def test_phase_compiles_with_inductor_on_cuda():
    """The rotation compiles with inductor on CUDA: a single float64 cumsum over 1,024 tokens of 2,048 rows made
    torch 2.11's split-scan codegen fail ('list indices must be integers or slices, not NoneType', H200)."""
    torch._dynamo.reset()
    dev = torch.device("cuda")
    x = C.ComplexTensor(_x((4, 1024, 512)).planes.to(dev))
    ld, ph = _log_decay((4, 1024, 512)).to(dev), _phase((4, 1024, 512)).to(dev)

    def scan(x, ld, ph):
        return selective_diag_scan(x, ld, phase=ph)[0].planes
    got = torch.compile(scan, fullgraph=True)(x, ld, ph)
    torch.testing.assert_close(got, scan(x, ld, ph), rtol=1e-4, atol=1e-4)

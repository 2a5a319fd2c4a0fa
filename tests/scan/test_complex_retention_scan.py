"""Complex retention (muse.scan.retention): the parallel form vs the sequential reference vs the unrolled sum.

The accuracy bound (vs a float64 reference) is checked in verification/test_retention.py; here the forms
are held against each other in float64, across state passing and chunk lengths, through autograd, and
bad input is refused by name.
"""

from __future__ import annotations

import math

import pytest
import torch

import muse.complex as C
from muse.scan import complex_retention, complex_retention_sequential


def _case(shape=(2, 3, 21), dk=4, dv=3, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = C.ComplexTensor(torch.randn(2, *shape, dk, generator=gen, dtype=dtype))
    k = C.ComplexTensor(torch.randn(2, *shape, dk, generator=gen, dtype=dtype))
    v = C.ComplexTensor(torch.randn(2, *shape, dv, generator=gen, dtype=dtype))
    log_decay = -torch.rand(*shape, generator=gen, dtype=dtype) * 0.5
    omega = torch.rand(dk, generator=gen, dtype=torch.float64) * math.pi
    return q, k, v, log_decay, omega


def _unrolled(q, k, v, log_decay, omega):
    """y_t = sum_{s<=t} exp(L_t - L_s) Re(sum_j conj(q_tj) k_sj exp(i omega_j (t - s))) v_s, in complex128."""
    qc = torch.complex(q.planes[0], q.planes[1]).to(torch.complex128)
    kc = torch.complex(k.planes[0], k.planes[1]).to(torch.complex128)
    vc = torch.complex(v.planes[0], v.planes[1]).to(torch.complex128)
    s = qc.shape[-2]
    cum = torch.cumsum(log_decay.double(), dim=-1)
    t = torch.arange(s, dtype=torch.float64)
    phase = torch.exp(1j * omega.double()[None, None, :] * (t[:, None, None] - t[None, :, None]))  # (t, s, d_k)
    score = (qc.conj()[..., :, None, :] * kc[..., None, :, :] * phase).sum(-1).real  # (..., t, s)
    decay = torch.exp(cum[..., :, None] - cum[..., None, :]) * torch.ones(s, s, dtype=torch.float64).tril()
    return (score * decay).to(torch.complex128) @ vc


@pytest.mark.parametrize("chunk", [None, 1, 4, 8])
def test_parallel_equals_sequential_and_the_unrolled_sum(chunk):
    q, k, v, ld, om = _case()
    y, state = complex_retention(q, k, v, ld, om, output_final_state=True, chunk_size=chunk)
    ys, ss = complex_retention_sequential(q, k, v, ld, om, output_final_state=True)
    torch.testing.assert_close(y.planes, ys.planes, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state.planes, ss.planes, rtol=1e-10, atol=1e-10)
    want = _unrolled(q, k, v, ld, om)
    torch.testing.assert_close(torch.complex(y.planes[0], y.planes[1]), want, rtol=1e-10, atol=1e-10)


def test_state_passing_continues_the_sequence():
    q, k, v, ld, om = _case()
    y, state = complex_retention(q, k, v, ld, om, output_final_state=True, chunk_size=4)
    for cut in (1, 5, 13):
        def part(t, a, b):
            return C.ComplexTensor(t.planes[..., a:b, :])
        ya, sa = complex_retention(part(q, 0, cut), part(k, 0, cut), part(v, 0, cut), ld[..., :cut], om,
                                   output_final_state=True)
        yb, sb = complex_retention(part(q, cut, None), part(k, cut, None), part(v, cut, None), ld[..., cut:], om,
                                   initial_state=sa, output_final_state=True, chunk_size=3)
        torch.testing.assert_close(torch.cat((ya.planes, yb.planes), dim=-2), y.planes, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(sb.planes, state.planes, rtol=1e-10, atol=1e-10)
        yr, sr = complex_retention_sequential(part(q, cut, None), part(k, cut, None), part(v, cut, None),
                                              ld[..., cut:], om, initial_state=sa, output_final_state=True)
        torch.testing.assert_close(yr.planes, yb.planes, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(sr.planes, sb.planes, rtol=1e-10, atol=1e-10)


def test_relative_positions_only():
    """Shifting the whole sequence later (zero tokens in front, no decay) changes nothing after the shift."""
    q, k, v, ld, om = _case(shape=(1, 1, 9))
    y, _ = complex_retention(q, k, v, ld, om)

    def pad(t, n=5):
        return C.ComplexTensor(torch.nn.functional.pad(t.planes, (0, 0, n, 0)))
    y2, _ = complex_retention(pad(q), pad(k), pad(v), torch.nn.functional.pad(ld, (5, 0)), om)
    torch.testing.assert_close(y2.planes[..., 5:, :], y.planes, rtol=1e-10, atol=1e-10)


def test_gradcheck_and_empty_sequence():
    q, k, v, ld, om = _case(shape=(1, 1, 5), dk=2, dv=2)
    inputs = [t.planes.clone().requires_grad_(True) for t in (q, k, v)] + [ld.clone().requires_grad_(True)]

    def fn(qp, kp, vp, decay):
        y, s = complex_retention(C.ComplexTensor(qp), C.ComplexTensor(kp), C.ComplexTensor(vp), decay, om,
                                 output_final_state=True, chunk_size=2)
        return y.planes, s.planes
    assert torch.autograd.gradcheck(fn, inputs)
    e, _ = _case(shape=(1, 2, 0))[:2]
    y, _ = complex_retention(e, e, C.ComplexTensor(torch.zeros(2, 1, 2, 0, 3, dtype=torch.float64)),
                             torch.zeros(1, 2, 0, dtype=torch.float64), _case()[4])
    assert y.shape == (1, 2, 0, 3)


def test_bad_input_is_refused_by_name():
    q, k, v, ld, om = _case()
    with pytest.raises(TypeError, match="q must be"):
        complex_retention(q.planes, k, v, ld, om)
    with pytest.raises(ValueError, match="q and k must have the same shape"):
        complex_retention(q, C.ComplexTensor(k.planes[..., :2]), v, ld, om)
    with pytest.raises(ValueError, match="v must have shape"):
        complex_retention(q, k, C.ComplexTensor(v.planes[..., :5, :]), ld, om)
    with pytest.raises(ValueError, match="log_decay must have shape"):
        complex_retention(q, k, v, ld[..., :3], om)
    with pytest.raises(ValueError, match="omega must have shape"):
        complex_retention(q, k, v, ld, om[:2])
    with pytest.raises(TypeError, match="float32 or float64"):
        complex_retention(q, k, v, ld.float(), om)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        complex_retention(q, k, v, ld, om, initial_state=C.ComplexTensor(torch.zeros(2, 2, 3, 4, 3,
                                                                                     dtype=torch.float64)))
    with pytest.raises(ValueError, match="chunk_size"):
        complex_retention(q, k, v, ld, om, chunk_size=0)

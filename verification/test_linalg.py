"""matmul and linear (one block GEMM): accuracy against exact dot products.

Bound (docs/numerics.md, "GEMM"): with p_k the 2K exact fp16 x fp16 products of one
output component, |y - x| <= E = gamma_m(u32) sum_k |p_k| (m = 2K on IEEE fp32 hardware,
the tensor-core model on CUDA), and the stored fp16 value is within 0.5 ulp(|x| + E) + E.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import muse.complex as C
from muse.nn import ComplexLinear
from verification import bounds as B
from verification import reference as R
from verification import strategies as vs
from verification.checks import check_ulps
from verification.harness import ct, impl_label, planes, run, tensor

K_SIZES = st.one_of(st.integers(1, 24), st.sampled_from([17, 33, 64, 65, 128]))


@st.composite
def matmul_case(draw, band: str = "mixed"):
    """(a, b, a_vec, b_vec): planes a (2, [B,] M, K), b (2, K, N); vec flags drop M or N (1-D operand)."""
    m, k, n = draw(st.integers(1, 6)), draw(K_SIZES), draw(st.integers(1, 6))
    batch = draw(st.sampled_from([(), (1,), (2,), (3,)]))
    a = draw(vs.complex_arrays((*batch, m, k), band))
    b = draw(vs.complex_arrays((k, n), band))
    a_vec = not batch and m == 1 and draw(st.booleans())
    b_vec = n == 1 and draw(st.booleans())
    return a, b, a_vec, b_vec


def _matmul_bound(exact, abs_sums, n_terms: int, device: str) -> list[np.ndarray]:
    err = B.gemm_abs(abs_sums, n_terms, device)
    return [B.in_ulps(B.mixed(e.hi, err[c]), e.hi) for c, e in enumerate(exact)]


def _locate_rows(a: np.ndarray, b: np.ndarray, squeeze_a: bool, squeeze_b: bool):
    """Failure locator: the row of a and the column of b that produced an output entry."""

    def locate(c, ix):
        ix = list(ix)
        j = 0 if squeeze_b else ix.pop()
        i = 0 if squeeze_a else ix.pop()
        batch = tuple(ix)
        row = a[(slice(None), *batch, i, slice(None))] if a.ndim > 3 else a[:, i, :]
        return {"a_row": row, "b_col": b[:, :, j]}

    return locate


@given(case=matmul_case())
@example(case=(np.array([[[65504.0, 1.0]], [[65504.0, -1.0]]], dtype=np.float16),
               np.array([[[1.0], [65504.0]], [[-1.0], [2.0**-24]]], dtype=np.float16), False, False))
def test_matmul_accuracy(device, case):
    """Complex a @ b within 0.5 ulp(|x| + E) + E, E = gamma_m sum |ar br| + |ai bi| (2K terms)."""
    a, b, a_vec, b_vec = case
    za, zb = ct(a, device), ct(b, device)
    if a_vec:
        za = za.reshape(a.shape[-1])
    if b_vec:
        zb = zb.reshape(b.shape[-2])
    out = planes(C.matmul(za, zb))
    re, im, abs_sums = R.matmul(a, b)
    shape = out.shape[1:]
    exact = [R.Exact(e.hi.reshape(shape), e.lo.reshape(shape), e.f16.reshape(shape)) for e in (re, im)]
    bound = _matmul_bound(exact, abs_sums.reshape((2, *shape)), 2 * a.shape[-1], device)
    check_ulps("matmul", device, [out[0], out[1]], exact, bound, locate=_locate_rows(a, b, a_vec, b_vec),
               call="C.matmul(C.ComplexTensor(torch.from_numpy(a_row[:, None, :])), "
                    "C.ComplexTensor(torch.from_numpy(b_col[:, :, None])))")


@given(data=st.data())
def test_matmul_by_real_matrix(device, data):
    """Complex a @ real b: two real GEMMs of K exact products each: E = gamma_m(K) sum |a b|."""
    m, k, n = data.draw(st.integers(1, 6)), data.draw(K_SIZES), data.draw(st.integers(1, 6))
    a = data.draw(vs.complex_arrays((m, k)))
    b = data.draw(vs.real_arrays((k, n)))
    out = planes(C.matmul(ct(a, device), tensor(b, device)))
    re, im, abs_sums = R.matmul(a, np.stack((b, np.zeros_like(b))))
    bound = _matmul_bound([re, im], abs_sums, k, device)
    check_ulps("matmul_real", device, [out[0], out[1]], [re, im], bound,
               locate=lambda c, ix: {"a_row": a[:, ix[0], :], "b_col": b[:, ix[1]]},
               call="C.matmul(C.ComplexTensor(torch.from_numpy(a_row[:, None, :])), torch.from_numpy(b_col[:, None]))")


@st.composite
def linear_case(draw):
    rows = draw(st.sampled_from([(), (1,), (3,), (2, 3)]))
    fin, fout = draw(K_SIZES), draw(st.integers(1, 8))
    x = draw(vs.complex_arrays((*rows, fin)))
    w = draw(vs.complex_arrays((fout, fin)))
    bias = draw(st.one_of(st.none(), vs.complex_arrays((fout,))))
    return x, w, bias


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the interpreter's fp16 rounding to inf
@given(case=linear_case())
def test_linear_accuracy(device, impl, case):
    """x W^T + b: the bias is one more exact term in the fp32 GEMM epilogue: E = gamma_m (sum|p| + |b|);
    the same bound for the Triton kernel (impl triton: muse.kernels.complex_mm)."""
    x, w, bias = case
    out = planes(run(impl, C.linear, ct(x, device), ct(w, device), None if bias is None else ct(bias, device)))
    re, im, abs_sums = R.linear(x, w, bias)
    n_terms = 2 * x.shape[-1] + (bias is not None)
    bound = _matmul_bound([re, im], abs_sums, n_terms, device)

    def locate(c, ix):
        row = x[(slice(None), *ix[:-1], slice(None))]
        found = {"x_row": row, "w_row": w[:, ix[-1], :]}
        if bias is not None:
            found["bias"] = bias[:, ix[-1]]
        return found

    check_ulps("linear", impl_label(device, impl), [out[0], out[1]], [re, im], bound, locate=locate,
               call="C.linear(C.ComplexTensor(torch.from_numpy(x_row)), "
                    "C.ComplexTensor(torch.from_numpy(w_row[:, None, :])))")


def test_complex_linear_module_is_the_functional_op(device):
    """ComplexLinear.forward is exactly C.linear on its planar parameters (bitwise)."""
    torch.manual_seed(0)
    layer = ComplexLinear(33, 7, device=device)
    with torch.no_grad():
        layer.bias.normal_()
    x = C.randn(4, 33, device=device, generator=None)
    want = C.linear(x, C.ComplexTensor(layer.weight), C.ComplexTensor(layer.bias))
    assert torch.equal(layer(x).planes, want.planes)


@pytest.mark.parametrize("k", [1, 7, 64, 812])
def test_matmul_grid_rows(device, k):
    """Deterministic rows from the linspace x logspace grid, including a length-812 reduction."""
    g = vs.grid_values(32)
    rng = np.random.default_rng(k)
    a = rng.choice(g, size=(2, 3, k)).astype(np.float16)
    b = rng.choice(g, size=(2, k, 2)).astype(np.float16)
    out = planes(C.matmul(ct(a, device), ct(b, device)))
    re, im, abs_sums = R.matmul(a, b)
    bound = _matmul_bound([re, im], abs_sums, 2 * k, device)
    check_ulps("matmul", device, [out[0], out[1]], [re, im], bound, locate=_locate_rows(a, b, False, False))

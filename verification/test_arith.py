"""Elementwise ops and reductions: accuracy in ULPs against exact references, and algebra."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import muse.complex as C
from verification import bounds as B
from verification import reference as R
from verification import strategies as vs
from verification.checks import check_ulps, cplx, real
from verification.harness import ct, host, planes, tensor

BINARY = {"add": (C.add, R.add), "sub": (C.sub, R.sub), "mul": (C.mul, R.mul), "div": (C.div, R.div)}
UNARY = {"abs": (C.abs, R.abs_), "abs2": (C.abs2, R.abs2), "angle": (C.angle, R.angle), "exp": (C.exp, R.exp)}


def _binary(device: str, op: str, a: np.ndarray, b: np.ndarray) -> None:
    fn, ref = BINARY[op]
    got = planes(fn(ct(a, device), ct(b, device)))
    exact = ref(a, b)
    where = None
    if op == "div":  # division by zero belongs to the non-finite contract (test_finiteness)
        nonzero = np.broadcast_to((b != 0).any(axis=0), got.shape[1:])
        where = [nonzero, nonzero]
    check_ulps(op, device, [got[0], got[1]], exact, B.ulp_bound(op, device),
               args=[cplx("a", a), cplx("b", b)], where=where,
               call=f"C.{op}(C.ComplexTensor(torch.from_numpy(a)), C.ComplexTensor(torch.from_numpy(b)))")


def _unary(device: str, op: str, z: np.ndarray) -> None:
    fn, ref = UNARY[op]
    out = fn(ct(z, device))
    exact = ref(z)
    if isinstance(out, C.ComplexTensor):
        got, exact = list(planes(out)), list(exact)
    else:
        got, exact = [host(out)], [exact]
    check_ulps(op, device, got, exact, B.ulp_bound(op, device), args=[cplx("z", z)],
               call=f"C.{op}(C.ComplexTensor(torch.from_numpy(z)))")


@pytest.mark.parametrize("op", sorted(BINARY))
@given(pair=vs.complex_pairs())
@example(pair=vs.edge_pair())
def test_binary_accuracy(device, op, pair):
    """add/sub: 0.5 ULP; mul: 0.5 + 2**-12; div: 0.5 + 3 * 2**-12 (+O(u^2)) of the exact result."""
    _binary(device, op, *pair)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_grid(device, op):
    """The same bounds on the deterministic linspace x logspace grid (re x im)."""
    _binary(device, op, *vs.grid_pairs(32))


@pytest.mark.parametrize("op", sorted(UNARY))
@given(z=vs.complex_arrays())
@example(z=vs.edge_planes())
def test_unary_accuracy(device, op, z):
    """abs: 0.5 + 1.5 * 2**-12; abs2: 0.5 + 2**-12; angle, exp: libm-dependent (docs/numerics.md)."""
    _unary(device, op, z)


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_grid(device, op):
    _unary(device, op, vs.complex_grid(32))


@given(data=st.data())
def test_polar_accuracy(device, data):
    """polar(r, t) = r cos t + i r sin t: 0.5 + (2k + 1) 2**-12 ULP with k the sin/cos ulps."""
    shape = data.draw(vs.shapes())
    r = data.draw(vs.real_arrays(shape))
    t = data.draw(vs.real_arrays(shape))
    got = planes(C.polar(tensor(r, device), tensor(t, device)))
    check_ulps("polar", device, [got[0], got[1]], R.polar(r, t), B.ulp_bound("polar", device),
               args=[real("r", r), real("t", t)], call="C.polar(torch.from_numpy(r), torch.from_numpy(t))")


@given(data=st.data())
def test_mul_by_real_tensor(device, data):
    """Complex times a real tensor: each part is one exact product rounded once (0.5 ULP)."""
    shape = data.draw(vs.shapes())
    a = data.draw(vs.complex_arrays(shape))
    x = data.draw(vs.real_arrays(shape))
    got = planes(C.mul(ct(a, device), tensor(x, device)))
    exact = R.mul(a, np.stack((x, np.zeros_like(x))))
    check_ulps("mul_real", device, [got[0], got[1]], exact, B.ulp_bound("mul_real", device),
               args=[cplx("a", a), real("x", x)], call="C.mul(C.ComplexTensor(torch.from_numpy(a)), torch.from_numpy(x))")


@st.composite
def _reductions(draw):
    shape = draw(vs.shapes(min_dims=1, max_dims=3))
    z = draw(vs.complex_arrays(shape))
    dim = draw(st.one_of(st.none(), st.integers(0, len(shape) - 1)))
    return z, dim


@pytest.mark.parametrize("mean", [False, True], ids=["sum", "mean"])
@given(case=_reductions())
def test_reduction_accuracy(device, mean, case):
    """sum/mean in fp32: |y - x| <= gamma_(n-1) sum|z| (+2 roundings for the mean), then one rounding."""
    z, dim = case
    n = z[0].size if dim is None else z.shape[1 + dim]
    if mean and n == 0:
        return  # 0/0: the mean of nothing is nan by definition, see the contract tests
    fn = C.mean if mean else C.sum
    got = planes(fn(ct(z, device), dim))
    re, im, abs_sums = R.reduce_sum(z, dim, mean=mean)
    err = B.sum_abs(abs_sums, n, mean=mean)
    bound = [B.in_ulps(B.mixed(e.hi, err[c]), e.hi) for c, e in enumerate((re, im))]
    name = "mean" if mean else "sum"

    def locate(c, ix):
        return {"z": z, "dim": np.array(-1.0 if dim is None else float(dim))}

    check_ulps(name, device, [got[0], got[1]], [re, im], bound, locate=locate,
               call=f"C.{name}(C.ComplexTensor(torch.from_numpy(z)), None if dim < 0 else int(dim))")


# -------------------------------------------------------------------- algebra
def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint16)


def _sign_flipped(got: np.ndarray, z: np.ndarray) -> bool:
    """got is z with its sign bit flipped, bit for bit, wherever z is not nan; nan stays nan
    (CUDA returns the canonical nan 0x7FFF, dropping a nan's sign and payload)."""
    nan = np.isnan(z)
    return bool(np.all(np.isnan(got[nan])) and np.array_equal(_bits(got)[~nan], (_bits(z) ^ np.uint16(0x8000))[~nan]))


@given(z=vs.complex_arrays(band="nonfinite"))
@example(z=vs.edge_planes())
def test_conj_and_neg_are_bitwise(device, z):
    """conj flips exactly the imaginary sign bit (-0 <-> +0) and keeps the real plane; neg flips both."""
    got = planes(C.conj(ct(z, device)))
    assert np.array_equal(_bits(got[0]), _bits(z[0]))
    assert _sign_flipped(got[1], z[1])
    assert _sign_flipped(planes(C.neg(ct(z, device))), z)


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    """Bitwise equal, except that any nan equals any nan."""
    nan = np.isnan(x) & np.isnan(y)
    return bool(np.all(nan | (_bits(x) == _bits(y))))


@given(pair=vs.complex_pairs(band="nonfinite"))
def test_add_and_mul_commute_bitwise(device, pair):
    """a + b == b + a and a b == b a bit for bit (IEEE + and x commute; the formula is symmetric)."""
    a, b = (ct(p, device) for p in pair)
    assert _same(planes(C.add(a, b)), planes(C.add(b, a)))
    assert _same(planes(C.mul(a, b)), planes(C.mul(b, a)))


@given(z=vs.complex_arrays(band="nonfinite"))
def test_abs_of_conj_is_abs(device, z):
    """|conj z| == |z| bitwise (same squares), and abs2 likewise."""
    w = ct(z, device)
    assert _same(host(C.abs(C.conj(w))), host(C.abs(w)))
    assert _same(host(C.abs2(C.conj(w))), host(C.abs2(w)))


def test_abs2_overflows_exactly_when_the_exact_value_does(device):
    """No fp16 pair has re^2 + im^2 in [65520 - 2**-9, 65520), the only window where fl32 could
    round up to 65520 (-> inf) while the exact value rounds to 65504: so abs2 overflows iff
    the exact value is >= 65520.  Exhaustive over pairs, then the op on pairs straddling it."""
    bits = np.arange(1, 0x7C00, dtype=np.uint16)
    vals = bits.view(np.float16)
    m = [int(float(v) * 2**24) for v in vals]
    sq = [x * x for x in m]
    top = 65520 * 2**48
    window, straddle = [], []
    for mr in m:
        r2 = mr * mr
        if r2 >= top:
            break
        j = bisect.bisect_left(sq, top - 2**39 - r2)
        if j < len(sq) and sq[j] < top - r2:
            window.append(mr)
        k = bisect.bisect_left(sq, top - r2)
        straddle += [(mr, m[i]) for i in (k - 1, k) if 0 <= i < len(m)]
    assert window == []
    z = np.array([[p[0] for p in straddle], [p[1] for p in straddle]], dtype=np.float64) / 2**24
    z = z.astype(np.float16)
    got = host(C.abs2(ct(z, device)))
    want = R.abs2(z).f16
    assert np.array_equal(np.isinf(got), np.isinf(want))

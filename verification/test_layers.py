"""LayerNorm, modReLU, dropout and embedding: mixed error bounds and structural properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

import muse.complex as C
from muse.nn import ComplexLayerNorm, ModReLU
from verification import bounds as B
from verification import reference as R
from verification import strategies as vs
from verification.checks import check_ulps, cplx, real
from verification.harness import ct, impl_label, planes, run, tensor

D_SIZES = st.one_of(st.integers(1, 20), st.sampled_from([33, 64]))
ROWS = st.sampled_from([(), (1,), (3,), (2, 2)])


# ------------------------------------------------------------------ LayerNorm
@st.composite
def layer_norm_case(draw):
    rows, d = draw(ROWS), draw(D_SIZES)
    z = draw(vs.complex_arrays((*rows, d)))
    weight = draw(st.one_of(st.none(), vs.real_arrays((d,), band=draw(st.sampled_from(["unit", "mixed"])))))
    bias = draw(st.one_of(st.none(), vs.real_arrays((d,), band="unit")))
    eps = draw(st.sampled_from([1e-5, 1e-8, 1e-3, 0.5]))
    residual = draw(st.one_of(st.none(), vs.complex_arrays((*rows, d))))
    assume(residual is None or np.isfinite(_rounded_sum(z, residual)).all())
    return z, weight, bias, eps, residual


def _rounded_sum(z: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """z + residual rounded once to float16 (the float64 sum of two float16 values is exact)."""
    with np.errstate(over="ignore"):
        return (z.astype(np.float64) + residual.astype(np.float64)).astype(np.float16)


def _layer_norm_check(device: str, impl: str, z, weight, bias, eps: float, residual=None, out=None,
                      op: str = "layer_norm", call: str | None = None) -> None:
    """C.layer_norm within its bound; with ``residual``, of the rounded sum (the bound of the LayerNorm
    of that sum: the residual form rounds the sum once, as ``add`` does, and normalises it).  ``out``: the
    planes another op computed for this LayerNorm (reported as ``op``, reproduced by ``call``)."""
    w_t = None if weight is None else tensor(weight, device)
    b_t = None if bias is None else tensor(bias, device)
    args = (ct(z, device), w_t, b_t, eps) + (() if residual is None else (ct(residual, device),))
    if out is None:
        out = planes(run(impl, C.layer_norm, *args))
    re, im, stats = R.layer_norm(z if residual is None else _rounded_sum(z, residual), weight, bias, eps)
    e_re, e_im = B.layer_norm_abs(stats, re.hi, im.hi, weight, bias, eps, device)
    bound = [B.in_ulps(B.mixed(re.hi, e_re), re.hi), B.in_ulps(B.mixed(im.hi, e_im), im.hi)]

    def locate(c, ix):
        row = (slice(None), *ix[:-1], slice(None))
        found = {"z": z[row], "eps": np.array(eps)}
        if residual is not None:
            found["residual"] = residual[row]
        if weight is not None:
            found["weight"] = weight
        if bias is not None:
            found["bias"] = bias
        return found

    check_ulps(op, impl_label(device, impl), [out[0], out[1]], [re, im], bound, locate=locate,
               call=call or ("C.layer_norm(C.ComplexTensor(torch.from_numpy(z)), torch.from_numpy(weight), "
                             "torch.from_numpy(bias), float(eps)" + (")" if residual is None else
                             ", C.ComplexTensor(torch.from_numpy(residual)))")))


def _pair(z, residual, w1, b1, w2, b2, eps1, eps2):
    y, y2 = C.layer_norm_pair(z, residual, (w1, b1, eps1), (w2, b2, eps2))
    return y, y2


@given(case=layer_norm_case(), data=st.data())
def test_layer_norm_pair_accuracy(device, impl, case, data):
    """C.layer_norm_pair: its first output within the LayerNorm bound of the rounded sum, its second within the
    LayerNorm bound of that first output as computed (docs/numerics.md, "A pair of norms")."""
    z, weight, bias, eps, residual = case
    assume(residual is not None)
    d = z.shape[-1]
    w2 = data.draw(st.one_of(st.none(), vs.real_arrays((d,), band="mixed")))
    b2 = data.draw(st.one_of(st.none(), vs.real_arrays((d,), band="unit")))
    eps2 = data.draw(st.sampled_from([1e-5, 1e-3]))
    opt = [None if a is None else tensor(a, device) for a in (weight, bias, w2, b2)]
    y, y2 = run(impl, _pair, ct(z, device), ct(residual, device), *opt, eps, eps2)
    y, y2 = planes(y), planes(y2)
    call = "C.layer_norm_pair(z, residual, (weight, bias, eps), (weight2, bias2, eps2))"
    _layer_norm_check(device, impl, z, weight, bias, eps, residual, out=y, op="layer_norm_pair", call=call)
    assume(np.isfinite(y).all())
    _layer_norm_check(device, impl, y, w2, b2, eps2, out=y2, op="layer_norm_pair", call=call)


@given(case=layer_norm_case())
@example(case=(np.array([[[65504.0, -65504.0, 1.0]], [[0.0, 2.0**-24, -1.0]]], dtype=np.float16), None, None, 1e-5, None))
@example(case=(np.full((2, 1, 4), 3.0, dtype=np.float16), None, None, 1e-5, None))
@example(case=(np.full((2, 1, 4), 3.0, dtype=np.float16), None, None, 1e-5,
               np.array([[[2.0**-11, 0.0, -(2.0**-11), 1.0]], [[0.0] * 4]], dtype=np.float16)))
def test_layer_norm_accuracy(device, impl, case):
    """Mixed bound: e_mu, the variance and rsqrt errors propagate into |y - x| <= E (docs/numerics.md)."""
    _layer_norm_check(device, impl, *case)


@given(z=vs.complex_arrays(st.tuples(st.integers(1, 4), D_SIZES), band="unit"))
def test_layer_norm_output_is_normalised(device, impl, z):
    """Per sample: complex mean of the output ~ 0 and E|out|^2 ~ v / (v + eps) (-> 1 for v >> eps).

    Tolerances are derived from the per-element bounds B_k: |mean(out)| <= mean(B_k) per
    plane and |E|out|^2 - v/(v + eps)| <= mean(2 |x_k| B_k + B_k^2), summed over the planes.
    """
    eps = 1e-5
    out = planes(run(impl, C.layer_norm, ct(z, device), None, None, eps)).astype(np.float64)
    re, im, stats = R.layer_norm(z, None, None, eps)
    e_re, e_im = B.layer_norm_abs(stats, re.hi, im.hi, None, None, eps, device)
    b_re, b_im = B.mixed(re.hi, e_re), B.mixed(im.hi, e_im)
    slack = 1e-12
    mean_re, mean_im = out[0].mean(axis=-1), out[1].mean(axis=-1)
    assert np.all(np.abs(mean_re) <= b_re.mean(axis=-1) + slack), (mean_re, b_re.mean(axis=-1))
    assert np.all(np.abs(mean_im) <= b_im.mean(axis=-1) + slack), (mean_im, b_im.mean(axis=-1))
    power = (out[0] ** 2 + out[1] ** 2).mean(axis=-1)
    v = stats["var"][..., 0]
    target = v / (v + eps)
    tol = (2 * np.abs(re.hi) * b_re + b_re**2 + 2 * np.abs(im.hi) * b_im + b_im**2).mean(axis=-1)
    assert np.all(np.abs(power - target) <= tol + slack), (power, target, tol)
    big = v >= 1.0
    assert np.all(np.abs(power[big] - 1.0) <= tol[big] + 1e-5 + slack)


@given(z=vs.complex_arrays(st.tuples(st.integers(2, 5), D_SIZES)), data=st.data())
def test_layer_norm_has_no_cross_sample_coupling(device, impl, z, data):
    """Changing one sample (row) leaves every other row's output bit-for-bit unchanged."""
    row = data.draw(st.integers(0, z.shape[1] - 1))
    other = data.draw(vs.complex_arrays((z.shape[2],)))
    z2 = z.copy()
    z2[:, row, :] = other
    a = planes(run(impl, C.layer_norm, ct(z, device)))
    b = planes(run(impl, C.layer_norm, ct(z2, device)))
    keep = np.arange(z.shape[1]) != row
    assert np.array_equal(a[:, keep].view(np.uint16), b[:, keep].view(np.uint16))


def test_layer_norm_module_is_the_functional_op(device):
    norm = ComplexLayerNorm(17, device=device)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    z = C.randn(3, 17, device=device)
    assert torch.equal(norm(z).planes, C.layer_norm(z, norm.weight, norm.bias, norm.eps).planes)


# ---------------------------------------------------------------------- modReLU
@st.composite
def modrelu_case(draw):
    """z (..., d) and a bias (d,) or 0-d; some biases sit at -|z| (rounded to fp16): the kink."""
    rows, d = draw(ROWS), draw(D_SIZES)
    z = draw(vs.complex_arrays((*rows, d)))
    if draw(st.booleans()):
        bias = draw(vs.real_arrays((), band="small"))
        return z, bias
    bias = draw(vs.real_arrays((d,), band=draw(st.sampled_from(["unit", "small", "mixed"]))))
    if draw(st.booleans()) and z[0].size:
        first = z.reshape(2, -1, d)[:, 0, :].astype(np.float64)
        kink = -np.hypot(first[0], first[1]).astype(np.float16)
        pick = np.array(draw(st.lists(st.booleans(), min_size=d, max_size=d)))
        bias = np.where(pick & np.isfinite(kink), kink, bias).astype(np.float16)
    return z, bias


@given(case=modrelu_case())
@example(case=(np.array([[3.0, 0.0, 300.0], [4.0, 0.0, 400.0]], dtype=np.float16),
               np.array([-5.0, 1.0, -500.0], dtype=np.float16)))
def test_modrelu_accuracy(device, impl, case):
    """Mixed bound: E = (|z_c|/r)[|r + b|((1+u)^3/(1-t) - 1) + r t (1+u)^3/(1-t)], t ~ 1.5u."""
    z, bias = case
    out = planes(run(impl, C.modrelu, ct(z, device), tensor(bias, device)))
    re, im, stats = R.modrelu(z, bias)
    zr, zi = np.broadcast_arrays(z[0], z[1], bias)[:2]
    bound = []
    for comp, e in ((zr, re), (zi, im)):
        err = B.modrelu_abs(comp.astype(np.float64), stats["r"], stats["shifted"])
        bound.append(B.in_ulps(B.mixed(e.hi, err), e.hi))
    b_full = np.broadcast_to(bias, z.shape[1:])
    check_ulps("modrelu", impl_label(device, impl), [out[0], out[1]], [re, im], bound,
               args=[cplx("z", z), real("b", b_full)],
               call="C.modrelu(C.ComplexTensor(torch.from_numpy(z)), torch.from_numpy(b)[0])")


@given(case=modrelu_case())
def test_modrelu_keeps_the_phase(device, impl, case):
    """out = lambda z with lambda >= 0: each part keeps the sign of z's part (or is 0), and the
    cross product |out_re z_im - out_im z_re| <= |z_im| B_re + |z_re| B_im with B the bounds."""
    z, bias = case
    out = planes(run(impl, C.modrelu, ct(z, device), tensor(bias, device))).astype(np.float64)
    zf = np.broadcast_to(z, out.shape).astype(np.float64)
    assert np.all(out[0] * zf[0] >= 0) and np.all(out[1] * zf[1] >= 0)
    re, im, stats = R.modrelu(z, bias)
    b_re = B.mixed(re.hi, B.modrelu_abs(zf[0], stats["r"], stats["shifted"]))
    b_im = B.mixed(im.hi, B.modrelu_abs(zf[1], stats["r"], stats["shifted"]))
    cross = np.abs(out[0] * zf[1] - out[1] * zf[0])
    slack = 2.0**-50 * (np.abs(out[0] * zf[1]) + np.abs(out[1] * zf[0]))  # float64 evaluation
    finite = np.isfinite(cross)
    assert np.all((cross <= np.abs(zf[1]) * b_re + np.abs(zf[0]) * b_im + slack)[finite])


def test_modrelu_module_is_the_functional_op(device):
    act = ModReLU(9, device=device)
    with torch.no_grad():
        act.bias.uniform_(-1.0, 0.5)
    z = C.randn(5, 9, device=device)
    assert torch.equal(act(z).planes, C.modrelu(z, act.bias).planes)


# ---------------------------------------------------------------------- dropout
@given(z=vs.complex_arrays(vs.shapes(min_dims=1)), p=st.sampled_from([0.1, 0.5, 0.9, 1 / 3]),
       seed=st.integers(0, 2**31 - 1))
def test_dropout_masks_both_parts_and_rounds_once(device, z, p, seed):
    """Dropped entries are 0 in both parts; survivors are z / (1 - p) within 0.5 + 3 * 2**-12 ULP."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = planes(C.dropout(ct(z, device), p, training=True, generator=g))
    dropped = (out[0] == 0) & (out[1] == 0) & ((z[0] != 0) | (z[1] != 0))
    kept = ~dropped
    if not kept.any():
        return
    ref_re, ref_im = _scaled_reference(z, p)
    check_ulps("dropout", device, [out[0], out[1]], [ref_re, ref_im], B.ulp_bound("dropout", device),
               args=[cplx("z", z)], where=[kept, kept],
               call=f"C.dropout(C.ComplexTensor(torch.from_numpy(z)), {p!r})")


def _scaled_reference(z: np.ndarray, p: float):
    """Exact z / (1 - p) with p taken as the given float."""
    import mpmath

    with mpmath.workdps(R.DPS):
        k = 1 / (1 - mpmath.mpf(p))
        re = [R.mpf16(v) * k for v in z[0].ravel()]
        im = [R.mpf16(v) * k for v in z[1].ravel()]
    return R.Exact.from_mpf(re, z.shape[1:]), R.Exact.from_mpf(im, z.shape[1:])


@given(z=vs.complex_arrays(vs.shapes(min_dims=1)), p=st.sampled_from([0.1, 0.5, 1 / 3]),
       seed=st.integers(0, 2**31 - 1))
def test_dropout_independent_masks_round_once(device, z, p, seed):
    """mode="independent": each part is 0 or its own z_part / (1 - p) within 0.5 + 3 * 2**-12 ULP."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = planes(C.dropout(ct(z, device), p, training=True, generator=g, mode="independent"))
    kept = [(out[k] != 0) | (z[k] == 0) for k in range(2)]
    if not (kept[0].any() or kept[1].any()):
        return
    ref_re, ref_im = _scaled_reference(z, p)
    check_ulps("dropout", device, [out[0], out[1]], [ref_re, ref_im], B.ulp_bound("dropout", device),
               args=[cplx("z", z)], where=kept,
               call=f"C.dropout(C.ComplexTensor(torch.from_numpy(z)), {p!r}, mode='independent')")


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_independent_rate(device, p):
    """Each part drops a fraction p and both parts p**2 of 20,000 entries (within 5 binomial sd)."""
    n = 20_000
    z = C.ComplexTensor(torch.ones(2, n, dtype=torch.float16, device=device))
    g = torch.Generator(device=device).manual_seed(1234)
    out = C.dropout(z, p, generator=g, mode="independent").planes
    for frac, want in ((out[0] == 0, p), (out[1] == 0, p), ((out[0] == 0) & (out[1] == 0), p * p)):
        got = float(frac.float().mean())
        assert abs(got - want) <= 5 * math.sqrt(want * (1 - want) / n), (got, want)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_rate(device, p):
    """The dropped fraction of 20,000 entries is within 5 binomial standard deviations of p."""
    n = 20_000
    z = C.ComplexTensor(torch.ones(2, n, dtype=torch.float16, device=device))
    g = torch.Generator(device=device).manual_seed(1234)
    out = C.dropout(z, p, generator=g).planes
    frac = float(((out[0] == 0) & (out[1] == 0)).float().mean())
    assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n)


# -------------------------------------------------------------------- embedding
@st.composite
def embedding_case(draw):
    vocab, d = draw(st.integers(1, 12)), draw(D_SIZES)
    real_table = draw(st.booleans())
    if real_table:  # one real table: the complex case with a zero imaginary plane
        w = np.stack([draw(vs.real_arrays((vocab, d), band="mixed")), np.zeros((vocab, d), np.float16)])
    else:
        w = draw(vs.complex_arrays((vocab, d), band="mixed"))
    ids = np.array(draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=10)))
    pos = draw(st.one_of(st.none(), vs.real_arrays((len(ids), d), band="unit")))
    phase = draw(st.one_of(st.none(), st.floats(-7.0, 7.0, allow_nan=False)))
    return w, ids, pos, phase, real_table


@given(case=embedding_case())
def test_embedding_accuracy(device, case):
    """Lookup without position/phase is exact; with them one fp32 evaluation rounded once (mixed bound); a real
    table (tokens on the real axis) under the same bound as the complex table with a zero imaginary plane."""
    w, ids, pos, phase, real_table = case
    table = tensor(w[0], device) if real_table else ct(w, device)
    out = planes(C.embedding(torch.from_numpy(ids).to(device), table,
                             None if pos is None else tensor(pos, device), phase))
    re, im, stats = R.embedding(w, ids, pos, phase)
    e_re, e_im = B.embedding_abs(stats, re.hi, im.hi, pos is not None, phase is not None)
    bound = [B.in_ulps(B.mixed(re.hi, e_re), re.hi), B.in_ulps(B.mixed(im.hi, e_im), im.hi)]
    rows = w[:, ids]
    args = [cplx("w_row", rows)] + ([] if pos is None else [real("pos", pos)])
    check_ulps("embedding", device, [out[0], out[1]], [re, im], bound, args=args,
               call=f"C.embedding(torch.zeros(1, dtype=torch.long), "
                    f"{'torch.from_numpy(w_row[0])' if real_table else 'C.ComplexTensor(torch.from_numpy(w_row))'}, "
                    f"{'None' if pos is None else 'torch.from_numpy(pos)'}, {phase!r})")
    if pos is None and phase is None:
        assert np.array_equal(out.view(np.uint16), rows.view(np.uint16))

"""Finiteness and the non-finite contract (muse/complex/ops.py, docs/numerics.md "Non-finite contract").

1. Finite inputs whose exact result has every component <= 65504 in magnitude give finite
   outputs (no intermediate overflow: fp32 compute, |z| without squaring in fp16, scaled div).
2. A NaN in any input an output depends on gives a NaN in at least one of its components.
3. An inf in such an input gives a non-finite output, except the IEEE special cases the
   formulas themselves produce (listed per op in ``allowed``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import muse.complex as C
from verification import reference as R
from verification import strategies as vs
from verification.harness import ct, host, impl_label, planes, run, tensor
from verification.record import record_property

MAX = vs.MAX_F16


def _within(*exact: R.Exact) -> np.ndarray:
    """Elements whose exact components are all finite and <= 65504 in magnitude."""
    ok = np.ones(exact[0].shape, dtype=bool)
    for e in exact:
        ok &= np.isfinite(e.hi) & (np.abs(e.hi) <= MAX)
    return ok


def _assert_finite_where(name: str, device: str, out: list[np.ndarray], required: np.ndarray) -> None:
    finite = np.ones(required.shape, dtype=bool)
    for o in out:
        finite &= np.isfinite(np.asarray(o, dtype=np.float64))
    bad = required & ~finite
    record_property(f"finite_in_finite_out:{name}", device, not bad.any(), cases=int(required.sum()),
                    max_nonfinite=int(bad.sum()))
    assert not bad.any(), f"{name}: {int(bad.sum())} out of {int(required.sum())} in-range results are not finite"


ELEMENTWISE = {
    "add": (C.add, R.add), "sub": (C.sub, R.sub), "mul": (C.mul, R.mul), "div": (C.div, R.div),
}


@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
@given(pair=vs.complex_pairs(band="full"))
@example(pair=(np.array([[1.0], [0.0]], dtype=np.float16), np.array([[65504.0], [65504.0]], dtype=np.float16)))
def test_binary_finite_in_range(device, op, pair):
    fn, ref = ELEMENTWISE[op]
    a, b = pair
    out = planes(fn(ct(a, device), ct(b, device)))
    required = _within(*ref(a, b))
    if op == "div":
        required &= np.broadcast_to((b != 0).any(axis=0), required.shape)
    _assert_finite_where(op, device, [out[0], out[1]], required)


@given(z=vs.complex_arrays(band="full"))
@example(z=np.array([[300.0, 65504.0, 255.875], [400.0, 0.0, 255.875]], dtype=np.float16))
def test_unary_finite_in_range(device, z):
    """abs (no fp16 squaring: |300 + 400i| = 500), abs2, exp, angle."""
    w = ct(z, device)
    _assert_finite_where("abs", device, [host(C.abs(w))], _within(R.abs_(z)))
    _assert_finite_where("abs2", device, [host(C.abs2(w))], _within(R.abs2(z)))
    _assert_finite_where("angle", device, [host(C.angle(w))], np.ones(z.shape[1:], dtype=bool))
    out = planes(C.exp(w))
    _assert_finite_where("exp", device, [out[0], out[1]], _within(*R.exp(z)))


@given(a=vs.complex_arrays(st.tuples(st.integers(1, 4), st.integers(1, 40)), band="full"), data=st.data())
def test_matmul_and_reductions_finite_in_range(device, a, data):
    """fp32 accumulation cannot overflow on fp16 data; only the final rounding may reach inf."""
    b = data.draw(vs.complex_arrays((a.shape[2], data.draw(st.integers(1, 4))), band="full"))
    out = planes(C.matmul(ct(a, device), ct(b, device)))
    re, im, _ = R.matmul(a, b)
    _assert_finite_where("matmul", device, [out[0], out[1]], _within(re, im))
    out = planes(C.sum(ct(a, device), 1))
    re, im, _ = R.reduce_sum(a, 1)
    _assert_finite_where("sum", device, [out[0], out[1]], _within(re, im))


@given(z=vs.complex_arrays(st.tuples(st.integers(1, 3), st.integers(1, 24)), band="full"),
       b=st.floats(-MAX, MAX, width=16))
def test_layers_finite_in_range(device, impl, z, b):
    out = planes(run(impl, C.layer_norm, ct(z, device)))
    _assert_finite_where("layer_norm", impl_label(device, impl), [out[0], out[1]], _within(*R.layer_norm(z)[:2]))
    bias = np.array(b, dtype=np.float16)
    out = planes(run(impl, C.modrelu, ct(z, device), tensor(bias, device)))
    _assert_finite_where("modrelu", impl_label(device, impl), [out[0], out[1]], _within(*R.modrelu(z, bias)[:2]))


# ------------------------------------------------------------ non-finite contract
def _bad(*arrays: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """(any nan, any inf) among the given input arrays, broadcast to the output shape."""
    nan = np.zeros(shape, dtype=bool)
    inf = np.zeros(shape, dtype=bool)
    for a in arrays:
        nan |= np.broadcast_to(np.isnan(a), shape)
        inf |= np.broadcast_to(np.isinf(a), shape)
    return nan, inf


def _assert_contract(name: str, device: str, out: list[np.ndarray], nan_in: np.ndarray, inf_in: np.ndarray,
                     allowed: np.ndarray | None = None, must_be_nonfinite: np.ndarray | None = None) -> None:
    """nan_in -> some nan out; inf_in (no nan) -> not all finite, except where ``allowed``."""
    out = [np.asarray(o, dtype=np.float64) for o in out]
    out_nan = np.zeros(nan_in.shape, dtype=bool)
    out_finite = np.ones(nan_in.shape, dtype=bool)
    for o in out:
        out_nan |= np.isnan(o)
        out_finite &= np.isfinite(o)
    allowed = np.zeros(nan_in.shape, dtype=bool) if allowed is None else allowed
    nan_lost = nan_in & ~out_nan & ~allowed
    inf_lost = inf_in & ~nan_in & out_finite & ~allowed
    forced = np.zeros(nan_in.shape, dtype=bool) if must_be_nonfinite is None else must_be_nonfinite & out_finite
    ok = not (nan_lost.any() or inf_lost.any() or forced.any())
    record_property(f"nonfinite_contract:{name}", device, ok, nan_cases=int(nan_in.sum()),
                    inf_cases=int((inf_in & ~nan_in).sum()), max_violations=int(nan_lost.sum() + inf_lost.sum()))
    assert not nan_lost.any(), f"{name}: nan input became a nan-free output at {np.argwhere(nan_lost)[:5].tolist()}"
    assert not inf_lost.any(), f"{name}: inf input became a finite output at {np.argwhere(inf_lost)[:5].tolist()}"
    assert not forced.any(), f"{name}: finite output where the contract requires non-finite at {np.argwhere(forced)[:5].tolist()}"


@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
@given(pair=vs.complex_pairs(band="nonfinite"))
def test_binary_contract(device, op, pair):
    """add/sub/mul/div: nan and inf never vanish; division by 0 is never finite."""
    a, b = pair
    out = planes(ELEMENTWISE[op][0](ct(a, device), ct(b, device)))
    shape = out.shape[1:]
    nan_in, inf_in = _bad(a[0], a[1], b[0], b[1], shape=shape)
    zero_div = np.broadcast_to((b == 0).all(axis=0), shape) if op == "div" else None
    _assert_contract(op, device, [out[0], out[1]], nan_in, inf_in, must_be_nonfinite=zero_div)


@given(pair=st.tuples(vs.complex_arrays((5,), band="nonfinite"), vs.real_arrays((5,), band="nonfinite")))
def test_div_by_real_tensor_contract(device, pair):
    """Real divisor: IEEE x / inf = 0 is the one allowed finite result from an inf."""
    a, x = pair
    out = planes(C.div(ct(a, device), tensor(x, device)))
    nan_in, inf_in = _bad(a[0], a[1], x, shape=(5,))
    allowed = np.isinf(x) & np.isfinite(a).all(axis=0)
    _assert_contract("div_real", device, [out[0], out[1]], nan_in, inf_in, allowed=allowed)


@given(z=vs.complex_arrays(band="nonfinite"))
@example(z=np.array([[-math.inf, -math.inf, math.inf, math.nan, 0.0], [1.0, math.inf, 0.0, 0.0, math.nan]],
                    dtype=np.float16))
def test_unary_contract(device, z):
    """abs, abs2, exp; angle may be finite for inf inputs (atan2's IEEE cases); exp(-inf + iy) = +-0."""
    w = ct(z, device)
    shape = z.shape[1:]
    nan_in, inf_in = _bad(z[0], z[1], shape=shape)
    _assert_contract("abs", device, [host(C.abs(w))], nan_in, inf_in)
    _assert_contract("abs2", device, [host(C.abs2(w))], nan_in, inf_in)
    _assert_contract("angle", device, [host(C.angle(w))], nan_in, inf_in, allowed=inf_in & ~nan_in)
    out = planes(C.exp(w))
    exp_zero = (z[0] == -np.inf) & np.isfinite(z[1])
    _assert_contract("exp", device, [out[0], out[1]], nan_in, inf_in, allowed=exp_zero)
    assert np.all(out[:, exp_zero] == 0)


@given(z=vs.complex_arrays(st.tuples(st.integers(1, 3), st.integers(1, 6)), band="nonfinite"), data=st.data())
def test_reduction_and_matmul_contract(device, z, data):
    """sum over a row and matmul: any nan/inf among the contributing entries shows in the result."""
    row_nan, row_inf = np.isnan(z).any(axis=(0, 2)), np.isinf(z).any(axis=(0, 2))
    out = planes(C.sum(ct(z, device), 1))
    _assert_contract("sum", device, [out[0], out[1]], row_nan, row_inf)
    b = data.draw(vs.complex_arrays((z.shape[2], 2), band="nonfinite"))
    out = planes(C.matmul(ct(z, device), ct(b, device)))
    col_nan, col_inf = np.isnan(b).any(axis=(0, 1)), np.isinf(b).any(axis=(0, 1))
    _assert_contract("matmul", device, [out[0], out[1]], row_nan[:, None] | col_nan[None, :],
                     row_inf[:, None] | col_inf[None, :])


@given(z=vs.complex_arrays(st.tuples(st.integers(1, 3), st.integers(1, 6)), band="nonfinite"), data=st.data())
def test_layer_norm_contract(device, impl, z, data):
    """A nan/inf anywhere in a row, or in weight[k]/bias[k], shows in the row / column k."""
    d = z.shape[2]
    w = data.draw(vs.real_arrays((d,), band="nonfinite"))
    bias = data.draw(vs.real_arrays((d,), band="nonfinite"))
    out = planes(run(impl, C.layer_norm, ct(z, device), tensor(w, device), tensor(bias, device)))
    row_nan = np.isnan(z).any(axis=(0, 2))[:, None]
    row_inf = np.isinf(z).any(axis=(0, 2))[:, None]
    nan_in = row_nan | np.isnan(w)[None, :] | np.isnan(bias)[None, :]
    inf_in = row_inf | np.isinf(w)[None, :] | np.isinf(bias)[None, :]
    _assert_contract("layer_norm", impl_label(device, impl), [out[0], out[1]], nan_in, inf_in)


def _modrelu_contract(device: str, impl: str, z: np.ndarray, bias: np.ndarray) -> None:
    out = planes(run(impl, C.modrelu, ct(z, device), tensor(bias, device)))
    shape = out.shape[1:]
    nan_in, inf_in = _bad(z[0], z[1], bias, shape=shape)
    zero = (z[0] == 0) & (z[1] == 0)
    allowed = zero | np.broadcast_to(bias == -np.inf, shape) & np.isfinite(z).all(axis=0)
    _assert_contract("modrelu", impl_label(device, impl), [out[0], out[1]], nan_in, inf_in, allowed=allowed)


@given(z=vs.complex_arrays(st.tuples(st.integers(1, 3), st.integers(1, 6)), band="nonfinite"), data=st.data())
def test_modrelu_contract(device, impl, z, data):
    """modReLU with non-nan biases: the allowed finite results from inf are modrelu(0) = 0 (any b)
    and b = -inf (ReLU(-inf) = 0).  Nan biases: see test_modrelu_nan_bias_is_not_silent."""
    bias = data.draw(vs.real_arrays((z.shape[2],), band="nonfinite"))
    _modrelu_contract(device, impl, z, np.where(np.isnan(bias), np.float16(1.0), bias).astype(np.float16))


def test_modrelu_contract_special_cases(device, impl):
    z = np.array([[[0.0, 3.0, 1.0, math.inf, math.nan]], [[0.0, 4.0, 1.0, 0.0, 0.0]]], dtype=np.float16)
    _modrelu_contract(device, impl, z, np.array([math.inf, -math.inf, 2.0, -1.0, 0.5], dtype=np.float16))


def test_modrelu_nan_bias_is_not_silent(device, impl):
    """Regression: a NaN bias once made '|z| + b > 0' false and returned a silent 0 + 0i."""
    z = C.ComplexTensor(torch.tensor([[3.0], [4.0]], dtype=torch.float16, device=device))
    out = run(impl, C.modrelu, z, torch.tensor(math.nan, dtype=torch.float16, device=device)).planes
    assert torch.isnan(out).any()


@given(z=vs.complex_arrays(vs.shapes(min_dims=1), band="nonfinite"), seed=st.integers(0, 2**31 - 1))
def test_dropout_contract(device, z, seed):
    """A dropped nan/inf is nan (x * 0), never a silent 0."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = planes(C.dropout(ct(z, device), 0.5, generator=g))
    nan_in, inf_in = _bad(z[0], z[1], shape=z.shape[1:])
    _assert_contract("dropout", device, [out[0], out[1]], nan_in, inf_in)


def test_mean_of_nothing_is_nan(device):
    out = C.mean(C.zeros(2, 0, device=device), 1).planes
    assert torch.isnan(out).all()

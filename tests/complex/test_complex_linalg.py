"""matmul and linear: shapes, real operands on either side, the reference value, bias, rounding."""

from __future__ import annotations

import pytest
import torch
from _helpers import assert_complex_close, assert_ct_bitwise, native

import muse.complex as C
from muse.complex import ComplexTensor


def _z(*shape, dtype=torch.float16, seed=0) -> ComplexTensor:
    return C.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _rt(*shape, dtype=torch.float16, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _ref(v) -> torch.Tensor:
    return native(v) if isinstance(v, ComplexTensor) else v.double().to(torch.complex128)


def _fp16_tol(k: int) -> dict:
    """Tolerance for a length-k fp16-input dot product rounded once to fp16 (values ~ sqrt(k))."""
    return dict(rtol=2e-3, atol=2e-3 * k**0.5)


@pytest.mark.parametrize("a_shape, b_shape", [
    ((3, 4), (4, 5)),        # matrix @ matrix
    ((4,), (4,)),            # vector dot -> 0-d
    ((4,), (4, 5)),          # vector @ matrix
    ((3, 4), (4,)),          # matrix @ vector
    ((2, 3, 4), (4, 5)),     # batched @ matrix
    ((2, 3, 4), (2, 4, 5)),  # batched @ batched
    ((4,), (2, 4, 5)),       # vector @ batched
    ((2, 1, 3, 4), (5, 4, 2)),  # broadcast batch dims
])
def test_matmul_shapes_and_values(a_shape, b_shape):
    a, b = _z(*a_shape), _z(*b_shape, seed=1)
    got = C.matmul(a, b)
    want = torch.matmul(native(a), native(b))
    assert isinstance(got, ComplexTensor) and got.dtype == torch.float16 and got.is_planar()
    assert got.shape == want.shape
    assert_complex_close(got, want, **_fp16_tol(a_shape[-1]), what=f"{a_shape} @ {b_shape}")


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("a_shape, b_shape", [((3, 4), (4, 5)), ((4,), (4, 2)), ((2, 3, 4), (4,))])
def test_matmul_with_real_operand(side, a_shape, b_shape):
    if side == "left":
        a, b = _rt(*a_shape), _z(*b_shape, seed=1)
    else:
        a, b = _z(*a_shape), _rt(*b_shape, seed=1)
    got = C.matmul(a, b)
    want = torch.matmul(_ref(a), _ref(b))
    assert isinstance(got, ComplexTensor) and got.shape == want.shape and got.is_planar()
    assert_complex_close(got, want, **_fp16_tol(a_shape[-1]), what=f"real on the {side}")


def test_matmul_operator_and_reflected_operator():
    a, b, r = _z(3, 4), _z(4, 2, seed=1), _rt(2, 3, seed=2)
    assert_ct_bitwise(a @ b, C.matmul(a, b))
    assert_ct_bitwise(r @ a, C.matmul(r, a))  # torch.Tensor.__matmul__ defers to __rmatmul__
    rt = _rt(2, 4, seed=3).T  # non-contiguous real right operand
    assert_ct_bitwise(a @ rt, C.matmul(a, rt))


def test_matmul_fp16_is_fp32_gemm_rounded_once():
    a, b = _z(8, 64), _z(64, 8, seed=1)
    assert_ct_bitwise(C.matmul(a, b), C.matmul(a.float(), b.float()).half(), "fp16 matmul")


def test_matmul_float64_is_exact_to_reference():
    a, b = _z(3, 7, dtype=torch.float64), _z(7, 2, dtype=torch.float64, seed=1)
    torch.testing.assert_close(native(C.matmul(a, b)), native(a) @ native(b), rtol=1e-13, atol=1e-13)


def test_matmul_dtype_promotion():
    assert C.matmul(_z(2, 3), _z(3, 2, dtype=torch.float32)).dtype == torch.float32
    assert C.matmul(_rt(2, 3, dtype=torch.float64), _z(3, 2)).dtype == torch.float64


def test_matmul_inner_dim_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        C.matmul(_z(3, 4), _z(5, 2))


def test_matmul_needs_a_complex_operand():
    with pytest.raises(TypeError, match="ComplexTensor"):
        C.matmul(_rt(2, 2), _rt(2, 2))


# ---------------------------------------------------------------------- linear
@pytest.mark.parametrize("x_shape", [(5,), (3, 5), (2, 3, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_complex128_reference(x_shape, with_bias):
    x, w = _z(*x_shape), _z(4, 5, seed=1)
    b = _z(4, seed=2) if with_bias else None
    got = C.linear(x, w, b)
    want = native(x) @ native(w).T
    if with_bias:
        want = want + native(b)
    assert got.shape == (*x_shape[:-1], 4) and got.dtype == torch.float16 and got.is_planar()
    assert_complex_close(got, want, **_fp16_tol(5), what="linear")


def test_linear_bias_is_added():
    x, w, b = _z(3, 5), _z(4, 5, seed=1), _z(4, seed=2)
    assert_complex_close(C.linear(x, w, b) - C.linear(x, w), native(b).expand(3, 4), rtol=0, atol=1e-2)
    zero_w = C.zeros(4, 5)
    assert_ct_bitwise(C.linear(x, zero_w, b), b.expand(3, 4).contiguous(), "x @ 0 + b")


def test_linear_fp16_is_fp32_computation_rounded_once():
    x, w, b = _z(16, 64), _z(32, 64, seed=1), _z(32, seed=2)
    assert_ct_bitwise(C.linear(x, w, b), C.linear(x.float(), w.float(), b.float()).half(), "fp16 linear")


def test_linear_equals_matmul_with_transpose():
    x, w = _z(3, 5, dtype=torch.float64), _z(4, 5, dtype=torch.float64, seed=1)
    torch.testing.assert_close(native(C.linear(x, w)), native(C.matmul(x, w.T)), rtol=1e-13, atol=1e-13)


def test_linear_float64_exact_to_reference():
    x, w, b = _z(3, 5, dtype=torch.float64), _z(4, 5, dtype=torch.float64, seed=1), _z(4, dtype=torch.float64)
    want = native(x) @ native(w).T + native(b)
    torch.testing.assert_close(native(C.linear(x, w, b)), want, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------------- precision policy helpers
def test_policy_compute_and_gemm_dtypes():
    from muse.complex import _policy

    assert _policy.compute_dtype(torch.float16) == torch.float32
    assert _policy.compute_dtype(torch.float32) == torch.float32
    assert _policy.compute_dtype(torch.float64) == torch.float64
    assert _policy.tiny(torch.float16) == 2.0**-24
    cpu = torch.device("cpu")
    assert _policy.gemm_dtype(torch.float16, cpu) == torch.float32  # CPU: upcast first
    assert _policy.gemm_dtype(torch.float16, torch.device("cuda")) == torch.float16  # cuBLAS accumulates in fp32
    assert _policy.gemm_dtype(torch.float64, torch.device("cuda")) == torch.float64


def test_policy_linear_and_matmul_round_once_under_autocast():
    from muse.complex import _policy

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g).half() for s in ((4, 32), (8, 32), (8,)))
    want = torch.nn.functional.linear(x.float(), w.float(), b.float()).half()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the policy switches autocast off for its GEMM
        got = _policy.gemm_linear(x, w, b)
        got_mm = _policy.gemm_matmul(x, w.T, torch.float16)
    assert got.dtype == torch.float16 and torch.equal(got, want)
    assert torch.equal(got_mm, (x.float() @ w.float().T).half())

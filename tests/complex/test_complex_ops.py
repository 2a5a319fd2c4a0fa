"""Functional ops of muse.complex: arithmetic, special values, reductions, joins, interop, constructors."""

from __future__ import annotations

import cmath
import math

import pytest
import torch
from _helpers import (
    assert_bitwise_equal,
    assert_close,
    assert_complex_close,
    assert_ct_bitwise,
    bits,
    ct,
    native,
)

import muse.complex as C
from muse.complex import ComplexTensor

INF, NAN = float("inf"), float("nan")


def _z(*shape, dtype=torch.float16, seed=0) -> ComplexTensor:
    return C.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _rt(*shape, dtype=torch.float16, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


BINARY = {
    "add": (C.add, lambda a, b: a + b),
    "sub": (C.sub, lambda a, b: a - b),
    "mul": (C.mul, lambda a, b: a * b),
    "div": (C.div, lambda a, b: a / b),
}


def _as_ref(v):
    """The complex128 value of an operand (ComplexTensor, real tensor or Python number)."""
    if isinstance(v, ComplexTensor):
        return native(v)
    if isinstance(v, torch.Tensor):
        return v.double().to(torch.complex128)
    return complex(v)


# ------------------------------------------------------------------ binary arithmetic
@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("kind", [
    "complex", "real-scalar", "int-scalar", "complex-scalar", "real-tensor", "real-tensor-left",
    "scalar-left", "bcast-right", "bcast-left",
])
def test_binary_ops_match_complex128_reference(op, kind):
    fn, ref_fn = BINARY[op]
    a = _z(3, 4)
    b = {
        "complex": _z(3, 4, seed=1),
        "real-scalar": 1.75,
        "int-scalar": 3,
        "complex-scalar": -0.5 + 1.25j,
        "real-tensor": _rt(3, 4, seed=2),
        "real-tensor-left": _rt(3, 4, seed=2),
        "scalar-left": 2.5 - 1j,
        "bcast-right": _z(4, seed=3),
        "bcast-left": _z(2, 1, 1, seed=4),
    }[kind]
    x, y = (b, a) if kind in ("real-tensor-left", "scalar-left") else (a, b)
    got = fn(x, y)
    want = ref_fn(_as_ref(x), _as_ref(y))
    assert isinstance(got, ComplexTensor) and got.dtype == torch.float16
    assert got.is_planar()
    assert_complex_close(got, want, rtol=2e-3, atol=2e-3, what=f"{op}({kind})")


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_ops_float64_planes_are_exact_to_complex128(op):
    fn, ref_fn = BINARY[op]
    a, b = _z(5, dtype=torch.float64), _z(5, dtype=torch.float64, seed=1)
    got = fn(a, b)
    assert got.dtype == torch.float64
    torch.testing.assert_close(native(got), ref_fn(native(a), native(b)), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_ops_fp16_rounded_once_from_fp32(op):
    """fp16 inputs -> fp32 arithmetic -> one rounding: equal to the fp32-planes result rounded."""
    fn, _ = BINARY[op]
    a, b = _z(64), _z(64, seed=1)
    assert_ct_bitwise(fn(a, b), fn(a.float(), b.float()).half(), f"{op} fp16 vs fp32-then-round")


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("a_dtype, b_dtype, out", [
    (torch.float16, torch.float32, torch.float32),
    (torch.float32, torch.float16, torch.float32),
    (torch.float16, torch.float64, torch.float64),
    (torch.float32, torch.float32, torch.float32),
])
def test_binary_dtype_promotion(op, a_dtype, b_dtype, out):
    fn, _ = BINARY[op]
    a, b = _z(3, dtype=a_dtype), _z(3, dtype=b_dtype, seed=1)
    assert fn(a, b).dtype == out
    assert fn(a, _rt(3, dtype=b_dtype)).dtype == out  # real tensor operand promotes too


def test_python_numbers_do_not_promote():
    z = _z(3)
    assert (z + 1e-3).dtype == torch.float16
    assert (z * (2 + 1j)).dtype == torch.float16


def test_real_tensor_plus_real_tensor_gives_complex_with_zero_imag():
    r1, r2 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    z = C.add(r1, r2)
    assert isinstance(z, ComplexTensor)
    assert z.real.tolist() == [1.5, 1.0] and z.imag.tolist() == [0.0, 0.0]


def test_broadcast_result_shapes():
    a, b = _z(3, 1), _z(1, 4, seed=1)
    assert C.mul(a, b).shape == (3, 4)
    assert C.add(_z(4), _z(2, 3, 4, seed=1)).shape == (2, 3, 4)
    assert C.add(_z(2, 3, 4), _rt(4)).shape == (2, 3, 4)
    assert C.sub(_rt(2, 1, 4), _z(3, 1)).shape == (2, 3, 4)


def test_div_by_zero_is_not_finite():
    z = C.div(ct([1.0, 0.0, 1.0], [1.0, 0.0, 0.0]), ct([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]))
    assert not z.isfinite().any()
    assert math.isnan(z.real[1].item()) and math.isnan(z.imag[1].item())  # 0/0


def test_div_large_divisor_does_not_overflow():
    # |b|^2 = 2 * 60000^2 overflows fp16 and (barely not) fp32 scaling; the result is exact-ish.
    a, b = ct([60000.0], [60000.0]), ct([60000.0], [-60000.0])
    got = C.div(a, b)
    assert_complex_close(got, torch.tensor([1j], dtype=torch.complex128), atol=1e-3, rtol=0)


def test_nan_propagates_through_arithmetic():
    a, b = ct([NAN, 1.0], [0.0, 1.0]), ct([1.0, 2.0], [1.0, 0.5])
    for r in (a + b, a - b, a * b, a / b, b / a):
        assert not r.isfinite()[0].item() and r.isfinite()[1].item()


# ------------------------------------------------------------------ unary ops
def test_neg_exact():
    z = ct([1.0, -0.0, 65504.0], [0.0, 2.5, -1e-7])
    n = C.neg(z)
    assert_bitwise_equal(n.planes, -z.planes, "neg")


def test_conj_is_bitwise_and_keeps_signed_zero():
    z = ct([0.0, -0.0, 1.0, -2.0, 3.0], [0.0, -0.0, -0.0, 5.0, NAN])
    c = C.conj(z)
    assert_bitwise_equal(c.real, z.real, "conj real part")
    assert_bitwise_equal(c.imag, -z.imag, "conj imag part")
    # explicit: imag +0 -> -0 and -0 -> +0 (int16 bit patterns)
    assert bits(c.imag)[:3].tolist() == [bits(torch.tensor(-0.0, dtype=torch.float16)).item(), 0, 0]
    assert bits(c.real)[1].item() == bits(torch.tensor(-0.0, dtype=torch.float16)).item()


def test_abs_does_not_overflow_in_fp16():
    z = ct([300.0, 3000.0, 65504.0, 0.0, -3.0], [400.0, 4000.0, 65504.0, 0.0, 4.0])
    a = C.abs(z)
    assert a.dtype == torch.float16
    assert a[0].item() == 500.0  # squares overflow fp16 but not the fp32 computation
    assert a[1].item() == 5000.0  # squares 9e6, 1.6e7 exceed fp16 max
    assert math.isinf(a[2].item())  # exact value 92634 exceeds fp16 max
    assert a[3].item() == 0.0 and a[4].item() == 5.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_abs_wide_dtypes(dtype):
    big = torch.finfo(dtype).max / 2
    z = ct([3.0, big], [4.0, big], dtype=dtype)
    a = C.abs(z)
    assert a.dtype == dtype and a[0].item() == 5.0 and math.isfinite(a[1].item())


def test_abs2():
    z = ct([3.0, 300.0, 0.5], [4.0, 400.0, -0.5])
    a2 = C.abs2(z)
    assert a2.dtype == torch.float16
    assert a2[0].item() == 25.0 and a2[2].item() == 0.5
    assert math.isinf(a2[1].item())  # 250000 exceeds fp16: inf exactly then
    assert C.abs2(z.float())[1].item() == 250000.0


def test_angle_quadrants_and_signed_zero():
    z = ct([1.0, 0.0, -1.0, -1.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, -0.0, -1.0, 0.0, 1.0], dtype=torch.float32)
    want = [0.0, math.pi / 2, math.pi, -math.pi, -3 * math.pi / 4, 0.0, math.pi / 4]
    assert_close(C.angle(z), torch.tensor(want), rtol=1e-6, atol=1e-7, what="angle")
    assert C.angle(ct([1.0])).dtype == torch.float16


def test_exp_matches_reference_and_keeps_zero_imag_on_overflow():
    z = _z(20, dtype=torch.float32)
    assert_complex_close(C.exp(z), torch.exp(native(z)), rtol=1e-6, atol=1e-6, what="exp")
    big = C.exp(ct([20.0, -30.0], [0.0, 0.0]))  # e^20 overflows fp16
    assert math.isinf(big.real[0].item()) and big.imag[0].item() == 0.0 and not math.isnan(big.imag[0].item())
    assert big.real[1].item() == 0.0 and big.imag[1].item() == 0.0
    r = C.exp(ct([0.0], [math.pi / 2], dtype=torch.float64))
    assert abs(r.real.item()) < 1e-15 and r.imag.item() == 1.0


def test_polar_constructs_magnitude_phase():
    mag = torch.tensor([1.0, 2.0, 0.5])
    ph = torch.tensor([0.0, math.pi / 2, -math.pi / 4])
    z = C.polar(mag, ph)
    want = torch.tensor([cmath.rect(m, p) for m, p in zip(mag.tolist(), ph.tolist(), strict=True)])
    assert z.dtype == torch.float32
    assert_complex_close(z, want, rtol=1e-6, atol=1e-6, what="polar")
    # broadcasting and dtype promotion
    zz = C.polar(torch.ones(3, 1, dtype=torch.float16), torch.zeros(4, dtype=torch.float64))
    assert zz.shape == (3, 4) and zz.dtype == torch.float64
    # round trip with abs/angle
    w = _z(10, dtype=torch.float64)
    assert_complex_close(C.polar(C.abs(w), C.angle(w)), native(w), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ reductions
@pytest.mark.parametrize("fn_name", ["sum", "mean"])
@pytest.mark.parametrize("dim, keepdim", [
    (None, False), (None, True), (0, False), (1, True), (-1, False), ((0, 2), False), ((0, -1), True),
])
def test_sum_mean_match_reference(fn_name, dim, keepdim):
    fn = getattr(C, fn_name)
    z = _z(3, 4, 5, dtype=torch.float32)
    ref = native(z)
    rfn = getattr(torch, fn_name)
    want = rfn(ref) if dim is None and not keepdim else rfn(ref, dim=dim, keepdim=keepdim)
    got = fn(z, dim, keepdim)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert_complex_close(got, want, rtol=1e-5, atol=1e-5, what=f"{fn_name}(dim={dim}, keepdim={keepdim})")


def test_sum_fp16_accumulates_in_fp32():
    # 4096 ones: an fp16 running sum would stall at 2048; fp32 accumulation gives 4096 exactly
    z = ct(torch.ones(4096), torch.full((4096,), 0.5))
    s = C.sum(z)
    assert s.dtype == torch.float16 and s.real.item() == 4096.0 and s.imag.item() == 2048.0
    m = C.mean(z)
    assert m.real.item() == 1.0 and m.imag.item() == 0.5


def test_sum_of_zero_dim():
    z = ct(2.0, 3.0)
    assert native(C.sum(z)).item() == 2 + 3j
    assert native(C.mean(z)).item() == 2 + 3j


# ------------------------------------------------------------------ cat / stack
def test_cat_and_stack_match_native():
    a, b = _z(2, 3), _z(2, 3, seed=1)
    for dim in (0, 1, -1):
        assert torch.equal(native(C.cat([a, b], dim)), torch.cat([native(a), native(b)], dim))
    for dim in (0, 1, 2, -1):
        assert torch.equal(native(C.stack((a, b), dim)), torch.stack([native(a), native(b)], dim))
    s = C.stack([a, b])
    assert s.shape == (2, 2, 3) and s.is_planar()


def test_cat_keeps_autograd():
    a = _z(2, dtype=torch.float64).requires_grad_()
    b = _z(3, dtype=torch.float64, seed=1).requires_grad_()
    C.abs2(C.cat([a, b])).sum().backward()
    torch.testing.assert_close(native(a.grad), 2 * native(a.detach()))
    torch.testing.assert_close(native(b.grad), 2 * native(b.detach()))


def test_cat_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="tensors"):
        C.cat([_z(2), _z(2, dtype=torch.float32)])


# ------------------------------------------------------------------ interop
def test_from_complex_to_complex_round_trip_is_bitwise():
    special = ct([0.0, -0.0, 65504.0, -65504.0, 6e-8, 1.0, INF, -INF],
                 [-0.0, 0.0, 1e-4, -6e-8, 1024.0, -1.0, -INF, 3.0])
    for z in (_z(4, 5), special):
        c = C.to_complex(z)
        assert c.dtype == torch.complex64
        back = C.from_complex(c)
        assert back.dtype == torch.float16
        assert_ct_bitwise(back, z, "fp16 -> complex64 -> fp16")
    nan = C.from_complex(C.to_complex(ct([NAN], [1.0])))
    assert math.isnan(nan.real.item()) and nan.imag.item() == 1.0


def test_to_complex_dtypes():
    z = _z(3)
    assert C.to_complex(z.double()).dtype == torch.complex128
    assert C.to_complex(z.float()).dtype == torch.complex64
    c128 = C.to_complex(z, torch.complex128)
    assert c128.dtype == torch.complex128 and torch.equal(c128, native(z))
    with pytest.raises(TypeError, match="dtype"):
        C.to_complex(z, torch.float32)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_complex32_native_interop():
    z = _z(6)
    c32 = C.to_complex(z, torch.complex32)
    assert c32.dtype == torch.complex32
    back = C.from_complex(c32)
    assert back.dtype == torch.float16
    assert_ct_bitwise(back, z, "fp16 planar -> complex32 -> planar")
    assert_ct_bitwise(C.from_complex(c32, torch.complex32), z)


def test_from_complex_dtype_argument():
    c = torch.tensor([1 + 2j, -3.5 + 0.25j], dtype=torch.complex128)
    for arg, plane in ((torch.complex64, torch.float32), (torch.float64, torch.float64),
                       (torch.complex32, torch.float16)):
        z = C.from_complex(c, arg)
        assert z.dtype == plane and torch.equal(native(z), c)


def test_from_real():
    x = torch.tensor([1.0, -2.0, 0.5])
    z = C.from_real(x)
    assert z.dtype == torch.float32 and z.real.tolist() == x.tolist() and z.imag.tolist() == [0.0] * 3
    assert C.from_real(x, torch.float16).dtype == torch.float16
    assert C.from_real(x, torch.complex128).dtype == torch.float64


def test_zeros():
    z = C.zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype == torch.float16 and z.planes.shape == (2, 2, 3)
    assert not z.planes.any()
    assert C.zeros((4,), dtype=torch.complex64).dtype == torch.float32
    assert C.zeros(1, device="meta").device.type == "meta"


def test_randn_statistics_and_reproducibility():
    z = C.randn(100_000, generator=torch.Generator().manual_seed(0))
    assert z.dtype == torch.float16 and z.shape == (100_000,)
    e = C.abs2(z).float().mean().item()
    assert abs(e - 1.0) < 0.02, f"E|z|^2 = {e}, want 1"
    assert abs(z.real.float().var().item() - 0.5) < 0.02 and abs(z.imag.float().var().item() - 0.5) < 0.02
    a = C.randn(5, generator=torch.Generator().manual_seed(7))
    b = C.randn(5, generator=torch.Generator().manual_seed(7))
    c = C.randn(5, generator=torch.Generator().manual_seed(8))
    assert_ct_bitwise(a, b)
    assert not torch.equal(a.planes, c.planes)
    assert C.randn(2, 2, dtype=torch.complex128).dtype == torch.float64

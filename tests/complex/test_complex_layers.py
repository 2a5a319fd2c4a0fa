"""Functional layers: layer_norm, modrelu, dropout, embedding (forward semantics)."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import (
    assert_bitwise_equal,
    assert_close,
    assert_complex_close,
    assert_ct_bitwise,
    ct,
    native,
)

import muse.complex as C
from muse.complex import ComplexTensor


def _z(*shape, dtype=torch.float16, seed=0) -> ComplexTensor:
    return C.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _ln_ref(z: torch.Tensor, w=None, b=None, eps=1e-5) -> torch.Tensor:
    """Complex LayerNorm in complex128: complex mean, E|z - mu|^2, real weight, bias on the real part."""
    mu = z.mean(-1, keepdim=True)
    c = z - mu
    var = (c.abs() ** 2).mean(-1, keepdim=True)
    n = c / torch.sqrt(var + eps)
    if w is not None:
        n = n * w.double()
    if b is not None:
        n = n + b.double()
    return n


def _modrelu_ref(z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r = z.abs()
    return torch.where(r > 0, torch.relu(r + b.double()) * z / torch.where(r > 0, r, 1.0), 0)


# ------------------------------------------------------------------ layer_norm
def test_layer_norm_unit_statistics_per_sample():
    z = C.add(C.mul(_z(4, 6, 256), 3.0 - 2.0j), 1.5 + 0.5j)
    y = C.layer_norm(z, torch.ones(256, dtype=torch.float16), torch.zeros(256, dtype=torch.float16))
    assert y.dtype == torch.float16 and y.shape == z.shape and y.is_planar()
    mean = native(y).mean(-1)
    power = (native(y).abs() ** 2).mean(-1)
    assert mean.abs().max().item() < 1e-3, f"per-sample complex mean not ~0: {mean.abs().max()}"
    assert (power - 1).abs().max().item() < 5e-3, f"per-sample E|z|^2 not ~1: {power}"


def test_layer_norm_matches_complex128_reference():
    z = _z(3, 16, dtype=torch.float32)
    w = torch.rand(16) + 0.5
    b = torch.randn(16)
    assert_complex_close(C.layer_norm(z, w, b), _ln_ref(native(z), w, b), rtol=1e-5, atol=1e-5)
    assert_complex_close(C.layer_norm(z), _ln_ref(native(z)), rtol=1e-5, atol=1e-5, what="no affine")
    z16 = z.half()
    assert_complex_close(C.layer_norm(z16, w.half(), b.half()), _ln_ref(native(z16), w.half(), b.half()),
                         rtol=2e-3, atol=2e-3, what="fp16")


def test_layer_norm_bias_shifts_only_the_real_part():
    z = _z(2, 8)
    base = C.layer_norm(z, None, torch.zeros(8, dtype=torch.float16))
    shifted = C.layer_norm(z, None, torch.full((8,), 0.5, dtype=torch.float16))
    assert_bitwise_equal(shifted.imag, base.imag, "imag part with and without bias")
    assert_close(shifted.real - base.real, torch.full((2, 8), 0.5), rtol=0, atol=2e-3, what="real shift")


def test_layer_norm_weight_scales_both_parts():
    z = _z(2, 8, dtype=torch.float64)
    base = C.layer_norm(z)
    scaled = C.layer_norm(z, torch.full((8,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(native(scaled), 2 * native(base))


def test_layer_norm_no_cross_sample_coupling():
    z = _z(2, 3, 32)
    y = C.layer_norm(z)
    z2 = z.clone()
    z2.real[0] = z2.real[0] * 7 + 3  # change every sample in batch row 0
    z2.imag[0, 1] = -100.0
    y2 = C.layer_norm(z2)
    assert_bitwise_equal(y2.planes[:, 1], y.planes[:, 1], "batch row 1 after changing row 0")
    assert not torch.equal(y2.planes[:, 0], y.planes[:, 0])
    # rows within one batch entry are independent too
    z3 = z.clone()
    z3.real[1, 0] = 50.0
    assert_bitwise_equal(C.layer_norm(z3).planes[:, 1, 1:], y.planes[:, 1, 1:], "other samples of row 1")


def test_layer_norm_eps_matters_for_constant_input():
    z = ct(torch.full((2, 4), 3.0), torch.full((2, 4), -1.0), dtype=torch.float32)
    y = C.layer_norm(z)  # c = 0: output 0, no NaN thanks to eps
    assert torch.equal(y.planes, torch.zeros_like(y.planes))


# ------------------------------------------------------------------ modrelu
def test_modrelu_keeps_phase_and_shifts_magnitude():
    z = _z(64, dtype=torch.float64)
    b = torch.full((64,), 0.1, dtype=torch.float64)
    y = C.modrelu(z, b)
    torch.testing.assert_close(C.angle(y), C.angle(z))
    torch.testing.assert_close(C.abs(y), C.abs(z) + 0.1)
    torch.testing.assert_close(native(y), _modrelu_ref(native(z), b))


def test_modrelu_zero_bias_is_identity():
    z = _z(5, 7)
    assert_ct_bitwise(C.modrelu(z, torch.zeros(7, dtype=torch.float16)), z, "modrelu(z, 0)")


def test_modrelu_negative_bias_zeroes_small_magnitudes():
    z = ct([0.3, 3.0, 0.0, -2.0], [0.4, 4.0, 0.1, 0.0], dtype=torch.float32)  # |z| = 0.5, 5, 0.1, 2
    y = C.modrelu(z, torch.tensor(-1.0))
    assert y.real.tolist()[0] == 0.0 and y.imag.tolist()[0] == 0.0
    assert y.real[2].item() == 0.0 and y.imag[2].item() == 0.0
    assert_complex_close(y[1], torch.tensor(0.8 * (3 + 4j)), rtol=1e-6, atol=1e-6)
    assert_complex_close(y[3], torch.tensor(-1.0 + 0j), rtol=1e-6, atol=1e-6)


def test_modrelu_zero_input_gives_zero_output_and_zero_grads():
    z = ct([0.0, 1.0], [0.0, 1.0], dtype=torch.float64).requires_grad_()
    b = torch.tensor([0.5, 0.5], dtype=torch.float64, requires_grad=True)
    y = C.modrelu(z, b)
    assert y.real[0].item() == 0.0 and y.imag[0].item() == 0.0
    assert not torch.isnan(y.planes).any()
    y.planes[:, 0].sum().backward()
    assert torch.equal(z.grad.planes[:, 0], torch.zeros(2, dtype=torch.float64))
    assert b.grad[0].item() == 0.0
    assert torch.isfinite(z.grad.planes).all()


def test_modrelu_fp16_tiny_and_huge_inputs_are_finite():
    z = ct([6e-8, 65504.0, 1e-4], [0.0, 0.0, 1e-4])
    y = C.modrelu(z, torch.zeros((), dtype=torch.float16))
    assert_ct_bitwise(y, z, "tiny/huge with zero bias")


def test_modrelu_scalar_bias_broadcasts():
    z = _z(3, 4, dtype=torch.float64)
    torch.testing.assert_close(native(C.modrelu(z, torch.tensor(0.2, dtype=torch.float64))),
                               native(C.modrelu(z, torch.full((4,), 0.2, dtype=torch.float64))))


# ------------------------------------------------------------------ dropout
def test_dropout_one_mask_for_both_parts_and_scaling():
    z = C.add(_z(200, 50, dtype=torch.float64), 3.0 + 3.0j)  # no zero parts
    p = 0.3
    y = C.dropout(z, p, training=True, generator=torch.Generator().manual_seed(0))
    dropped_re, dropped_im = y.real == 0, y.imag == 0
    assert torch.equal(dropped_re, dropped_im), "real and imag parts dropped with different masks"
    rate = dropped_re.double().mean().item()
    assert abs(rate - p) < 0.02, f"drop rate {rate}, want {p}"
    kept = ~dropped_re
    torch.testing.assert_close(y.real[kept], z.real[kept] / (1 - p))
    torch.testing.assert_close(y.imag[kept], z.imag[kept] / (1 - p))


def test_dropout_identity_when_p0_or_eval():
    z = _z(4, 4)
    assert C.dropout(z, 0.0) is z
    assert C.dropout(z, 0.5, training=False) is z


def test_dropout_generator_reproducible():
    z = _z(32, 32)
    a = C.dropout(z, 0.5, generator=torch.Generator().manual_seed(3))
    b = C.dropout(z, 0.5, generator=torch.Generator().manual_seed(3))
    c = C.dropout(z, 0.5, generator=torch.Generator().manual_seed(4))
    assert_ct_bitwise(a, b, "same generator seed")
    assert not torch.equal(a.planes, c.planes)
    assert a.dtype == torch.float16 and a.is_planar()


def test_dropout_fp16_scaling_rounded_once():
    z = _z(1000)
    y = C.dropout(z, 0.25, generator=torch.Generator().manual_seed(0))
    kept = y.real != 0
    want = (z.planes.float() / 0.75).half()
    assert torch.equal(y.planes[:, kept], want[:, kept])


# ------------------------------------------------------------------ embedding
def test_embedding_lookup():
    w = _z(10, 4)
    ids = torch.tensor([[1, 3, 3], [0, 9, 2]])
    e = C.embedding(ids, w)
    assert e.shape == (2, 3, 4) and e.dtype == torch.float16 and e.is_planar()
    assert torch.equal(native(e), native(w)[ids])


def test_embedding_position_added_to_real_part_only():
    w = _z(10, 4, dtype=torch.float32)
    ids = torch.tensor([[1, 3, 5]])
    pos = torch.randn(3, 4)
    e = C.embedding(ids, w, pos)
    torch.testing.assert_close(e.real, w.real[ids] + pos)
    assert torch.equal(e.imag, w.imag[ids])
    # per-batch positions of shape ids.shape + (d,)
    pos_b = torch.randn(1, 3, 4)
    torch.testing.assert_close(C.embedding(ids, w, pos_b).real, w.real[ids] + pos_b)


@pytest.mark.parametrize("phase", [0.0, math.pi / 3, -2.0])
def test_embedding_phase_rotation(phase):
    w = _z(6, 5, dtype=torch.float64)
    ids = torch.tensor([[0, 5, 2]])
    pos = torch.randn(3, 5, dtype=torch.float64)
    e = C.embedding(ids, w, pos, phase)
    want = (native(w)[ids] + pos) * complex(math.cos(phase), math.sin(phase))
    torch.testing.assert_close(native(e), want)
    torch.testing.assert_close(C.abs(e), (native(w)[ids] + pos).abs())


def test_embedding_rotation_without_position():
    w = _z(6, 5, dtype=torch.float64)
    ids = torch.tensor([[4]])
    e = C.embedding(ids, w, None, math.pi / 2)
    torch.testing.assert_close(native(e), 1j * native(w)[ids])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize(("with_position", "phase"), [(False, None), (True, None), (False, 0.7), (True, -2.5)])
def test_embedding_real_table_is_the_complex_table_with_a_zero_imaginary_plane(dtype, with_position, phase):
    """A real (vocab, d) table: the values, bit for bit, and the gradient of the complex table's real plane."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(12, 5, generator=g).to(dtype).requires_grad_()
    full = torch.stack((real.detach(), torch.zeros_like(real.detach()))).requires_grad_()
    ids = torch.tensor([[0, 11, 3, 3], [7, 7, 0, 2]])
    pos = torch.randn(4, 5, generator=g).to(dtype) if with_position else None
    e, ref = C.embedding(ids, real, pos, phase), C.embedding(ids, C.ComplexTensor(full), pos, phase)
    assert e.dtype == dtype and torch.equal(e.planes, ref.planes)
    if phase is None:
        assert torch.all(e.imag == 0)
    grad = torch.randn(e.planes.shape, generator=g).to(dtype)
    e.planes.backward(grad)
    ref.planes.backward(grad)
    assert torch.equal(real.grad, full.grad[0])


def test_embedding_refuses_a_native_complex_or_integer_table():
    ids = torch.tensor([[0, 1]])
    with pytest.raises(TypeError, match="weight is a native complex tensor"):
        C.embedding(ids, torch.zeros(3, 2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="weight must have dtype float16, float32 or float64"):
        C.embedding(ids, torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="weight must be a ComplexTensor or a real floating tensor"):
        C.embedding(ids, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="weight must be 2-D"):
        C.embedding(ids, torch.zeros(2, 3, 2))


def test_dropout_independent_mode_masks_parts_separately():
    z = C.add(_z(400, 100, dtype=torch.float64), 3.0 + 3.0j)  # no zero parts
    p = 0.5
    y = C.dropout(z, p, training=True, generator=torch.Generator().manual_seed(0), mode="independent")
    dr, di = y.real == 0, y.imag == 0
    n = dr.numel()
    sd = (0.25 / n) ** 0.5
    assert abs(dr.double().mean().item() - p) < 5 * sd and abs(di.double().mean().item() - p) < 5 * sd
    both = (dr & di).double().mean().item()  # independent masks: p**2; one shared mask: p
    assert abs(both - p * p) < 5 * (p * p * (1 - p * p) / n) ** 0.5, both
    torch.testing.assert_close(y.real[~dr], z.real[~dr] / (1 - p))
    torch.testing.assert_close(y.imag[~di], z.imag[~di] / (1 - p))


def test_dropout_mode_is_checked():
    with pytest.raises(ValueError, match="mode must be one of"):
        C.dropout(_z(3), 0.5, mode="per-part")
    with pytest.raises(TypeError, match="mode"):
        C.dropout(_z(3), 0.5, mode=None)
    assert C.DROPOUT_MODES == ("shared", "independent")

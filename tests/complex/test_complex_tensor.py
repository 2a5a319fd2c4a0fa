"""ComplexTensor: construction, storage views, planar invariant, autograd plumbing, moves, shape ops."""

from __future__ import annotations

import pytest
import torch
from _helpers import assert_bitwise_equal, assert_ct_bitwise, ct, native

import muse.complex as C
from muse.complex import ComplexTensor, plane_dtype


def _z(*shape, dtype=torch.float16, seed=0) -> ComplexTensor:
    return C.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- construction
def test_construct_from_planes_tensor_keeps_storage():
    planes = torch.randn(2, 3, 4, dtype=torch.float16)
    z = ComplexTensor(planes)
    assert z.planes is planes
    assert z.shape == torch.Size([3, 4])
    assert z.size() == torch.Size([3, 4]) and z.size(1) == 4 and z.size(-2) == 3
    assert z.ndim == 2 and z.dim() == 2 and z.numel() == 12 and len(z) == 3


def test_construct_zero_dim_logical_tensor():
    z = ComplexTensor(torch.tensor([1.0, 2.0], dtype=torch.float16))
    assert z.shape == torch.Size([]) and z.ndim == 0 and z.numel() == 1
    assert native(z).item() == 1 + 2j
    with pytest.raises(TypeError, match="0-d"):
        len(z)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_from_planes_stacks_real_then_imag(dtype):
    re = torch.arange(6, dtype=dtype).reshape(2, 3)
    im = -re
    z = ComplexTensor.from_planes(re, im)
    assert z.dtype == dtype and z.shape == (2, 3)
    assert torch.equal(z.planes[0], re) and torch.equal(z.planes[1], im)
    assert z.is_planar()


def test_plane_dtype_maps_complex_to_plane():
    assert plane_dtype(torch.complex32) == torch.float16
    assert plane_dtype(torch.complex64) == torch.float32
    assert plane_dtype(torch.complex128) == torch.float64
    for d in (torch.float16, torch.float32, torch.float64):
        assert plane_dtype(d) == d
    with pytest.raises(TypeError, match="dtype"):
        plane_dtype(torch.int32)


# ------------------------------------------------------------------ storage views
def test_real_imag_are_views_of_the_planes():
    z = ct([1.0, 2.0], [3.0, 4.0])
    assert z.real.data_ptr() == z.planes.data_ptr()
    assert z.real._base is z.planes and z.imag._base is z.planes
    z.real[0] = 10.0
    z.imag[1] = -7.0
    assert z.planes.tolist() == [[10.0, 2.0], [3.0, -7.0]]


def test_dtype_complex_dtype_device():
    for plane, cplx in ((torch.float16, torch.complex32), (torch.float32, torch.complex64),
                        (torch.float64, torch.complex128)):
        z = C.zeros(2, dtype=plane)
        assert z.dtype == plane and z.complex_dtype == cplx
    z = C.zeros(2)
    assert z.device == torch.device("cpu") and z.is_cuda is False


# ------------------------------------------------------------------ planar invariant
def test_fresh_results_are_planar():
    a, b = _z(3, 4), _z(3, 4, seed=1)
    for r in (a + b, a * b, a / b, a - b, -a, a.conj(), a.exp(), a @ b.T, a.sum(0), C.cat([a, b]),
              C.stack([a, b]), C.from_real(torch.ones(3)), C.polar(torch.ones(3), torch.zeros(3))):
        assert r.is_planar(), f"fresh result not planar: {r!r}"


@pytest.mark.parametrize("view", [
    lambda z: z.T,
    lambda z: z.transpose(0, 2),
    lambda z: z.permute(2, 0, 1),
    lambda z: z[1:, ::2],
    lambda z: z[..., 1],
    lambda z: z[:, 0].T,
    lambda z: z.unsqueeze(1),
    lambda z: z[0:1].squeeze(0),
    lambda z: z[:1].expand(5, 4, 5),
], ids=["T", "transpose", "permute", "slice", "ellipsis", "slice+T", "unsqueeze", "squeeze", "expand"])
def test_views_inside_a_plane_stay_planar(view):
    z = _z(3, 4, 5)
    v = view(z)
    assert v.planes.data_ptr() == z.planes.data_ptr() or v.planes._base is not None
    assert v.is_planar()


def test_interleaved_layout_is_not_planar():
    buf = torch.randn(3, 4, 2, dtype=torch.float16)  # [re, im, re, im, ...]
    z = ComplexTensor(buf.view(3, 4, 2).movedim(-1, 0))
    assert z.shape == (3, 4)
    assert torch.equal(z.real, buf[..., 0]) and torch.equal(z.imag, buf[..., 1])
    assert not z.is_planar()
    assert z.contiguous().is_planar()


def test_aliased_planes_are_not_planar():
    # real and imag sharing one memory block (stride 0 along the plane axis) is not planar
    z = ComplexTensor(torch.zeros(1, 3, dtype=torch.float16).expand(2, 3))
    assert not z.is_planar()


def test_empty_tensor_is_planar():
    assert C.zeros(0, 3).is_planar()


# ------------------------------------------------------------------ autograd plumbing
def test_requires_grad_grad_and_leaf():
    z = _z(3, dtype=torch.float64)
    assert not z.requires_grad
    assert z.requires_grad_() is z and z.requires_grad and z.is_leaf
    assert z.grad is None
    loss = C.abs2(z).sum()
    loss.backward()
    g = z.grad
    assert isinstance(g, ComplexTensor) and g.shape == z.shape
    # d|z|^2/dRe + i d|z|^2/dIm = 2z
    torch.testing.assert_close(native(g), 2 * native(z.detach()))
    z.requires_grad_(False)
    assert not z.requires_grad


def test_retain_grad_on_intermediate():
    z = _z(3, dtype=torch.float64).requires_grad_()
    w = (z * 2.0).retain_grad()
    assert not w.is_leaf
    C.abs2(w).sum().backward()
    torch.testing.assert_close(native(w.grad), 2 * native(w.detach()))


def test_detach_shares_storage_and_drops_grad():
    z = _z(3, dtype=torch.float32).requires_grad_()
    d = z.detach()
    assert not d.requires_grad and d.planes.data_ptr() == z.planes.data_ptr()


def test_clone_and_contiguous_copy():
    z = _z(3, 4)
    c = z.clone()
    assert c.planes.data_ptr() != z.planes.data_ptr()
    assert_ct_bitwise(c, z)
    t = z.T
    assert not t.planes.is_contiguous()
    tc = t.contiguous()
    assert tc.planes.is_contiguous()
    assert_ct_bitwise(tc, t)


def test_clone_keeps_autograd():
    z = _z(3, dtype=torch.float64).requires_grad_()
    C.abs2(z.clone()).sum().backward()
    torch.testing.assert_close(native(z.grad), 2 * native(z.detach()))


# ------------------------------------------------------------------ dtype / device moves
@pytest.mark.parametrize("arg, plane", [
    (torch.complex32, torch.float16), (torch.complex64, torch.float32), (torch.complex128, torch.float64),
    (torch.float32, torch.float32), (torch.float16, torch.float16),
])
def test_to_dtype_maps_complex_dtypes_to_planes(arg, plane):
    z = _z(3, dtype=torch.float32)
    for moved in (z.to(arg), z.to(dtype=arg), z.to("cpu", arg)):
        assert moved.dtype == plane and moved.complex_dtype == {torch.float16: torch.complex32,
                                                               torch.float32: torch.complex64,
                                                               torch.float64: torch.complex128}[plane]
        assert_bitwise_equal(moved.planes, z.planes.to(plane), "to()")


def test_half_float_double_cpu():
    z = _z(4, dtype=torch.float32)
    assert z.half().dtype == torch.float16
    assert z.half().float().dtype == torch.float32
    assert z.double().dtype == torch.float64
    assert_bitwise_equal(z.double().float().planes, z.planes)
    c = z.cpu()
    assert c.device.type == "cpu"
    assert_ct_bitwise(c, z)
    assert z.to("cpu").device.type == "cpu"


def test_to_meta_device():
    z = _z(3).to("meta")
    assert z.device.type == "meta" and z.shape == (3,)


def test_to_rejects_non_complex_non_float_dtype():
    with pytest.raises(TypeError, match="dtype"):
        _z(3).to(torch.int32)


# ------------------------------------------------------------------ shape ops
def test_view_reshape_flatten():
    z = _z(2, 3, 4)
    ref = native(z)
    assert torch.equal(native(z.view(6, 4)), ref.view(6, 4))
    assert torch.equal(native(z.view((4, 6))), ref.view(4, 6))
    assert z.view(6, 4).planes.data_ptr() == z.planes.data_ptr()
    assert torch.equal(native(z.reshape(torch.Size([24]))), ref.reshape(24))
    assert torch.equal(native(z.T.reshape(-1)), ref.permute(2, 1, 0).reshape(-1))
    assert torch.equal(native(z.flatten()), ref.flatten())
    assert torch.equal(native(z.flatten(1)), ref.flatten(1))
    assert torch.equal(native(z.flatten(0, 1)), ref.flatten(0, 1))
    assert C.zeros().flatten().shape == (1,)
    with pytest.raises(TypeError, match="shape entries"):
        z.view(2.0, 12)


def test_permute_transpose_T():
    z = _z(2, 3, 4)
    ref = native(z)
    assert torch.equal(native(z.permute(2, 0, 1)), ref.permute(2, 0, 1))
    assert torch.equal(native(z.permute((1, 2, 0))), ref.permute(1, 2, 0))
    assert torch.equal(native(z.transpose(0, -1)), ref.transpose(0, -1))
    assert torch.equal(native(z.T), ref.permute(2, 1, 0))
    with pytest.raises(ValueError, match="permute"):
        z.permute(0, 1)
    with pytest.raises(IndexError, match="dim"):
        z.transpose(0, 3)


def test_unsqueeze_squeeze_expand():
    z = _z(3, 1)
    assert z.unsqueeze(0).shape == (1, 3, 1)
    assert z.unsqueeze(-1).shape == (3, 1, 1)
    assert z.unsqueeze(2).shape == (3, 1, 1)
    assert z.squeeze().shape == (3,)
    assert z.squeeze(1).shape == (3,)
    assert z.squeeze(0).shape == (3, 1)  # size-3 dim is kept, as in torch
    e = z.expand(3, 5)
    assert e.shape == (3, 5)
    assert torch.equal(native(e), native(z).expand(3, 5))
    assert e.planes.data_ptr() == z.planes.data_ptr()


@pytest.mark.parametrize("sizes", [(2, 3, 5), (4, 1, 3, 1), (2, -1, 6)])
def test_expand_with_new_leading_dims_matches_native(sizes):
    z = _z(3, 1)
    e = z.expand(*sizes)
    want = native(z).expand(*sizes)
    assert e.shape == want.shape and torch.equal(native(e), want)
    assert e.planes.data_ptr() == z.planes.data_ptr()


@pytest.mark.parametrize("index", [
    1, -1, slice(1, None), (slice(None), 2), (Ellipsis, 0), (None, 0), (0, None, Ellipsis),
    torch.tensor([2, 0]), (slice(None), torch.tensor([3, 1, 1])),
], ids=["int", "neg-int", "slice", "slice,int", "ellipsis", "None", "int,None,ellipsis",
        "index-tensor", "slice,index-tensor"])
def test_getitem_matches_native(index):
    z = _z(3, 4)
    got = z[index]
    want = native(z)[index]
    assert isinstance(got, ComplexTensor)
    assert got.shape == want.shape
    assert torch.equal(native(got), want)


def test_getitem_bool_mask():
    z = _z(3, 4)
    mask = native(z).real > 0
    got = z[mask]
    assert got.shape == (int(mask.sum()),)
    assert torch.equal(native(got), native(z)[mask])
    rows = torch.tensor([True, False, True])
    assert torch.equal(native(z[rows]), native(z)[rows])


def test_getitem_slice_is_a_view():
    z = _z(3, 4)
    s = z[1]
    s.real[0] = 42.0
    assert z.real[1, 0].item() == 42.0


# ------------------------------------------------------------------ dunder arithmetic
def test_dunder_ops_match_functional():
    a, b = _z(3, 4), _z(3, 4, seed=1)
    assert_ct_bitwise(a + b, C.add(a, b))
    assert_ct_bitwise(a - b, C.sub(a, b))
    assert_ct_bitwise(a * b, C.mul(a, b))
    assert_ct_bitwise(a / b, C.div(a, b))
    assert_ct_bitwise(-a, C.neg(a))
    assert +a is a
    assert_ct_bitwise(a @ b.T, C.matmul(a, b.T))


@pytest.mark.parametrize("other", [2.0, 3, 1.5 - 0.5j], ids=["float", "int", "complex"])
def test_reflected_ops_with_python_numbers(other):
    z = ct([1.0, -2.0, 0.5], [0.25, 4.0, -1.0], dtype=torch.float32)
    ref = native(z)
    o = complex(other)
    for got, want in ((other + z, o + ref), (other - z, o - ref), (other * z, o * ref),
                      (other / z, o / ref), (z + other, ref + o), (z - other, ref - o),
                      (z * other, ref * o), (z / other, ref / o)):
        assert isinstance(got, ComplexTensor)
        torch.testing.assert_close(native(got), want, rtol=1e-6, atol=1e-6)


def test_reflected_ops_with_real_tensors():
    z = ct([[1.0, -2.0], [0.5, 3.0]], [[0.25, 4.0], [-1.0, 2.0]], dtype=torch.float32)
    r = torch.tensor([2.0, -0.5])
    ref, rc = native(z), r.double().to(torch.complex128)
    for got, want in ((r + z, rc + ref), (r - z, rc - ref), (r * z, rc * ref), (r / z, rc / ref),
                      (z + r, ref + rc), (z - r, ref - rc), (z * r, ref * rc), (z / r, ref / rc)):
        assert isinstance(got, ComplexTensor), f"got {type(got).__name__}"
        torch.testing.assert_close(native(got), want, rtol=1e-6, atol=1e-6)
    m = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    got = m @ z
    assert isinstance(got, ComplexTensor)
    torch.testing.assert_close(native(got), m.double().to(torch.complex128) @ ref, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ methods
def test_methods_match_functional_ops():
    z = _z(3, 4)
    assert_ct_bitwise(z.conj(), C.conj(z))
    assert_bitwise_equal(z.abs(), C.abs(z))
    assert_bitwise_equal(z.abs2(), C.abs2(z))
    assert_bitwise_equal(z.angle(), C.angle(z))
    assert_ct_bitwise(z.exp(), C.exp(z))
    assert_ct_bitwise(z.sum(), C.sum(z))
    assert_ct_bitwise(z.sum(1, keepdim=True), C.sum(z, 1, True))
    assert_ct_bitwise(z.mean(0), C.mean(z, 0))
    assert torch.equal(z.to_complex(), C.to_complex(z))


def test_isfinite_needs_both_parts_finite():
    z = ct([1.0, float("inf"), 0.0, float("nan"), 2.0], [0.0, 0.0, float("-inf"), 1.0, 3.0])
    assert z.isfinite().tolist() == [True, False, False, False, True]


def test_repr_names_shape_dtype_device_and_grad():
    z = _z(2, 3, dtype=torch.float64)
    r = repr(z)
    assert r.startswith("ComplexTensor(") and "shape=(2, 3)" in r and "complex128" in r and "cpu" in r
    assert "requires_grad" not in r
    assert "requires_grad=True" in repr(z.requires_grad_())
    assert "complex32" in repr(_z(2))


def test_hash_is_identity():
    z = _z(2)
    assert hash(z) == hash(z) and len({z, z.clone()}) == 2

"""Bad input -> a clear TypeError/ValueError whose message names the offending argument (issue 2, item 7)."""

from __future__ import annotations

import pytest
import torch

import muse.complex as C
from muse.complex import ComplexTensor
from muse.init import ZetaEmbedding, zeta_position_table, zeta_zeros
from muse.models import Stage1Block, Stage1Config, build_model
from muse.nn import (
    ComplexDropout,
    ComplexEmbedding,
    ComplexLayerNorm,
    ComplexLinear,
    ModReLU,
    RealLinear,
)


def _z(*shape, dtype=torch.float16, device=None) -> ComplexTensor:
    return C.zeros(*shape, dtype=dtype, device=device) if device == "meta" else C.randn(
        *shape, dtype=dtype, generator=torch.Generator().manual_seed(0))


def _meta(*shape) -> ComplexTensor:
    return ComplexTensor(torch.empty(2, *shape, dtype=torch.float16, device="meta"))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("stage1", "tiny", vocab_size=100, max_seq_len=16).eval()


# ------------------------------------------------------------------ planes
def test_from_planes_mismatched_shapes():
    with pytest.raises(ValueError, match=r"real and imag must have the same shape.*\(2, 3\).*\(3, 2\)"):
        ComplexTensor.from_planes(torch.zeros(2, 3), torch.zeros(3, 2))


def test_from_planes_mismatched_dtypes():
    with pytest.raises(TypeError, match="real and imag.*dtype"):
        ComplexTensor.from_planes(torch.zeros(3, dtype=torch.float16), torch.zeros(3, dtype=torch.float32))


def test_from_planes_mixed_devices():
    with pytest.raises(ValueError, match="real is on cpu but imag is on meta"):
        ComplexTensor.from_planes(torch.zeros(3), torch.zeros(3, device="meta"))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64, torch.uint8])
def test_planes_with_non_float_dtype(dtype):
    with pytest.raises(TypeError, match=rf"planes must have dtype float16, float32 or float64, got {dtype}"):
        ComplexTensor(torch.zeros(2, 3, dtype=dtype))


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("which", ["real", "imag"])
@pytest.mark.parametrize("dtype", [torch.int16, torch.bool, torch.complex32])
def test_from_planes_non_float_dtype_names_the_plane(which, dtype):
    good, bad = torch.zeros(3, dtype=torch.float16), torch.zeros(3, dtype=dtype)
    args = (bad, good) if which == "real" else (good, bad)
    with pytest.raises(TypeError, match=rf"^{which} must have dtype"):
        ComplexTensor.from_planes(*args)


@pytest.mark.parametrize("shape", [(3, 4), (1, 4), (4,), (), (3, 2)])
def test_planes_without_leading_dim_of_two(shape):
    with pytest.raises(ValueError, match=r"planes must have shape \(2, \*shape\)"):
        ComplexTensor(torch.zeros(shape))


def test_planes_not_a_tensor():
    with pytest.raises(TypeError, match="planes must be a torch.Tensor, got list"):
        ComplexTensor([[1.0], [2.0]])


# ------------------------------------------------------------------ mixed devices
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("order", ["meta-cpu", "cpu-meta", "meta-cpu-real"])
def test_binary_ops_mixed_devices(op, order):
    fn = getattr(C, op)
    if order == "meta-cpu":
        a, b, msg = _meta(3), _z(3), "a is on meta but b is on cpu"
    elif order == "cpu-meta":
        a, b, msg = _z(3), _meta(3), "a is on cpu but b is on meta"
    else:
        a, b, msg = _meta(3), torch.zeros(3, dtype=torch.float16), "a is on meta but b is on cpu"
    with pytest.raises(ValueError, match=msg):
        fn(a, b)


def test_dunder_ops_mixed_devices():
    with pytest.raises(ValueError, match="a is on meta but b is on cpu"):
        _meta(3) + _z(3)
    with pytest.raises(ValueError, match="a is on cpu but b is on meta"):
        torch.zeros(3, dtype=torch.float16) * _meta(3)


def test_matmul_mixed_devices():
    with pytest.raises(ValueError, match="a is on meta but b is on cpu"):
        C.matmul(_meta(3, 4), _z(4, 2))
    with pytest.raises(ValueError, match="a is on cpu but b is on meta"):
        _z(3, 4) @ _meta(4, 2)
    with pytest.raises(ValueError, match="a is on meta but b is on cpu"):
        C.matmul(_meta(3, 4), torch.zeros(4, 2, dtype=torch.float16))


def test_linear_mixed_devices():
    with pytest.raises(ValueError, match="x is on meta but weight is on cpu"):
        C.linear(_meta(2, 4), _z(3, 4))
    with pytest.raises(ValueError, match="x is on cpu but bias is on meta"):
        C.linear(_z(2, 4), _z(3, 4), _meta(3))


def test_layer_norm_mixed_devices():
    with pytest.raises(ValueError, match="z is on meta but weight is on cpu"):
        C.layer_norm(_meta(2, 4), torch.ones(4, dtype=torch.float16))
    with pytest.raises(ValueError, match="z is on cpu but bias is on meta"):
        C.layer_norm(_z(2, 4), None, torch.zeros(4, dtype=torch.float16, device="meta"))


def test_modrelu_mixed_devices():
    with pytest.raises(ValueError, match="z is on meta but bias is on cpu"):
        C.modrelu(_meta(2, 4), torch.zeros(4, dtype=torch.float16))


def test_embedding_mixed_devices():
    with pytest.raises(ValueError, match="ids is on cpu but weight is on meta"):
        C.embedding(torch.zeros(1, 2, dtype=torch.long), _meta(5, 4))
    with pytest.raises(ValueError, match="ids is on cpu but position is on meta"):
        C.embedding(torch.zeros(1, 2, dtype=torch.long), _z(5, 4), torch.zeros(2, 4, device="meta"))


def test_model_input_on_other_device(model):
    meta_model = build_model("stage1", "tiny", device="meta", vocab_size=100)
    with pytest.raises(ValueError, match="ids is on cpu but weight is on meta"):
        meta_model(torch.zeros(1, 4, dtype=torch.long))


def test_polar_cat_stack_mixed_devices():
    with pytest.raises(ValueError, match="magnitude is on cpu but phase is on meta"):
        C.polar(torch.ones(3), torch.zeros(3, device="meta"))
    with pytest.raises(ValueError, match=r"tensors\[0\] is on cpu but tensors\[1\] is on meta"):
        C.cat([_z(3), _meta(3)])
    with pytest.raises(ValueError, match=r"tensors\[0\] is on meta but tensors\[1\] is on cpu"):
        C.stack([_meta(3), _z(3)])


# ------------------------------------------------------------------ token ids
def test_token_ids_out_of_range(model):
    with pytest.raises(ValueError, match=r"input_ids contains token id 100, out of range for vocab_size=100"):
        model(torch.tensor([[1, 2, 100]]))


def test_token_ids_negative(model):
    with pytest.raises(ValueError, match=r"input_ids contains a negative token id \(-1\)"):
        model(torch.tensor([[1, -1, 3]]))


@pytest.mark.parametrize("shape", [(4,), (1, 2, 3), ()])
def test_token_ids_not_2d(model, shape):
    with pytest.raises(ValueError, match=r"input_ids must be 2-D \(batch, seq\)"):
        model(torch.zeros(shape, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bool, torch.complex64])
def test_token_ids_not_integer(model, dtype):
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        model(torch.zeros(1, 3, dtype=dtype))


def test_token_ids_not_a_tensor(model):
    with pytest.raises(TypeError, match="input_ids must be a torch.Tensor, got list"):
        model([[1, 2, 3]])


def test_sequence_longer_than_max_seq_len(model):
    with pytest.raises(ValueError, match=r"input_ids has sequence length 17, longer than max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_embedding_module_bad_ids():
    e = ComplexEmbedding(10, 4, max_seq_len=8)
    with pytest.raises(ValueError, match="input_ids contains token id 10"):
        e(torch.tensor([[10]]))
    with pytest.raises(ValueError, match="input_ids has sequence length 9"):
        e(torch.zeros(1, 9, dtype=torch.long))


def test_functional_embedding_float_ids():
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        C.embedding(torch.zeros(1, 2), _z(5, 4))


def test_positions_out_of_range_and_wrong_shape(model):
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"positions must be in \[0, 16\)"):
        model(ids, torch.tensor([0, 1, 16]))
    with pytest.raises(ValueError, match=r"positions must be in \[0, 16\)"):
        model(ids, torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match=r"positions must have shape \(1, 3\) or \(3,\)"):
        model(ids, torch.arange(4))
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        model(ids, torch.zeros(3))


# ------------------------------------------------------------------ feature sizes
def test_linear_wrong_feature_size():
    with pytest.raises(ValueError, match=r"x must have 4 features in its last dim, got shape \(2, 5\)"):
        C.linear(_z(2, 5), _z(3, 4))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        C.linear(_z(2, 4), _z(3, 4), _z(4))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        C.linear(_z(2, 4), _z(4))


def test_complex_linear_module_wrong_feature_size():
    with pytest.raises(ValueError, match="x must have 4 features"):
        ComplexLinear(4, 3)(_z(2, 5))


def test_real_linear_wrong_feature_size_and_dtype():
    m = RealLinear(4, 3, dtype=torch.float16)
    with pytest.raises(ValueError, match="x must have 4 features"):
        m(torch.zeros(2, 5, dtype=torch.float16))
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        m(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        m(_z(2, 4))


def test_layer_norm_wrong_feature_size():
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\) to match z's last dim, got \(4,\)"):
        C.layer_norm(_z(2, 5), torch.ones(4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        ComplexLayerNorm(4)(_z(2, 5))
    with pytest.raises(ValueError, match="z must have at least one dim"):
        C.layer_norm(ComplexTensor(torch.zeros(2)))


def test_layer_norm_residual():
    z = _z(2, 4)
    with pytest.raises(TypeError, match="residual must be a ComplexTensor or None, got Tensor"):
        C.layer_norm(z, residual=z.planes)
    with pytest.raises(ValueError, match=r"residual must match z's shape \(2, 4\) and dtype torch.float16, got \(4,\)"):
        C.layer_norm(z, residual=_z(4))
    with pytest.raises(ValueError, match="residual must match .* got \\(2, 4\\) and torch.float32"):
        ComplexLayerNorm(4)(z, residual=ComplexTensor(torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match="residual"):
        C.layer_norm(z, residual=_meta(2, 4))
    with torch.no_grad(), pytest.raises(ValueError, match="eps must be > 0.0"):
        C.layer_norm(z, eps=0.0, residual=z)


def test_modrelu_wrong_feature_size():
    with pytest.raises(ValueError, match=r"bias must be 0-d or have shape \(5,\), got \(4,\)"):
        C.modrelu(_z(2, 5), torch.zeros(4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"bias must be 0-d or have shape \(5,\)"):
        ModReLU(4)(_z(2, 5))


def test_block_wrong_feature_size():
    with pytest.raises(ValueError, match=r"must have shape \(6,\) to match z's last dim"):
        Stage1Block(8)(_z(2, 3, 6))


# ------------------------------------------------------------------ dtypes
def test_linear_dtype_mismatch_is_not_silently_cast():
    with pytest.raises(TypeError, match="weight has dtype torch.float32 but x has torch.float16"):
        C.linear(_z(2, 4), _z(3, 4, dtype=torch.float32))
    with pytest.raises(TypeError, match="bias has dtype torch.float64 but x has torch.float16"):
        C.linear(_z(2, 4), _z(3, 4), _z(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="weight has dtype"):
        ComplexLinear(4, 3, dtype=torch.float32)(_z(2, 4))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("side", ["a", "b"])
def test_native_complex_operand(op, side):
    n = torch.zeros(3, dtype=torch.complex64)
    args = (n, _z(3)) if side == "a" else (_z(3), n)
    with pytest.raises(TypeError, match=rf"{side} is a native complex tensor \(torch.complex64\).*from_complex"):
        getattr(C, op)(*args)


def test_native_complex_operand_in_dunder_and_matmul():
    with pytest.raises(TypeError, match="b is a native complex tensor.*from_complex"):
        _z(3) + torch.zeros(3, dtype=torch.complex128)
    with pytest.raises(TypeError, match="b is a native complex tensor.*from_complex"):
        C.matmul(_z(2, 3), torch.zeros(3, 2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="a is a native complex tensor.*from_complex"):
        C.matmul(torch.zeros(2, 3, dtype=torch.complex64), _z(3, 2))


def test_native_complex_to_layers():
    n = torch.zeros(2, 4, dtype=torch.complex64)
    with pytest.raises(TypeError, match="x must be a ComplexTensor, got Tensor"):
        C.linear(n, _z(3, 4))
    with pytest.raises(TypeError, match="z must be a ComplexTensor, got Tensor"):
        C.layer_norm(n)
    with pytest.raises(TypeError, match="z must be a ComplexTensor, got Tensor"):
        C.modrelu(n, torch.zeros(4))
    with pytest.raises(TypeError, match="z must be a ComplexTensor"):
        C.dropout(n)


@pytest.mark.parametrize("bad", ["1.0", None, [1.0], True])
def test_binary_op_non_numeric_operand(bad):
    with pytest.raises(TypeError, match="b must be a ComplexTensor, a real floating torch.Tensor or a number"):
        C.add(_z(3), bad)


def test_binary_op_integer_tensor_operand():
    with pytest.raises(TypeError, match="b must have dtype float16, float32 or float64, got torch.int64"):
        C.mul(_z(3), torch.ones(3, dtype=torch.long))


def test_binary_op_without_tensors():
    with pytest.raises(TypeError, match="at least one operand"):
        C.add(1.0, 2.0)


def test_layer_weight_non_float():
    with pytest.raises(TypeError, match="weight must have dtype"):
        C.layer_norm(_z(2, 4), torch.ones(4, dtype=torch.long))
    with pytest.raises(TypeError, match="bias must have dtype"):
        C.modrelu(_z(2, 4), torch.zeros(4, dtype=torch.long))


def test_from_complex_to_complex_bad_args():
    with pytest.raises(TypeError, match="t must be a complex torch.Tensor, got torch.float32"):
        C.from_complex(torch.zeros(3))
    with pytest.raises(TypeError, match="z must be a ComplexTensor"):
        C.to_complex(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="dtype must be a complex dtype"):
        C.to_complex(_z(3), torch.float16)
    with pytest.raises(TypeError, match="x must have dtype"):
        C.from_real(torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="dtype must be float16/float32/float64 or complex"):
        C.zeros(3, dtype=torch.int8)


# ------------------------------------------------------------------ cat / stack / matmul shapes
@pytest.mark.parametrize("fn", [C.cat, C.stack])
@pytest.mark.parametrize("bad", ["z", "empty", "generator", "tensor", "mixed"])
def test_cat_stack_non_sequence(fn, bad):
    z = _z(3)
    arg = {"z": z, "empty": [], "generator": (x for x in [z, z]), "tensor": torch.zeros(2, 3),
           "mixed": [z, torch.zeros(3, dtype=torch.float16)]}[bad]
    match = r"tensors\[1\] must be a ComplexTensor" if bad == "mixed" else "tensors must be a non-empty sequence"
    with pytest.raises(TypeError, match=match):
        fn(arg)


@pytest.mark.parametrize("which", ["a", "b"])
def test_matmul_zero_dim(which):
    zero_d = ComplexTensor(torch.zeros(2, dtype=torch.float16))
    args = (zero_d, _z(3)) if which == "a" else (_z(3), zero_d)
    with pytest.raises(ValueError, match=rf"{which} must be at least 1-D for matmul, got a 0-d tensor"):
        C.matmul(*args)


def test_matmul_non_tensor_operand():
    with pytest.raises(TypeError, match="b must be a ComplexTensor or a real tensor, got list"):
        C.matmul(_z(2, 2), [[1.0, 0.0], [0.0, 1.0]])


def test_dim_out_of_range():
    with pytest.raises(IndexError, match="dim 2 is out of range for a 2-d ComplexTensor"):
        C.sum(_z(2, 3), 2)
    with pytest.raises(TypeError, match="dim must be an int"):
        _z(2, 3).unsqueeze(1.0)


# ------------------------------------------------------------------ scalar arguments / configs
@pytest.mark.parametrize("p, exc", [(1.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                                    ("0.1", TypeError), (True, TypeError)])
def test_dropout_probability(p, exc):
    with pytest.raises(exc, match="^p must"):
        C.dropout(_z(3), p)
    with pytest.raises(exc, match="^p must"):
        ComplexDropout(p)


def test_layer_norm_eps():
    with pytest.raises(ValueError, match="eps must be > 0.0"):
        C.layer_norm(_z(2, 4), eps=0.0)
    with pytest.raises(ValueError, match="eps must be > 0.0"):
        ComplexLayerNorm(4, eps=-1e-5)


def test_embedding_phase_not_a_number():
    with pytest.raises(TypeError, match="phase must be a real number or None"):
        C.embedding(torch.zeros(1, 1, dtype=torch.long), _z(2, 2), None, "pi")
    with pytest.raises(TypeError, match="initial_phase must be a real number or None"):
        ComplexEmbedding(4, 2, 2, initial_phase=True)


@pytest.mark.parametrize("make, exc, name", [
    (lambda: ComplexLinear(0, 3), ValueError, "in_features"),
    (lambda: ComplexLinear(3, -1), ValueError, "out_features"),
    (lambda: ComplexLinear(True, 3), TypeError, "in_features"),
    (lambda: ComplexLinear(3, 3, bias=1), TypeError, "bias"),
    (lambda: ComplexLinear(3, 3, dtype=torch.int32), TypeError, "dtype"),
    (lambda: ModReLU(2.0), TypeError, "features"),
    (lambda: ComplexLayerNorm(0), ValueError, "features"),
    (lambda: ComplexEmbedding(0, 4, 4), ValueError, "vocab_size"),
    (lambda: ComplexEmbedding(4, -4, 4), ValueError, "d_model"),
    (lambda: ComplexEmbedding(4, 4, 0), ValueError, "max_seq_len"),
    (lambda: ComplexEmbedding(4, 4, 4, dropout=1.0), ValueError, "dropout"),
    (lambda: ZetaEmbedding(4, 4, trainable=1), TypeError, "trainable"),
    (lambda: zeta_zeros(-1), ValueError, "n"),
    (lambda: zeta_zeros(3, seed=-2), ValueError, "seed"),
    (lambda: zeta_position_table(0, 4), ValueError, "max_len"),
    (lambda: zeta_position_table(4, 4.0), TypeError, "d_model"),
])
def test_module_and_init_arguments(make, exc, name):
    with pytest.raises(exc, match=rf"^{name} must"):
        make()


@pytest.mark.parametrize("field, value, exc", [
    ("d_model", -512, ValueError), ("dropout", 1.0, ValueError), ("n_layers", True, TypeError),
    ("max_seq_len", False, TypeError), ("vocab_size", 50257.0, TypeError), ("use_complex32", "yes", TypeError),
])
def test_invalid_config_values(field, value, exc):
    with pytest.raises(exc, match=rf"^{field} must"):
        Stage1Config(**{field: value})


# ------------------------------------------------------------------ issue 13 (API items)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32,
                                   torch.uint32, torch.int64])
def test_item5_every_integer_id_dtype_gives_the_int64_result(model, dtype):
    ids = torch.tensor([[1, 2, 99, 0]])
    assert torch.equal(model(ids.to(dtype)), model(ids))


def test_item5_range_is_checked_for_unsigned_ids(model):
    with pytest.raises(ValueError, match="input_ids contains token id 100"):
        model(torch.tensor([[1, 100]], dtype=torch.uint16))


def test_item6_numpy_scalars_defer_to_complex_tensor():
    np = pytest.importorskip("numpy")
    z = C.randn(3, generator=torch.Generator().manual_seed(0))
    for left in (np.float64(0.125) * z, np.float32(0.125) * z, z * np.float64(0.125)):
        assert isinstance(left, ComplexTensor)
        assert torch.equal(left.planes, (0.125 * z).planes)
    with pytest.raises(TypeError, match="got ndarray"):
        np.ones(3) * z


def test_item8_equality_is_elementwise_and_bool_needs_one_element():
    z = C.from_complex(torch.tensor([1 + 2j, 0j, 3 - 1j]))
    assert torch.equal(z == z.clone(), torch.tensor([True, True, True]))
    assert torch.equal(z != C.from_complex(torch.tensor([1 + 2j, 1j, 3 - 1j])), torch.tensor([False, True, False]))
    assert torch.equal(z == 0, torch.tensor([False, True, False]))
    assert torch.equal(z[:1] == (1 + 2j), torch.tensor([True]))
    assert bool(C.zeros(1)) is False and bool(C.zeros(()) + 1j) is True
    with pytest.raises(ValueError, match="truth value of a ComplexTensor with 3 elements is ambiguous"):
        bool(z)
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        z == C.zeros(2)  # noqa: B015


def test_item18_shape_mismatches_name_the_operands():
    a, real = _z(2, 3), torch.zeros(4, 5, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"matmul shape mismatch: a has shape \(2, 3\), b has shape \(4, 5\)"):
        C.matmul(a, real)
    with pytest.raises(ValueError, match=r"a has shape \(4, 5\), b has shape \(2, 3\)"):
        C.matmul(real, a)
    with pytest.raises(ValueError, match=r"b has shape \(4, 3, 2\)"):
        C.matmul(_z(5, 2, 3), _z(4, 3, 2))
    with pytest.raises(ValueError, match=r"a has shape \(3,\), b has shape \(4,\)"):
        C.add(_z(3), _z(4))
    with pytest.raises(ValueError, match=r"b has shape \(4,\)"):
        C.mul(_z(3), torch.zeros(4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"tensors\[1\] has shape \(2, 4\) but tensors\[0\] has \(2, 3\)"):
        C.cat([_z(2, 3), _z(2, 4)])
    with pytest.raises(ValueError, match=r"tensors\[1\] has shape \(3,\)"):
        C.stack([_z(2), _z(3)])


def test_item22_functional_embedding_refuses_out_of_range_ids():
    w = _z(5, 4)
    with pytest.raises(ValueError, match=r"ids contains a negative token id \(-1\)"):
        C.embedding(torch.tensor([[0, -1]]), w)
    with pytest.raises(ValueError, match="ids contains token id 5, out of range for vocab_size=5"):
        C.embedding(torch.tensor([5]), w)


@pytest.mark.parametrize("name", ["stage1", "phase2"])
def test_item22_zeta_scale_that_overflows_the_storage_is_refused(name):
    with pytest.raises(ValueError, match="zeta_scale.*overflow"):
        build_model(name, "tiny", vocab_size=10, zeta_scale=1e5 if name == "stage1" else 3e38)
    build_model(name, "tiny", vocab_size=10, zeta_scale=1e4)  # finite and fits: accepted

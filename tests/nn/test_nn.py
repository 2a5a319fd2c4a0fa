"""muse.nn modules: parameters, initialisation, forward == functional, train/eval behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_bitwise_equal, assert_ct_bitwise, cuda_test, native
from torch import nn

import muse.complex as C
from muse.complex import ComplexTensor
from muse.init import ZetaEmbedding, zeta_position_table
from muse.nn import (
    ComplexDropout,
    ComplexEmbedding,
    ComplexLayerNorm,
    ComplexLinear,
    ModReLU,
    PaddedLinear,
    RealLinear,
)


def _z(*shape, dtype=torch.float16, seed=0) -> ComplexTensor:
    return C.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ ComplexLinear
def test_complex_linear_parameters():
    m = ComplexLinear(5, 3)
    params = dict(m.named_parameters())
    assert set(params) == {"weight", "bias"}
    assert m.weight.shape == (2, 3, 5) and m.bias.shape == (2, 3)
    assert m.weight.dtype == torch.float16 and m.bias.dtype == torch.float16
    assert sum(p.numel() for p in m.parameters()) == 2 * 3 * 5 + 2 * 3
    assert not m.bias.any(), "bias must start at 0"
    assert "in_features=5" in repr(m) and "out_features=3" in repr(m)


def test_complex_linear_without_bias_and_fp32():
    m = ComplexLinear(4, 2, bias=False, dtype=torch.float32)
    assert m.bias is None and m.weight.dtype == torch.float32
    y = m(_z(3, 4, dtype=torch.float32))
    assert y.shape == (3, 2) and y.dtype == torch.float32


def test_complex_linear_weight_views():
    m = ComplexLinear(4, 2)
    assert m.weight_real.shape == (2, 4) and m.weight_imag.shape == (2, 4)
    assert m.weight_real._base is m.weight or m.weight_real.data_ptr() == m.weight.data_ptr()
    with torch.no_grad():
        m.weight_real[0, 0] = 1.5
        m.weight_imag[1, 3] = -2.5
    assert m.weight[0, 0, 0].item() == 1.5 and m.weight[1, 1, 3].item() == -2.5


def test_complex_linear_init_statistics():
    torch.manual_seed(0)
    m = ComplexLinear(300, 200)
    w = m.weight.float()
    power = (w[0] ** 2 + w[1] ** 2).mean().item()
    want = 2.0 / (300 + 200)
    assert abs(power / want - 1) < 0.03, f"E|w|^2 = {power}, want {want}"
    assert abs(w[0].var().item() / (want / 2) - 1) < 0.05 and abs(w[1].var().item() / (want / 2) - 1) < 0.05
    assert abs(w.mean().item()) < 1e-3


def test_complex_linear_forward_equals_functional():
    m = ComplexLinear(6, 4)
    with torch.no_grad():
        m.bias.normal_()
    x = _z(2, 3, 6)
    assert_ct_bitwise(m(x), C.linear(x, ComplexTensor(m.weight), ComplexTensor(m.bias)))


def test_complex_linear_gradients_reach_parameters():
    m = ComplexLinear(4, 3, dtype=torch.float64)
    x = _z(5, 4, dtype=torch.float64)
    C.abs2(m(x)).sum().backward()
    assert m.weight.grad is not None and m.weight.grad.shape == (2, 3, 4) and m.weight.grad.abs().sum() > 0
    assert m.bias.grad is not None and m.bias.grad.shape == (2, 3)
    # dL/db for L = sum |y|^2 is 2 * sum_rows(y), as planes
    y = m(x).detach()
    torch.testing.assert_close(m.bias.grad, 2 * y.planes.sum(1))


def test_complex_linear_reset_parameters_redraws():
    torch.manual_seed(0)
    m = ComplexLinear(8, 8)
    before = m.weight.detach().clone()
    with torch.no_grad():
        m.bias.fill_(1.0)
    m.reset_parameters()
    assert not torch.equal(before, m.weight) and not m.bias.any()


# ------------------------------------------------------------------ ModReLU
def test_modrelu_module():
    m = ModReLU(6)
    assert m.bias.shape == (6,) and not m.bias.any() and isinstance(m.bias, nn.Parameter)
    x = _z(3, 6)
    assert_ct_bitwise(m(x), x, "ModReLU at init (b = 0) is the identity")
    with torch.no_grad():
        m.bias.fill_(-0.5)
    assert_ct_bitwise(m(x), C.modrelu(x, m.bias))
    assert "features=6" in repr(m)


# ------------------------------------------------------------------ ComplexLayerNorm
def test_complex_layer_norm_module():
    m = ComplexLayerNorm(8)
    assert m.weight.shape == (8,) and m.bias.shape == (8,)
    assert torch.equal(m.weight, torch.ones(8, dtype=torch.float16)) and not m.bias.any()
    x = _z(2, 8)
    assert_ct_bitwise(m(x), C.layer_norm(x, m.weight, m.bias, 1e-5))
    m2 = ComplexLayerNorm(8, eps=1e-3, dtype=torch.float32)
    assert m2.eps == 1e-3 and m2.weight.dtype == torch.float32
    assert_ct_bitwise(m2(x.float()), C.layer_norm(x.float(), m2.weight, m2.bias, 1e-3))


# ------------------------------------------------------------------ ComplexDropout
def test_complex_dropout_module_train_and_eval():
    m = ComplexDropout(0.5)
    assert m.p == 0.5 and "p=0.5" in repr(m)
    x = C.add(_z(64, 64), 4.0)
    torch.manual_seed(0)
    y = m(x)
    dropped = (y.real == 0)
    assert torch.equal(dropped, y.imag == 0)
    assert 0.4 < dropped.float().mean().item() < 0.6
    m.eval()
    assert m(x) is x
    assert ComplexDropout(0.0)(x) is x


# ------------------------------------------------------------------ ComplexEmbedding
def _emb(**kw) -> ComplexEmbedding:
    torch.manual_seed(0)
    args = dict(vocab_size=50, d_model=8, max_seq_len=16, dropout=0.0)
    args.update(kw)
    return ComplexEmbedding(**args)


def test_complex_embedding_parameters():
    e = _emb()
    params = dict(e.named_parameters())
    assert set(params) == {"weight", "position.weight"}
    assert e.weight.shape == (2, 50, 8) and e.weight.dtype == torch.float16
    assert isinstance(e.position, ZetaEmbedding)
    assert isinstance(e.position.weight, nn.Parameter) and e.position.weight.requires_grad
    assert e.position.weight.shape == (16, 8)
    torch.testing.assert_close(e.position.weight, zeta_position_table(16, 8).half())
    assert e.weight_real.shape == (50, 8) and torch.equal(e.weight_imag, e.weight[1])


def test_complex_embedding_init_unit_power():
    e = _emb(vocab_size=2000, d_model=64)
    power = (e.weight.float() ** 2).sum(0).mean().item()
    assert abs(power - 1) < 0.03, f"E|E_ij|^2 = {power}, want 1"


def test_complex_embedding_forward_default_positions():
    e = _emb().eval()
    ids = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]])
    z = e(ids)
    assert z.shape == (2, 4, 8) and z.dtype == torch.float16 and z.is_planar()
    want = C.embedding(ids, ComplexTensor(e.weight), e.position.weight[:4])
    assert_ct_bitwise(z, want)
    torch.testing.assert_close(z.real.float(), (e.weight[0][ids].float() + e.position.weight[:4].float()),
                               rtol=1e-3, atol=1e-3)
    assert torch.equal(z.imag, e.weight[1][ids])


def test_complex_embedding_explicit_positions():
    e = _emb().eval()
    ids = torch.tensor([[3, 1, 4]])
    pos = torch.tensor([7, 0, 15])
    z = e(ids, pos)
    assert_ct_bitwise(z, C.embedding(ids, ComplexTensor(e.weight), e.position.weight[pos]))
    z2 = e(ids, pos.unsqueeze(0))
    assert_ct_bitwise(z2, z, "(B, S) positions equal (S,) positions")
    assert_ct_bitwise(e(ids, torch.arange(3)), e(ids), "positions 0..S-1 equal the default")


def test_complex_embedding_initial_phase():
    e0 = _emb(dtype=torch.float64).eval()
    e1 = _emb(dtype=torch.float64, initial_phase=math.pi / 4).eval()
    ids = torch.tensor([[0, 1, 2]])
    torch.testing.assert_close(native(e1(ids)), native(e0(ids)) * complex(math.cos(math.pi / 4), math.sin(math.pi / 4)))
    assert e1.initial_phase == math.pi / 4 and "initial_phase=0.785" in repr(e1)


def test_complex_embedding_dropout_only_in_training():
    e = _emb(dropout=0.5)
    ids = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    zt = e(ids)
    frac = (zt.real == 0).float().mean().item()
    assert 0.35 < frac < 0.65
    e.eval()
    assert_ct_bitwise(e(ids), C.embedding(ids, ComplexTensor(e.weight), e.position.weight[:16]))


def test_complex_embedding_checks_the_id_range_once(monkeypatch):
    """The ids' range is the one check that reads values (a host sync in eager code, a device assert in compiled
    code): the module checks it under ``input_ids`` and its lookup does not check again."""
    import muse._checks
    import muse.complex.layers

    calls = []
    real = muse._checks.check_token_range

    def counted(name, ids, vocab_size):
        calls.append(name)
        return real(name, ids, vocab_size)

    monkeypatch.setattr(muse._checks, "check_token_range", counted)
    monkeypatch.setattr(muse.complex.layers, "check_token_range", counted)
    e = ComplexEmbedding(50, 8, 16, dropout=0.0)
    ids = torch.randint(0, 50, (2, 5))
    e(ids)
    assert calls == ["input_ids"]
    asserts = []

    def backend(gm, example_inputs):
        asserts.extend(n for n in gm.graph.nodes if n.target is torch.ops.muse.assert_in_range.default)
        return gm.forward

    with torch.no_grad():
        torch.compile(e, fullgraph=True, backend=backend)(ids)
    assert len(asserts) == 1
    with pytest.raises(ValueError, match="input_ids contains token id 50"):
        e(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="input_ids is on cpu but weight is on meta"):
        e.to("meta")(ids)


def test_complex_embedding_gradients_reach_tables():
    e = _emb(dtype=torch.float64)
    ids = torch.tensor([[1, 2, 1]])
    C.abs2(e(ids)).sum().backward()
    assert e.weight.grad is not None and e.weight.grad[:, 1].abs().sum() > 0
    assert not e.weight.grad[:, 3].any(), "rows not looked up get no gradient"
    g = e.position.weight.grad
    assert g is not None and g[:3].abs().sum() > 0 and not g[3:].any()


# ------------------------------------------------------------------ RealLinear
def test_real_linear_fp16_is_fp32_computation_rounded_once():
    torch.manual_seed(0)
    m = RealLinear(64, 32, dtype=torch.float16)
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(8, 64).half()
    y = m(x)
    assert y.dtype == torch.float16 and y.shape == (8, 32)
    want = F.linear(x.float(), m.weight.float(), m.bias.float()).half()
    assert_bitwise_equal(y, want, "RealLinear fp16 output")


def test_real_linear_is_an_nn_linear_and_backprops():
    m = RealLinear(4, 3, dtype=torch.float64)
    assert isinstance(m, nn.Linear)
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    m(x).sum().backward()
    torch.testing.assert_close(m.bias.grad, torch.full((3,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(x.grad, m.weight.sum(0).expand(2, 4).detach())


def _padded(m: RealLinear) -> bool:
    return all(m._storage_padded(p) for p in (m.weight, m.bias) if p is not None)


def test_real_linear_padded_storage_keeps_the_parameters():
    """The parameters are the first rows of 64-row-padded storages: shapes, count, state dict are nn.Linear's."""
    m = RealLinear(16, 100, dtype=torch.float16)
    assert m.weight.shape == (100, 16) and m.bias.shape == (100,)
    assert sum(p.numel() for p in m.parameters()) == 100 * 16 + 100
    assert m.weight.untyped_storage().nbytes() == 128 * 16 * 2 and m.bias.untyped_storage().nbytes() == 128 * 2
    assert not m.weight.as_strided((128, 16), (16, 1))[100:].any()
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {"weight": (100, 16), "bias": (100,)}
    exact = RealLinear(16, 128)
    assert exact.weight.untyped_storage().nbytes() == 128 * 16 * 4  # already a multiple: nothing added


@pytest.mark.parametrize("bias", [True, False])
def test_real_linear_padded_forward_equals_the_plain_gemm(bias):
    torch.manual_seed(0)
    m = RealLinear(64, 1000, bias=bias, dtype=torch.float16)
    x = torch.randn(3, 7, 64).half()
    with torch.no_grad():
        y = m(x)
        want = C.gemm_linear(x, m.weight, m.bias)
    assert y.shape == (3, 7, 1000) and y.stride()[-2] == 1024  # the GEMM ran over the padded rows
    torch.testing.assert_close(y, want, rtol=2**-10, atol=0)  # the same policy; at most one fp16 rounding apart
    y.sum()  # a view that downstream reductions read as is
    z = m(x)  # with gradient: the plain GEMM, a contiguous result
    assert z.is_contiguous() and z.requires_grad


def test_real_linear_padding_survives_conversions_loads_and_copies():
    import copy
    import pickle

    m = RealLinear(8, 70, dtype=torch.float32)
    m.to(torch.float64)
    assert m.weight.dtype == torch.float64 and _padded(m)
    fresh = RealLinear(8, 70, dtype=torch.float64)
    fresh.load_state_dict(m.state_dict(), assign=True)
    assert _padded(fresh) and torch.equal(fresh.weight, m.weight)
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert _padded(other) and torch.equal(other.weight, m.weight)
    m.to("meta")
    assert m.weight.is_meta and _padded(m)


def test_real_linear_hand_set_data_falls_back_to_the_plain_gemm():
    """A parameter's .data set by hand drops the padding: the eager forward then runs the plain GEMM
    (never a read past the storage), and pad_storage() restores it."""
    m = RealLinear(8, 70, dtype=torch.float32)
    with torch.no_grad():
        m.weight.data = torch.randn(70, 8)
        x = torch.randn(4, 8)
        y = m(x)
        assert not _padded(m) and y.is_contiguous()
        torch.testing.assert_close(y, F.linear(x, m.weight, m.bias))
        m.pad_storage()
        assert _padded(m)
        torch.testing.assert_close(m(x), y)


def test_real_linear_padded_forward_compiles_fullgraph():
    torch.manual_seed(0)
    m = RealLinear(32, 200, dtype=torch.float32)
    x = torch.randn(5, 32)
    with torch.no_grad():
        want = m(x)
        got = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    assert got.shape == (5, 200)
    torch.testing.assert_close(got, want)


def test_padded_rows_are_non_persistent_buffers_over_the_parameters():
    """``weight_rows`` / ``bias_rows`` cover the padded rows of the parameters' own storages (no copy), stay
    out of the state dict, and follow conversions, loads and copies."""
    import copy

    m = RealLinear(8, 70, dtype=torch.float32)
    assert set(dict(m.named_buffers())) == {"weight_rows", "bias_rows"} and set(m.state_dict()) == {"weight", "bias"}

    def shared(mod):
        return all(r.shape[0] == 128 and r.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
                   and torch.equal(r[:70], p) and not r[70:].any()
                   for p, r in ((mod.weight, mod.weight_rows), (mod.bias, mod.bias_rows)))

    assert shared(m)
    with torch.no_grad():
        m.weight.add_(1.0)  # an optimizer's in-place update reaches the rows
    assert shared(m)
    m.to(torch.float64)
    fresh = RealLinear(8, 70, dtype=torch.float64)
    fresh.load_state_dict(m.state_dict(), assign=True)
    for mod in (m, fresh, copy.deepcopy(m)):
        assert shared(mod) and mod.weight_rows.dtype == torch.float64
    none = PaddedLinear(8, 70, bias=False)
    assert none.bias_rows is None and set(dict(none.named_buffers())) == {"weight_rows"}


def test_compiled_padded_forward_takes_the_rows_at_their_real_size():
    """The compiled no-grad graph's inputs are the padded rows (128 of them), never a parameter viewed past its
    end: inductor's GEMM autotuning remakes inputs at their nominal size (mode="max-autotune" failed so)."""
    seen = []

    def backend(gm, example_inputs):
        seen.extend(tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor))
        return gm.forward

    m = RealLinear(32, 100, dtype=torch.float32)
    x = torch.randn(5, 32)
    with torch.no_grad():
        want = m(x)
        got = torch.compile(m, fullgraph=True, backend=backend)(x)
    torch.testing.assert_close(got, want)
    assert (128, 32) in seen and (128,) in seen and (100, 32) not in seen and (100,) not in seen


@cuda_test
def test_padded_forward_compiles_under_max_autotune_on_cuda():
    torch.manual_seed(0)
    C.set_gemm_policy()  # as compile_model does before compiling MUSE ops on CUDA
    m = RealLinear(64, 1000, dtype=torch.float16, device="cuda")
    x = torch.randn(4, 128, 64, device="cuda").half()
    with torch.no_grad():
        want = m(x)
        got = torch.compile(m, mode="max-autotune-no-cudagraphs", fullgraph=True)(x)
    assert got.shape == (4, 128, 1000)
    torch.testing.assert_close(got, want, rtol=2**-10, atol=1e-3)


@pytest.mark.parametrize("bias", [True, False])
def test_padded_linear_is_nn_linear_over_padded_rows(bias):
    """The real models' heads (GPT, Phase 2): nn.Linear's F.linear over the padded rows without grad."""
    torch.manual_seed(0)
    m = PaddedLinear(32, 100, bias=bias)
    assert isinstance(m, nn.Linear) and _padded(m) and not isinstance(m, RealLinear)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 5, 100) and y.stride()[-2] == 128
    torch.testing.assert_close(y, F.linear(x, m.weight, m.bias), rtol=1e-6, atol=1e-6)
    z = m(x)  # with gradient: the plain GEMM
    assert z.is_contiguous() and z.requires_grad


def test_padded_linear_follows_autocast_like_nn_linear():
    """Under autocast the padded GEMM runs in the autocast dtype and returns it, as nn.Linear does."""
    torch.manual_seed(0)
    m = PaddedLinear(32, 100, bias=False)
    plain = nn.Linear(32, 100, bias=False)
    plain.load_state_dict(m.state_dict())
    x = torch.randn(6, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, want = m(x), plain(x)
    assert y.dtype == want.dtype == torch.bfloat16
    assert torch.equal(y, want), "PaddedLinear under autocast: not the values of nn.Linear"


@pytest.mark.parametrize("module", [ComplexLinear(3, 3), ModReLU(3), ComplexLayerNorm(3)])
def test_modules_produce_planar_outputs(module):
    assert module(_z(2, 3)).is_planar()


# ------------------------------------------------------------------ init choices and dropout modes
def test_complex_linear_uniform_init_statistics():
    torch.manual_seed(0)
    m = ComplexLinear(256, 256, init="uniform", dtype=torch.float32)
    s = math.sqrt(2.0 / 512)
    w = m.weight.detach()
    assert w.abs().max().item() <= s and w.abs().max().item() > 0.99 * s
    for part in (w[0], w[1]):  # U(-s, s): mean 0, variance s^2 / 3
        assert abs(part.mean().item()) < 0.01 * s
        assert abs(part.var().item() / (s * s / 3) - 1) < 0.02
    assert not m.bias.any() and "init=uniform" in repr(m)


def test_complex_linear_normal_init_statistics():
    torch.manual_seed(0)
    w = ComplexLinear(256, 256, dtype=torch.float32).weight.detach()
    assert abs(w.std().item() / math.sqrt(1.0 / 512) - 1) < 0.02
    assert w.abs().max().item() > math.sqrt(2.0 / 512)  # Gaussian tails pass the uniform bound


def test_real_linear_init_choices():
    torch.manual_seed(0)
    d = RealLinear(512, 2000)
    bound = 1 / math.sqrt(512)
    for t in (d.weight, d.bias):  # nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in))
        assert t.abs().max().item() <= bound and abs(t.var().item() / (bound**2 / 3) - 1) < 0.05
    n = RealLinear(512, 2000, init="normal")
    assert abs(n.weight.std().item() / 0.02 - 1) < 0.01 and not n.bias.any()
    n.reset_parameters()
    assert not n.bias.any()
    with pytest.raises(ValueError, match="init must be one of"):
        RealLinear(2, 2, init="zeros")


def test_complex_dropout_independent_module():
    m = ComplexDropout(0.5, mode="independent")
    assert "mode=independent" in repr(m)
    x = C.add(_z(128, 128), 4.0 + 4.0j)
    torch.manual_seed(0)
    y = m(x)
    both = ((y.real == 0) & (y.imag == 0)).float().mean().item()
    assert 0.23 < both < 0.27 and not torch.equal(y.real == 0, y.imag == 0)
    with pytest.raises(ValueError, match="mode"):
        ComplexDropout(0.1, mode="one")


def test_complex_embedding_zeta_init_and_frozen_positions():
    e = _emb(vocab_size=300, d_model=12, zeta_scale=2.0, init="zeta", trainable_positions=False,
             dropout_mode="independent", dtype=torch.float64)
    pattern = zeta_position_table(300, 12)
    torch.testing.assert_close(e.weight[0].detach(), 2.0 * pattern, rtol=0, atol=0)
    torch.testing.assert_close(e.weight[1].detach(), 1.0 * pattern, rtol=0, atol=0)
    assert isinstance(e.position.weight, nn.Parameter) and not e.position.weight.requires_grad
    assert set(dict(e.named_parameters())) == {"weight", "position.weight"}
    C.abs2(e(torch.tensor([[1, 2]]))).sum().backward()
    assert e.weight.grad is not None and e.position.weight.grad is None
    assert "init=zeta" in repr(e) and "dropout_mode=independent" in repr(e)


def test_complex_embedding_zeta_init_is_chunk_independent():
    """The table is built in row blocks; a vocab spanning several blocks equals the one-piece formula."""
    e = ComplexEmbedding(9000, 4, 8, dropout=0.0, init="zeta", dtype=torch.float64)
    torch.testing.assert_close(e.weight[0].detach(), zeta_position_table(9000, 4), rtol=0, atol=0)


@pytest.mark.parametrize("kw, exc", [
    (dict(init="uniform"), ValueError), (dict(dropout_mode="whole"), ValueError),
    (dict(trainable_positions="no"), TypeError),
])
def test_complex_embedding_choice_errors(kw, exc):
    with pytest.raises(exc, match=next(iter(kw))):
        _emb(**kw)

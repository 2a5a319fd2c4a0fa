"""muse.init: the zeta-zero table, the seeded GUE extension, position tables and initialisers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import muse.complex as C
from muse.complex import ComplexTensor
from muse.init import (
    ZetaEmbedding,
    ZetaInitializer,
    apply_zeta_initialization,
    gue_extension,
    wigner_spacings,
    zeta_position_table,
    zeta_statistics,
    zeta_table,
    zeta_zeros,
)
from muse.nn import ComplexLinear

# gamma_1..gamma_5 (Odlyzko's tables / mpmath.zetazero), 20 significant digits
KNOWN = [14.134725141734693790, 21.022039638771554993, 25.010857580145688763,
         30.424876125859513210, 32.935061587739189691]
GAMMA_606, GAMMA_607 = 946.76584220472755, 947.07918309625488  # first pair that collides in fp16


# ------------------------------------------------------------------ table
def test_table_loads_as_read_only_float64():
    t = zeta_table()
    assert isinstance(t, np.ndarray) and t.dtype == np.float64 and t.ndim == 1
    assert not t.flags.writeable
    with pytest.raises(ValueError):
        t[0] = 0.0


def test_table_is_large_enough_for_every_d_model():
    assert len(zeta_table()) >= 4096, f"the table must hold >= 4096 zeros, has {len(zeta_table())}"


def test_table_strictly_increasing_and_positive():
    t = zeta_table()
    assert t[0] > 14 and np.all(np.diff(t) > 0)


def test_table_first_values_match_known_zeros():
    np.testing.assert_allclose(zeta_table()[:5], KNOWN, rtol=1e-15, atol=0)
    assert zeta_table()[0] == 14.134725141734693790


def test_table_fp16_collision_values():
    t = zeta_table()
    np.testing.assert_allclose(t[605:607], [GAMMA_606, GAMMA_607], rtol=1e-14)
    h = torch.from_numpy(t[605:607].copy()).half()
    assert h[0] == h[1] == 947.0, "gamma_606 and gamma_607 round to the same fp16 value"
    assert len(set(torch.from_numpy(t[:605].copy()).half().tolist())) == 605, "no collision before n = 606"


# ------------------------------------------------------------------ zeta_zeros / extension
def test_zeta_zeros_within_table_are_exact():
    z = zeta_zeros(100)
    assert z.dtype == torch.float64 and z.shape == (100,)
    np.testing.assert_array_equal(z.numpy(), zeta_table()[:100])
    assert zeta_zeros(0).shape == (0,)
    assert torch.equal(ZetaInitializer.get_zeta_zeros(7), zeta_zeros(7))


def test_zeta_zeros_returns_a_copy():
    z = zeta_zeros(3)
    z[0] = -1.0
    assert zeta_zeros(3)[0].item() == KNOWN[0]


def test_zeta_zeros_beyond_table_deterministic_per_seed():
    n_table = len(zeta_table())
    n = n_table + 50
    a, b = zeta_zeros(n, seed=0), zeta_zeros(n, seed=0)
    c = zeta_zeros(n, seed=1)
    assert a.shape == (n,) and a.dtype == torch.float64
    assert torch.equal(a, b), "same seed must give the same extension"
    assert not torch.equal(a[n_table:], c[n_table:]), "different seeds must give different extensions"
    assert torch.equal(a[:n_table], c[:n_table]), "the table part does not depend on the seed"
    np.testing.assert_array_equal(a[:n_table].numpy(), zeta_table())


def test_zeta_zeros_extension_continues_above_table():
    t = zeta_table()
    ext = zeta_zeros(len(t) + 200, seed=3)[len(t):]
    assert ext[0] > t[-1]
    assert torch.all(ext[1:] > ext[:-1])
    # mean spacing ~ local mean spacing 2 pi / log(gamma / 2 pi) near the top of the table
    local = 2 * math.pi / math.log(t[-1] / (2 * math.pi))
    mean = (ext[-1] - t[-1]).item() / 200
    assert 0.8 < mean / local < 1.2, f"extension mean spacing {mean} vs local mean {local}"


def test_gue_extension_deterministic():
    a = gue_extension(1000.0, 20, seed=5)
    assert a.shape == (20,) and a[0] > 1000.0 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, gue_extension(1000.0, 20, seed=5))
    assert not np.array_equal(a, gue_extension(1000.0, 20, seed=6))


def test_wigner_spacings_mean_one_and_gue_variance():
    s = wigner_spacings(200_000, np.random.default_rng(0))
    assert s.shape == (200_000,) and np.all(s >= 0)
    assert abs(s.mean() - 1.0) < 0.01, f"mean spacing {s.mean()}, want 1"
    assert abs(s.var() - (3 * math.pi / 8 - 1)) < 0.01, "Wigner surmise (beta=2) variance is 3 pi/8 - 1"


def test_zeta_statistics():
    st = zeta_statistics(100)
    assert st["num_zeros"] == 100 and st["table_size"] == len(zeta_table())
    assert st["min_spacing"] > 0 and st["min_spacing"] <= st["mean_spacing"] <= st["max_spacing"]
    s = np.diff(zeta_table()[:100])
    assert st["mean_spacing"] == pytest.approx(s.mean())


# ------------------------------------------------------------------ position table
@pytest.mark.parametrize("max_len, d_model, scale", [(16, 8, 1.0), (5, 7, 0.5), (3, 1, 2.0)])
def test_zeta_position_table_formula(max_len, d_model, scale):
    pe = zeta_position_table(max_len, d_model, scale)
    assert pe.dtype == torch.float64 and pe.shape == (max_len, d_model)
    g = zeta_table()
    for p in range(max_len):
        for j in range(d_model):
            angle = p * g[j // 2] / (2 * math.pi)
            want = scale * (math.sin(angle) if j % 2 == 0 else math.cos(angle))
            assert pe[p, j].item() == pytest.approx(want, abs=1e-12), f"PE[{p}, {j}]"
    assert torch.all(pe[0, 0::2] == 0) and torch.all(pe[0, 1::2] == scale)


def test_position_table_columns_differ_where_fp16_zeros_collide():
    pe = zeta_position_table(64, 2 * 607)
    sin_606, sin_607 = pe[:, 2 * 605], pe[:, 2 * 606]  # columns of gamma_606 and gamma_607
    assert (sin_606 - sin_607).abs().max() > 0.1, "colliding fp16 zeros must still give distinct columns"
    # what the table would be with gamma rounded to fp16: the two columns coincide
    g16 = zeta_zeros(607)[605:607].half().double()
    p = torch.arange(64, dtype=torch.float64)
    assert torch.equal(torch.sin(p * g16[0] / (2 * math.pi)), torch.sin(p * g16[1] / (2 * math.pi)))


# ------------------------------------------------------------------ ZetaInitializer
def _singular_values(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(w.double() if not w.is_complex() else w.to(torch.complex128))


def test_initialize_linear_zeta_real():
    torch.manual_seed(0)
    lin = nn.Linear(12, 8, dtype=torch.float64)
    u0, _, vh0 = torch.linalg.svd(lin.weight.detach(), full_matrices=False)
    ZetaInitializer.initialize_linear_zeta(lin, scale=10.0)
    s = _singular_values(lin.weight.detach())
    want = 10.0 / zeta_zeros(8)
    torch.testing.assert_close(s, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(lin.weight.detach(), (u0 * want) @ vh0, rtol=1e-12, atol=1e-14)  # vectors kept


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.float16, 5e-3)])
def test_initialize_linear_zeta_complex(dtype, rtol):
    torch.manual_seed(0)
    m = ComplexLinear(6, 10, dtype=dtype)
    ZetaInitializer.initialize_linear_zeta(m, scale=3.0)
    w = torch.complex(m.weight[0].double(), m.weight[1].double()).detach()
    s = _singular_values(w)
    torch.testing.assert_close(s, 3.0 / zeta_zeros(6), rtol=rtol, atol=0)
    assert m.weight.dtype == dtype and m.weight.shape == (2, 10, 6)


def test_initialize_linear_zeta_complex_keeps_singular_vectors():
    torch.manual_seed(1)
    m = ComplexLinear(5, 5, dtype=torch.float64)
    w0 = torch.complex(m.weight[0], m.weight[1]).detach()
    u0, _, vh0 = torch.linalg.svd(w0)
    ZetaInitializer.initialize_linear_zeta(m, scale=2.0)
    w = torch.complex(m.weight[0], m.weight[1]).detach()
    want = (u0 * (2.0 / zeta_zeros(5)).to(torch.complex128)) @ vh0
    torch.testing.assert_close(w, want, rtol=1e-12, atol=1e-14)
    assert not m.weight.requires_grad or m.weight.grad is None


def test_initialize_linear_zeta_rejects_other_modules():
    with pytest.raises(TypeError, match="module"):
        ZetaInitializer.initialize_linear_zeta(nn.ReLU())
    with pytest.raises(ValueError, match="scale"):
        ZetaInitializer.initialize_linear_zeta(nn.Linear(2, 2), scale=0.0)


def test_initialize_embedding_zeta():
    e = nn.Embedding(10, 6)
    ZetaInitializer.initialize_embedding_zeta(e, scale=0.5)
    torch.testing.assert_close(e.weight.detach(), zeta_position_table(10, 6, 0.5).float())


# ------------------------------------------------------------------ ZetaEmbedding
def test_zeta_embedding_fixed_is_a_buffer():
    e = ZetaEmbedding(16, 8)
    assert list(e.parameters()) == []
    assert "weight" in dict(e.named_buffers())
    assert e.weight.dtype == torch.float32 and e.weight.shape == (16, 8)
    torch.testing.assert_close(e.weight, zeta_position_table(16, 8).float())
    assert "trainable=False" in repr(e)


def test_zeta_embedding_trainable_is_a_parameter():
    e = ZetaEmbedding(16, 8, trainable=True, scale=2.0, dtype=torch.float64)
    params = dict(e.named_parameters())
    assert set(params) == {"weight"} and params["weight"].requires_grad
    torch.testing.assert_close(e.weight.detach(), zeta_position_table(16, 8, 2.0))
    e(torch.tensor([1, 2])).sum().backward()
    assert e.weight.grad[1:3].eq(1).all() and not e.weight.grad[3:].any()


def test_zeta_embedding_forward_any_shape():
    e = ZetaEmbedding(16, 4)
    pos = torch.tensor([[0, 15], [3, 3]])
    out = e(pos)
    assert out.shape == (2, 2, 4) and torch.equal(out, e.weight[pos])
    assert e(torch.zeros(0, dtype=torch.long)).shape == (0, 4)


@pytest.mark.parametrize("bad", [[16], [-1], [0, 99]])
def test_zeta_embedding_out_of_range_positions(bad):
    e = ZetaEmbedding(16, 4)
    with pytest.raises(ValueError, match="positions"):
        e(torch.tensor(bad))


def test_zeta_embedding_float_positions_rejected():
    with pytest.raises(TypeError, match="positions"):
        ZetaEmbedding(4, 2)(torch.tensor([1.0]))


def test_zeta_embedding_reset_parameters():
    e = ZetaEmbedding(8, 4, trainable=True)
    with torch.no_grad():
        e.weight.zero_()
    e.reset_parameters()
    torch.testing.assert_close(e.weight.detach(), zeta_position_table(8, 4).float())


# ------------------------------------------------------------------ apply_zeta_initialization
class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        self.c = ComplexLinear(3, 3)
        self.pos = ZetaEmbedding(8, 4, trainable=True)
        self.tok = nn.Embedding(5, 4)


def test_apply_zeta_initialization_counts_and_effect():
    torch.manual_seed(0)
    m = _Mixed()
    tok_before = m.tok.weight.detach().clone()
    with torch.no_grad():
        m.pos.weight.zero_()
    counts = apply_zeta_initialization(m, scale=5.0)
    assert counts == {"linear": 2, "complex_linear": 1, "zeta_embedding": 1}
    torch.testing.assert_close(_singular_values(m.a.weight.detach()), 5.0 / zeta_zeros(4), rtol=1e-5, atol=0)
    w = torch.complex(m.c.weight[0].double(), m.c.weight[1].double()).detach()
    torch.testing.assert_close(_singular_values(w), 5.0 / zeta_zeros(3), rtol=5e-3, atol=0)
    torch.testing.assert_close(m.pos.weight.detach(), zeta_position_table(8, 4).float())
    assert torch.equal(m.tok.weight, tok_before), "token embeddings are left alone"


def test_apply_zeta_initialization_on_stage1_model():
    from muse.models import build_model

    torch.manual_seed(0)
    model = build_model("stage1", "tiny", n_layers=2, vocab_size=100)
    counts = apply_zeta_initialization(model)
    assert counts == {"linear": 1, "complex_linear": 2, "zeta_embedding": 1}
    ids = torch.randint(0, 100, (1, 8))
    assert torch.isfinite(model.eval()(ids)).all()


def test_complex_linear_after_zeta_init_still_works():
    torch.manual_seed(0)
    m = ComplexLinear(4, 4, dtype=torch.float64)
    ZetaInitializer.initialize_linear_zeta(m, scale=1.0)
    x = C.randn(2, 4, dtype=torch.float64)
    y = m(x)
    assert isinstance(y, ComplexTensor) and y.shape == (2, 4)


def test_zeta_embedding_frozen_parameter():
    e = ZetaEmbedding(16, 8, as_parameter=True)
    params = dict(e.named_parameters())
    assert set(params) == {"weight"} and not params["weight"].requires_grad
    assert "weight" in e.state_dict() and "trainable=False, parameter" in repr(e)
    torch.testing.assert_close(e.weight.detach(), zeta_position_table(16, 8).float())
    with pytest.raises(ValueError, match="as_parameter"):
        ZetaEmbedding(4, 4, trainable=True, as_parameter=False)
    with pytest.raises(TypeError, match="as_parameter"):
        ZetaEmbedding(4, 4, as_parameter=1)


def test_zeta_position_table_start_offset():
    full = zeta_position_table(40, 6, 0.5)
    torch.testing.assert_close(zeta_position_table(15, 6, 0.5, start=25), full[25:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="start"):
        zeta_position_table(4, 4, start=-1)

"""Zeta zeros: the shipped table against mpmath.zetazero, the seeded GUE extension, the fp16
collision from n = 607, and the position table against an exact reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from muse.init import ZetaEmbedding, gue_extension, zeta_position_table, zeta_table, zeta_zeros
from verification import bounds as B
from verification import reference as R
from verification.checks import check_close, check_ulps
from verification.harness import host
from verification.plugin import profile_name
from verification.record import record_property

REL_TOL = 1e-12
FIRST_FP16_COLLISION = 607  # gamma_606 = 946.766 and gamma_607 = 947.079 both round to 947


def _sample_indices(n_table: int) -> list[int]:
    """Fixed edge indices plus a seeded random sample (12 in ci/dev, 200 in thorough)."""
    extra = 200 if profile_name() == "thorough" else 12
    rng = np.random.default_rng(20240607)
    fixed = [1, 2, 3, 10, 100, 606, 607, 1000, n_table]
    picks = rng.integers(1, n_table + 1, size=extra).tolist()
    return sorted({i for i in fixed + picks if 1 <= i <= n_table})


def test_table_matches_mpmath_zetazero():
    """|gamma_table - Im zetazero(n)| <= 1e-12 |gamma| on a deterministic sample of indices."""
    table = zeta_table()
    idx = _sample_indices(len(table))
    want = np.array([float(R.zeta_gamma(n)) for n in idx])
    got = table[np.array(idx) - 1]
    check_close("zeta_table_vs_mpmath", "cpu", got, want, rtol=REL_TOL)
    rel = np.abs(got - want) / want
    record_property("zeta_table", "cpu", bool(np.all(rel <= REL_TOL)), indices_checked=len(idx),
                    table_size=len(table), max_rel_error=float(rel.max()))


def test_table_is_strictly_increasing():
    t = zeta_table()
    assert t[0] > 14.13 and np.all(np.diff(t) > 0)


def test_extension_is_deterministic():
    """Same seed -> bit-identical zeros; prefix-stable in n; another seed -> another extension."""
    n_table = len(zeta_table())
    n = n_table + 500
    a, b = zeta_zeros(n, seed=3), zeta_zeros(n, seed=3)
    assert torch.equal(a, b)
    assert torch.equal(zeta_zeros(n + 100, seed=3)[:n], a)
    assert torch.equal(a[:n_table], torch.from_numpy(zeta_table().copy()))
    assert not torch.equal(zeta_zeros(n, seed=4)[n_table:], a[n_table:])
    assert torch.all(a[1:] > a[:-1])


def wigner_cdf(s: np.ndarray) -> np.ndarray:
    """CDF of the GUE Wigner surmise P(s) = (32/pi^2) s^2 exp(-4 s^2/pi): erf(2s/sqrt(pi)) - (4s/pi) e^(-4s^2/pi)."""
    s = np.asarray(s, dtype=np.float64)
    return special.erf(2 * s / math.sqrt(math.pi)) - (4 * s / math.pi) * np.exp(-4 * s**2 / math.pi)


def _normalised_spacings(start: float, zeros: np.ndarray) -> np.ndarray:
    """Unfold with the local mean spacing 2 pi / log(gamma / 2 pi) at the left zero."""
    g = np.concatenate([[start], zeros])
    return np.diff(g) * np.log(g[:-1] / (2 * math.pi)) / (2 * math.pi)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extension_spacings_follow_the_wigner_surmise(seed):
    """KS test of the unfolded spacings against the GUE surmise: p > 1e-3 (deterministic seeds),
    while the same test rejects Poisson (exponential) spacings of the same size (p < 1e-6)."""
    count = 20_000 if profile_name() == "thorough" else 3_000
    start = float(zeta_table()[-1])
    s = _normalised_spacings(start, gue_extension(start, count, seed))
    res = stats.kstest(s, wigner_cdf)
    poisson = stats.kstest(np.random.default_rng(seed).exponential(size=count), wigner_cdf)
    record_property("gue_extension_ks", "cpu", bool(res.pvalue > 1e-3 and poisson.pvalue < 1e-6),
                    min_pvalue=float(res.pvalue), max_poisson_pvalue=float(poisson.pvalue), count=count)
    assert res.pvalue > 1e-3, res
    assert poisson.pvalue < 1e-6, poisson


def test_zeros_collide_in_fp16_from_607():
    """In fp16 (spacing 0.5 on [512, 1024)) gamma_606 and gamma_607 round alike (947): the first
    collision; among the first 1200 zeros only 1138 fp16 values are distinct."""
    t = zeta_table()
    assert len(t) >= 1200, f"the zeta table holds {len(t)} zeros, fewer than the 1200 this test checks"
    h = t.astype(np.float16)
    same = np.flatnonzero(h[1:] == h[:-1]) + 2  # 1-based index of the later zero of each pair
    assert same[0] == FIRST_FP16_COLLISION
    assert h[605] == h[606] == np.float16(947.0)
    assert len(np.unique(h[:1200])) == 1138


def test_position_table_does_not_collide():
    """zeta_position_table computes in float64: the columns of gamma_606 and gamma_607 differ,
    while a table built from fp16-rounded frequencies would make them identical."""
    d_model = 2 * FIRST_FP16_COLLISION
    pe = zeta_position_table(16, d_model)
    assert pe.dtype == torch.float64
    c606, c607 = 2 * 605, 2 * 606  # sin columns of the 606th and 607th zero
    assert not torch.equal(pe[:, c606], pe[:, c607])
    g16 = torch.from_numpy(zeta_table()[:FIRST_FP16_COLLISION].astype(np.float16).astype(np.float64))
    p = torch.arange(16, dtype=torch.float64)[:, None]
    collided = torch.sin(p * g16[None, :] / (2 * math.pi))
    assert torch.equal(collided[:, 605], collided[:, 606])


def _position_error(max_len: int, gammas: np.ndarray, scale: float) -> np.ndarray:
    """|PE64 - PE| <= |scale| (|t| 4 * 2**-53 + 2**-51): t = p fl(g / fl(2 pi)) carries <= 3 roundings
    of t, sin/cos in float64 err <= 1 ulp64 <= 2**-52, and the scale multiplication one more."""
    t = np.arange(max_len)[:, None] * (gammas / (2 * math.pi))[None, :]
    t = np.repeat(t, 2, axis=1)
    return abs(scale) * (np.abs(t) * 4 * 2.0**-53 + 2.0**-51)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_position_table_matches_exact_reference(scale):
    """The float64 table against mpmath from the same float64 frequencies."""
    max_len, pairs = 64, 12
    gammas = zeta_table()[:pairs]
    got = zeta_position_table(max_len, 2 * pairs, scale).numpy()
    want = R.position_table(max_len, gammas, scale)
    check_close("position_table_fp64", "cpu", got, want, rtol=0.0, atol=_position_error(max_len, gammas, scale))


def test_zeta_embedding_fp16_rounds_the_table_once(device):
    """ZetaEmbedding(dtype=fp16) stores fl16(PE64): within 0.5 ulp(|x| + E) + E of the exact table."""
    max_len, pairs = 48, 10
    emb = ZetaEmbedding(max_len, 2 * pairs, dtype=torch.float16, device=device)
    got = host(emb.weight)
    gammas = zeta_table()[:pairs]
    import mpmath

    with mpmath.workdps(R.DPS):
        vals = []
        for p in range(max_len):
            for g in gammas:
                t = p * (mpmath.mpf(float(g)) / (2 * mpmath.pi))
                vals += [mpmath.sin(t), mpmath.cos(t)]
    exact = R.Exact.from_mpf(vals, (max_len, 2 * pairs))
    err = _position_error(max_len, gammas, 1.0)
    bound = B.in_ulps(B.mixed(exact.hi, err), exact.hi)
    check_ulps("position_table", device, [got], [exact], [bound])

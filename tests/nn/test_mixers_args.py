"""Token-mixer modules (muse.nn.mixers): bad constructor arguments raise a clear TypeError/ValueError."""

from __future__ import annotations

import pytest
import torch

from muse.nn.mixers import BKCore, DissipativeHebbian


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(d_model=0), ValueError, "d_model must be >= 1"),
    (dict(d_model=8, channels=1.5), TypeError, "channels must be an int"),
    (dict(d_model=8, z=1.0), ValueError, r"z must have Im z > 0"),
    (dict(d_model=8, z=(0.0, -1.0)), ValueError, r"z must have Im z > 0"),
    (dict(d_model=8, z="1j"), TypeError, "z must be a complex number or a \\(re, im\\) pair"),
])
def test_bk_core_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        BKCore(**kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(d_model=10, n_heads=4), ValueError, r"d_model \(10\) must be divisible by n_heads \(4\)"),
    (dict(d_model=8, n_heads=0), ValueError, "n_heads must be >= 1"),
    (dict(d_model=8, n_heads=2, eta=0.0), ValueError, "eta must be > 0"),
    (dict(d_model=8, n_heads=2, dt=float("nan")), ValueError, "dt must be finite"),
    (dict(d_model=8, n_heads=2, chunk_size=0), ValueError, "chunk_size must be >= 1"),
])
def test_hebbian_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DissipativeHebbian(**kwargs)


def test_mixers_accept_a_shift_pair_and_map_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    bk = BKCore(8, channels=2, z=(0.5, 2.0))
    assert bk.z == 0.5 + 2j
    stats: dict = {}
    assert bk(x, stats).shape == (2, 5, 8) and 0.0 < stats["bk_green_abs_max"] <= 1.0 / 2.0
    heb = DissipativeHebbian(8, n_heads=2, chunk_size=None)
    assert heb(x).shape == (2, 5, 8)


@pytest.mark.parametrize("cls, kwargs, exc, match", [
    (BKCore, dict(d_model=8, coupling=0.0), ValueError, "coupling must be > 0"),
    (BKCore, dict(d_model=8, shift=float("inf")), ValueError, "shift must be finite"),
    (BKCore, dict(d_model=8, norm=1), TypeError, "norm must be a bool"),
    (BKCore, dict(d_model=8, dissipation="yes"), TypeError, "dissipation must be a bool"),
    (BKCore, dict(d_model=8, bias=None), TypeError, "bias must be a bool"),
    (DissipativeHebbian, dict(d_model=8, n_heads=2, norm=1), TypeError, "norm must be a bool"),
    (DissipativeHebbian, dict(d_model=8, n_heads=2, q_scale=0), TypeError, "q_scale must be a bool"),
    (DissipativeHebbian, dict(d_model=8, n_heads=2, shared_decay="no"), TypeError, "shared_decay must be a bool"),
    (DissipativeHebbian, dict(d_model=8, n_heads=2, gamma_min=-1e-3), ValueError, "gamma_min must be >= 0"),
    (DissipativeHebbian, dict(d_model=8, n_heads=2, bias=1.0), TypeError, "bias must be a bool"),
])
def test_mixer_option_bad_arguments(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)

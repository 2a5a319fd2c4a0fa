"""Phase 2 mixers after issue 10 item 1: the Hebbian read-out's per-head norm, BK-Core's channels, coupling, bound."""

from __future__ import annotations

import math

import pytest
import torch

from muse.models import Phase2Config, Phase2Model
from muse.nn.mixers import BKCore, DissipativeHebbian, HeadRMSNorm
from muse.scan.bk import bk_diagonal, bk_green_scan

pytestmark = pytest.mark.usefixtures("_one_thread")


def _readout_rms_by_position(hebbian_norm: bool, seq: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """RMS over batch and channels, per position, of the first block's Hebbian read-out (input of ``out``)
    and of its branch (output of ``out``), at init: d 128, 8 heads (memories up to 2^12 tokens)."""
    torch.manual_seed(0)
    config = Phase2Config(vocab_size=97, d_model=128, n_layers=1, n_heads=8, max_seq_len=seq, dropout=0.0,
                          mixers=("hebbian",), hebbian_norm=hebbian_norm)
    model = Phase2Model(config).eval()
    mixer = model.blocks[0].mixers[0]
    rec = {}
    h1 = mixer.out.register_forward_pre_hook(lambda m, inp: rec.__setitem__("readout", inp[0]))
    h2 = mixer.register_forward_hook(lambda m, inp, out: rec.__setitem__("branch", out))
    ids = torch.randint(0, 97, (2, seq), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(ids)
    h1.remove()
    h2.remove()
    return tuple(rec[k].pow(2).mean(dim=(0, 2)).sqrt() for k in ("readout", "branch"))  # (S,) each


def test_normalised_hebbian_readout_rms_stays_flat_over_positions():
    readout, branch = _readout_rms_by_position(hebbian_norm=True)
    # Each head's read-out has RMS 1 (gain 1 at init), a little less only where y^2 is near eps = 1e-6
    # (position 0 holds a single, small term: 0.91 here).
    assert readout.max().item() <= 1.0 + 1e-4 and readout.min().item() >= 0.8, readout[[0, 1, 63, 511]]
    assert readout[8:].min().item() >= 0.99
    early, late = branch[:8].mean().item(), branch[-64:].mean().item()
    assert 0.5 < late / early < 2.0, (early, late)


def test_unnormalised_hebbian_readout_grows_with_position():
    """The old read-out (hebbian_norm=False): the same measurement fails the flatness check above."""
    readout, branch = _readout_rms_by_position(hebbian_norm=False)
    early, late = branch[:8].mean().item(), branch[-64:].mean().item()
    assert late / early > 4.0, (early, late)
    assert readout[-64:].mean() / readout[:8].mean() > 4.0


def test_head_norm_divides_out_eta_and_q_scaling():
    torch.manual_seed(0)
    x = 10.0 * torch.randn(2, 40, 16, dtype=torch.float64)  # y^2 >> eps, so only the scale differs
    outs = []
    for eta, q_scale in ((1.0, True), (0.1, False), (3.0, True)):
        torch.manual_seed(1)
        layer = DissipativeHebbian(16, 4, eta=eta, q_scale=q_scale, norm=True, chunk_size=8).double()
        outs.append(layer(x))
    for out in outs[1:]:
        assert torch.allclose(out, outs[0], rtol=1e-5, atol=1e-7)
    torch.manual_seed(1)
    unnormalised = DissipativeHebbian(16, 4, eta=0.1, norm=False).double()(x)
    assert not torch.allclose(unnormalised, outs[0], rtol=1e-3)


def test_head_rms_norm_gain_is_per_channel_and_learnable():
    norm = HeadRMSNorm(2, 3)
    y = torch.randn(1, 2, 5, 3)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    out = norm(y)
    ref = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * torch.arange(1.0, 7.0).view(2, 1, 3)
    assert torch.allclose(out, ref)
    out.sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.shape == (6,)
    norm.reset_parameters()
    assert torch.equal(norm.weight.detach(), torch.ones(6))


def test_shared_decay_gives_every_head_the_same_retention():
    torch.manual_seed(0)
    layer = DissipativeHebbian(16, 4, shared_decay=True, bias=False, gamma_min=0.001)
    assert layer.gamma.weight.shape == (1, 16) and layer.gamma.bias is None
    assert layer.q.bias is None and layer.out.bias is not None
    x = torch.randn(1, 6, 16)
    stats: dict = {}
    layer(x, stats)
    gamma = torch.nn.functional.softplus(layer.gamma(x)) + 0.001
    assert math.isclose(stats["hebbian_retention_mean"], (-gamma).exp().mean().item(), rel_tol=1e-6)


def _green_general_coupling(a: torch.Tensor, z: complex, coupling: float) -> torch.Tensor:
    """Loop reference for b c = coupling: r_1 = a_1 - z, r_i = (a_i - z) - coupling / r_{i-1}, G = 1 / r."""
    out, r = [], None
    for i in range(a.shape[-1]):
        r = a[..., i] - z if r is None else (a[..., i] - z) - coupling / r
        out.append(1.0 / r)
    return torch.stack(out, dim=-1)


@pytest.mark.parametrize("coupling", [0.01, 1.0, 7.5])
@pytest.mark.parametrize("shift, dissipation", [(2.0, True), (0.0, False)])
@pytest.mark.parametrize("z", [1j, 0.1 + 0.1j, 2 + 0.05j])
def test_bk_core_features_match_general_coupling_reference_and_keep_the_bound(coupling, shift, dissipation, z):
    torch.manual_seed(0)
    layer = BKCore(8, channels=3, z=z, shift=shift, coupling=coupling, dissipation=dissipation).double()
    with torch.no_grad():
        layer.potential.weight.mul_(50.0)  # potentials of order 10-100
    x = torch.randn(2, 50, 8, dtype=torch.float64)
    v = layer.potential(x).transpose(1, 2)
    gamma = (torch.nn.functional.softplus(layer.gamma(x)).transpose(1, 2) if dissipation else torch.zeros_like(v))
    ref = _green_general_coupling(bk_diagonal(v, gamma, shift), z, coupling)
    assert ref.abs().max().item() <= 1.0 / z.imag * (1 + 1e-12)
    captured = {}
    handle = layer.out.register_forward_pre_hook(lambda m, inp: captured.__setitem__("feats", inp[0]))
    stats: dict = {}
    layer(x, stats)
    handle.remove()
    feats = captured["feats"]  # (B, S, 2C): Re G, Im G (no norm)
    got = torch.complex(feats[..., :3], feats[..., 3:]).transpose(1, 2)
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-12 / z.imag)
    assert 0.0 < stats["bk_green_abs_max"] <= 1.0 / z.imag * (1 + 1e-9)
    assert (got.imag > 0).all()


def test_bk_core_channels_and_feature_norm_lift_the_branch():
    """At init (GPT-2 init, d 128) the BK branch with 16 channels is >3x the old 1-channel branch (measured
    0.0199 vs 0.0055) and with the feature LayerNorm (``bk_norm``) >10x (0.080)."""
    sizes = {}
    for name, over in (("old", dict(bk_channels=1)), ("new", {}), ("norm", dict(bk_norm=True))):
        torch.manual_seed(0)
        model = Phase2Model(Phase2Config(vocab_size=97, d_model=128, n_layers=1, n_heads=8, max_seq_len=256,
                                         dropout=0.0, mixers=("bk",), **over)).eval()
        rec = {}
        model.blocks[0].mixers[0].register_forward_hook(lambda m, i, o, rec=rec: rec.__setitem__("y", o))
        with torch.no_grad():
            model(torch.randint(0, 97, (2, 256), generator=torch.Generator().manual_seed(1)))
        sizes[name] = rec["y"].pow(2).mean().sqrt().item()
    assert sizes["new"] > 3 * sizes["old"] and sizes["norm"] > 10 * sizes["old"], sizes


def test_bk_scan_with_rescaled_coupling_equals_direct_scan():
    """The identity BKCore uses: G(a, z, b c = k) = G(a / sqrt k, z / sqrt k, 1) / sqrt k."""
    gen = torch.Generator().manual_seed(0)
    a = torch.complex(torch.randn(3, 64, generator=gen, dtype=torch.float64) * 3,
                      -torch.rand(3, 64, generator=gen, dtype=torch.float64))
    k, z = 0.04, 0.3 + 0.2j
    direct = _green_general_coupling(a, z, k)
    assert torch.allclose(bk_green_scan(a / math.sqrt(k), z / math.sqrt(k)) / math.sqrt(k), direct,
                          rtol=1e-10, atol=1e-12)

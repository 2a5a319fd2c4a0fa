"""The ``original`` / ``original-tiny`` Phase 2 presets: the original Phase 2's values, causal, zeta init."""

from __future__ import annotations

import sys

import pytest
import torch

from muse.init import zeta_position_table, zeta_zeros
from muse.models import build_model
from muse.models.phase2 import ORIGINAL, PRESETS, expected_parameter_count
from muse.nn.mixers import DissipativeHebbian
from muse.scan.hebbian import hebbian_sequential

pytestmark = pytest.mark.usefixtures("_one_thread")


def test_original_presets_hold_the_original_values():
    for name, size in (("original", "seed"), ("original-tiny", "tiny")):
        assert PRESETS[name] == {**PRESETS[size], **ORIGINAL}
    assert ORIGINAL == dict(
        bk_channels=1, bk_z=0.1 + 0.1j, bk_norm=False, bk_shift=0.0, bk_coupling=0.01, bk_dissipation=False,
        hebbian_eta=0.1, hebbian_norm=False, hebbian_q_scale=False, hebbian_shared_decay=True,
        hebbian_gamma_min=0.001, mixer_bias=False, head_bias=False, init="zeta", zeta_scale=1.0,
    )


def test_original_tiny_structure_and_zeta_init():
    torch.manual_seed(0)
    model = build_model("phase2", "original-tiny", vocab_size=97)
    d = model.config.d_model
    assert model.num_parameters() == expected_parameter_count(model.config)
    assert model.lm_head.bias is None
    bk, heb = model.blocks[0].mixers
    assert bk.gamma is None and bk.norm is None and bk.potential.bias is None and bk.out.bias is not None
    assert isinstance(heb, DissipativeHebbian) and heb.norm is None and not heb.q_scale
    assert heb.gamma.weight.shape == (1, d) and heb.gamma.bias is None and heb.q.bias is None
    # Token table: the zeta position table x 0.02 (the original's initialize_embedding_zeta(scale=0.02)).
    table = zeta_position_table(97, d, 0.02).to(model.token_embedding.weight.dtype)
    assert torch.allclose(model.token_embedding.weight, table, atol=1e-7)
    # Linears: singular values 0.02 / gamma_i; biases PyTorch's default (not zero).
    w = heb.q.weight.detach().double()
    s = torch.linalg.svdvals(w)
    assert torch.allclose(s, 0.02 / zeta_zeros(d).double(), rtol=1e-5)
    assert heb.out.bias.abs().max().item() > 0.0
    assert model.blocks[0].ffn.fc.bias.abs().max().item() <= 1 / d ** 0.5


def test_original_seed_size_builds_and_runs():
    torch.manual_seed(0)
    model = build_model("phase2", "original", vocab_size=101).eval()
    assert (model.config.d_model, model.config.n_layers, model.config.max_seq_len) == (512, 6, 1024)
    with torch.no_grad():
        logits = model(torch.randint(0, 101, (1, 64), generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (1, 64, 101) and torch.isfinite(logits).all()


def test_original_tiny_is_causal():
    torch.manual_seed(0)
    model = build_model("phase2", "original-tiny", vocab_size=97).double().eval()
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 97, (2, 40), generator=gen)
    with torch.no_grad():
        base = model(ids)
        for t in (0, 1, 20, 38):
            changed = ids.clone()
            changed[:, t + 1:] = (ids[:, t + 1:] + torch.randint(1, 97, ids[:, t + 1:].shape, generator=gen)) % 97
            out = model(changed)
            assert torch.equal(out[:, : t + 1], base[:, : t + 1]), t
            assert not torch.equal(out[:, t + 1], base[:, t + 1])
        # and it mixes: an earlier token moves later logits (at init its memories are a few tokens long:
        # Gamma = softplus(~0) + 0.001 halves the Hebbian state every token)
        earlier = ids.clone()
        earlier[:, 36] = (ids[:, 36] + 1) % 97
        assert not torch.allclose(model(earlier)[:, 39], base[:, 39], rtol=0, atol=1e-14)


@pytest.mark.parametrize("preset", ["tiny", "original-tiny"])
def test_chunked_hebbian_with_and_without_norm_equals_sequential_reference(preset, monkeypatch):
    """Default (normalised) and original Hebbian read-outs: the model with chunk 16 at S = 100 > 16 equals the
    model with the loop reference, float64."""
    torch.manual_seed(0)
    model = build_model("phase2", preset, vocab_size=97, hebbian_chunk_size=16, dropout=0.0).double().eval()
    assert model.blocks[0].mixers[1].norm is not None if preset == "tiny" else True
    ids = torch.randint(0, 97, (2, 100), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        chunked = model(ids)
        calls = []

        def reference(q, k, v, log_decay, eta, chunk_size=None):
            calls.append(q.shape[-2])
            return hebbian_sequential(q, k, v, log_decay, eta)

        monkeypatch.setattr(sys.modules[DissipativeHebbian.__module__], "hebbian_parallel", reference)
        sequential = model(ids)
    assert calls == [100] * model.config.n_layers
    err = (chunked - sequential).abs().max().item()
    assert err <= 1e-12 * sequential.abs().max().item(), err


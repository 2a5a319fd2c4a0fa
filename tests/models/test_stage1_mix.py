"""Stage 1 variants (mixer "recurrence", ffn "complex"): the seed stays exact, the variants mix causally and train."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muse.models import build_model, make_config
from muse.models.stage1 import (
    PRESETS,
    ComplexFeedForward,
    Phase3Stage1Block,
    SeedChannelMap,
    Stage1Config,
    Stage1MixBlock,
    expected_parameter_count,
)
from muse.nn import ComplexRecurrence
from muse.train import MixedPrecisionOptimizer

VOCAB = 97


def _model(preset="mix-tiny", dtype=None, **overrides):
    torch.manual_seed(0)
    model = build_model("stage1", preset, vocab_size=VOCAB, dropout=0.0, **overrides).eval()
    return model if dtype is None else model.to(dtype)


def test_seed_defaults_and_preset_are_unchanged():
    c = Stage1Config()
    assert (c.mixer, c.ffn) == ("none", "none") and c.is_seed_block
    assert PRESETS["seed"] == dict(d_model=512, n_layers=6, max_seq_len=1024)
    assert expected_parameter_count(make_config("stage1", "seed")) == 80_937_553
    tiny = build_model("stage1", "tiny")
    assert all(type(b) is Phase3Stage1Block for b in tiny.blocks)


def test_mix_presets():
    mix = make_config("stage1", "mix")
    assert (mix.d_model, mix.n_layers, mix.max_seq_len) == (512, 6, 1024)
    assert (mix.mixer, mix.ffn, mix.d_ffn, mix.r_min, mix.r_max) == ("recurrence", "complex", 1024, 0.9, 0.999)
    assert expected_parameter_count(mix) == 96_690_769
    small = make_config("stage1", "mix-tiny")
    assert (small.d_model, small.n_layers, small.mixer, small.ffn) == (64, 2, "recurrence", "complex")


@pytest.mark.parametrize("mixer, ffn", [("recurrence", "complex"), ("recurrence", "none"), ("none", "complex")])
def test_variant_blocks_and_parameter_count(mixer, ffn):
    model = _model("tiny", mixer=mixer, ffn=ffn, d_state=48, d_ffn=96)
    block = model.blocks[0]
    assert type(block) is Stage1MixBlock
    assert isinstance(block.mixer, ComplexRecurrence) == (mixer == "recurrence")
    assert isinstance(block.ffn, ComplexFeedForward if ffn == "complex" else SeedChannelMap)
    assert model.num_parameters() == expected_parameter_count(model.config)
    logits = model(torch.randint(0, VOCAB, (2, 20)))
    assert logits.shape == (2, 20, VOCAB) and logits.dtype == torch.float16 and torch.isfinite(logits).all()


@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_mix_is_causal_bit_for_bit(dtype):
    model = _model(dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 48), generator=gen)
    with torch.no_grad():
        ref = model(ids)
        for t in (0, 5, 31, 46):
            other = ids.clone()
            other[:, t + 1:] = (ids[:, t + 1:] + torch.randint(1, VOCAB, other[:, t + 1:].shape, generator=gen)) % VOCAB
            out = model(other)
            assert torch.equal(out[:, : t + 1], ref[:, : t + 1]), t
            assert not torch.equal(out[:, t + 1:], ref[:, t + 1:]), t


def test_mix_mixes_tokens():
    """Changing token s < t changes the logits at t (the seed model cannot: it is per-token)."""
    model = _model(dtype=torch.float64)
    seed = _model("tiny", dtype=torch.float64)
    ids = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for s, t in ((0, 1), (0, 39), (12, 30)):
            other = ids.clone()
            other[0, s] = (ids[0, s] + 1) % VOCAB
            assert not torch.equal(model(other)[0, t], model(ids)[0, t]), (s, t)
            assert torch.equal(seed(other)[0, t], seed(ids)[0, t])


def test_mix_tiny_trains_on_cpu():
    """A few fp16 + fp32-master steps on a fixed batch: the loss decreases and nu/omega move."""
    model = _model().train()
    nu0 = model.blocks[0].mixer.nu.detach().clone()
    opt = MixedPrecisionOptimizer(model.named_parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (4, 33), generator=gen)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        opt.backward(loss)
        result = opt.step(max_norm=1.0)
        assert not result.skipped
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    assert not torch.equal(model.blocks[0].mixer.nu.detach(), nu0)
    assert model.blocks[0].mixer.nu.dtype == torch.float32


@pytest.mark.parametrize("field, value, exc", [
    ("mixer", "attention", ValueError), ("mixer", None, TypeError), ("ffn", "mlp", ValueError),
    ("d_ffn", 0, ValueError), ("d_state", 1.5, TypeError), ("r_max", 1.0, ValueError),
    ("r_min", -0.1, ValueError), ("omega_init", "random", ValueError),
])
def test_variant_config_validation(field, value, exc):
    with pytest.raises(exc, match=field):
        Stage1Config(**{field: value})
    with pytest.raises(ValueError, match="r_min must be <= r_max"):
        Stage1Config(r_min=0.99, r_max=0.9)


def test_bench_applies_stage1_overrides_to_stage1_only(tmp_path):
    from benchmarks.stage1 import Stage1BenchConfig, _train_config
    from muse.cli.train import parse_key_values

    over = parse_key_values(["mixer=recurrence", "ffn=complex", "d_ffn=128", "r_min=0.5"], "--stage1-arg")
    assert over == {"mixer": "recurrence", "ffn": "complex", "d_ffn": 128, "r_min": 0.5}
    cfg = Stage1BenchConfig(model_overrides={"dropout": 0.0}, stage1_overrides=over)
    s1, p2 = _train_config(cfg, "stage1", tmp_path), _train_config(cfg, "phase2", tmp_path)
    assert s1.model_overrides == {"dropout": 0.0, **over}
    assert p2.model_overrides == {"dropout": 0.0}
    with pytest.raises(ValueError, match="--stage1-arg must look like KEY=VALUE"):
        parse_key_values(["mixer"], "--stage1-arg")

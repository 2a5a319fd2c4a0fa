"""Stage 1 variants (mixer "recurrence" | "retention" | "hybrid", ffn "complex"): the seed stays exact, the
variants mix causally and train."""

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
from muse.nn import ComplexRecurrence, ComplexRetention
from muse.scan.complex_diag import decay_powers
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
    assert (mix.mixer, mix.ffn, mix.d_ffn, mix.r_min, mix.r_max) == ("recurrence", "complex", 1024, 0.0, 0.99)
    assert (mix.embedding_init, mix.gate, mix.conv_kernel) == ("normal", True, 0)
    # the criteria runs printed these counts (docs/experiments.md): real lambda, and complex (d_state omegas more)
    assert (mix.omega_init, mix.lambda_kind) == ("zeta", "real")
    # the position table at a tenth of its amplitude, in both presets (docs/experiments.md, section 9)
    assert mix.zeta_scale == 0.1 and make_config("phase2", "seed").zeta_scale == 0.1
    # the decay per token through a rank-d/16 projection (docs/experiments.md, section 11)
    assert (mix.decay, mix.decay_rank, mix.decay_scale) == ("input", 32, 8.0)
    assert expected_parameter_count(mix) == 100_140_625
    assert expected_parameter_count(make_config("stage1", "mix", decay="static")) == 99_842_641
    assert expected_parameter_count(make_config("stage1", "mix", decay="static", lambda_kind="complex")) == 99_845_713
    # the per-token power with a complex lambda: d_state omegas a layer more
    assert expected_parameter_count(make_config("stage1", "mix", lambda_kind="complex")) == 100_140_625 + 6 * 512
    small = make_config("stage1", "mix-tiny")
    assert (small.d_model, small.n_layers, small.mixer, small.ffn) == (64, 2, "recurrence", "complex")
    assert (small.decay, small.decay_rank) == ("input", 4)


@pytest.mark.parametrize("mixer, ffn, gate", [("recurrence", "complex", False), ("recurrence", "none", False),
                                              ("none", "complex", False), ("retention", "complex", False),
                                              ("retention", "none", True), ("hybrid", "complex", True)])
def test_variant_blocks_and_parameter_count(mixer, ffn, gate):
    fields = dict(mixer=mixer, ffn=ffn)  # and only the fields this block reads (make_config refuses the others)
    fields |= dict(d_state=48) if mixer in ("recurrence", "hybrid") else {}
    fields |= dict(n_heads=4, d_key=16) if mixer in ("retention", "hybrid") else {}
    fields |= dict(gate=gate) if mixer != "none" else {}
    fields |= dict(d_ffn=96) if ffn == "complex" else {}
    model = _model("tiny", **fields)
    kinds = {"none": (None, None), "recurrence": (ComplexRecurrence,) * 2, "retention": (ComplexRetention,) * 2,
             "hybrid": (ComplexRecurrence, ComplexRetention)}[mixer]  # layers 0 and 1 (hybrid alternates)
    for block, kind in zip(model.blocks, kinds, strict=True):
        assert type(block) is Stage1MixBlock
        assert (block.mixer is None) if kind is None else type(block.mixer) is kind
        assert isinstance(block.ffn, ComplexFeedForward if ffn == "complex" else SeedChannelMap)
    if mixer in ("retention", "hybrid"):
        retention = model.blocks[1].mixer
        assert (retention.n_heads, retention.d_key, retention.gated) == (4, 16, gate)
    assert model.num_parameters() == expected_parameter_count(model.config)
    logits = model(torch.randint(0, VOCAB, (2, 20)))
    assert logits.shape == (2, 20, VOCAB) and logits.dtype == torch.float16 and torch.isfinite(logits).all()


@pytest.mark.parametrize("overrides", [dict(lambda_kind="complex", decay="static"), dict(lambda_kind="real", decay="static"),
                                       dict(lambda_kind="real", decay="input"),
                                       dict(lambda_kind="real", decay="input", decay_rank=8),
                                       dict(lambda_kind="real", decay="drive"),
                                       dict(mixer="retention"), dict(mixer="hybrid", n_heads=2)])
@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_mix_is_causal_bit_for_bit(dtype, overrides):
    model = _model(dtype=dtype, **overrides)
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


@pytest.mark.parametrize("mixer", ["recurrence", "retention", "hybrid"])
def test_mix_mixes_tokens(mixer):
    """Changing token s < t changes the logits at t (the seed model cannot: it is per-token)."""
    model = _model(dtype=torch.float64, mixer=mixer)
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
    ("lambda_kind", "imaginary", ValueError), ("lambda_kind", None, TypeError),
    ("n_heads", 0, ValueError), ("d_key", 0, ValueError), ("phase_init", "rope", ValueError),
    ("phase_init", 2, TypeError), ("decay", "dynamic", ValueError), ("decay_scale", 0.0, ValueError),
    ("decay_rank", -1, ValueError),
])
def test_variant_config_validation(field, value, exc):
    with pytest.raises(exc, match=field):
        Stage1Config(**{field: value})
    with pytest.raises(ValueError, match="r_min must be <= r_max"):
        Stage1Config(r_min=0.99, r_max=0.9)


@pytest.mark.parametrize("preset, overrides, needle", [
    ("tiny", {"decay": "input"}, "decay (needs mixer='recurrence' or 'hybrid')"),
    ("tiny", {"d_ffn": 32, "r_min": 0.5}, "d_ffn (needs ffn='complex'), r_min (needs mixer='recurrence'"),
    ("tiny", {"gate": True}, "gate (needs a mixer)"),
    ("tiny", {"pointer_mode": "sentinel"}, "pointer_mode (needs pointer_dim > 0)"),
    ("mix-tiny", {"mixer": "retention", "r_max": 0.5}, "r_max (needs mixer='recurrence' or 'hybrid')"),
    ("mix-tiny", {"n_heads": 4}, "n_heads (needs mixer='retention' or 'hybrid')"),
])
def test_an_override_the_block_never_reads_is_refused(preset, overrides, needle):
    """Not a silently built seed block: the error names each field and what would read it."""
    with pytest.raises(ValueError, match="have no effect on stage1 with mixer=") as err:
        make_config("stage1", preset, **overrides)
    assert needle in str(err.value)


@pytest.mark.parametrize("preset, overrides", [
    ("tiny", {"gate": False, "decay": "static"}),  # the values the seed block has anyway
    ("mix-tiny", {"mixer": "retention"}),  # the preset's recurrence fields are not overrides
    ("mix-tiny", {"mixer": "hybrid", "n_heads": 2, "r_max": 0.9}),
    ("mix-copy-tiny", {"pointer_mode": "cache"}),
])
def test_overrides_the_block_reads_are_accepted(preset, overrides):
    config = make_config("stage1", preset, **overrides)
    assert all(getattr(config, k) == v for k, v in overrides.items())


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


def test_bench_applies_phase2_overrides_and_weight_decay(tmp_path):
    """--phase2-arg reaches Phase 2 and its mixer-free reference (which stays mixer-free), nothing else;
    --weight-decay reaches every run's trainer."""
    from benchmarks.stage1 import Stage1BenchConfig, _train_config

    cfg = Stage1BenchConfig(phase2_overrides={"zeta_scale": 1.0, "mixers": ["bk"]},
                            stage1_overrides={"zeta_scale": 0.5}, weight_decay=1.0)
    runs = {r: _train_config(cfg, r, tmp_path) for r in ("phase2", "phase2_nomix", "stage1", "gpt")}
    assert runs["phase2"].model_overrides == {"zeta_scale": 1.0, "mixers": ["bk"]}
    assert runs["phase2_nomix"].model_overrides == {"zeta_scale": 1.0, "mixers": ()}
    assert runs["stage1"].model_overrides == {"zeta_scale": 0.5}
    assert runs["gpt"].model_overrides == {}
    assert {r.weight_decay for r in runs.values()} == {1.0}
    assert Stage1BenchConfig().weight_decay == 0.1  # the GPU budget passes 3.0 explicitly (docs/experiments.md, §9)
    with pytest.raises(ValueError, match="weight_decay"):
        Stage1BenchConfig(weight_decay=-0.1)
    with pytest.raises(TypeError, match="phase2_overrides"):
        Stage1BenchConfig(phase2_overrides=["zeta_scale=1"])


def test_bench_passes_keep_logits_to_every_training_run(tmp_path):
    from benchmarks.stage1 import Stage1BenchConfig, _train_config

    for keep in (False, True):
        cfg = Stage1BenchConfig(keep_logits=keep)
        assert {_train_config(cfg, r, tmp_path).keep_logits for r in ("stage1", "phase2", "phase2_nomix", "gpt")} == {keep}
    with pytest.raises(TypeError, match="keep_logits must be a bool"):
        Stage1BenchConfig(keep_logits=1)


def test_real_lambda_variant_drops_omega_and_steps_like_forward():
    real, complex_ = _model(lambda_kind="real", decay="static"), _model(lambda_kind="complex", decay="static")
    n_layers, d_state = real.config.n_layers, real.config.d_model
    assert real.num_parameters() == expected_parameter_count(real.config)
    assert complex_.num_parameters() - real.num_parameters() == n_layers * d_state
    assert not any(name.endswith("omega") for name, _ in real.named_parameters())
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = real(ids).float()
        assert not torch.equal(full, complex_(ids).float())
    logits, state = real.step(ids[:, :5])
    parts = [logits]
    for t in range(5, 24):
        logits, state = real.step(ids[:, t:t + 1], state)
        parts.append(logits)
    # the bound of test_generate_incremental: 4 fp16 ulps of the largest logit
    tol = 4 * torch.finfo(torch.float16).eps * full.abs().max().item()
    assert (torch.cat(parts, dim=1).float() - full).abs().max().item() <= tol


def test_real_lambda_keeps_zero_phase_while_training():
    """fp16 + fp32-master steps: nu moves, omega stays 0 (no optimizer sees it), lambda stays real."""
    model = _model(lambda_kind="real").train()
    mixers = [block.mixer for block in model.blocks]
    nu0 = [m.nu.detach().clone() for m in mixers]
    opt = MixedPrecisionOptimizer(model.named_parameters(), lr=3e-3, weight_decay=0.0)
    assert not any("omega" in name for name in opt.names)
    ids = torch.randint(0, VOCAB, (4, 33), generator=torch.Generator().manual_seed(3))
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(model(ids[:, :-1]).float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        opt.backward(loss)
        assert not opt.step(max_norm=1.0).skipped
    for m, before in zip(mixers, nu0, strict=True):
        assert not torch.equal(m.nu.detach(), before)
        assert m.omega.dtype == torch.float32 and not m.omega.any()
        _, im = decay_powers(m.nu, m.omega, torch.arange(1, 4), torch.float64)
        assert not im.any()


def test_cli_model_args_set_the_recurrence_ablation_fields():
    """``muse train --model-arg`` reaches lambda_kind, r_min and r_max (the spellings docs/experiments.md gives)."""
    from muse.cli import build_parser
    from muse.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--model", "stage1", "--preset", "mix", "--model-arg", "lambda_kind=real",
                                      "--model-arg", "r_min=0.5", "--model-arg", "r_max=0.99"])
    cfg = config_from_args(args)
    config = make_config(cfg.model, cfg.preset, **cfg.model_overrides)
    assert (config.lambda_kind, config.r_min, config.r_max, config.mixer) == ("real", 0.5, 0.99, "recurrence")
    assert expected_parameter_count(config) == 100_140_625


@pytest.mark.parametrize(("mixer", "overrides", "needle"), [
    ("retention", dict(n_heads=3), r"d_model \(512\) must be divisible by n_heads \(3\)"),
    ("hybrid", dict(d_key=100), r"d_key \(100\) must be divisible by n_heads \(8\)"),
])
def test_retention_head_sizes_are_checked_by_name(mixer, overrides, needle):
    with pytest.raises(ValueError, match=needle):
        Stage1Config(mixer=mixer, **overrides)
    Stage1Config(mixer="recurrence", **overrides)  # only the retention mixers have heads

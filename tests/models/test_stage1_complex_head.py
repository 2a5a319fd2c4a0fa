"""Stage 1's complex head (``head="complex"``) and real token table (``token_table="real"``).

The complex head is Re(W z) + b, a real linear over [Re z, Im z]; the real table puts every token on the real
axis.  Parameter counts, what the head reads, the fused loss, checkpoints through the trainer, and the config
checks.  Causality and incremental decoding of these variants are checked in the files that parametrise those
tests over models.
"""

from __future__ import annotations

import pytest
import torch
from _helpers import assert_fused_loss_matches_full

from benchmarks.measure import planar_layout, stability_trials
from muse.models import Stage1Config, Stage1Model, build_model, make_config
from muse.models.stage1 import expected_parameter_count, expected_trainable_count
from muse.nn import ComplexEmbedding
from muse.train import load_checkpoint, train
from muse.train.checkpoint import model_from_checkpoint
from muse.train.synthetic import synthetic_data, tiny_config

pytestmark = pytest.mark.usefixtures("_one_thread")

VOCAB = 97
SMALL = dict(vocab_size=VOCAB, d_model=16, n_layers=2, max_seq_len=32, d_ffn=32)


def _model(seed: int = 0, preset: str = "mix-tiny", **overrides) -> Stage1Model:
    torch.manual_seed(seed)
    sizes = SMALL if preset.startswith("mix") else {k: v for k, v in SMALL.items() if k != "d_ffn"}
    return build_model("stage1", preset, **{**sizes, "head": "complex", **overrides})


def _ids(b: int = 2, s: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, s), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ config and parameter count
@pytest.mark.parametrize("preset", ["mix", "seed"])
def test_parameter_counts(preset):
    """The complex head adds vocab x d weights, the real table removes as many: both together keep the count."""
    base = make_config("stage1", preset)
    counts = {}
    for head in ("real", "complex"):
        for table in ("complex", "real"):
            config = make_config("stage1", preset, head=head, token_table=table)
            model = Stage1Model(config, device="meta")
            assert model.num_parameters() == expected_parameter_count(config)
            assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected_trainable_count(config)
            assert model.lm_head.weight.shape == (50257, config.head_width)
            assert model.embedding.weight.shape == (2 if table == "complex" else 1, 50257, 512)
            counts[head, table] = model.num_parameters()
    assert counts["real", "complex"] == expected_parameter_count(base)
    assert counts["complex", "complex"] - counts["real", "complex"] == 50257 * 512
    assert counts["real", "complex"] - counts["real", "real"] == 50257 * 512
    assert counts["complex", "real"] == counts["real", "complex"]


def test_seed_preset_keeps_the_seed_head_and_tables():
    config = make_config("stage1", "seed")
    assert (config.head, config.token_table, config.head_width) == ("real", "complex", 512)
    assert Stage1Model(config, device="meta").num_parameters() == 80_937_553


@pytest.mark.parametrize(("field", "bad", "exc"), [("head", "imag", ValueError), ("head", 2, TypeError),
                                                   ("token_table", "none", ValueError),
                                                   ("token_table", None, TypeError)])
def test_bad_choices_are_refused_naming_the_field(field, bad, exc):
    with pytest.raises(exc, match=field):
        Stage1Config(**{field: bad})
    with pytest.raises(exc, match=field):
        make_config("stage1", "mix-tiny", **{field: bad})


def test_a_tied_head_needs_the_real_head():
    with pytest.raises(ValueError, match="tie_head.*head='real'"):
        make_config("stage1", "mix-tiny", tie_head=True, head="complex")
    assert make_config("stage1", "mix-tiny", tie_head=True, token_table="real").tie_head is True


# ------------------------------------------------------------------ what the head reads
@pytest.mark.parametrize("use_complex32", [True, False])
@pytest.mark.parametrize("preset", ["mix-tiny", "tiny"])
def test_the_head_reads_both_planes(preset, use_complex32):
    model = _model(preset=preset, use_complex32=use_complex32).eval()
    ids = _ids()
    with torch.no_grad():
        logits = model(ids)
        h = model(ids, return_hidden=True)
        z = model.final_norm(model.blocks[1](model.blocks[0](model.embedding(ids))))
    assert torch.equal(h, torch.cat((z.real, z.imag), -1))
    w, b = model.lm_head.weight.double(), model.lm_head.bias.double()
    d = model.config.d_model
    # Re((Wr - i Wi) z) = Wr Re z + Wi Im z: the imaginary plane reaches the logits
    ref = z.real.double() @ w[:, :d].T + z.imag.double() @ w[:, d:].T + b
    tol = 2**-11 * ref.abs() + 1e-6 if use_complex32 else 1e-5 * ref.abs().max()
    assert logits.dtype == model.config.dtype and torch.all((logits.double() - ref).abs() <= tol)
    assert (z.imag.double() @ w[:, d:].T).std() > 0.1


def test_the_real_table_puts_tokens_on_the_real_axis():
    model = _model(token_table="real").eval()
    assert isinstance(model.embedding, ComplexEmbedding) and model.embedding.weight_imag is None
    ids = _ids()
    with torch.no_grad():
        z = model.embedding(ids)
    positions = model.embedding.position.lookup(ids, None)
    assert torch.all(z.imag == 0)
    assert torch.equal(z.real, (model.embedding.weight[0][ids].float() + positions.float()).half())


def test_real_table_init_is_the_complex_table_real_plane():
    for init in ("normal", "zeta"):
        torch.manual_seed(3)
        full = ComplexEmbedding(50, 8, 16, init=init)
        torch.manual_seed(3)
        real = ComplexEmbedding(50, 8, 16, init=init, table="real")
        assert real.weight.shape == (1, 50, 8) and torch.equal(real.weight[0], full.weight[0])
    with pytest.raises(ValueError, match="table"):
        ComplexEmbedding(50, 8, 16, table="imaginary")


@pytest.mark.parametrize("use_complex32", [True, False])
@pytest.mark.parametrize("overrides", [dict(), dict(token_table="real")])
def test_fused_loss_equals_the_full_logits_loss(use_complex32, overrides):
    model = _model(dropout=0.0, use_complex32=use_complex32, **overrides)
    assert_fused_loss_matches_full(model, _ids(), _ids(seed=2))
    d = model.config.d_model
    assert model.lm_head.weight.grad[:, d:].abs().sum() > 0  # the imaginary plane's weights train


def test_trained_checkpoint_round_trip(tmp_path):
    overrides = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.1, d_ffn=32,
                     head="complex", token_table="real")
    kw = dict(preset="mix-tiny", model_overrides=overrides, max_steps=4)
    data = synthetic_data()
    train(tiny_config(str(tmp_path / "a"), **kw), data)
    path = tmp_path / "a" / "last.safetensors"
    ck = load_checkpoint(path)
    assert (ck.model_config["head"], ck.model_config["token_table"]) == ("complex", "real")
    assert ck.tensors["model.embedding.weight"].shape == (1, 64, 16)
    assert ck.tensors["model.lm_head.weight"].shape == (64, 32)
    model, _ = model_from_checkpoint(path)
    assert model.config.head == "complex" and model.embedding.table == "real"
    assert torch.equal(model.lm_head.weight, ck.tensors["model.lm_head.weight"])


def test_the_criteria_trials_and_layout_hold():
    """The runner's random-input trials (finite, every gradient norm in range) and its planar check."""
    model = build_model("stage1", "mix-tiny", head="complex", token_table="real")
    trials = stability_trials(model, 3, 1, 16, torch.device("cpu"))
    assert trials["nonfinite_trials"] == 0 and not trials["grad_offenders"]
    layout = planar_layout(model, 1, 16, torch.device("cpu"))
    assert layout["complex_activations"] > 0 and layout["non_planar"] == []

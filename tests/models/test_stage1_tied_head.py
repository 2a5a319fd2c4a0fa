"""Stage 1's tied head (``tie_head``): the head's weight is the real plane of the token table.

Parameter count, logits, the fused loss, the gradient of the one shared table (the sum of both
uses' gradients), the optimizer's groups, checkpoints through the trainer and the CLI, and the
config checks.  Incremental decoding, causality, the model contract and compilation of the tied
variant are checked in the files that parametrise those tests over models.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_fused_loss_matches_full

from muse.cli import main
from muse.models import Stage1Config, Stage1Model, build_model, make_config
from muse.models.stage1 import expected_parameter_count, expected_trainable_count, tied_head_scale
from muse.nn import TiedRealHead
from muse.train import load_checkpoint, train
from muse.train.checkpoint import model_from_checkpoint
from muse.train.loss import model_loss
from muse.train.optim import MixedPrecisionOptimizer, decay_parameter_names
from muse.train.synthetic import repeated_sequence, synthetic_data, tiny_config

pytestmark = pytest.mark.usefixtures("_one_thread")

VOCAB = 97
SMALL = dict(vocab_size=VOCAB, d_model=16, n_layers=2, max_seq_len=32, d_ffn=32)


def _model(seed: int = 0, **overrides) -> Stage1Model:
    torch.manual_seed(seed)
    return build_model("stage1", "mix-tiny", **{**SMALL, "tie_head": True, **overrides})


def _ids(b: int = 2, s: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, s), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ config and parameter count
@pytest.mark.parametrize("variant", [dict(), dict(mixer="none"), dict(ffn="none"), dict(gate=False, conv_kernel=3)])
def test_tied_variant_has_vocab_times_d_fewer_parameters(variant):
    tied = make_config("stage1", "mix", tie_head=True, **variant)
    untied = make_config("stage1", "mix", **variant)
    model = Stage1Model(tied, device="meta")
    assert model.num_parameters() == expected_parameter_count(tied)
    assert expected_parameter_count(untied) - expected_parameter_count(tied) == 50257 * 512
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected_trainable_count(tied)
    names = {n for n, _ in model.named_parameters()}
    assert "lm_head.bias" in names and "lm_head.weight" not in names
    assert Stage1Model(untied, device="meta").num_parameters() == expected_parameter_count(untied)


def test_seed_preset_is_untouched():
    config = make_config("stage1", "seed")
    assert config.tie_head is False
    model = Stage1Model(config, device="meta")
    assert model.num_parameters() == 80_937_553 and "lm_head.weight" in dict(model.named_parameters())


def test_tie_head_is_refused_for_the_seed_block_and_must_be_a_bool():
    with pytest.raises(ValueError, match="tie_head"):
        make_config("stage1", "tiny", tie_head=True)
    with pytest.raises(ValueError, match="tie_head"):
        Stage1Config(tie_head=True)
    for bad in (1, "true", None):
        with pytest.raises(TypeError, match="tie_head"):
            make_config("stage1", "mix-tiny", tie_head=bad)


def test_tied_head_rejects_a_non_embedding():
    with pytest.raises(TypeError, match="embedding"):
        TiedRealHead(torch.nn.Linear(4, 4))


# ------------------------------------------------------------------ the tie
@pytest.mark.parametrize("use_complex32", [True, False])
def test_head_weight_is_a_view_of_the_real_table(use_complex32):
    model = _model(use_complex32=use_complex32)
    table, w = model.embedding.weight, model.lm_head.weight
    assert w.dtype == table.dtype == model.config.dtype  # the dtype an untied RealLinear head would hold
    assert w.shape == (VOCAB, 16) and w.is_contiguous() and w.data_ptr() == table.data_ptr()
    assert w._base is table  # a view, not a copy: the loss GEMM reads the table itself
    with torch.no_grad():
        table[0, 5].add_(1.0)
    assert torch.equal(model.lm_head.weight[5], table[0, 5])


@pytest.mark.parametrize("use_complex32", [True, False])
def test_logits_are_real_hidden_times_the_real_table_plus_bias(use_complex32):
    model = _model(use_complex32=use_complex32).eval()
    ids = _ids()
    with torch.no_grad():
        logits = model(ids)
        h = model(ids, return_hidden=True)
        z = model.final_norm(model.blocks[1](model.blocks[0](model.embedding(ids))))
    scale = tied_head_scale(model.config.d_model)
    assert scale == 2.0 ** -(int(math.log2(model.config.d_model)) // 2) and 0 < scale < 1
    assert torch.equal(h, z.real * scale)  # the head reads Re(final hidden), scaled by a power of two
    ref = h.double() @ model.embedding.weight[0].double().T + model.lm_head.bias.double()
    assert logits.dtype == model.config.dtype
    # fp32 accumulation, one rounding to the storage dtype (half an ulp of each logit) in fp16
    tol = 2**-11 * ref.abs() + 1e-6 if use_complex32 else 1e-5 * ref.abs().max()
    assert torch.all((logits.double() - ref).abs() <= tol)
    assert ref.std() > 0.1  # logits that depend on the table, not a degenerate case


@pytest.mark.parametrize("use_complex32", [True, False])
def test_fused_loss_equals_the_full_logits_loss(use_complex32):
    model = _model(dropout=0.0, use_complex32=use_complex32)
    assert_fused_loss_matches_full(model, _ids(), _ids(seed=2))
    table = model.embedding.weight
    assert table.grad[0].abs().sum() > 0 and table.grad[1].abs().sum() > 0


@pytest.mark.parametrize("loss", ["full", "fused"])
def test_table_gradient_is_the_sum_of_both_uses(loss):
    """fp32 planes: the tied table's gradient equals, exactly, the embedding gradient plus the head
    gradient of an untied model whose head weight is the real table times the tied head's input scale
    (the same logits; a power of two, so every product is the same up to that exact factor)."""
    tied = _model(dropout=0.0, use_complex32=False)
    torch.manual_seed(0)
    untied = build_model("stage1", "mix-tiny", **{**SMALL, "dropout": 0.0, "use_complex32": False})
    scale = tied_head_scale(tied.config.d_model)
    with torch.no_grad():
        for name, p in untied.named_parameters():
            source = tied.embedding.weight[0] * scale if name == "lm_head.weight" else tied.get_parameter(name)
            p.copy_(source)
    ids, targets = _ids(), _ids(seed=2)
    for model in (tied, untied):
        if loss == "fused":
            model_loss(model, ids, targets, impl="chunked").backward()
        else:
            F.cross_entropy(model(ids).flatten(0, 1), targets.flatten()).backward()
    emb, head = untied.embedding.weight.grad, untied.lm_head.weight.grad
    assert head.abs().sum() > 0 and emb[0].abs().sum() > 0
    assert torch.equal(tied.embedding.weight.grad[0], emb[0] + scale * head)
    assert torch.equal(tied.embedding.weight.grad[1], emb[1])
    assert torch.equal(tied.lm_head.bias.grad, untied.lm_head.bias.grad)


def test_optimizer_holds_the_table_once_and_does_not_decay_it():
    model = _model()
    decay = decay_parameter_names(model)
    assert "embedding.weight" not in decay and not any(n.startswith("lm_head") for n in decay)
    assert decay and all(n.endswith(".weight") for n in decay)
    named = list(model.named_parameters())
    opt = MixedPrecisionOptimizer(named, lr=1e-3, weight_decay=0.1, no_decay={n for n, _ in named} - decay)
    params = [p for g in opt.inner.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == sum(p.requires_grad for _, p in named)
    assert opt.names.count("embedding.weight") == 1


def test_an_optimizer_step_moves_the_head_with_the_table():
    model = _model(dropout=0.0)
    named = list(model.named_parameters())
    opt = MixedPrecisionOptimizer(named, lr=1e-2, weight_decay=0.0)
    before = model.lm_head.weight.clone()
    for _ in range(20):  # the dynamic loss scale starts high: the first steps may overflow and be skipped
        opt.zero_grad()
        opt.backward(model_loss(model, _ids(), _ids(seed=2)))
        if not opt.step(1.0).skipped:
            break
    assert opt.skipped_steps < 20
    assert not torch.equal(model.lm_head.weight, before)
    assert torch.equal(model.lm_head.weight, model.embedding.weight[0])


def test_logits_counter_reads_the_tied_table():
    """A huge real-table row of a token absent from the input: the embedding stage stays clean,
    the logits' bound (read from the head's weight, i.e. the table) is counted."""
    model = _model().eval()
    ids = _ids()
    unused = sorted(set(range(VOCAB)) - set(ids.flatten().tolist()))[0]
    model(ids)
    assert model.get_statistics()["nonfinite_by_stage"]["logits"] == 0
    with torch.no_grad():
        model.embedding.weight[0, unused] = 3e4
    model(ids)
    by_stage = model.get_statistics()["nonfinite_by_stage"]
    assert by_stage["logits"] == 1 and by_stage["embedding"] == 0


# ------------------------------------------------------------------ checkpoints
def test_state_dict_round_trip_keeps_the_tie():
    model, other = _model(seed=0), _model(seed=1)
    state = model.state_dict()
    assert "lm_head.weight" not in state and "lm_head.bias" in state
    other.load_state_dict(state)
    ids = _ids()
    assert torch.equal(other.eval()(ids), model.eval()(ids))
    assert other.lm_head.weight.data_ptr() == other.embedding.weight.data_ptr()


def test_trained_checkpoint_round_trip(tmp_path):
    overrides = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.1, d_ffn=32,
                     tie_head=True)
    kw = dict(preset="mix-tiny", model_overrides=overrides, max_steps=5)
    cfg = tiny_config(str(tmp_path / "a"), stop_after=3, **kw)
    data = synthetic_data()
    train(cfg, data)
    path = tmp_path / "a" / "last.safetensors"
    ck = load_checkpoint(path)
    assert ck.model_config["tie_head"] is True
    assert "model.lm_head.weight" not in ck.tensors and "master.lm_head.weight" not in ck.tensors
    assert "model.embedding.weight" in ck.tensors and "optim.exp_avg.embedding.weight" in ck.tensors
    model, _ = model_from_checkpoint(path)
    assert isinstance(model.lm_head, TiedRealHead)
    assert torch.equal(model.lm_head.weight, ck.tensors["model.embedding.weight"][0])
    assert torch.equal(model.lm_head.bias, ck.tensors["model.lm_head.bias"])
    # resuming continues the run as the uninterrupted one does
    train(tiny_config(str(tmp_path / "b"), resume=str(path), **kw), data)
    train(tiny_config(str(tmp_path / "c"), **kw), data)
    resumed = load_checkpoint(tmp_path / "b" / "last.safetensors").prefixed("model.")
    straight = load_checkpoint(tmp_path / "c" / "last.safetensors").prefixed("model.")
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name


def test_cli_model_arg_tie_head(tmp_path):
    train_npy = tmp_path / "train.npy"
    np.save(train_npy, repeated_sequence(64, 48, 4096).astype(np.uint16))
    args = ["train", "--model", "stage1", "--preset", "mix-tiny", "--vocab-size", "64", "--d-model", "16",
            "--n-layers", "1", "--model-arg", "tie_head=true", "--seq-len", "32", "--batch-size", "4",
            "--max-steps", "2", "--warmup", "1", "--device", "cpu", "--no-progress", "--eval-every", "0",
            "--tokens-npy", str(train_npy), "--eval-tokens-npy", str(train_npy), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    ck = load_checkpoint(tmp_path / "out" / "last.safetensors")
    assert ck.model_config["tie_head"] is True and "model.lm_head.weight" not in ck.tensors

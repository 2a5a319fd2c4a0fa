"""Stage 1 model: exact parameter count, forward/diagnostics/statistics, planar activations,
backward, config validation, factory signature and the model registry.  What the seed's code
does at initialisation (init, frozen table, dropout masks) is pinned in
``tests/models/test_stage1_seed_fidelity.py``."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

import muse.complex as C
from muse.complex import ComplexTensor
from muse.models import (
    MODELS,
    Stage1Block,
    Stage1Config,
    Stage1Model,
    build_model,
    create_phase3_stage1_model,
    make_config,
    model_names,
)
from muse.models.stage1 import PRESETS, expected_parameter_count

SEED_COUNT = 80_937_553


def _tiny(seed: int = 0, **overrides) -> Stage1Model:
    torch.manual_seed(seed)
    return build_model("stage1", "tiny", **overrides)


def _ids(model: Stage1Model, batch: int = 2, seq: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)


# ------------------------------------------------------------------ parameter count
def test_seed_model_has_exactly_80937553_parameters():
    config = Stage1Config(vocab_size=50257, d_model=512, n_layers=6, max_seq_len=1024)
    model = Stage1Model(config, device="meta")
    assert model.num_parameters() == SEED_COUNT
    assert sum(p.numel() for p in model.parameters()) == SEED_COUNT
    assert expected_parameter_count(config) == SEED_COUNT
    # the position table is part of the count
    assert model.embedding.position.weight.numel() == 1024 * 512


def test_factory_gives_the_seed_count_at_the_reports_max_seq_len():
    model = create_phase3_stage1_model(max_seq_len=1024, device="meta")
    assert model.num_parameters() == SEED_COUNT
    assert model.embedding.weight.device.type == "meta"
    # the seed factory's own default is 2048 positions: 1024 x 512 more (frozen) parameters
    assert create_phase3_stage1_model(device="meta").num_parameters() == SEED_COUNT + 1024 * 512


@pytest.mark.parametrize("overrides", [
    dict(), dict(n_layers=0), dict(d_model=48, vocab_size=77, max_seq_len=5), dict(use_complex32=False),
])
def test_expected_parameter_count_matches_module_tree(overrides):
    config = make_config("stage1", "tiny", **overrides)
    model = Stage1Model(config, device="meta")
    assert model.num_parameters() == expected_parameter_count(config)


def test_parameter_dtypes_follow_use_complex32():
    assert {p.dtype for p in Stage1Model(make_config("stage1"), device="meta").parameters()} == {torch.float16}
    cfg = make_config("stage1", use_complex32=False)
    assert {p.dtype for p in Stage1Model(cfg, device="meta").parameters()} == {torch.float32}


# ------------------------------------------------------------------ forward
def test_tiny_forward_shape_dtype_and_finite():
    model = _tiny().eval()
    ids = _ids(model, 2, 32)
    logits = model(ids)
    assert logits.shape == (2, 32, 50257) and logits.dtype == torch.float16
    assert torch.isfinite(logits).all()


def test_fp32_variant_forward_dtype():
    model = _tiny(vocab_size=100, use_complex32=False).eval()
    assert model(_ids(model)).dtype == torch.float32


def test_forward_with_explicit_positions_equals_default():
    model = _tiny(vocab_size=100).eval()
    ids = _ids(model, 2, 8)
    assert torch.equal(model(ids, torch.arange(8)), model(ids))
    shifted = model(ids, torch.arange(8) + 3)
    assert not torch.equal(shifted, model(ids))


def test_full_length_sequence_is_accepted():
    model = _tiny(vocab_size=50).eval()
    assert model(_ids(model, 1, model.max_seq_len)).shape == (1, 128, 50)


def test_no_operation_mixes_positions():
    model = _tiny(vocab_size=100).eval()
    ids = _ids(model, 1, 12)
    base = model(ids)
    ids2 = ids.clone()
    ids2[0, 5] = (ids2[0, 5] + 1) % 100
    out = model(ids2)
    others = [i for i in range(12) if i != 5]
    assert torch.equal(out[0, others], base[0, others]), "changing token 5 changed other positions"
    assert not torch.equal(out[0, 5], base[0, 5])


def test_eval_is_deterministic_and_train_uses_dropout():
    model = _tiny(vocab_size=100)
    ids = _ids(model)
    model.eval()
    assert torch.equal(model(ids), model(ids))
    model.train()
    torch.manual_seed(1)
    a = model(ids)
    torch.manual_seed(2)
    b = model(ids)
    assert not torch.equal(a, b)


def test_diagnostics_keys_and_values():
    model = _tiny(vocab_size=100, n_layers=3).eval()
    logits, diag = model(_ids(model), return_diagnostics=True)
    assert torch.equal(logits, model(_ids(model)))
    assert list(diag) == ["embedding", "layer_0", "layer_1", "layer_2", "final_norm", "output"]
    stat_keys = {"magnitude_mean", "magnitude_std", "phase_mean", "phase_std", "nonfinite", "planar"}
    for key in ("embedding", "layer_0", "layer_1", "layer_2", "final_norm"):
        d = diag[key]
        assert set(d) == stat_keys, f"{key}: {sorted(d)}"
        assert d["planar"] is True, f"{key} activation is not planar"
        assert d["nonfinite"] == 0
        assert d["magnitude_mean"] > 0 and d["magnitude_std"] >= 0
        assert -math.pi <= d["phase_mean"] <= math.pi
    assert set(diag["output"]) == {"logits_mean", "logits_std", "logits_min", "logits_max", "nonfinite"}
    assert diag["output"]["logits_min"] <= diag["output"]["logits_mean"] <= diag["output"]["logits_max"]
    assert diag["output"]["nonfinite"] == 0
    # after a LayerNorm with weight 1, E|z|^2 = 1 so the mean magnitude is just under 1
    assert 0.5 < diag["final_norm"]["magnitude_mean"] <= 1.01


def test_planar_invariant_for_every_activation():
    model = _tiny(vocab_size=100).eval()
    seen: list[str] = []
    bad: list[str] = []

    def check(name):
        def hook(module, inputs, output):
            for i, v in enumerate((*inputs, output)):
                if isinstance(v, ComplexTensor):
                    seen.append(name)
                    if not v.is_planar():
                        bad.append(f"{name} {'output' if i == len(inputs) else f'input {i}'}")
        return hook

    handles = [m.register_forward_hook(check(n or "model")) for n, m in model.named_modules()]
    try:
        model(_ids(model))
        model.train()
        model(_ids(model))
    finally:
        for h in handles:
            h.remove()
    assert not bad, f"non-planar activations: {bad}"
    expected = {"embedding", "blocks.0", "blocks.0.norm1", "blocks.0.linear", "blocks.0.activation",
                "blocks.0.dropout", "blocks.0.norm2", "blocks.1", "final_norm"}
    assert expected <= set(seen), f"hooks saw no ComplexTensor in {sorted(expected - set(seen))}"


# ------------------------------------------------------------------ statistics
def test_statistics_count_forwards_and_stay_clean():
    model = _tiny(vocab_size=100).eval()
    s0 = model.get_statistics()
    assert s0["forward_count"] == 0 and s0["nonfinite_count"] == 0 and s0["nonfinite_rate"] == 0
    for _ in range(3):
        model(_ids(model))
    s = model.get_statistics()
    assert s["forward_count"] == 3 and s["nonfinite_count"] == 0 and s["nonfinite_rate"] == 0.0
    assert s["nonfinite_by_stage"] == {"embedding": 0, "layer_0": 0, "layer_1": 0, "logits": 0}
    model.reset_statistics()
    assert model.get_statistics()["forward_count"] == 0


def test_nonfinite_counter_increments_on_nan_parameter():
    model = _tiny(vocab_size=100).eval()
    ids = _ids(model)
    model(ids)
    with torch.no_grad():
        model.blocks[1].linear.weight[0, 0, 0] = float("nan")
    model(ids)
    model(ids)
    s = model.get_statistics()
    assert s["forward_count"] == 3
    assert s["nonfinite_count"] == 2 and s["nonfinite_rate"] == pytest.approx(2 / 3)
    assert s["nonfinite_by_stage"]["embedding"] == 0 and s["nonfinite_by_stage"]["layer_0"] == 0
    assert s["nonfinite_by_stage"]["layer_1"] == 2 and s["nonfinite_by_stage"]["logits"] == 2
    _, diag = model(ids, return_diagnostics=True)
    assert diag["layer_1"]["nonfinite"] > 0 and diag["layer_0"]["nonfinite"] == 0
    model.reset_statistics()
    s = model.get_statistics()
    assert s["forward_count"] == 0 and s["nonfinite_count"] == 0
    assert set(s["nonfinite_by_stage"].values()) == {0}


def test_logits_counter_catches_overflow_and_nan_head_without_reading_logits():
    model = _tiny(vocab_size=100).eval()
    ids = _ids(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(3e5)  # fp16 logits overflow to inf
    logits = model(ids)
    assert not torch.isfinite(logits).all()
    assert model.get_statistics()["nonfinite_by_stage"]["logits"] == 1
    model.reset_statistics()
    with torch.no_grad():
        model.lm_head.weight.div_(3e5)
        model.lm_head.bias[7] = float("nan")
    model(ids)
    assert model.get_statistics()["nonfinite_by_stage"]["logits"] == 1
    assert model.get_statistics()["nonfinite_by_stage"]["layer_1"] == 0


def test_logits_counter_is_conservative_near_the_range():
    """A head row whose norm puts the bound past fp16's range while every logit stays finite: counted."""
    model = _tiny(vocab_size=100).eval()
    ids = _ids(model)
    h = model(ids, return_hidden=True).detach().reshape(-1, model.config.d_model).float()
    model.reset_statistics()
    row = torch.randn(h.shape[1], generator=torch.Generator().manual_seed(3))
    row /= row.norm()
    cos = (h @ row).abs() / h.norm(dim=1)
    assert float(cos.max()) < 0.7  # a direction far from every head input
    with torch.no_grad():
        model.lm_head.weight[0] = (1.2 * 65504 / float(h.norm(dim=1).max()) * row).half()
    logits = model(ids)
    assert torch.isfinite(logits).all()
    assert model.get_statistics()["nonfinite_by_stage"]["logits"] == 1
    with torch.no_grad():
        model.lm_head.weight[0] *= 0.5  # the bound below the range again
    model(ids)
    assert model.get_statistics()["nonfinite_by_stage"]["logits"] == 1


def test_logits_bound_pairs_each_head_row_with_its_own_bias():
    """The bound is max_v (H norm(w_v) + |b_v|): a long row with a small bias and a short row with a large bias,
    each alone below fp16's range, are not summed into one bound past it (as H max norm(w) + max |b| would)."""
    model = _tiny(vocab_size=100).eval()
    ids = _ids(model)
    h = model(ids, return_hidden=True).detach().reshape(-1, model.config.d_model).float()
    big = float(h.norm(dim=1).max())
    model.reset_statistics()
    with torch.no_grad():
        model.lm_head.weight[0] = (model.lm_head.weight[0].float() / model.lm_head.weight[0].float().norm()
                                   * (0.6 * 65504 / big)).half()
        model.lm_head.bias.zero_()
        model.lm_head.bias[1] = 0.6 * 65504
    logits = model(ids)
    assert torch.isfinite(logits).all()
    assert model.get_statistics()["nonfinite_by_stage"]["logits"] == 0
    with torch.no_grad():
        model.lm_head.bias[0] = 0.6 * 65504  # row 0 itself now reaches the range: counted
    model(ids)
    assert model.get_statistics()["nonfinite_by_stage"]["logits"] == 1


def test_nan_in_embedding_counted_at_embedding_stage():
    model = _tiny(vocab_size=100).eval()
    ids = _ids(model)
    with torch.no_grad():
        model.embedding.weight[1, int(ids[0, 0]), 0] = float("nan")
    model(ids)
    assert model.get_statistics()["nonfinite_by_stage"]["embedding"] == 1


def test_statistics_buffers_are_not_persistent():
    model = _tiny(vocab_size=100)
    keys = model.state_dict().keys()
    assert not any("count" in k for k in keys)


# ------------------------------------------------------------------ backward
def test_backward_gives_finite_bounded_gradients_for_every_parameter():
    model = _tiny(seed=0).train()
    ids = _ids(model, 2, 32)
    logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    assert torch.isfinite(loss) and abs(loss.item() - math.log(50257)) < 1.0
    loss.backward()
    names = [n for n, _ in model.named_parameters()]
    assert "embedding.position.weight" in names
    assert not model.embedding.position.weight.requires_grad and model.embedding.position.weight.grad is None
    for name, p in model.named_parameters():
        if name == "embedding.position.weight":
            continue
        assert p.grad is not None, f"{name}: no gradient"
        assert p.grad.dtype == p.dtype and p.grad.shape == p.shape
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        norm = p.grad.float().norm().item()
        assert 1e-6 <= norm <= 1e3, f"{name}: gradient norm {norm} outside [1e-6, 1e3]"


def test_fp64_block_gradients_equal_complex128_reference():
    block = Stage1Block(6, dropout=0.0, dtype=torch.float64)
    with torch.no_grad():
        block.activation.bias.fill_(-0.1)
        block.norm1.weight.uniform_(0.5, 1.5)
        block.norm2.bias.normal_()
        block.linear.bias.normal_()
    g = torch.Generator().manual_seed(0)
    x = torch.complex(torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64))
    probe = torch.complex(torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64))

    z = ComplexTensor(torch.stack((x.real, x.imag))).requires_grad_()
    y = block(z)
    (y.real * probe.real + y.imag * probe.imag).sum().backward()

    def ln(t, w, b, eps=1e-5):
        c = t - t.mean(-1, keepdim=True)
        return c / torch.sqrt((c.abs() ** 2).mean(-1, keepdim=True) + eps) * w + b

    xn = x.clone().requires_grad_()
    W = torch.complex(block.linear.weight[0], block.linear.weight[1]).detach()
    bl = torch.complex(block.linear.bias[0], block.linear.bias[1]).detach()
    h = ln(xn, block.norm1.weight.detach(), block.norm1.bias.detach()) @ W.T + bl
    r = h.abs()
    h = torch.relu(r + block.activation.bias.detach()) * h / r
    yn = ln(h + xn, block.norm2.weight.detach(), block.norm2.bias.detach())
    torch.testing.assert_close(torch.complex(y.real, y.imag).detach(), yn.detach())
    (yn * probe.conj()).real.sum().backward()
    torch.testing.assert_close(torch.complex(z.grad.real, z.grad.imag), xn.grad)


# ------------------------------------------------------------------ block
def test_block_forward():
    block = Stage1Block(8).eval()
    z = C.randn(2, 5, 8)
    y = block(z)
    assert isinstance(y, ComplexTensor) and y.shape == (2, 5, 8) and y.dtype == torch.float16 and y.is_planar()
    assert set(dict(block.named_children())) == {"norm1", "linear", "activation", "dropout", "norm2"}


# ------------------------------------------------------------------ config
def test_config_defaults_are_the_seed():
    c = Stage1Config()
    assert (c.vocab_size, c.d_model, c.n_layers, c.max_seq_len) == (50257, 512, 6, 1024)
    assert c.use_complex32 is True and c.dropout == 0.1 and c.dtype == torch.float16
    assert (c.trainable_positions, c.embedding_init, c.linear_init, c.head_init, c.dropout_mode) == (
        False, "zeta", "uniform", "default", "independent")
    assert Stage1Config(use_complex32=False).dtype == torch.float32
    d = c.to_dict()
    assert d["d_model"] == 512 and set(d) == {f.name for f in dataclasses.fields(Stage1Config)}
    assert Stage1Config(**d) == c


@pytest.mark.parametrize("field, value, exc", [
    ("d_model", -8, ValueError), ("d_model", 0, ValueError), ("vocab_size", 0, ValueError),
    ("n_layers", -1, ValueError), ("max_seq_len", 0, ValueError), ("dropout", 1.0, ValueError),
    ("dropout", -0.1, ValueError), ("layer_norm_eps", 0.0, ValueError), ("zeta_scale", float("nan"), ValueError),
    ("d_model", True, TypeError), ("n_layers", 2.0, TypeError), ("vocab_size", "100", TypeError),
    ("use_complex32", 1, TypeError), ("dropout", "0.1", TypeError), ("initial_phase", True, TypeError),
    ("trainable_positions", 1, TypeError), ("embedding_init", "xavier", ValueError),
    ("embedding_init", None, TypeError), ("linear_init", "glorot", ValueError), ("head_init", "zero", ValueError),
    ("head_init", 0.02, TypeError), ("dropout_mode", "per-part", ValueError), ("dropout_mode", True, TypeError),
])
def test_config_validation(field, value, exc):
    with pytest.raises(exc, match=field):
        Stage1Config(**{field: value})


def test_model_config_overrides():
    m = Stage1Model(make_config("stage1", vocab_size=10), device="meta", d_model=16)
    assert m.config.d_model == 16 and m.config.vocab_size == 10 and m.max_seq_len == 128
    m2 = Stage1Model(None, device="meta", vocab_size=11, d_model=8, n_layers=1, max_seq_len=4)
    assert m2.config.vocab_size == 11 and len(m2.blocks) == 1
    with pytest.raises(ValueError, match="d_model"):
        Stage1Model(make_config("stage1"), device="meta", d_model=-1)
    with pytest.raises(TypeError, match="config"):
        Stage1Model({"d_model": 8})


def test_create_phase3_stage1_model_signature():
    sig = inspect.signature(create_phase3_stage1_model)
    want = dict(vocab_size=50257, d_model=512, n_layers=6, max_seq_len=2048, use_complex32=True,
                dropout=0.1, zeta_scale=1.0, device=None)
    params = sig.parameters
    assert list(params)[: len(want)] == list(want)
    for name, default in want.items():
        assert params[name].default == default, f"{name} default {params[name].default!r} != {default!r}"
    assert params["extra"].kind is inspect.Parameter.VAR_KEYWORD
    m = create_phase3_stage1_model(vocab_size=20, d_model=8, n_layers=1, max_seq_len=4, dropout=0.0,
                                   initial_phase=0.5, device="meta")
    assert isinstance(m, Stage1Model) and m.config.initial_phase == 0.5 and m.config.dropout == 0.0


# ------------------------------------------------------------------ registry
def test_registry_names_and_presets():
    names = model_names()
    assert "stage1" in names and names == sorted(MODELS) and names == sorted(names)
    assert set(PRESETS) >= {"tiny", "small", "seed"}
    assert make_config("stage1", "seed") == Stage1Config()
    tiny = make_config("stage1")
    assert (tiny.d_model, tiny.n_layers, tiny.max_seq_len) == (64, 2, 128)
    assert make_config("stage1", "small", dropout=0.0).dropout == 0.0


def test_build_model_applies_preset_and_overrides():
    m = build_model("stage1", "tiny", device="meta", vocab_size=33)
    assert isinstance(m, Stage1Model)
    assert m.config.vocab_size == 33 and m.config.d_model == 64 and m.lm_head.weight.device.type == "meta"


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: make_config("stage9"), ValueError, "stage9"),
    (lambda: build_model("gpt2"), ValueError, "gpt2"),
    (lambda: make_config("stage1", "huge"), ValueError, "huge"),
    (lambda: build_model("stage1", "huge"), ValueError, "preset"),
    (lambda: make_config("stage1", n_kv_heads=4), ValueError, "n_kv_heads"),
    (lambda: build_model("stage1", dmodel=4), ValueError, "dmodel"),
    (lambda: make_config(3), TypeError, "name"),
    (lambda: make_config("stage1", d_model=-2), ValueError, "d_model"),
])
def test_registry_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()

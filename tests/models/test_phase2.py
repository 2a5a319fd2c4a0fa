"""Phase 2 baseline model: config, presets, parameter count, input checks, forward, training, counters."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from muse.models import MODELS, Phase2Config, Phase2Model, build_model, make_config
from muse.models.phase2 import MIXERS, PRESETS, expected_parameter_count
from muse.models.stage1 import PRESETS as STAGE1_PRESETS

pytestmark = pytest.mark.usefixtures("_one_thread")


def _tiny(**overrides) -> Phase2Model:
    torch.manual_seed(0)
    return Phase2Model(Phase2Config(**{**PRESETS["tiny"], "vocab_size": 97, **overrides}))


def _ids(b=2, s=16, vocab=97, seed=0) -> torch.Tensor:
    return torch.randint(0, vocab, (b, s), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- config

def test_config_defaults():
    c = Phase2Config()
    assert (c.vocab_size, c.d_model, c.n_layers, c.max_seq_len, c.n_heads) == (50257, 512, 6, 1024, 8)
    assert (c.ffn_mult, c.bk_channels, c.bk_z, c.dropout) == (4, 16, 1j, 0.1)
    assert (c.bk_norm, c.bk_shift, c.bk_coupling, c.bk_dissipation) == (False, 2.0, 1.0, True)
    assert (c.hebbian_norm, c.hebbian_q_scale, c.hebbian_shared_decay, c.hebbian_gamma_min) == (True, True, False, 0.0)
    assert (c.mixer_bias, c.head_bias, c.init) == (True, True, "gpt2")
    assert c.mixers == ("bk", "hebbian")
    assert c.dtype == torch.float32
    assert c.d_head == 64


@pytest.mark.parametrize("field,value,exc,match", [
    ("vocab_size", 0, ValueError, "vocab_size"),
    ("vocab_size", 1.5, TypeError, "vocab_size"),
    ("d_model", 0, ValueError, "d_model"),
    ("n_layers", -1, ValueError, "n_layers"),
    ("max_seq_len", 0, ValueError, "max_seq_len"),
    ("n_heads", 0, ValueError, "n_heads"),
    ("n_heads", 3, ValueError, "divisible by n_heads"),
    ("ffn_mult", 0, ValueError, "ffn_mult"),
    ("bk_channels", 0, ValueError, "bk_channels"),
    ("bk_channels", True, TypeError, "bk_channels"),
    ("bk_z", 1.0, ValueError, "Im bk_z > 0"),
    ("bk_z", 0.5 - 1j, ValueError, "Im bk_z > 0"),
    ("bk_z", complex(0.0, math.inf), ValueError, "bk_z must be finite"),
    ("bk_z", "1j", TypeError, "bk_z"),
    ("bk_z", (1.0, 2.0, 3.0), ValueError, "bk_z"),
    ("hebbian_eta", 0.0, ValueError, "hebbian_eta"),
    ("hebbian_dt", -1.0, ValueError, "hebbian_dt"),
    ("hebbian_dt", "1", TypeError, "hebbian_dt"),
    ("hebbian_chunk_size", 0, ValueError, "hebbian_chunk_size"),
    ("hebbian_norm", 1, TypeError, "hebbian_norm must be a bool"),
    ("hebbian_q_scale", "yes", TypeError, "hebbian_q_scale must be a bool"),
    ("hebbian_shared_decay", None, TypeError, "hebbian_shared_decay must be a bool"),
    ("hebbian_gamma_min", -0.1, ValueError, "hebbian_gamma_min must be >= 0"),
    ("hebbian_gamma_min", math.inf, ValueError, "hebbian_gamma_min must be finite"),
    ("bk_norm", 0, TypeError, "bk_norm must be a bool"),
    ("bk_dissipation", "no", TypeError, "bk_dissipation must be a bool"),
    ("bk_shift", math.nan, ValueError, "bk_shift must be finite"),
    ("bk_shift", "2", TypeError, "bk_shift must be a real number"),
    ("bk_coupling", 0.0, ValueError, "bk_coupling must be > 0"),
    ("bk_coupling", -0.01, ValueError, "bk_coupling must be > 0"),
    ("mixer_bias", 1.0, TypeError, "mixer_bias must be a bool"),
    ("head_bias", None, TypeError, "head_bias must be a bool"),
    ("init", "xavier", ValueError, "init must be one of"),
    ("init", 0, TypeError, "init must be one of"),
    ("mixers", "bk", TypeError, "mixers"),
    ("mixers", ("bk", "snr"), ValueError, "mixers"),
    ("dropout", 1.0, ValueError, "dropout"),
    ("zeta_scale", math.nan, ValueError, "zeta_scale"),
    ("layer_norm_eps", 0.0, ValueError, "layer_norm_eps"),
])
def test_config_validation(field, value, exc, match):
    with pytest.raises(exc, match=match):
        Phase2Config(**{field: value})


def test_config_to_dict_is_json_and_round_trips():
    c = Phase2Config(bk_z=0.25 + 2j, mixers=["hebbian", "bk"])
    assert c.mixers == ("hebbian", "bk")
    d = c.to_dict()
    assert d["bk_z"] == [0.25, 2.0] and d["mixers"] == ["hebbian", "bk"]
    back = Phase2Config(**json.loads(json.dumps(d)))
    assert back == c


def test_presets_match_stage1_names():
    """The sizes the bench trains at one preset name exist for both models; Phase 2 also has its
    'original' presets, Stage 1 its variant presets (mix, mix-copy and their tiny twins)."""
    assert set(PRESETS) - {"original", "original-tiny"} == set(STAGE1_PRESETS) - {"mix", "mix-tiny", "mix-copy", "mix-copy-tiny"}
    assert PRESETS["tiny"] == dict(d_model=64, n_layers=2, max_seq_len=128, n_heads=4)
    assert (PRESETS["seed"]["d_model"], PRESETS["seed"]["n_layers"], PRESETS["seed"]["max_seq_len"]) == (512, 6, 1024)


def test_registry():
    assert MODELS["phase2"].config_cls is Phase2Config
    assert MODELS["phase2"].model_cls is Phase2Model
    model = build_model("phase2", "tiny", vocab_size=50)
    assert isinstance(model, Phase2Model) and model.max_seq_len == 128
    with pytest.raises(ValueError, match="unknown config field"):
        make_config("phase2", "tiny", use_complex32=True)


def test_model_rejects_wrong_config_type():
    with pytest.raises(TypeError, match="config must be a Phase2Config"):
        Phase2Model(dataclasses.asdict(Phase2Config()))


# ---------------------------------------------------------------- parameter count

@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_parameter_count_matches_closed_form(preset):
    model = Phase2Model(Phase2Config(**PRESETS[preset]), device="meta")
    assert model.num_parameters() == expected_parameter_count(model.config)


@pytest.mark.parametrize("mixers", [(), ("bk",), ("hebbian",), ("hebbian", "bk", "hebbian")])
def test_parameter_count_other_mixers(mixers):
    model = _tiny(mixers=mixers, bk_channels=3)
    assert model.num_parameters() == expected_parameter_count(model.config)
    assert [type(m) for m in model.blocks[0].mixers] == [MIXERS[name] for name in mixers]


def test_position_table_is_a_fixed_buffer():
    model = _tiny()
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith("position") for n in names)
    assert "position.weight" in dict(model.named_buffers())


# ---------------------------------------------------------------- inputs

@pytest.mark.parametrize("ids,exc,match", [
    (torch.tensor([[0, 97]]), ValueError, "out of range"),
    (torch.tensor([[0, -1]]), ValueError, "negative"),
    (torch.tensor([0, 1, 2]), ValueError, "2-D"),
    (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, "2-D"),
    (torch.zeros(1, 4), TypeError, "integer tensor"),
    (torch.zeros(1, 4, dtype=torch.bool), TypeError, "integer tensor"),
    (torch.zeros(1, 129, dtype=torch.long), ValueError, "max_seq_len=128"),
    ([[0, 1]], TypeError, "torch.Tensor"),
])
def test_bad_inputs(ids, exc, match):
    model = _tiny()
    with pytest.raises(exc, match=match):
        model(ids)


# ---------------------------------------------------------------- forward / backward

def test_forward_shapes_and_diagnostics():
    model = _tiny().eval()
    logits = model(_ids(3, 20))
    assert logits.shape == (3, 20, 97) and logits.dtype == torch.float32
    logits2, diag = model(_ids(3, 20), return_diagnostics=True)
    assert torch.equal(logits, logits2)
    assert list(diag) == ["embedding", "layer_0", "layer_1", "final_norm", "output"]
    layer = diag["layer_0"]
    assert layer["nonfinite"] == 0 and diag["output"]["nonfinite"] == 0
    assert 0.0 < layer["bk_green_abs_max"] <= 1.0 / model.config.bk_z.imag
    assert 0.0 < layer["hebbian_retention_mean"] < 1.0
    assert model(_ids(2, 1)).shape == (2, 1, 97)
    assert model(_ids(2, 0)).shape == (2, 0, 97)
    assert model(_ids(2, 128)).shape == (2, 128, 97)


def test_no_cross_sample_coupling():
    model = _tiny().eval()
    ids = _ids(4, 24)
    other = ids.clone()
    other[1:] = _ids(3, 24, seed=5)
    assert torch.equal(model(ids)[0], model(other)[0])


def test_chunk_size_does_not_change_the_model():
    ids = _ids(2, 100)
    a = _tiny(hebbian_chunk_size=None).eval()(ids)
    b = _tiny(hebbian_chunk_size=16).eval()(ids)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()


def test_float64_conversion():
    model = _tiny().double().eval()
    assert model(_ids()).dtype == torch.float64


def test_bf16_autocast_keeps_recurrences_in_float32():
    """The trainer's --amp autocasts Phase 2; the scans must still see float32 inputs."""
    model = _tiny()
    ids = _ids(2, 32)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
             for m in (model.blocks[0].mixers[0].potential, model.blocks[0].mixers[1].q)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, diag = model(ids[:, :-1], return_diagnostics=True)
        loss = F.cross_entropy(logits.float().reshape(-1, 97), ids[:, 1:].reshape(-1))
    loss.backward()
    for h in hooks:
        h.remove()
    assert seen == [torch.bfloat16, torch.bfloat16]  # autocast did reach the linears
    assert torch.isfinite(loss) and diag["layer_0"]["bk_green_abs_max"] <= 1.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    ref = F.cross_entropy(model(ids[:, :-1]).reshape(-1, 97), ids[:, 1:].reshape(-1))
    assert abs(loss.item() - ref.item()) < 0.05


def test_backward_gives_finite_grads_everywhere():
    model = _tiny()
    ids = _ids(2, 32)
    logits = model(ids[:, :-1])
    F.cross_entropy(logits.reshape(-1, 97), ids[:, 1:].reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert float(model.blocks[0].mixers[0].potential.weight.grad.abs().sum()) > 0
    assert float(model.blocks[0].mixers[1].gamma.weight.grad.abs().sum()) > 0


def test_training_reduces_loss_on_a_repeated_sequence():
    model = _tiny(dropout=0.0)
    ids = _ids(1, 8).repeat(2, 6)  # (2, 48): a period-8 pattern
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(ids[:, :-1]).reshape(-1, 97), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_dropout_only_in_training():
    model = _tiny(dropout=0.5)
    ids = _ids()
    model.train()
    assert not torch.equal(model(ids), model(ids))
    model.eval()
    assert torch.equal(model(ids), model(ids))


# ---------------------------------------------------------------- counters

def test_statistics_count_forwards_and_nonfinite_stages():
    model = _tiny().eval()
    ids = _ids()
    model(ids)
    model(ids)
    stats = model.get_statistics()
    assert stats["forward_count"] == 2 and stats["nonfinite_count"] == 0
    assert stats["nonfinite_by_stage"] == {"embedding": 0, "layer_0": 0, "layer_1": 0, "logits": 0}
    with torch.no_grad():
        model.blocks[1].ffn.proj.bias[0] = math.inf
    model(ids)
    stats = model.get_statistics()
    assert stats["forward_count"] == 3 and stats["nonfinite_count"] == 1
    assert stats["nonfinite_rate"] == pytest.approx(1 / 3)
    assert stats["nonfinite_by_stage"]["layer_0"] == 0 and stats["nonfinite_by_stage"]["layer_1"] == 1
    model.reset_statistics()
    assert model.get_statistics()["forward_count"] == 0
    assert model.get_statistics()["nonfinite_count"] == 0

"""RealFeedForward: the one GELU MLP of Phase 2 and the GPT reference (counts, init, old names)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from muse.models import build_model
from muse.models.phase2 import Phase2Model
from muse.nn import RealFeedForward

pytestmark = pytest.mark.usefixtures("_one_thread")


def test_forward_is_linear_gelu_linear():
    torch.manual_seed(0)
    ffn = RealFeedForward(8, 32)
    x = torch.randn(2, 5, 8)
    want = F.linear(F.gelu(F.linear(x, ffn.fc.weight, ffn.fc.bias)), ffn.proj.weight, ffn.proj.bias)
    assert torch.equal(ffn(x), want)
    assert ffn(x).shape == (2, 5, 8)
    assert [n for n, _ in ffn.named_parameters()] == ["fc.weight", "fc.bias", "proj.weight", "proj.bias"]
    assert [n for n, _ in RealFeedForward(8, 32, bias=False).named_parameters()] == ["fc.weight", "proj.weight"]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(d_model=0, d_hidden=4), ValueError, "d_model"),
    (dict(d_model=4, d_hidden=2.5), TypeError, "d_hidden"),
    (dict(d_model=4, d_hidden=4, bias=1), TypeError, "bias must be a bool"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        RealFeedForward(**kwargs)


@pytest.mark.parametrize("name", ["phase2", "gpt"])
def test_both_real_models_use_it(name):
    model = build_model(name, "tiny", device="meta")
    ffns = [m for m in model.modules() if isinstance(m, RealFeedForward)]
    assert len(ffns) == model.config.n_layers
    assert ffns[0].fc.out_features == model.config.ffn_mult * model.config.d_model


@pytest.mark.parametrize(("name", "overrides", "count"), [
    ("phase2", {}, 70_662_465),
    ("phase2", {"mixers": []}, 64_118_865),
    ("gpt", {}, 70_902_784),
])
def test_seed_size_parameter_counts_are_pinned(name, overrides, count):
    """The counts docs/results.md and docs/experiments.md report for the seed-size presets."""
    assert build_model(name, "seed", device="meta", **overrides).num_parameters() == count


def test_phase2_gpt2_init_scales_the_ffn_output():
    torch.manual_seed(0)
    model = build_model("phase2", "tiny", d_model=128, n_layers=4)
    n_branches = 4 * 3  # two mixers and the FFN per block
    for block in model.blocks:
        assert block.ffn.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.ffn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(n_branches), rel=0.05)
        assert not block.ffn.fc.bias.any() and not block.ffn.proj.bias.any()


def _old_names(state: dict) -> dict:
    """Phase 2's state dict as saved before its FFN became RealFeedForward (``ffn.out``)."""
    return {k.replace(".ffn.proj.", ".ffn.out."): v for k, v in state.items()}


def test_phase2_loads_a_state_dict_with_the_old_ffn_names():
    torch.manual_seed(0)
    source = build_model("phase2", "tiny")
    old = _old_names(source.state_dict())
    assert "blocks.0.ffn.out.weight" in old and "blocks.0.ffn.proj.weight" not in old
    torch.manual_seed(1)
    target = build_model("phase2", "tiny")
    target.load_state_dict(old)  # strict
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert Phase2Model.upgrade_key("blocks.11.ffn.out.bias") == "blocks.11.ffn.proj.bias"
    assert Phase2Model.upgrade_key("blocks.0.mixers.0.out.weight") == "blocks.0.mixers.0.out.weight"


def test_phase2_refuses_a_state_dict_with_both_names():
    model = build_model("phase2", "tiny")
    state = model.state_dict()
    state["blocks.0.ffn.out.weight"] = state["blocks.0.ffn.proj.weight"].clone()
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*blocks\.0\.ffn\.out\.weight"):
        model.load_state_dict(state)

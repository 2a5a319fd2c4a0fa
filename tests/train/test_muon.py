"""Muon for real and planar complex matrices (``muse.train.muon``) and its place in the optimizers and the trainer."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from muse.models import build_model
from muse.train import load_checkpoint, train
from muse.train.config import TrainConfig
from muse.train.muon import Muon, orthogonalize, update_scale
from muse.train.optim import FullPrecisionOptimizer, MixedPrecisionOptimizer, muon_parameter_names
from muse.train.synthetic import synthetic_data, tiny_config

CUBIC = (1.5, -0.5, 0.0)  # the classical Newton-Schulz step: converges to the exact polar factor


def _planar(shape, seed=0):
    return torch.randn((2, *shape), generator=torch.Generator().manual_seed(seed))


def _real_form(planar: torch.Tensor) -> torch.Tensor:
    """[[A, -B], [B, A]] for A + iB: the real matrix of a complex one."""
    a, b = planar[0], planar[1]
    return torch.cat([torch.cat([a, -b], 1), torch.cat([b, a], 1)], 0)


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (32, 32)])
def test_planar_update_converges_to_the_complex_polar_factor(shape):
    g = _planar(shape)
    z = torch.complex(g[0].double(), g[1].double())
    u, _, vh = torch.linalg.svd(z, full_matrices=False)
    polar = u @ vh
    got = orthogonalize(g, steps=60, coefficients=CUBIC)
    assert got.shape == g.shape and got.dtype == torch.float32
    torch.testing.assert_close(got[0].double(), polar.real, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1].double(), polar.imag, atol=1e-5, rtol=0)


def test_planar_update_is_the_real_iteration_on_the_complex_matrix_not_on_its_planes():
    g = _planar((16, 28), seed=1)
    whole = orthogonalize(_real_form(g), steps=60, coefficients=CUBIC)
    got = orthogonalize(g, steps=60, coefficients=CUBIC)
    torch.testing.assert_close(whole, _real_form(got), atol=1e-5, rtol=0)
    per_plane = torch.stack([orthogonalize(g[0], steps=60, coefficients=CUBIC),
                             orthogonalize(g[1], steps=60, coefficients=CUBIC)])
    assert (per_plane - got).abs().max() > 0.1  # a different update: the planes' own polar factors


@pytest.mark.parametrize("planar", [False, True])
def test_quintic_update_has_singular_values_near_one(planar):
    g = _planar((48, 64), seed=2)
    out = orthogonalize(g if planar else g[0])
    m = torch.complex(out[0], out[1]) if planar else out
    s = torch.linalg.svdvals(m)
    assert s.numel() == 48 and 0.5 < s.min() and s.max() < 1.3  # Jordan's quintic: roughly U(0.7, 1.2) S V^H


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
def test_real_matrices_follow_torch_muon_under_the_adamw_matched_step():
    torch.manual_seed(0)
    w = torch.randn(48, 32)
    ours, ref = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    a = Muon([ours], lr=0.01, weight_decay=0.1)
    b = torch.optim.Muon([ref], lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(5):
        g = torch.randn(48, 32)
        ours.grad, ref.grad = g.clone(), g.clone()
        a.step()
        b.step()
    moved = (ref - w).abs().max()
    assert moved > 0.02
    assert (ours - ref).abs().max() < 0.02 * moved  # torch runs the iteration in bf16, this one in fp32


@pytest.mark.parametrize("shape", [(64, 32), (2, 64, 32)])
def test_a_step_has_root_mean_square_near_one_fifth_of_the_learning_rate(shape):
    p = torch.nn.Parameter(torch.zeros(shape))
    p.grad = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    Muon([p], lr=1e-2, weight_decay=0.0, nesterov=False, momentum=0.0).step()
    rms = p.detach().pow(2).mean().sqrt() / 1e-2
    assert 0.15 < rms < 0.22
    assert update_scale(shape) == pytest.approx(0.2 * math.sqrt((2 if len(shape) == 3 else 1) * 64))


def test_weight_decay_is_decoupled_and_a_parameter_without_gradient_is_left_alone():
    p, q = torch.nn.Parameter(torch.ones(8, 8)), torch.nn.Parameter(torch.ones(8, 8))
    p.grad = torch.zeros(8, 8)
    Muon([p, q], lr=0.1, weight_decay=0.5).step()
    torch.testing.assert_close(p.detach(), torch.full((8, 8), 0.95))
    assert torch.equal(q.detach(), torch.ones(8, 8))


def test_bad_arguments_are_named():
    p = torch.nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="lr"):
        Muon([p], lr=0.0)
    with pytest.raises(ValueError, match="momentum"):
        Muon([p], momentum=1.0)
    with pytest.raises(ValueError, match="ns_steps"):
        Muon([p], ns_steps=0)
    with pytest.raises(TypeError, match="nesterov"):
        Muon([p], nesterov=1)
    with pytest.raises(ValueError, match=r"planar \(2, out, in\).*\(4,\)"):
        Muon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match=r"\(3, 4, 4\)"):
        Muon([torch.nn.Parameter(torch.zeros(3, 4, 4))])
    with pytest.raises(TypeError, match="fp32"):
        Muon([torch.nn.Parameter(torch.zeros(4, 4, dtype=torch.float16))])
    with pytest.raises(ValueError, match="update must be"):
        orthogonalize(torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match="closure"):
        Muon([p]).step(lambda: 0.0)


@pytest.mark.parametrize(("model", "preset"), [("stage1", "mix-tiny"), ("stage1", "tiny"), ("phase2", "tiny"), ("gpt", "tiny")])
def test_muon_takes_every_hidden_linear_weight_and_leaves_the_head_and_tables(model, preset):
    net = build_model(model, preset)
    names = muon_parameter_names(net)
    params = dict(net.named_parameters())
    assert names and "lm_head.weight" not in names
    assert not any("embedding" in n for n in names)
    assert all(params[n].ndim in (2, 3) for n in names)
    if model == "stage1":
        assert any(params[n].ndim == 3 for n in names)  # planar complex matrices
    if model == "stage1" and preset == "mix-tiny":
        assert {"blocks.0.mixer.in_proj.weight", "blocks.0.ffn.up.weight", "blocks.0.mixer.decay_up.weight"} <= names


def _mixed(net):
    named = list(net.named_parameters())
    muon = muon_parameter_names(net)
    no_decay = {n for n, p in named if p.ndim < 2 or "embedding" in n or n.endswith("bias")}
    return MixedPrecisionOptimizer(named, lr=1e-3, weight_decay=0.1, no_decay=no_decay, muon=muon), muon


def test_mixed_precision_optimizer_puts_the_matrices_under_muon_and_saves_both_states():
    torch.manual_seed(0)
    net = build_model("stage1", "mix-tiny").eval()  # no dropout: the twin below must see the same forward
    opt, muon = _mixed(net)
    assert opt.names[:len(muon)] == sorted(muon, key=opt.names.index) and set(opt.names[:len(muon)]) == muon
    ids = torch.randint(0, 50257, (2, 16))
    opt.zero_grad()
    opt.backward(net(ids).float().logsumexp(-1).mean())
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    assert not opt.step(max_norm=1.0).skipped
    moved = {n for n, p in net.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert muon <= moved
    state = opt.state_tensors()
    assert all(f"optim.momentum_buffer.{n}" in state for n in muon)
    assert "optim.exp_avg.lm_head.weight" in state and not any(f"optim.exp_avg.{n}" in state for n in muon)
    meta = opt.state_meta()
    assert "muon_groups" in meta and "param_groups" in meta

    twin = build_model("stage1", "mix-tiny").eval()
    twin.load_state_dict(net.state_dict())
    other, _ = _mixed(twin)
    other.load_state(state | {f"master.{n}": m for n, m in zip(opt.names, opt.masters, strict=True)}, meta)
    for o in (opt, other):
        o.zero_grad()
        o.backward((net if o is opt else twin)(ids).float().logsumexp(-1).mean())
        o.step(max_norm=1.0)
    for (n, a), b in zip(net.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), n


def test_a_checkpoint_of_one_optimizer_is_refused_by_the_other():
    net = build_model("stage1", "mix-tiny")
    named = list(net.named_parameters())
    plain = MixedPrecisionOptimizer(named, lr=1e-3, no_decay=set())
    with_muon, _ = _mixed(net)
    with pytest.raises(ValueError, match="parameters differ|disagree on the optimizer"):
        with_muon.load_state(plain.state_tensors(), plain.state_meta())


def test_full_precision_optimizer_steps_muon_and_adamw_and_refuses_a_bad_split():
    torch.manual_seed(0)
    net = build_model("gpt", "tiny")
    named = list(net.named_parameters())
    muon = muon_parameter_names(net)
    opt = FullPrecisionOptimizer(named, lr=1e-3, no_decay=set(), muon=muon)
    assert opt.muon is not None and len(opt.muon.param_groups[0]["params"]) == len(muon)
    out = net(torch.randint(0, 50257, (2, 8)))
    opt.zero_grad()
    opt.backward(out.float().logsumexp(-1).mean())
    assert not opt.step(1.0).skipped
    opt.set_lr(5e-4)
    assert opt.muon.param_groups[0]["lr"] == opt.inner.param_groups[0]["lr"] == 5e-4
    with pytest.raises(ValueError, match="muon names parameters"):
        FullPrecisionOptimizer(named, lr=1e-3, muon={"nope.weight"})
    with pytest.raises(ValueError, match="overlap"):
        FullPrecisionOptimizer(named, lr=1e-3, no_decay=muon, muon=muon)
    with pytest.raises(ValueError, match="every parameter is in muon"):
        FullPrecisionOptimizer([("w", torch.nn.Parameter(torch.zeros(4, 4)))], lr=1e-3, muon={"w"})


def test_train_config_names_a_bad_optimizer():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(TypeError, match="optimizer"):
        TrainConfig(optimizer=None)


DATA = synthetic_data()


@pytest.mark.parametrize("overrides", [{}, {"mixer": "recurrence", "ffn": "complex", "decay": "input", "decay_rank": 2}])
def test_training_with_muon_learns_and_resumes_bitwise(tmp_path, overrides):
    mo = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.1, **overrides)
    kw = dict(max_steps=6, eval_every=0, final_eval_tokens=256, optimizer="muon", model_overrides=mo)
    straight, split, adamw = tmp_path / "straight", tmp_path / "split", tmp_path / "adamw"
    res = train(tiny_config(str(straight), **kw), DATA)
    train(tiny_config(str(split), stop_after=3, **kw), DATA)
    train(tiny_config(str(split), resume=str(split / "last.safetensors"), **kw), DATA)
    train(tiny_config(str(adamw), **(kw | {"optimizer": "adamw"})), DATA)
    ck = load_checkpoint(straight / "last.safetensors")
    assert ck.train_config["optimizer"] == "muon" and "muon_groups" in ck.optimizer
    assert any(k.startswith("optim.momentum_buffer.") for k in ck.tensors)
    a, b, c = (load_file(d / "last.safetensors") for d in (straight, split, adamw))
    for key in a:
        if key.startswith(("model.", "master.", "optim.")):
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["model.blocks.0.linear.weight" if not overrides else "model.blocks.0.ffn.up.weight"],
                           c["model.blocks.0.linear.weight" if not overrides else "model.blocks.0.ffn.up.weight"])
    assert math.isfinite(res["final_eval"]["loss"])
    with pytest.raises(ValueError, match="optimizer"):
        train(tiny_config(str(split), resume=str(split / "last.safetensors"), **(kw | {"max_steps": 6, "optimizer": "adamw"})),
              DATA)

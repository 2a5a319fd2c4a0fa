"""MixedPrecisionOptimizer / DynamicLossScaler / FullPrecisionOptimizer unit tests."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from muse.models import build_model
from muse.train import (
    DynamicLossScaler,
    FullPrecisionOptimizer,
    MixedPrecisionOptimizer,
    decay_parameter_names,
)


def _fp16_params(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.randn(4, 3, generator=g).half())
    b = nn.Parameter(torch.randn(3, generator=g).half())
    return [("w", w), ("b", b)]


def _opt(named, **kw):
    kw.setdefault("lr", 1e-2)
    kw.setdefault("weight_decay", 0.0)
    return MixedPrecisionOptimizer(named, **kw)


def _loss(named, x):
    w, b = (p for _, p in named)
    return ((x @ w.float()) + b.float()).pow(2).sum()


def test_overflow_skips_step_halves_scale_and_leaves_everything_unchanged():
    named = _fp16_params()
    opt = _opt(named, loss_scaler=DynamicLossScaler(init_scale=2.0**10))
    before = [p.detach().clone() for _, p in named]
    masters_before = [m.clone() for m in opt.masters]
    opt.zero_grad()
    opt.backward(_loss(named, torch.ones(2, 4)))
    opt.masters[0].grad[0, 0] = float("inf")  # backward has folded the fp16 gradients into the masters
    res = opt.step(max_norm=1.0)
    assert res.skipped and math.isnan(res.grad_norm) and res.loss_scale == 2.0**10
    assert opt.loss_scale == 2.0**9
    assert opt.skipped_steps == 1
    for (_, p), p0, m, m0 in zip(named, before, opt.masters, masters_before, strict=True):
        assert torch.equal(p, p0) and torch.equal(m, m0)
    assert opt.inner.state_dict()["state"] == {}  # AdamW never stepped


def test_nan_gradient_is_skipped_too():
    named = _fp16_params()
    opt = _opt(named)
    opt.zero_grad()
    opt.backward(_loss(named, torch.ones(2, 4)))
    opt.masters[1].grad[1] = float("nan")
    assert opt.step().skipped and opt.skipped_steps == 1


def test_scale_grows_after_growth_interval_clean_steps():
    named = _fp16_params()
    opt = _opt(named, lr=1e-4, loss_scaler=DynamicLossScaler(init_scale=4.0, growth_interval=3))
    scales = []
    for _ in range(7):
        opt.zero_grad()
        opt.backward(_loss(named, torch.ones(2, 4)))
        assert not opt.step().skipped
        scales.append(opt.loss_scale)
    assert scales == [4.0, 4.0, 8.0, 8.0, 8.0, 16.0, 16.0]


def test_master_grads_are_the_unscaled_fp32_gradients():
    named = _fp16_params()
    opt = _opt(named, loss_scaler=DynamicLossScaler(init_scale=2.0**12))
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    opt.zero_grad()
    opt.backward(_loss(named, x))
    assert all(p.grad is None for _, p in named)  # folded into the masters by backward, still scaled
    scaled = [m.grad.clone() for m in opt.masters]
    res = opt.step()
    for m, g in zip(opt.masters, scaled, strict=True):
        assert torch.equal(m.grad, g / 2.0**12)
    want = torch.linalg.vector_norm(torch.cat([(g / 2.0**12).flatten() for g in scaled]))
    assert res.grad_norm == pytest.approx(want.item(), rel=1e-6)


def test_params_are_masters_rounded_once_and_masters_keep_small_updates():
    named = [("w", nn.Parameter(torch.ones(8, dtype=torch.float16)))]
    opt = _opt(named, lr=1e-4, betas=(0.0, 0.0))  # each update ~ lr, far below fp16 ulp(1) = 2**-10
    for _ in range(3):
        opt.zero_grad()
        opt.backward(named[0][1].float().sum())
        opt.step()
    master, param = opt.masters[0], named[0][1]
    assert master.dtype == torch.float32 and param.dtype == torch.float16
    assert torch.equal(param, master.half())
    assert torch.all(master < 1.0) and torch.all(param == 1.0)  # fp16 alone would lose these updates


def test_clipping_uses_the_fp32_global_norm():
    named = _fp16_params()
    opt = _opt(named, lr=1.0, betas=(0.0, 0.0), eps=1e-30, loss_scaler=DynamicLossScaler(init_scale=2.0**8))
    opt.zero_grad()
    opt.backward(_loss(named, 3 * torch.ones(2, 4)))
    grads = [m.grad / opt.loss_scale for m in opt.masters]
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    assert norm > 1.0  # so the clip below really acts
    res = opt.step(max_norm=0.5)
    assert res.grad_norm == pytest.approx(norm.item(), rel=1e-6)
    clipped = torch.linalg.vector_norm(torch.cat([m.grad.flatten() for m in opt.masters]))
    assert clipped.item() == pytest.approx(0.5, rel=1e-4)


def test_optimizer_state_round_trip_gives_identical_next_step():
    a_named, b_named = _fp16_params(), _fp16_params()
    a, b = _opt(a_named), _opt(b_named)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        a.zero_grad()
        a.backward(_loss(a_named, x))
        a.step(1.0)
    b.load_state(a.state_tensors(), a.state_meta())
    for opt, named in ((a, a_named), (b, b_named)):
        opt.zero_grad()
        opt.backward(_loss(named, x))
        opt.step(1.0)
    for (_, pa), (_, pb), ma, mb in zip(a_named, b_named, a.masters, b.masters, strict=True):
        assert torch.equal(pa, pb) and torch.equal(ma, mb)
    assert b.loss_scale == a.loss_scale


def test_load_state_refuses_other_parameters():
    a = _opt(_fp16_params())
    other = _opt([("v", nn.Parameter(torch.zeros(3, dtype=torch.float16)))])
    with pytest.raises(ValueError, match="parameters differ"):
        other.load_state(a.state_tensors(), a.state_meta())


def test_mixed_precision_refuses_float64_parameters():
    with pytest.raises(TypeError, match="fp16 \\(or fp32\\) parameters"):
        _opt([("w", nn.Parameter(torch.zeros(3, dtype=torch.float64)))])


def test_mixed_precision_updates_fp32_parameters_beside_fp16_ones():
    """fp32 parameters (a recurrence's nu, omega) get fp32 masters; the copy back is exact."""
    named = _fp16_params() + [("nu", nn.Parameter(torch.full((3,), 0.5)))]
    opt = _opt(named, lr=1e-2, loss_scaler=DynamicLossScaler(init_scale=2.0**4))
    before = named[2][1].detach().clone()
    opt.zero_grad()
    opt.backward(named[2][1].sum() + _loss(named[:2], torch.ones(2, 4)))
    assert not opt.step().skipped
    assert named[2][1].dtype == torch.float32 and not torch.equal(named[2][1].detach(), before)
    assert torch.equal(named[2][1].detach(), opt.masters[2])


@pytest.mark.parametrize("kw, match", [
    (dict(lr=-1.0), "lr"), (dict(weight_decay=-0.1), "weight_decay"), (dict(betas=(0.9,)), "betas"),
])
def test_bad_hyperparameters_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        _opt(_fp16_params(), **kw)


def test_scaler_floor_ceiling_and_bad_args():
    s = DynamicLossScaler(init_scale=2.0**-23)
    s.update(True)
    s.update(True)
    assert s.scale == 2.0**-24 and s.skipped_steps == 2
    s = DynamicLossScaler(init_scale=2.0**24, growth_interval=1)
    s.update(False)
    assert s.scale == 2.0**24
    with pytest.raises(ValueError, match="growth_interval"):
        DynamicLossScaler(growth_interval=0)
    with pytest.raises(ValueError, match="backoff_factor"):
        DynamicLossScaler(backoff_factor=1.0)


def test_full_precision_skips_nonfinite_steps():
    w = nn.Parameter(torch.ones(3))
    opt = FullPrecisionOptimizer([("w", w)], lr=0.1, weight_decay=0.0)
    opt.zero_grad()
    opt.backward(w.sum() * float("nan"))
    res = opt.step(1.0)
    assert res.skipped and opt.skipped_steps == 1 and torch.equal(w, torch.ones(3))
    opt.zero_grad()
    opt.backward(w.sum())
    assert not opt.step(1.0).skipped and torch.all(w < 1)


@pytest.mark.parametrize("name, tables", [("stage1", {"embedding.weight"}),
                                           ("phase2", {"token_embedding.weight"}),
                                           ("gpt", {"token_embedding.weight", "position_embedding.weight"})])
def test_decay_embeddings_adds_the_trainable_tables_and_nothing_else(name, tables):
    model = build_model(name, "tiny", vocab_size=32, d_model=8, n_layers=1, max_seq_len=8)
    linear = decay_parameter_names(model)
    both = decay_parameter_names(model, embeddings=True)
    assert both - linear == tables and linear < both
    params = dict(model.named_parameters())
    assert all(params[n].requires_grad for n in both)  # Stage 1's frozen zeta table is not listed
    if name == "stage1":
        assert not params["embedding.position.weight"].requires_grad


def test_decay_embeddings_is_checked_and_reaches_the_optimizer(tmp_path, monkeypatch):
    import muse.train.trainer as T
    from muse.train import TrainConfig, train
    from muse.train.synthetic import synthetic_data, tiny_config

    with pytest.raises(TypeError, match="decay_embeddings"):
        TrainConfig(decay_embeddings="yes")
    seen = []
    monkeypatch.setattr(T, "decay_parameter_names",
                        lambda model, embeddings=False: seen.append(embeddings) or decay_parameter_names(model, embeddings))
    train(tiny_config(str(tmp_path), max_steps=2, decay_embeddings=True), synthetic_data())
    assert seen == [True]


def test_weight_decay_only_on_linear_weights():
    model = build_model("stage1", "tiny", vocab_size=32, d_model=8, n_layers=2, max_seq_len=8)
    assert decay_parameter_names(model) == {"blocks.0.linear.weight", "blocks.1.linear.weight", "lm_head.weight"}
    opt = MixedPrecisionOptimizer(model.named_parameters(), lr=1e-3, weight_decay=0.1,
                                  no_decay={n for n, _ in model.named_parameters()} - decay_parameter_names(model))
    decays = sorted(g["weight_decay"] for g in opt.inner.param_groups)
    assert decays == [0.0, 0.1] and len(opt.inner.param_groups[0]["params"]) == 3

"""The learned copy path (``muse.nn.PointerMixture``, config field ``pointer_dim``) on every model.

Its distribution against a direct per-position evaluation of the definition, normalisation, the
loss path (``model_loss``) against the forward's log-probabilities, gradients (float64 gradcheck),
parameter counts, decoding fallbacks and the config checks.  Causality, incremental decoding and
fullgraph compilation of pointer models are in the files that parametrise those over variants.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from muse.models import build_model, make_config
from muse.models.base import PointerCache
from muse.models.gpt import expected_parameter_count as gpt_count
from muse.models.phase2 import expected_parameter_count as phase2_count
from muse.models.stage1 import Stage1State
from muse.models.stage1 import expected_parameter_count as stage1_count
from muse.nn import PointerMixture
from muse.nn.pointer import _log_mean_exp_cos_quadrature, log_mean_exp_cos
from muse.train import load_checkpoint, train
from muse.train.checkpoint import model_from_checkpoint
from muse.train.generate import generate
from muse.train.loss import IGNORE_INDEX, compile_model_loss, model_loss
from muse.train.synthetic import synthetic_data, tiny_config

pytestmark = pytest.mark.usefixtures("_one_thread")

VOCAB = 97
MODELS = [("stage1", "mix-tiny"), ("stage1", "tiny"), ("phase2", "tiny"), ("gpt", "tiny")]


def _model(name: str, preset: str, dim: int = 8, double: bool = True, mode: str = "cache"):
    torch.manual_seed(0)
    model = build_model(name, preset, vocab_size=VOCAB, pointer_dim=dim, pointer_mode=mode).eval()
    with torch.no_grad():  # a gate that depends on h, so every parameter matters
        model.pointer.gate.weight.normal_(0.0, 0.3)
    return model.double() if double and name != "stage1" else model


def _ids(b: int = 2, s: int = 24, seed: int = 1) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (b, s), generator=torch.Generator().manual_seed(seed))
    ids[:, s // 2:] = ids[:, : s - s // 2]  # repeats: the copy path has something to find
    return ids


def _definition(pointer: PointerMixture, h: torch.Tensor, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """p(w | t) position by position, in float64, from the module's parameters (no masking tricks)."""
    h, logits = h.double(), logits.double()
    wq, wk = pointer.query.weight.double(), pointer.key.weight.double()
    theta = pointer.log_theta.double().exp()
    wg, bg = pointer.gate.weight.double()[0], pointer.gate.bias.double()[0]
    out = torch.empty(logits.shape, dtype=torch.float64)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            p_vocab = torch.softmax(logits[b, t], dim=-1)
            if t == 0:
                out[b, t] = p_vocab
                continue
            q = torch.nn.functional.normalize(wq @ h[b, t], dim=0)
            k = torch.nn.functional.normalize(h[b, :t] @ wk.T, dim=-1)
            if pointer.mode == "cache":  # g = sigmoid(gate), a = softmax over j < t
                g = torch.sigmoid(h[b, t] @ wg + bg)
                a = g * torch.softmax(theta * (k @ q), dim=0)
            else:  # one softmax over [gate + log t, scores]: the head's share first
                w = torch.softmax(torch.cat([(h[b, t] @ wg + bg + math.log(t))[None], theta * (k @ q)]), dim=0)
                g, a = 1 - w[0], w[1:]
            p_copy = torch.zeros(logits.shape[-1], dtype=torch.float64)
            for j in range(t):
                p_copy[ids[b, j + 1]] += a[j]
            out[b, t] = (1 - g) * p_vocab + p_copy
    return out


@pytest.mark.parametrize("mode", ["cache", "sentinel"])
@pytest.mark.parametrize(("name", "preset"), MODELS)
def test_forward_is_the_definition_and_sums_to_one(name, preset, mode):
    model = _model(name, preset, mode=mode)
    ids = _ids()
    with torch.no_grad():
        h = model(ids, return_hidden=True)
        logits = model.lm_head(h)
        log_p = model(ids)
    ref = _definition(model.pointer, h, ids, logits)
    tol = 1e-12 if log_p.dtype == torch.float64 else 1e-5
    assert (log_p.double().exp() - ref).abs().max().item() <= tol
    assert (log_p.double().exp().sum(-1) - 1).abs().max().item() <= tol * 10
    head = torch.log_softmax(logits.double(), dim=-1)[:, 0]
    assert (log_p[:, 0].double() - head).abs().max().item() <= tol  # t = 0: nothing to copy, the head alone


@pytest.mark.parametrize("mode", ["cache", "sentinel"])
@pytest.mark.parametrize(("name", "preset"), MODELS)
@pytest.mark.parametrize("block", [5, 256])
def test_loss_path_equals_the_forward_log_probabilities(name, preset, block, mode, monkeypatch):
    model = _model(name, preset, mode=mode)
    ids = _ids()
    targets = torch.cat([ids[:, 1:], torch.randint(0, VOCAB, (2, 1))], dim=1)
    targets[0, 3] = targets[1, 0] = IGNORE_INDEX
    with torch.no_grad():
        log_p = model(ids).double()
    picked = -log_p.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    keep = targets != IGNORE_INDEX
    ref = picked[keep].mean()
    nll = PointerMixture.nll
    monkeypatch.setattr(PointerMixture, "nll", lambda self, *a, **k: nll(self, *a, **{**k, "block": block}))
    loss = model_loss(model, ids, targets)
    tol = 1e-12 if name != "stage1" else 2e-3  # Stage 1: fp16 head input, the two paths round differently
    assert abs(loss.item() - ref.item()) <= tol
    total = model_loss(model, ids, targets, reduction="sum")
    assert abs(total.item() - picked[keep].sum().item()) <= tol * keep.sum().item()


@pytest.mark.parametrize("name", ["stage1", "gpt"])
def test_loss_per_token_adds_up_to_the_sum(name):
    """reduction="none" gives each target's loss (0 where ignored), as for a model without the copy path."""
    model = _model(name, "mix-tiny" if name == "stage1" else "tiny", double=False)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 12, (2, 20), generator=gen)
    targets = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)
    targets[0, :5] = IGNORE_INDEX
    with torch.no_grad():
        each = model_loss(model, ids, targets, reduction="none")
        total = model_loss(model, ids, targets, reduction="sum")
    assert each.shape == targets.shape and each.dtype == torch.float32
    assert torch.all(each[0, :5] == 0) and torch.all(each[targets != IGNORE_INDEX] > 0)
    torch.testing.assert_close(each.sum(), total)


def test_loss_gradients_equal_the_forward_path_and_are_finite():
    """Backward through the checkpointed blocks gives the forward path's gradients (float64)."""
    model = _model("gpt", "tiny")
    ids = _ids()
    targets = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)
    model_loss(model, ids, targets).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    log_p = model(ids)
    (-log_p.gather(-1, targets[..., None]).mean()).backward()
    for n, p in model.named_parameters():
        assert torch.isfinite(got[n]).all(), n
        assert (got[n] - p.grad).abs().max().item() <= 1e-10 * (1 + p.grad.abs().max().item()), n
    assert model.pointer.log_theta.grad.abs().item() > 0 and model.pointer.query.weight.grad.abs().max() > 0


@pytest.mark.parametrize("mode", ["cache", "sentinel"])
def test_nll_passes_gradcheck(mode):
    torch.manual_seed(0)
    pointer = PointerMixture(6, 4, mode=mode).double()
    with torch.no_grad():
        pointer.gate.weight.normal_(0.0, 0.5)
    h = torch.randn(2, 7, 6, dtype=torch.float64, requires_grad=True)
    vocab_nll = (torch.rand(2, 7, dtype=torch.float64) * 3).requires_grad_()
    ids = torch.tensor([[1, 2, 1, 2, 3, 1, 2], [4, 4, 4, 0, 1, 4, 0]])
    targets = torch.cat([ids[:, 1:], torch.tensor([[2], [4]])], dim=1)
    assert torch.autograd.gradcheck(lambda x, v: pointer.nll(x, ids, targets, v, block=3), (h, vocab_nll))


def test_copying_lowers_the_loss_of_a_repeated_text():
    """On a window that repeats itself, the copy path (given weight) puts mass on the right tokens:
    the second half's loss falls below the head's alone; a token not yet seen gets none of it."""
    model = _model("gpt", "tiny")
    with torch.no_grad():
        model.pointer.gate.weight.zero_()
        model.pointer.gate.bias.fill_(0.0)  # g = 1/2
        model.pointer.log_theta.fill_(math.log(50.0))
    ids = torch.randint(0, VOCAB, (1, 32), generator=torch.Generator().manual_seed(3))
    ids[:, 16:] = ids[:, :16]
    targets = torch.cat([ids[:, 1:], ids[:, 1:2]], dim=1)
    with torch.no_grad():
        log_p = model(ids).gather(-1, targets[..., None])[0, :, 0]
        h = model(ids, return_hidden=True)
        head = torch.log_softmax(model.lm_head(h), dim=-1).gather(-1, targets[..., None])[0, :, 0]
    assert (log_p[16:] - head[16:]).mean() > 1.0  # about log of g * (a share of the mass) / p_head
    for t in range(1, 32):  # a target no earlier position offers gets exactly the head's mass times 1 - g
        if targets[0, t] not in ids[0, 1 : t + 1]:
            assert abs(log_p[t].item() - (head[t].item() + math.log(0.5))) <= 1e-12


@pytest.mark.parametrize(("name", "count"), [("stage1", stage1_count), ("phase2", phase2_count), ("gpt", gpt_count)])
def test_parameter_count_and_config_checks(name, count):
    preset = "mix-tiny" if name == "stage1" else "tiny"
    config = make_config(name, preset, pointer_dim=8)
    model = build_model(name, preset, pointer_dim=8)
    assert model.num_parameters() == count(config)
    plain = make_config(name, preset)
    assert count(config) - count(plain) == PointerMixture.parameter_count(config.d_model, 8) == 2 * 8 * config.d_model + config.d_model + 2
    assert build_model(name, preset).pointer is None
    with pytest.raises(ValueError, match="pointer_dim"):
        make_config(name, preset, pointer_dim=-1)
    with pytest.raises(TypeError, match="pointer_dim"):
        make_config(name, preset, pointer_dim="8")


def test_pointer_models_decode_with_a_pointer_cache_and_refuse_other_caches():
    model = _model("stage1", "mix-tiny", double=False)
    logits, cache = model.step(_ids()[:, :4])
    assert isinstance(cache, PointerCache) and isinstance(cache.inner, Stage1State)
    assert cache.length == cache.inner.length == 4 and cache.keys.shape == (2, 4, 8)
    with pytest.raises(TypeError, match="PointerCache"):
        model.step(_ids()[:, :1], cache.inner)
    with pytest.raises(TypeError, match="PointerCache"):
        model.decode_buffers(2, cache.inner)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.step(torch.zeros(2, model.max_seq_len, dtype=torch.long), cache)
    state = model.decode_buffers(2, cache)  # the static path's window: max_seq_len slots
    assert state.pointer_keys.shape == (2, model.max_seq_len, 8) and torch.equal(state.pointer_ids[:, :4], cache.ids)


def test_module_checks_its_arguments_and_starts_as_the_training_free_cache():
    with pytest.raises(ValueError, match="d_key"):
        PointerMixture(8, 0)
    with pytest.raises(TypeError, match="d_model"):
        PointerMixture(8.0, 4)
    with pytest.raises(ValueError, match="theta"):
        PointerMixture(8, 4, theta=0.0)
    with pytest.raises(ValueError, match="gate"):
        PointerMixture(8, 4, gate=1.0)
    with pytest.raises(ValueError, match="mode"):
        PointerMixture(8, 4, mode="pointer")
    with pytest.raises(ValueError, match="pointer_mode"):
        make_config("gpt", "tiny", pointer_dim=8, pointer_mode="pointer")
    pointer = PointerMixture(16, 4)
    assert torch.equal(pointer.query.weight, pointer.key.weight)  # scores start as cos of one projection
    assert math.isclose(torch.sigmoid(pointer.gate.bias).item(), 0.1, rel_tol=1e-6)
    assert torch.count_nonzero(pointer.gate.weight) == 0


def test_the_compiled_loss_traces_the_checkpointed_blocks_in_one_graph():
    """``compile_model_loss`` (fullgraph) over a pointer model: the loss and every gradient of eager."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model("stage1", "mix-tiny", vocab_size=VOCAB, d_model=16, n_layers=1, max_seq_len=16,
                        dropout=0.0, pointer_dim=8, d_ffn=32)
    ids, targets = torch.randint(0, VOCAB, (2, 12)), torch.randint(0, VOCAB, (2, 12))
    eager = model_loss(model, ids, targets)
    eager.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    loss = compile_model_loss(model, backend="aot_eager")(ids, targets)
    loss.backward()
    assert torch.equal(loss.detach(), eager.detach())
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, want[n]), n


def test_fast_generation_follows_the_incremental_loop():
    """The static path (``generate(fast=True)``: decode_step on buffers) picks the greedy tokens of ``step``."""
    model = _model("stage1", "mix-tiny", double=False)
    prompt = _ids(1, 6)
    slow = torch.stack(list(generate(model, prompt, 12, temperature=0.0, fast=False)), dim=1)
    fast = torch.stack(list(generate(model, prompt, 12, temperature=0.0, fast=True)), dim=1)
    assert torch.equal(slow, fast)


def test_trained_checkpoint_round_trip_and_exact_resume(tmp_path):
    """The trainer saves the copy path with the model; a resumed run ends where the uninterrupted one does."""
    overrides = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.1, d_ffn=32, pointer_dim=4)
    kw = dict(preset="mix-tiny", model_overrides=overrides, max_steps=5)
    data = synthetic_data()
    train(tiny_config(str(tmp_path / "a"), stop_after=3, **kw), data)
    path = tmp_path / "a" / "last.safetensors"
    ck = load_checkpoint(path)
    assert ck.model_config["pointer_dim"] == 4 and "model.pointer.log_theta" in ck.tensors
    model, _ = model_from_checkpoint(path)
    assert torch.equal(model.pointer.query.weight, ck.tensors["model.pointer.query.weight"])
    train(tiny_config(str(tmp_path / "b"), resume=str(path), **kw), data)
    train(tiny_config(str(tmp_path / "c"), **kw), data)
    resumed = load_checkpoint(tmp_path / "b" / "last.safetensors").prefixed("model.")
    straight = load_checkpoint(tmp_path / "c" / "last.safetensors").prefixed("model.")
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name


def test_sentinel_scores_always_get_a_gradient_and_start_at_the_cache_s_share():
    """"sentinel": the copy scores compete with the head for the mass, so θ, W_q and W_k get a gradient even
    when no earlier position offers the target (the "cache" mixture's is then exactly 0); over a long window
    of random keys the head's share starts at 1 - 0.1, the cache's."""
    ids = torch.arange(24)[None] % VOCAB  # no token repeats: nothing to copy
    targets = torch.cat([ids[:, 1:], ids[:, :1] + 30], dim=1)
    grads = {}
    for mode in ("cache", "sentinel"):
        model = _model("gpt", "tiny", mode=mode)
        model.train(False)
        model_loss(model, ids, targets).backward()
        grads[mode] = model.pointer.log_theta.grad.abs().item()
    assert grads["cache"] == 0.0 and grads["sentinel"] > 0.0
    torch.manual_seed(0)
    pointer = PointerMixture(64, 64, mode="sentinel").double()
    with torch.no_grad():
        pointer.query.weight.copy_(torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64))[0])
        pointer.key.weight.copy_(pointer.query.weight)
    h = torch.randn(1, 4096, 64, dtype=torch.float64)  # an orthogonal W: the keys are uniform directions
    q, k, theta, gate = pointer.project(h)
    log_vocab, _ = pointer._weights(q, k, theta, gate, 0)
    share = log_vocab[0, 1024:].exp().mean().item()
    assert abs(share - 0.9) < 0.02, share


@pytest.mark.parametrize("theta", [0.5, 5.0, 20.0])
def test_log_mean_exp_cos_matches_closed_forms(theta):
    """The sentinel's initial bias: log E[exp(θ c)] for the cosine c of random directions; closed forms at
    d = 1 (c = ±1: cosh θ) and d = 3 (c uniform on [-1, 1]: sinh θ / θ), quadrature in mpmath at d = 2, 8, 64."""
    assert log_mean_exp_cos(theta, 1) == pytest.approx(math.log(math.cosh(theta)), rel=1e-12)
    assert log_mean_exp_cos(theta, 3) == pytest.approx(math.log(math.sinh(theta) / theta), rel=1e-12)
    for d in (2, 8, 64):  # c = cos φ, φ with density ∝ sin^(d-2) φ on [0, π]
        num = mpmath.quad(lambda p, d=d: mpmath.exp(theta * mpmath.cos(p)) * mpmath.sin(p) ** (d - 2), [0, mpmath.pi])
        den = mpmath.quad(lambda p, d=d: mpmath.sin(p) ** (d - 2), [0, mpmath.pi])
        assert log_mean_exp_cos(theta, d) == pytest.approx(float(mpmath.log(num / den)), rel=1e-10)


def test_log_mean_exp_cos_holds_at_large_widths():
    """Where I_(d/2-1)(θ) underflows (d_key >= 1024 at θ = 20) the log-space quadrature takes over: it agrees with
    the Bessel form where both work, and at large d approaches θ²/(2d) (c is then about normal, variance 1/d); a
    sentinel copy path that wide builds."""
    for d in (2, 8, 64, 512):
        assert _log_mean_exp_cos_quadrature(20.0, d) == pytest.approx(log_mean_exp_cos(20.0, d), rel=1e-6)
    for d in (1024, 4096, 65536):
        assert log_mean_exp_cos(20.0, d) == pytest.approx(200.0 / d, rel=0.02)
    pointer = PointerMixture(8, 1024, mode="sentinel")
    assert math.isfinite(pointer.gate.bias.item())


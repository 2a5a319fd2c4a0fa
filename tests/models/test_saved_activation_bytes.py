"""What the backward keeps: the dropout mask as bool, no float64 decay powers, no fp32 copies of the
recurrence's element-wise inputs, no GEMM operand copies, no LayerNorm or modReLU outputs (the
memory criterion depends on it), and the same values and gradients, bit for bit, as plain autograd
(``muse.complex.recompute.disabled``)."""

from __future__ import annotations

import pytest
import torch

import muse.complex as C
from benchmarks.memory import LiveTensorBytes
from muse.complex import recompute
from muse.models import build_model
from muse.models.stage1 import ComplexFeedForward
from muse.nn import ComplexLayerNorm, ComplexLinear, ComplexRecurrence


def _saved(fn):
    """(dtype, shape) of every tensor autograd saves while ``fn`` runs (parameters excluded)."""
    out = []

    def pack(t):
        out.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return out


def test_dropout_saves_the_mask_as_bits():
    z = C.ComplexTensor(torch.randn(2, 4, 64, dtype=torch.float16, requires_grad=True))
    assert _saved(lambda: C.dropout(z, 0.3, True)) == [(torch.uint8, (32,))]  # shared: one bit per entry
    assert _saved(lambda: C.dropout(z, 0.3, True, mode="independent")) == [(torch.uint8, (64,))]


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 5, 9), (2, 0, 4)])
def test_mask_bits_round_trip(shape):
    from muse.complex.layers import _pack_bits, _unpack_bits

    mask = torch.rand(shape, generator=torch.Generator().manual_seed(1)) < 0.6
    packed = _pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(_unpack_bits(packed, mask.shape), mask)


def test_dropout_backward_uses_the_same_factor():
    torch.manual_seed(0)
    planes = torch.randn(2, 8, 32, dtype=torch.float16, requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    y = C.dropout(C.ComplexTensor(planes), 0.25, True, generator=gen, mode="independent")
    g = torch.randn_like(planes)
    y.planes.backward(g)
    keep = torch.empty(2, 8, 32).bernoulli_(0.75, generator=torch.Generator().manual_seed(3))
    factor = keep / (1.0 - 0.25)
    assert torch.equal(y.planes, (planes.detach().float() * factor).half())
    assert torch.equal(planes.grad, (g.float() * factor).half())


def test_recurrent_stage1_keeps_no_float64_and_no_full_size_fp32_copies():
    torch.manual_seed(0)
    model = build_model("stage1", "mix-tiny", vocab_size=64).train()
    ids = torch.randint(0, 64, (2, 96))
    saved = _saved(lambda: model(ids, return_hidden=True))
    assert not [s for s in saved if s[0] == torch.float64]
    d, n = model.config.d_model, model.blocks[0].mixer.d_state
    big_fp32 = [s for s in saved if s[0] == torch.float32 and s[1][-2:] in ((96, d), (96, n)) and len(s[1]) >= 3]
    assert not big_fp32, big_fp32


# ---------------------------------------------------------------- bytes alive after the forward
def _alive_per_token_layer(preset: str, batch: int = 2, seq: int = 96) -> float:
    """Bytes of the storages the forward leaves alive (what backward reads, plus the hidden output),
    per token and layer; parameters, buffers and the ids excluded."""
    torch.manual_seed(0)
    model = build_model("stage1", preset, vocab_size=64).train()
    ids = torch.randint(0, 64, (batch, seq))
    with LiveTensorBytes() as tracker:
        tracker.track([*model.parameters(), *model.buffers(), ids])
        before = tracker.current
        hidden = model(ids, return_hidden=True)
        alive = tracker.current - before
    del hidden
    return alive / (batch * seq * model.config.n_layers)


def test_mix_block_keeps_fp16_inputs_only():
    # mix-tiny (d = d_state = 64, d_ffn = 128), per token and layer: the mixer keeps its LayerNorm's
    # input 4d, B x, G x and the scan's output 4d each, a dropout mask of 2d bits; the FFN its
    # LayerNorm's input 4d, the up projection's output 4 d_ffn and a mask: 1,824 bytes (+ the embedding
    # and the hidden output, 530 bytes a token over the two layers): 2,089.  Before: 10,015.
    assert _alive_per_token_layer("mix-tiny") <= 2200


def test_seed_block_keeps_fp16_inputs_only():
    # tiny (d = 64): LayerNorm 1's input 4d, the linear's output 4d, a mask of 2d bits, LayerNorm 2's
    # input 4d: 784 bytes (+ 264 for the embedding and output): 1,048.  Before: 2,069 (the linear kept
    # an fp32 copy of its input and weight, the masks a byte an entry).
    assert _alive_per_token_layer("tiny") <= 1150


def test_disabled_recipes_keep_more():
    with recompute.disabled():
        assert _alive_per_token_layer("mix-tiny") > 5000


# ---------------------------------------------------------------- the same bits with and without recipes
def _values_and_grads(fn, leaves):
    """fn() -> planes; (output, grads of the leaves) for a fixed random cotangent."""
    for t in leaves:
        t.grad = None
    torch.manual_seed(7)
    out = fn()
    out.backward(torch.randn(out.shape).to(device=out.device, dtype=out.dtype))
    return [out.detach().clone()] + [t.grad.clone() for t in leaves]


def _assert_bit_identical(fn, leaves):
    got = _values_and_grads(fn, leaves)
    with recompute.disabled():
        want = _values_and_grads(fn, leaves)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and torch.equal(g, w)


def _planes(*shape, dtype=torch.float16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, *shape, generator=gen).to(dtype).requires_grad_()


def test_linear_bit_identical():
    torch.manual_seed(0)
    lin = ComplexLinear(48, 80)
    with torch.no_grad():
        lin.bias.normal_()
    x = _planes(3, 17, 48)
    _assert_bit_identical(lambda: lin(C.ComplexTensor(x)).planes, [x, lin.weight, lin.bias])
    no_bias = ComplexLinear(48, 32, bias=False)
    _assert_bit_identical(lambda: no_bias(C.ComplexTensor(x)).planes, [x, no_bias.weight])


def test_norm_then_linear_bit_identical():
    torch.manual_seed(0)
    norm, lin = ComplexLayerNorm(48), ComplexLinear(48, 64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = _planes(2, 9, 48)
    _assert_bit_identical(lambda: lin(norm(C.ComplexTensor(x))).planes,
                          [x, norm.weight, norm.bias, lin.weight, lin.bias])


def test_feedforward_bit_identical():
    torch.manual_seed(0)
    ffn = ComplexFeedForward(32, 64)
    with torch.no_grad():
        ffn.activation.bias.uniform_(-1.0, 0.5)  # some entries inactive
    x = _planes(2, 11, 32)
    _assert_bit_identical(lambda: ffn(C.ComplexTensor(x)).planes, [x, *ffn.parameters()])


@pytest.mark.parametrize("kw", [dict(gate=True), dict(gate=False), dict(gate=True, conv_kernel=3),
                                dict(gate=True, lambda_kind="real")])
def test_recurrence_bit_identical(kw):
    torch.manual_seed(0)
    rec = ComplexRecurrence(32, 24, r_min=0.0, r_max=0.99, chunk_size=8, **kw)
    with torch.no_grad():
        if rec.gate_act is not None:
            rec.gate_act.bias.uniform_(-1.0, 0.5)
    x = _planes(2, 29, 32)
    params = [p for p in rec.parameters()]
    _assert_bit_identical(lambda: rec(C.ComplexTensor(x)).planes, [x, *params])
    h0 = rec.initial_state(2)
    h0.planes.normal_()
    _assert_bit_identical(lambda: rec.forward_with_state(C.ComplexTensor(x), h0)[0].planes, [x, *params])


@pytest.mark.parametrize("preset", ["mix-tiny", "tiny"])
def test_stage1_bit_identical(preset, device):  # device: cpu, and cuda where there is one (verification plugin)
    torch.manual_seed(0)
    model = build_model("stage1", preset, vocab_size=64, device=torch.device(device)).train()
    ids = torch.randint(0, 64, (2, 40), device=device)

    def run():
        torch.manual_seed(11)  # the same dropout masks in both runs
        return model(ids, return_hidden=True)

    _assert_bit_identical(run, [p for n, p in model.named_parameters() if p.requires_grad and "lm_head" not in n])


def test_recipe_under_checkpoint_bit_identical():
    torch.manual_seed(0)
    norm, lin = ComplexLayerNorm(16), ComplexLinear(16, 24)
    x = _planes(3, 5, 16)
    fn = lambda p: lin(norm(C.ComplexTensor(p))).planes  # noqa: E731
    _assert_bit_identical(lambda: recompute.recomputed(fn, x), [x, *norm.parameters(), *lin.parameters()])


def test_double_backward_through_rebuilt_operands():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w: C.linear(C.layer_norm(C.ComplexTensor(x)), C.ComplexTensor(w)).planes  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (x, w))


def test_recipe_input_modified_in_place_is_an_error():
    torch.manual_seed(0)
    lin = ComplexLinear(8, 8)
    x = _planes(4, 8)
    y = lin(C.ComplexTensor(x))
    with torch.no_grad():
        x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.planes.sum().backward()


def _mix_tiny_step_inputs():
    """One-layer ``mix-tiny`` without dropout and a fixed batch of 4 x 128 tokens, for compiled-step comparisons."""
    from benchmarks import measure

    torch.manual_seed(0)
    model = build_model("stage1", "mix-tiny", n_layers=1, dropout=0.0)
    inputs, targets = measure._random_batch(model.config.vocab_size, 4, 128, torch.device("cpu"),
                                            torch.Generator().manual_seed(0))
    return model, inputs, targets


def _assert_same_step(loss0, grads0, loss1, grads1) -> None:
    """The same loss (rtol 1e-6) and gradients (rtol 1e-3) for the same parameters."""
    assert torch.allclose(loss1, loss0, rtol=1e-6, atol=0) and grads1.keys() == grads0.keys()
    for name, g in grads0.items():
        torch.testing.assert_close(grads1[name].float(), g.float(), rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize(("switch", "env"), [(recompute.in_compile, recompute.IN_COMPILE_ENV),
                                             (recompute.chain_in_compile, recompute.CHAIN_IN_COMPILE_ENV)])
def test_the_recompute_switches_under_compile_read_0_or_1(monkeypatch, switch, env):
    monkeypatch.delenv(env, raising=False)
    assert switch() is False  # off by default (docs/performance.md, fortieth and forty-first sessions)
    monkeypatch.setenv(env, "1")
    assert switch() is True
    monkeypatch.setenv(env, "yes")
    with pytest.raises(ValueError, match=f"{env} must be 0 or 1, got 'yes'"):
        switch()


def test_recomputed_regions_under_compile_keep_less_and_give_the_same_gradients(monkeypatch):
    """With MUSE_RECOMPUTE_IN_COMPILE=1 inductor reruns the mixers' regions in backward, as eager code does:
    the compiled step's peak drops below eager's, and the loss and gradients stay those of the plain compiled step."""
    from benchmarks.memory import allocator_peak_bytes
    from muse.train.loss import compile_model_loss

    model, inputs, targets = _mix_tiny_step_inputs()
    runs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(recompute.IN_COMPILE_ENV, flag)
        torch._dynamo.reset()
        step = compile_model_loss(model)
        step(inputs, targets).backward()  # compiles
        model.zero_grad(set_to_none=True)
        loss = {}
        peak = allocator_peak_bytes(lambda step=step, loss=loss: loss.setdefault("v", step(inputs, targets)).backward())
        runs[flag] = (peak, loss["v"].detach(),
                      {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        model.zero_grad(set_to_none=True)
    (peak0, loss0, grads0), (peak1, loss1, grads1) = runs["0"], runs["1"]
    assert peak1 < 0.9 * peak0, (peak1, peak0)
    _assert_same_step(loss0, grads0, loss1, grads1)


def test_a_lower_activation_memory_budget_keeps_less_and_gives_the_same_gradients():
    """``muse.models.compile.set_memory_budget(0.1)``: inductor's partitioner recomputes more in backward, so the
    compiled step's peak drops, and the loss and gradients stay those of the default budget's step; the previous
    budget comes back."""
    from benchmarks.memory import allocator_peak_bytes
    from muse.models.compile import set_memory_budget
    from muse.train.loss import compile_model_loss

    model, inputs, targets = _mix_tiny_step_inputs()
    runs = {}
    for budget in (1.0, 0.1):
        previous = set_memory_budget(budget)
        try:
            torch._dynamo.reset()
            step = compile_model_loss(model)
            step(inputs, targets).backward()  # compiles under this budget
        finally:
            assert set_memory_budget(previous) == budget
        model.zero_grad(set_to_none=True)
        loss = {}
        peak = allocator_peak_bytes(lambda step=step, loss=loss: loss.setdefault("v", step(inputs, targets)).backward())
        runs[budget] = (peak, loss["v"].detach(),
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    (peak0, loss0, grads0), (peak1, loss1, grads1) = runs[1.0], runs[0.1]
    assert peak1 < 0.9 * peak0, (peak1, peak0)
    _assert_same_step(loss0, grads0, loss1, grads1)


@pytest.mark.parametrize("budget", [0, 1.5, float("nan")])
def test_the_memory_budget_is_a_fraction(budget):
    from muse.models.compile import set_memory_budget

    with pytest.raises(ValueError, match="memory_budget must be"):
        set_memory_budget(budget)


def test_the_memory_budget_type_is_checked():
    from muse.models.compile import set_memory_budget

    with pytest.raises(TypeError, match="memory_budget must be a real number, got str"):
        set_memory_budget("0.5")


def test_gemm_saved_is_plain_eager_code():
    """Outside torch.compile the region is ``fn(*args)`` whatever the switch: eager code has its own recipes."""
    x = torch.randn(3, requires_grad=True)
    seen = []
    out = recompute.gemm_saved(lambda t: seen.append(1) or t * 2, x)
    out.sum().backward()
    assert seen == [1] and torch.equal(x.grad, torch.full((3,), 2.0))


def test_the_branches_under_compile_save_less_and_give_the_same_gradients(monkeypatch):
    """With MUSE_RECOMPUTE_CHAIN_IN_COMPILE=1 both branches of each mix block (norm -> recurrence, norm -> linear ->
    modReLU -> linear) are selectively checkpointed: inductor's partitioner saves under half the bytes (outputs of the
    forward graph other than its inputs; the chunked scan's decay matrices are recomputed), and the loss and gradients
    stay those of the plain compiled step."""
    import torch._inductor.compile_fx as compile_fx

    from muse.train.loss import compile_model_loss

    partition = compile_fx.min_cut_rematerialization_partition
    saved = []

    def recording(joint, inputs, **kw):
        forward, backward = partition(joint, inputs, **kw)
        out = next(n for n in forward.graph.nodes if n.op == "output").args[0][1:]
        saved.append(sum(v.meta["val"].numel() * v.meta["val"].element_size() for v in out
                         if isinstance(v, torch.fx.Node) and v.op != "placeholder"
                         and isinstance(v.meta.get("val"), torch.Tensor)))
        return forward, backward

    monkeypatch.setattr(compile_fx, "min_cut_rematerialization_partition", recording)
    model, inputs, targets = _mix_tiny_step_inputs()
    runs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(recompute.CHAIN_IN_COMPILE_ENV, flag)
        torch._dynamo.reset()
        loss = compile_model_loss(model)(inputs, targets)
        loss.backward()
        runs[flag] = (saved[-1], loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                 if p.requires_grad})
        model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    (saved0, loss0, grads0), (saved1, loss1, grads1) = runs["0"], runs["1"]
    assert saved1 < 0.5 * saved0, (saved1, saved0)
    _assert_same_step(loss0, grads0, loss1, grads1)

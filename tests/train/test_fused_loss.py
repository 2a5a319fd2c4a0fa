"""linear_cross_entropy / model_loss: both implementations against float64, dtypes, memory, bad input.

The error bounds themselves are checked in verification/test_loss.py; here the tolerances
are loose and the tests pin down behaviour: which path runs, what dtypes come back, that
loss scaling reaches the gradients, that no full-logits tensor is alive, clear errors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.memory import LiveTensorBytes
from muse.models import build_model
from muse.nn import RealLinear
from muse.train.loss import (
    IGNORE_INDEX,
    auto_chunk_size,
    chunk_budget,
    has_native,
    linear_cross_entropy,
    lm_loss,
    loss_path,
    model_loss,
)

IMPLS = ["chunked", "chunked-tokens", pytest.param("torch-native", marks=pytest.mark.skipif(
    not has_native(), reason=f"torch {torch.__version__} has no F.linear_cross_entropy (needs >= 2.13)"))]


def _case(n=37, d=16, v=101, dtype=torch.float32, bias=True, seed=0, ignore_every=4, w_scale=0.3):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=gen).to(dtype).requires_grad_()
    w = (w_scale * torch.randn(v, d, generator=gen)).to(dtype).requires_grad_()
    b = (0.1 * torch.randn(v, generator=gen)).to(dtype).requires_grad_() if bias else None
    t = torch.randint(0, v, (n,), generator=gen)
    if ignore_every:
        t[::ignore_every] = IGNORE_INDEX
    return h, w, b, t


def _reference(h, w, b, t, reduction, scale=1.0, label_smoothing=0.0):
    """float64 loss and gradients of the same (rounded) inputs."""
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = None if b is None else b.detach().double().requires_grad_()
    loss = F.cross_entropy(F.linear(h64, w64, b64), t, reduction=reduction, label_smoothing=label_smoothing)
    (loss * scale).backward()
    return loss.detach(), h64.grad, w64.grad, None if b is None else b64.grad


def _rel(got, want) -> float:
    return float((got.double() - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunk_size", [None, 1, 5, 37, 101, 200])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_float64_cross_entropy_fp32(impl, reduction, chunk_size, bias):
    h, w, b, t = _case(bias=bias)
    loss = linear_cross_entropy(h, w, t, b, reduction, chunk_size=chunk_size, impl=impl)
    loss.backward()
    ref = _reference(h, w, b, t, reduction)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref[0].item()) <= 1e-5 * abs(ref[0].item())
    for got, want in zip((h.grad, w.grad, None if b is None else b.grad), ref[1:], strict=True):
        if want is not None:
            assert got.dtype == torch.float32 and _rel(got, want) < 1e-5


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("chunk_size", [None, 5, 101])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_reduction_none_gives_each_token_its_loss_and_takes_a_gradient_per_token(impl, chunk_size, dtype):
    """``"none"``: the per-token losses (0 where ignored) and, for an upstream gradient that differs per
    token, the float64 gradients (the copy path's mixture needs both)."""
    if dtype == torch.float16 and impl == "torch-native":
        pytest.skip("torch-native serves fp32/fp64 inputs")
    h, w, b, t = _case(n=12, dtype=dtype)
    h, t = h.detach().reshape(3, 4, -1).requires_grad_(), t.reshape(3, 4)
    loss = linear_cross_entropy(h, w, t, b, "none", chunk_size=chunk_size, impl=impl)
    upstream = torch.linspace(-1.0, 2.0, 12).reshape(3, 4)
    (loss * upstream).sum().backward()
    h64, w64, b64 = (x.detach().double().requires_grad_() for x in (h, w, b))
    ref = F.cross_entropy(F.linear(h64, w64, b64).flatten(0, 1), t.flatten(), reduction="none").reshape(3, 4)
    (ref * upstream.double()).sum().backward()
    tol = 2e-3 if dtype == torch.float16 else 1e-5
    assert loss.shape == (3, 4) and loss.dtype == torch.float32
    assert torch.all(loss[t == IGNORE_INDEX] == 0)
    assert (loss.double() - ref).abs().max().item() <= tol * ref.abs().max().item()
    for got, want in ((h.grad, h64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        assert got.dtype == dtype and _rel(got, want) < tol


@pytest.mark.parametrize("chunk_size", [None, 3, 16])
def test_fp16_gradients_come_back_fp16_and_the_loss_is_fp32(chunk_size):
    h, w, b, t = _case(dtype=torch.float16)
    loss = linear_cross_entropy(h, w, t, b, chunk_size=chunk_size)
    assert loss_path(torch.float16) == "chunked" and loss.dtype == torch.float32
    loss.backward()
    assert h.grad.dtype == w.grad.dtype == b.grad.dtype == torch.float16
    ref = _reference(h, w, b, t, "mean")
    assert abs(loss.item() - ref[0].item()) < 2e-3 * ref[0].item()  # logits rounded to fp16, as lm_head does
    for got, want in zip((h.grad, w.grad, b.grad), ref[1:], strict=True):
        assert _rel(got, want) < 4e-3


def test_fp16_logits_are_those_of_the_head_so_the_loss_equals_lm_loss():
    """The chunked path rounds each logit to fp16 once, like RealLinear: same loss as full logits, up to
    the fp32 log-sum-exp's summation order (101 terms: |error| <= 101 * 2**-24 per token, ~6e-6)."""
    torch.manual_seed(0)
    head = RealLinear(16, 101, dtype=torch.float16)
    h, _, _, t = _case(dtype=torch.float16)
    full = lm_loss(head(h)[None], t[None])
    fused = linear_cross_entropy(h, head.weight, t, head.bias, chunk_size=7)
    assert fused.item() == pytest.approx(full.item(), rel=0, abs=101 * 2.0**-24)


def test_loss_scaling_reaches_the_fp16_gradients():
    """Gradients below fp16's range unscaled survive a 2**15 loss scale (computed in fp32, scaled, rounded)."""
    h, w, b, t = _case(n=512, d=8, v=2000, dtype=torch.float16, ignore_every=0, w_scale=2.0)
    scale = 2.0**15
    (linear_cross_entropy(h, w, t, b, chunk_size=100) * scale).backward()
    _, gh, gw, gb = _reference(h, w, b, t, "mean", scale)
    for got, want in ((h.grad, gh), (w.grad, gw), (b.grad, gb)):
        assert torch.isfinite(got).all()
        assert int(((got == 0) & (want.abs() > 2.0**-24)).sum()) == 0  # nothing representable flushed
        assert _rel(got, want) < 4e-3
    unscaled_small = (gw / scale).abs()
    assert bool(((unscaled_small < 2.0**-25) & (unscaled_small > 0)).any())  # the case needs the scale


@pytest.mark.parametrize("impl", ["chunked", "chunked-tokens"])
def test_all_targets_ignored_gives_nan_mean_and_zero_gradients_like_cross_entropy(impl):
    h, w, b, _ = _case()
    t = torch.full((h.shape[0],), IGNORE_INDEX)
    loss = linear_cross_entropy(h, w, t, b, impl=impl)
    loss.backward()
    assert torch.isnan(loss) and not h.grad.any() and not w.grad.any() and not b.grad.any()
    assert linear_cross_entropy(h, w, t, b, "sum", impl=impl).item() == 0.0


def test_custom_ignore_index_and_leading_shape():
    h, w, b, t = _case(n=24)
    t2 = t.clone()
    t2[t2 == IGNORE_INDEX] = 7_000
    a = linear_cross_entropy(h.reshape(2, 3, 4, 16), w, t2.reshape(2, 3, 4), b, ignore_index=7_000,
                             impl="chunked")
    assert a.item() == pytest.approx(linear_cross_entropy(h, w, t, b, impl="chunked").item(), rel=1e-6)


@pytest.mark.skipif(not has_native(), reason="torch-native needs torch >= 2.13")
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_native_and_chunked_agree(reduction):
    h, w, b, t = _case(n=50)
    grads = []
    for impl in ("chunked", "torch-native"):
        for x in (h, w, b):
            x.grad = None
        loss = linear_cross_entropy(h, w, t, b, reduction, chunk_size=8, impl=impl)
        loss.backward()
        grads.append((loss.detach(), h.grad.clone(), w.grad.clone(), b.grad.clone()))
    for a, c in zip(*grads, strict=True):
        assert torch.allclose(a, c, rtol=1e-5, atol=1e-7)


def test_loss_path_names_the_implementation():
    assert loss_path(torch.float16) == "chunked"
    assert loss_path(torch.float32) == ("torch-native" if has_native() else "chunked-tokens")
    assert loss_path(torch.float64) == ("torch-native" if has_native() else "chunked-tokens")
    assert loss_path(torch.float32, "chunked") == "chunked"
    assert loss_path(torch.float16, "chunked-tokens") == "chunked-tokens"
    if not has_native():
        with pytest.raises(ValueError, match="torch >= 2.13"):
            loss_path(torch.float32, "torch-native")


def test_no_gradient_no_buffers_and_eval_under_no_grad():
    n, v, chunk = 64, 4000, 256
    h, w, b, t = _case(n=n, d=8, v=v)
    with torch.no_grad(), LiveTensorBytes() as mem:
        mem.track([h, w, b, t])
        before = mem.current
        linear_cross_entropy(h, w, t, b, chunk_size=chunk, impl="chunked")
    assert mem.peak - before <= 2 * n * chunk * 4 + 4096  # one chunk's logits (+ its fp32 copy), no gradients


def test_peak_is_one_chunk_of_logits_not_all_of_them():
    n, d, v, chunk = 512, 8, 4000, 256
    h, w, b, t = _case(n=n, d=d, v=v, ignore_every=0)
    with LiveTensorBytes() as mem:
        mem.track([h, w, b, t])
        before = mem.current
        linear_cross_entropy(h, w, t, b, chunk_size=chunk, impl="chunked").backward()
    grads = (n * d + v * d + v) * 4 + n * d * 4  # the returned gradients and the fp32 d(hidden) accumulator
    working = 2 * n * chunk * 4  # one chunk's logits and its softmax gradient
    extra = mem.peak - before
    assert extra <= grads + working + 64 * 1024, extra
    assert extra < n * v * 4 / 4  # far below one full (N, V) fp32 logits tensor


@pytest.mark.parametrize("impl", ["chunked", "chunked-tokens"])
def test_label_smoothing_costs_no_memory_beyond_a_row_sum(impl):
    """The smoothed loss's peak is the plain loss's plus at most a few (n,) vectors (the row sums): no
    logits and no weight-sized buffer (the VRAM criterion judges the training step with this loss)."""
    n, d, v, chunk = 256, 16, 4096, 512
    peaks = {}
    for eps in (0.0, 0.1):
        h, w, b, t = _case(n=n, d=d, v=v, ignore_every=0)
        with LiveTensorBytes() as mem:
            mem.track([h, w, b, t])
            before = mem.current
            linear_cross_entropy(h, w, t, b, chunk_size=chunk if impl == "chunked" else 64, impl=impl,
                                 label_smoothing=eps).backward()
        peaks[eps] = mem.peak - before
    assert peaks[0.1] <= peaks[0.0] + 4 * n * 4, peaks


def test_no_fp32_copy_of_the_weight_gradient():
    """Each weight-gradient slice is one GEMM over all tokens: no (V, d) accumulator besides the gradient."""
    n, d, v, chunk = 64, 64, 4096, 512
    h, w, b, t = _case(n=n, d=d, v=v, ignore_every=0)
    with LiveTensorBytes() as mem:
        mem.track([h, w, b, t])
        before = mem.current
        linear_cross_entropy(h, w, t, b, chunk_size=chunk, impl="chunked").backward()
    returned = (n * d + v * d + v) * 4 + n * d * 4  # the gradients and the fp32 d(hidden) accumulator
    working = 2 * n * chunk * 4
    assert mem.peak - before <= returned + working + 64 * 1024  # < a second (V, d) fp32 tensor (1 MiB)
    assert working + 64 * 1024 < v * d * 4


class _CountGemms(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.addmm_.default,
                    torch.ops.aten.mm.out, torch.ops.aten.addmm.out):
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("impl, gemms_per_chunk", [("chunked", 4), ("chunked-tokens", 3)])
def test_token_chunks_form_the_gradients_without_recomputing_the_logits(impl, gemms_per_chunk):
    """chunked-tokens: logits, d(hidden), d(weight) per chunk (the full-logits path's three GEMMs);
    the vocabulary-chunked path recomputes each chunk's logits in backward (four)."""
    h, w, b, t = _case(n=120, v=120)
    with _CountGemms() as count:
        linear_cross_entropy(h, w, t, b, chunk_size=40, impl=impl).backward()
    assert count.n == gemms_per_chunk * 3  # three chunks of 40 vocabulary rows or 40 tokens


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_kept_logits_give_the_same_loss_and_gradients_bit_for_bit(dtype, reduction, bias):
    """keep_logits: backward reads the forward's logits instead of recomputing them, the same values."""
    h, w, b, t = _case(dtype=dtype, bias=bias)
    out = {}
    for keep in (False, True):
        leaves = [x.detach().clone().requires_grad_() for x in (h, w, b) if x is not None]
        loss = linear_cross_entropy(leaves[0], leaves[1], t, leaves[2] if bias else None, reduction,
                                    chunk_size=32, impl="chunked", keep_logits=keep)
        loss.backward(torch.linspace(0.5, 2.0, loss.numel()).reshape(loss.shape))
        out[keep] = [loss.detach()] + [x.grad for x in leaves]
    for a, k in zip(out[False], out[True], strict=True):
        assert torch.equal(a, k)


def test_kept_logits_save_one_gemm_per_chunk_and_hold_the_full_logits():
    """Three GEMMs per chunk instead of four; the kept logits (n, V) are alive from forward to backward."""
    n, d, v, chunk = 120, 8, 120, 40
    h, w, b, t = _case(n=n, d=d, v=v)
    with _CountGemms() as count:
        linear_cross_entropy(h, w, t, b, chunk_size=chunk, impl="chunked", keep_logits=True).backward()
    assert count.n == 3 * 3
    n, d, v, chunk = 256, 8, 4000, 256
    h, w, b, t = _case(n=n, d=d, v=v, ignore_every=0)
    for keep in (False, True):
        with LiveTensorBytes() as mem:
            mem.track([h, w, b, t])
            before = mem.current
            loss = linear_cross_entropy(h, w, t, b, chunk_size=chunk, impl="chunked", keep_logits=keep)
            held = mem.current - before
        assert (held >= n * v * 4) == keep, held
        loss.backward()


def test_kept_logits_survive_a_second_backward_and_are_not_kept_without_a_gradient():
    h, w, b, t = _case()
    loss = linear_cross_entropy(h, w, t, b, impl="chunked", chunk_size=16, keep_logits=True)
    loss.backward(retain_graph=True)
    first = [x.grad.clone() for x in (h, w, b)]
    loss.backward()
    for x, g in zip((h, w, b), first, strict=True):
        assert torch.equal(x.grad, 2 * g)
    with torch.no_grad(), LiveTensorBytes() as mem:
        mem.track([h, w, b, t])
        before = mem.current
        linear_cross_entropy(h, w, t, b, impl="chunked", chunk_size=16, keep_logits=True)
        assert mem.peak - before < h.shape[0] * w.shape[0] * 4


def test_token_chunks_need_no_memory_beyond_the_gradients_and_one_chunk():
    n, d, v, chunk = 256, 8, 4000, 32
    h, w, b, t = _case(n=n, d=d, v=v, ignore_every=0)
    with LiveTensorBytes() as mem:
        mem.track([h, w, b, t])
        before = mem.current
        linear_cross_entropy(h, w, t, b, chunk_size=chunk, impl="chunked-tokens").backward()
    grads = (n * d + v * d + v) * 4  # the fp32 gradients, formed in forward and returned by backward
    working = 2 * chunk * v * 4  # one chunk's logits (the softmax gradient overwrites them) and a spare
    assert mem.peak - before <= grads + working + 64 * 1024, mem.peak - before
    assert mem.peak - before < n * v * 4 / 2  # far below one full (N, V) fp32 logits tensor


def test_token_chunked_backward_runs_once():
    h, w, b, t = _case()
    loss = linear_cross_entropy(h, w, t, b, impl="chunked-tokens")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace|in-place"):
        loss.backward()


def test_fp16_weight_is_converted_a_chunk_at_a_time():
    """On CPU the GEMMs run in fp32: each chunk's weight rows are converted, never the whole (V, d) table."""
    n, d, v, chunk = 64, 64, 4096, 512
    h, w, b, t = _case(n=n, d=d, v=v, ignore_every=0, dtype=torch.float16)
    with LiveTensorBytes() as mem:
        mem.track([h, w, b, t])
        before = mem.current
        linear_cross_entropy(h, w, t, b, chunk_size=chunk, impl="chunked").backward()
    returned = (n * d + v * d + v) * 2 + n * d * 4 + n * (d + 8) * 4  # fp16 grads, fp32 d(hidden), fp32 [h | 1]
    working = 3 * n * chunk * 4 + 2 * chunk * (d + 8) * 4  # a chunk's logits, dlogits, its fp32 rows and weight grad
    assert mem.peak - before <= returned + working + 64 * 1024, mem.peak - before
    assert working + 64 * 1024 < v * d * 4  # an fp32 copy of the table (1 MiB) would not fit


def test_auto_chunk_size_fits_the_budget():
    mib64 = 64 * 2**20
    assert auto_chunk_size(50257, 2048, torch.float16, mib64) == 4096  # 64 MiB / (8 B x 2048) = 4096 rows
    assert auto_chunk_size(50257, 2048, torch.float32, mib64) == 4096  # fp32 logits + fp32 gradient: 8 B too
    assert auto_chunk_size(300, 8, torch.float32) == 300
    assert auto_chunk_size(50257, 8192, torch.float16, mib64, impl="torch-native") == 216  # 64 MiB / (6 B x V)
    assert auto_chunk_size(50257, 8192, torch.float32, mib64, impl="torch-native") == 328
    assert auto_chunk_size(50257, 100, torch.float32, impl="torch-native") == 40  # 8 MiB / (4 B x 50257) = 41
    assert auto_chunk_size(10**9, 10, impl="torch-native") == 1
    assert auto_chunk_size(50257, 8192, torch.float32, mib64, impl="chunked-tokens") == 160  # 64 MiB / (8 B x V)
    with pytest.raises(ValueError, match="impl"):
        auto_chunk_size(100, 10, impl="auto")


def test_chunk_budget_is_a_sixteenth_of_the_full_logits_within_limits():
    assert chunk_budget(50257, 2048) == 6 * 50257 * 2048 // 16
    assert chunk_budget(50257, 16) == 8 * 2**20
    assert chunk_budget(50257, 10**6) == 1024 * 2**20


def test_second_backward_with_retained_graph_gives_the_same_gradients():
    h, w, b, t = _case()
    loss = linear_cross_entropy(h, w, t, b, impl="chunked", chunk_size=16)
    loss.backward(retain_graph=True)
    first = [x.grad.clone() for x in (h, w, b)]
    loss.backward()
    for x, g in zip((h, w, b), first, strict=True):
        assert torch.equal(x.grad, 2 * g)


@pytest.mark.parametrize("name", ["stage1", "phase2"])
def test_model_loss_equals_the_full_logits_loss(name):
    torch.manual_seed(0)
    model = build_model(name, "tiny", vocab_size=300, dropout=0.0)
    ids = torch.randint(0, 300, (2, 17))
    targets = torch.randint(0, 300, (2, 17))
    fused = model_loss(model, ids, targets)
    fused.backward()
    g_fused = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    full = lm_loss(model(ids), targets)
    full.backward()
    assert fused.item() == pytest.approx(full.item(), rel=1e-5)
    for k, p in model.named_parameters():
        if not p.requires_grad:  # the frozen zeta position table (the seed's code freezes it)
            assert p.grad is None
            continue
        tol = 2e-3 if p.dtype == torch.float16 else 1e-4
        assert torch.allclose(g_fused[k].float(), p.grad.float(), rtol=tol, atol=tol * p.grad.float().abs().max()), k
    assert model_loss(model, ids, targets, "sum").item() == pytest.approx(full.item() * 34, rel=1e-5)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    (dict(hidden=torch.zeros(3, 4, dtype=torch.long)), TypeError, "hidden must have dtype float16, bfloat16"),
    (dict(weight=torch.zeros(5, 4, dtype=torch.complex64)), TypeError, "weight must have dtype float16, bfloat16"),
    (dict(weight=torch.zeros(5, 4, dtype=torch.float16)), TypeError, "weight has dtype"),
    (dict(bias=torch.zeros(5, dtype=torch.float64)), TypeError, "bias has dtype"),
    (dict(targets=torch.zeros(3)), TypeError, "targets must be a torch.long"),
    (dict(targets=torch.zeros(4, dtype=torch.long)), ValueError, "targets must have shape"),
    (dict(weight=torch.zeros(5, 3)), ValueError, "hidden must be"),
    (dict(bias=torch.zeros(4)), ValueError, "bias must have shape"),
    (dict(reduction="avg"), ValueError, "reduction must be"),
    (dict(impl="liger"), ValueError, "impl must be one of"),
    (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
    (dict(keep_logits="yes"), TypeError, "keep_logits must be a bool"),
    (dict(label_smoothing=-0.1), ValueError, "label_smoothing must be >= 0.0"),
    (dict(label_smoothing=1.0), ValueError, "label_smoothing must be < 1.0"),
    (dict(label_smoothing="0.1"), TypeError, "label_smoothing must be a real number"),
    (dict(label_smoothing=True), TypeError, "label_smoothing must be a real number"),
    (dict(hidden=[[0.0]]), TypeError, "hidden must be a torch.Tensor"),
])
def test_bad_input(kwargs, exc, match):
    args = dict(hidden=torch.zeros(3, 4), weight=torch.zeros(5, 4), targets=torch.zeros(3, dtype=torch.long),
                bias=torch.zeros(5))
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("reduction", "impl", "chunk_size", "keep_logits", "label_smoothing") if k in args}
    with pytest.raises(exc, match=match):
        linear_cross_entropy(args["hidden"], args["weight"], args["targets"], args["bias"], **extra)


@pytest.mark.parametrize("impl", [*IMPLS, "auto"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_label_smoothing_matches_cross_entropy_with_label_smoothing(impl, reduction, dtype, chunk_size):
    """Every path's smoothed loss and gradients against float64 F.cross_entropy(label_smoothing=0.1) of the
    same rounded inputs: fp32 to a few fp32 roundings, fp16 to the fp16 gradient rounding."""
    if impl == "torch-native" and dtype == torch.float16:
        pytest.skip("torch-native takes fp32/fp64 inputs here (fp16: docs/training.md)")
    h, w, b, t = _case(dtype=dtype)
    loss = linear_cross_entropy(h, w, t, b, reduction, chunk_size=chunk_size, impl=impl, label_smoothing=0.1)
    up = torch.randn(t.shape, generator=torch.Generator().manual_seed(3)) if reduction == "none" else torch.ones(())
    loss.backward(up)
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    z = F.linear(h64, w64, b64)
    if dtype == torch.float16:  # the head's logits are rounded to the storage dtype once
        z = z + (z.detach().half().double() - z.detach())
    ref = F.cross_entropy(z, t, reduction=reduction, label_smoothing=0.1)
    ref.backward(up.double())
    assert loss.dtype == torch.float32
    # fp16: the fp32 GEMM's logits round to a neighbouring fp16 value now and then (an fp16 ulp of a logit)
    assert _rel(loss.detach(), ref.detach()) < (1e-3 if dtype == torch.float16 else 1e-6)
    tol = 2e-3 if dtype == torch.float16 else 1e-5
    for got, want in ((h.grad, h64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        assert got.dtype == dtype and _rel(got, want) < tol


@pytest.mark.parametrize("impl", ["chunked", "chunked-tokens"])
def test_no_label_smoothing_is_the_plain_loss_bit_for_bit(impl):
    out = []
    for kw in ({}, {"label_smoothing": 0.0}, {"label_smoothing": 0}):
        h, w, b, t = _case(dtype=torch.float16)
        loss = linear_cross_entropy(h, w, t, b, impl=impl, **kw)
        loss.backward()
        out.append([loss.detach(), h.grad, w.grad, b.grad])
    for other in out[1:]:
        for a, c in zip(out[0], other, strict=True):
            assert torch.equal(a, c)


def test_label_smoothing_under_auto_never_forms_the_full_logits(monkeypatch):
    """torch's own loss forms the full logits when it smooths, so ``auto`` takes the token chunks there."""
    calls = []
    monkeypatch.setattr(F, "linear_cross_entropy", lambda *a, **k: calls.append(k) or torch.zeros(()))
    h, w, b, t = _case()
    linear_cross_entropy(h, w, t, b, impl="auto", label_smoothing=0.1).backward()
    assert calls == []


@pytest.mark.parametrize("name", ["stage1", "phase2", "gpt"])
def test_model_loss_with_label_smoothing_equals_the_full_logits_loss(name):
    torch.manual_seed(0)
    model = build_model(name, "tiny", vocab_size=300, dropout=0.0)
    ids, targets = torch.randint(0, 300, (2, 17)), torch.randint(0, 300, (2, 17))
    fused = model_loss(model, ids, targets, label_smoothing=0.2)
    full = F.cross_entropy(model(ids).float().reshape(-1, 300), targets.reshape(-1), label_smoothing=0.2)
    assert fused.item() == pytest.approx(full.item(), rel=1e-5)
    assert fused.item() != pytest.approx(model_loss(model, ids, targets).item(), rel=1e-4)


def test_label_smoothing_of_a_model_with_a_copy_path_is_a_clear_error():
    model = build_model("stage1", "mix-tiny", vocab_size=300, pointer_dim=8)
    ids = torch.randint(0, 300, (1, 9))
    with pytest.raises(ValueError, match="label_smoothing must be 0 for a model with a copy path"):
        model_loss(model, ids, ids, label_smoothing=0.1)
    model_loss(model, ids, ids, label_smoothing=0.0)


def test_model_without_a_head_is_a_clear_error():
    with pytest.raises(TypeError, match="lm_head"):
        model_loss(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))



def test_in_place_chunk_bodies_get_wider_chunks_for_the_same_budget():
    """With the Triton bodies the gradient overwrites the logits: a vocabulary chunk costs its fp16
    logits plus its fp32 weight-gradient rows (d + 8 columns), a token chunk of fp32 logits 4 bytes
    an entry; the plain bodies keep 8 bytes an entry."""
    mib64 = 64 * 2**20
    assert auto_chunk_size(50257, 2048, torch.float16, mib64) == 4096
    rows = mib64 // (2048 * 2 + 4 * (512 + 8))  # 10,866 -> 10,752 (a multiple of 128)
    assert auto_chunk_size(50257, 2048, torch.float16, mib64, in_place=True, d=512) == rows - rows % 128 == 10752
    assert auto_chunk_size(50257, 4096, torch.float32, mib64, impl="chunked-tokens") == 160
    assert auto_chunk_size(50257, 4096, torch.float32, mib64, impl="chunked-tokens", in_place=True) == 328
    assert auto_chunk_size(50257, 4096, torch.float16, mib64, impl="chunked-tokens", in_place=True) == 160


def test_the_default_chunk_follows_the_kernel_switch(monkeypatch):
    """default_chunk_size counts in place exactly when the chunk bodies will be the Triton kernels."""
    from muse import kernels
    from muse.train.loss import default_chunk_size

    h, w = torch.zeros(4096, 512, dtype=torch.float16), torch.zeros(50257, 512, dtype=torch.float16)
    monkeypatch.setattr(kernels, "enabled", lambda *t, **kw: False)
    plain = default_chunk_size(h, w, "chunked")
    monkeypatch.setattr(kernels, "enabled", lambda *t, **kw: True)
    assert default_chunk_size(h, w, "chunked") > 3 * plain
    assert default_chunk_size(h.double(), w.double(), "chunked") == plain  # fp64: never the kernels
    h32, w32 = h.float(), w.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 GEMMs: bf16 logits, the gradient written over them
        assert default_chunk_size(h32, w32, "chunked") == default_chunk_size(h.bfloat16(), w.bfloat16(), "chunked")
    monkeypatch.setattr(kernels, "enabled", lambda *t, **kw: False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert default_chunk_size(h32, w32, "chunked") == auto_chunk_size(50257, 4096, torch.bfloat16)


def test_autocast_chunks_keep_their_logits_in_the_gemm_dtype():
    """Under autocast the chunks' logits stay bf16 (they widen to fp32 exactly): the loss and gradients equal
    those of the same logits widened to fp32 first, to the last bit."""
    from muse.train import loss as L

    gen = torch.Generator().manual_seed(3)
    h = torch.randn(64, 32, generator=gen, requires_grad=True)
    w = torch.randn(300, 32, generator=gen, requires_grad=True)
    t = torch.randint(0, 300, (64,), generator=gen)
    chunks = L._VocabChunks(h.detach(), w.detach(), None, 128, torch.bfloat16)
    assert chunks.logits_dtype == torch.bfloat16 and chunks.logits(0).dtype == torch.bfloat16
    assert L._VocabChunks(h.detach().half(), w.detach().half(), None, 128, torch.float32).logits_dtype == torch.float16

    def run(widen):
        h.grad = w.grad = None
        original = L._VocabChunks.logits
        if widen:
            L._VocabChunks.logits = lambda self, v0: original(self, v0).float()
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                value = L.linear_cross_entropy(h, w, t, impl="chunked", chunk_size=128)
            value.backward()
        finally:
            L._VocabChunks.logits = original
        return value.detach(), h.grad.clone(), w.grad.clone()

    for a, b in zip(run(False), run(True), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gradient_chunks_are_the_fp32_product_scaled_and_rounded_once(dtype):
    """The backward writes each chunk as src * scale rounded once into a slice of the gradient, in eager code
    (one kernel, out=) and traced (the compiler's fused copy): both equal the two-step reference bit for bit."""
    from muse.train.loss import _scaled_into

    gen = torch.Generator().manual_seed(0)
    src = torch.randn(37, 24, generator=gen) * 1e3
    scale = torch.tensor(1 / 3)
    want = (src * scale).to(dtype)
    eager = torch.full((40, 20), float("nan"), dtype=dtype)
    _scaled_into(eager[2:39], src[:, :20], scale)
    assert torch.equal(eager[2:39], want[:, :20]) and eager[:2].isnan().all() and eager[39:].isnan().all()

    def traced(dst, s, k):
        _scaled_into(dst[2:39], s[:, :20], k)
        return dst

    compiled = torch.compile(traced, fullgraph=True, backend="aot_eager")
    got = compiled(torch.full((40, 20), float("nan"), dtype=dtype), src, scale)
    assert torch.equal(got[2:39], want[:, :20]) and got[:2].isnan().all()


def test_bf16_inputs_run_the_16_bit_chunked_path():
    """A bf16 head (a GPT run from bf16 weights) takes the chunked path as fp16 does: bf16 gradients, and on CUDA
    its GEMMs stay bf16 (docs/numerics.md bounds it; verification/test_loss.py checks it)."""
    import muse.complex as C

    gen = torch.Generator().manual_seed(0)
    h, w, b = (torch.randn(*s, generator=gen).bfloat16().requires_grad_() for s in ((6, 8), (50, 8), (50,)))
    t = torch.randint(0, 50, (6,), generator=gen)
    assert loss_path(h.dtype) == "chunked"
    loss = linear_cross_entropy(h, w, t, b, chunk_size=16)
    loss.backward()
    assert loss.dtype == torch.float32 and h.grad.dtype == w.grad.dtype == b.grad.dtype == torch.bfloat16
    ref = torch.nn.functional.cross_entropy(h.detach().double() @ w.detach().double().T + b.detach().double(), t)
    assert abs(loss.item() - ref.item()) < 1e-2
    assert C.gemm_dtype(torch.bfloat16, torch.device("cuda")) == torch.bfloat16
    assert C.gemm_dtype(torch.bfloat16, torch.device("cpu")) == torch.float32

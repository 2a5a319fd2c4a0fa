"""compile_model_loss: the model and the chunked loss as one compiled graph; the GEMM policy under compile."""

from __future__ import annotations

import pytest
import torch

import muse.complex as C
from muse import kernels
from muse.models import build_model
from muse.train.loss import compile_model_loss, linear_cross_entropy, model_loss


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test traces afresh: dynamo's recompile limit (8 per code object) counts every model that
    ``compile_model_loss``'s closure has been compiled for in the worker process, whichever test did it."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("opaque", ["1", "0"], ids=["custom-ops", "traced-loops"])
@pytest.mark.parametrize("name, preset, extra", [
    ("stage1", "mix-tiny", {}), ("stage1", "mix-tiny", {"tie_head": True}), ("gpt", "tiny", {}), ("phase2", "tiny", {}),
])
def test_compiled_loss_equals_eager(name, preset, extra, opaque, monkeypatch):
    """Both compiled forms of the loss (MUSE_LOSS_OPAQUE: the chunk loops as custom ops or traced, the
    benchmark's ``traced-loss`` variants) give eager's loss and gradients, bit for bit."""
    monkeypatch.setenv("MUSE_LOSS_OPAQUE", opaque)
    torch.manual_seed(0)
    model = build_model(name, preset, dropout=0.0, **extra)
    v = model.config.vocab_size
    ids, targets = torch.randint(0, v, (2, 40)), torch.randint(0, v, (2, 40))
    targets[0, :5] = -100  # ignored targets take the same path
    eager = model_loss(model, ids, targets, impl="chunked")
    eager.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    got = compile_model_loss(model, backend="aot_eager", impl="chunked")(ids, targets)
    got.backward()
    have = _grads(model)
    assert torch.equal(got.detach(), eager.detach())
    assert have.keys() == want.keys() and want
    for n in want:
        torch.testing.assert_close(have[n], want[n], rtol=0, atol=0, msg=n)


@pytest.mark.parametrize("name", ["gpt", "phase2"])
def test_compiled_loss_with_the_automatic_path_for_fp32_heads(name):
    """fp32 heads take ``auto``'s path (torch-native on torch >= 2.13, chunked-tokens before) inside a
    fullgraph compile: torch's native loss warns under compile unless asked for allow_retain_graph,
    and a warning is a graph break that fullgraph refuses."""
    torch.manual_seed(0)
    model = build_model(name, "tiny", dropout=0.0)
    v = model.config.vocab_size
    ids, targets = torch.randint(0, v, (2, 40)), torch.randint(0, v, (2, 40))
    eager = model_loss(model, ids, targets)
    eager.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    got = compile_model_loss(model, backend="aot_eager")(ids, targets)
    got.backward()
    have = _grads(model)
    torch.testing.assert_close(got.detach(), eager.detach())
    assert have.keys() == want.keys() and want
    for n in want:
        torch.testing.assert_close(have[n], want[n], msg=n)


@pytest.mark.parametrize("opaque", ["1", "0"], ids=["custom-ops", "traced-loops"])
@pytest.mark.parametrize("name, preset, impl", [("stage1", "mix-tiny", "chunked"), ("gpt", "tiny", "auto")])
def test_compiled_label_smoothing_equals_eager(name, preset, impl, opaque, monkeypatch):
    """The smoothed loss compiles (the chunk loops' custom ops take the smoothing constants) and gives
    eager's loss and gradients."""
    monkeypatch.setenv("MUSE_LOSS_OPAQUE", opaque)
    torch.manual_seed(0)
    model = build_model(name, preset, dropout=0.0)
    v = model.config.vocab_size
    ids, targets = torch.randint(0, v, (2, 40)), torch.randint(0, v, (2, 40))
    eager = model_loss(model, ids, targets, impl=impl, label_smoothing=0.1)
    eager.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    got = compile_model_loss(model, backend="aot_eager", impl=impl, label_smoothing=0.1)(ids, targets)
    got.backward()
    have = _grads(model)
    torch.testing.assert_close(got.detach(), eager.detach(), rtol=1e-6, atol=0)
    assert have.keys() == want.keys() and want
    for n in want:
        torch.testing.assert_close(have[n], want[n], msg=n)
    with pytest.raises(ValueError, match="label_smoothing must be < 1.0"):
        compile_model_loss(model, backend="aot_eager", label_smoothing=1.0)


def test_compile_model_loss_rejects_bad_arguments():
    model = build_model("stage1", "tiny")
    with pytest.raises(ValueError, match="backend must be one of"):
        compile_model_loss(model, backend="tvm")
    with pytest.raises(ValueError, match="reduction"):
        compile_model_loss(model, reduction="max")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        compile_model_loss("stage1")
    with pytest.raises(ValueError, match="compile mode must be one of"):
        compile_model_loss(model, mode="max-autotune-no-cudagraphs")
    with pytest.raises(ValueError, match="needs backend='inductor'"):
        compile_model_loss(model, backend="aot_eager", mode="reduce-overhead")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
def test_cudagraph_loss_equals_eager_on_cuda():
    """mode="reduce-overhead" (the training step replayed from CUDA graphs): the same loss and
    gradients as eager within fp32 reassociation, over several replays."""
    torch.manual_seed(0)
    model = build_model("stage1", "mix-tiny", dropout=0.0, device="cuda")
    v = model.config.vocab_size
    ids, targets = torch.randint(0, v, (2, 64), device="cuda"), torch.randint(0, v, (2, 64), device="cuda")
    eager = model_loss(model, ids, targets, impl="chunked")
    eager.backward()
    want = _grads(model)
    fn = compile_model_loss(model, impl="chunked", mode="reduce-overhead")
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        got = fn(ids, targets)
        got.backward()
    torch.testing.assert_close(got.detach().clone(), eager.detach(), rtol=1e-3, atol=1e-3)
    have = _grads(model)
    for n in want:
        torch.testing.assert_close(have[n].float(), want[n].float(), rtol=2e-2, atol=2e-3, msg=n)


def test_gemm_policy_is_set_process_wide_by_compiling():
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_fp16_reduced_precision_reduction, matmul.allow_tf32)
    try:
        matmul.allow_fp16_reduced_precision_reduction = True
        assert not C.gemm_policy_set()
        compile_model_loss(build_model("stage1", "tiny"), backend="eager")
        assert C.gemm_policy_set()
        assert not matmul.allow_fp16_reduced_precision_reduction and not matmul.allow_tf32
    finally:
        matmul.allow_fp16_reduced_precision_reduction, matmul.allow_tf32 = saved


def test_fp32_accumulation_under_compile_needs_the_policy(monkeypatch):
    """While tracing, the context cannot flip cuBLAS flags: it checks them and names the fix."""
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_fp16_reduced_precision_reduction, matmul.allow_tf32)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    try:
        matmul.allow_fp16_reduced_precision_reduction = True
        with pytest.raises(RuntimeError, match="set_gemm_policy"):
            with C.fp32_accumulation(torch.device("cuda")):
                pass
        C.set_gemm_policy()
        with C.fp32_accumulation(torch.device("cuda")):  # flags untouched inside a graph
            assert C.gemm_policy_set()
        assert C.gemm_policy_set()
        with C.fp32_accumulation(torch.device("cpu")):
            pass
    finally:
        matmul.allow_fp16_reduced_precision_reduction, matmul.allow_tf32 = saved


def test_compile_models_with_different_dropout_in_one_process():
    """Dynamo makes a float module attribute symbolic once it has seen two values; the
    argument checks inside forward must accept it (this failed with 'must be a real number')."""
    for p in (0.0, 0.2, 0.1):
        torch.manual_seed(0)
        model = build_model("stage1", "mix-tiny", vocab_size=64, dropout=p).train()
        ids = torch.randint(0, 64, (2, 32))
        loss = compile_model_loss(model, backend="aot_eager", impl="chunked")(ids, ids)
        loss.backward()
        assert torch.isfinite(loss)


@pytest.mark.parametrize("impl, chunk", [("chunked", 512), ("chunked-tokens", 128)])
def test_compiled_loss_holds_one_chunk_at_a_time(impl, chunk):
    """Compiled by inductor, forward + backward of the loss peaks as eager code does (one chunk's
    logits alive), far below the full logits. Traced as ordinary ops the unrolled chunks were all
    alive together (1.1-1.9x the full logits); each chunk loop is now one opaque custom op."""
    from benchmarks.memory import allocator_peak_bytes

    gen = torch.Generator().manual_seed(0)
    n, d, v = 1024, 32, 4000
    h = torch.randn(n, d, generator=gen, requires_grad=True)
    w = torch.randn(v, d, generator=gen, requires_grad=True)
    b = torch.randn(v, generator=gen, requires_grad=True)
    t = torch.randint(0, v, (n,), generator=gen)

    def loss(h, w, b, t):
        return linear_cross_entropy(h, w, t, b, impl=impl, chunk_size=chunk)

    peaks = {}
    for mode, fn in (("eager", loss), ("compiled", torch.compile(loss, fullgraph=True))):
        fn(h, w, b, t).backward()  # compiles
        want = h.grad, w.grad, b.grad
        h.grad = w.grad = b.grad = None
        peaks[mode] = allocator_peak_bytes(lambda fn=fn: fn(h, w, b, t).backward())
        for got, ref in zip((h.grad, w.grad, b.grad), want, strict=True):
            torch.testing.assert_close(got, ref)
        h.grad = w.grad = b.grad = None
    full = n * v * 4
    assert peaks["eager"] < full / 2
    assert peaks["compiled"] <= 1.25 * peaks["eager"], (peaks, full)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_loss_custom_ops_pass_opcheck(dtype):
    """The chunk loops' custom ops: schema, fake implementations (shapes and dtypes, also for the
    gradients not asked for) and AOT dispatch agree with the real ones (``torch.library.opcheck``)."""
    import muse.train.loss as L

    gen = torch.Generator().manual_seed(0)
    n, d, v = 64, 16, 300
    h, w, b = (torch.randn(*s, generator=gen).to(dtype) for s in ((n, d), (v, d), (v,)))
    t = torch.randint(0, v, (n,), generator=gen)
    t[:5] = -100
    scored = t != -100
    safe = torch.where(scored, t, 0)
    plain, smooth = [1.0, 0.0], [0.9, 0.1 / v]  # label smoothing's (1 - eps, eps / V): none, and eps = 0.1
    _, lse, none = L._vocab_forward_op(h, w, b, safe, scored, 128, None, False, plain)
    kept = L._vocab_forward_op(h, w, b, safe, scored, 128, None, True, plain)[2]
    cases = [(L._vocab_forward_op, (h, w, b, safe, scored, 128, None, False, plain)),
             (L._vocab_forward_op, (h, w, None, safe, scored, 100, None, False, smooth)),
             (L._vocab_forward_op, (h, w, b, safe, scored, 128, None, True, smooth)),
             (L._vocab_forward_op, (h, w, None, safe, scored, 100, None, True, plain)),
             (L._vocab_backward_op, (h, w, b, safe, scored, lse, torch.tensor(0.5), 128, [True, True, False], None,
                                     none, plain)),
             (L._vocab_backward_op, (h, w, b, safe, scored, lse, torch.tensor(0.5), 128, [False, False, True], None,
                                     none, smooth)),
             (L._vocab_backward_op, (h, w, b, safe, scored, lse, torch.tensor(0.5), 128, [True, True, True], None,
                                     kept, smooth)),
             (L._token_forward_op, (h, w, b, safe, scored.float(), 16, [True, True, True], None, smooth)),
             (L._token_forward_op, (h, w, None, safe, scored.float(), 24, [False, True, False], None, plain))]
    for op, args in cases:
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), (op, result)


@pytest.mark.parametrize("value, custom_ops", [("1", True), (None, True), ("0", False)])
def test_muse_loss_opaque_switches_between_custom_ops_and_traced_loops(monkeypatch, value, custom_ops):
    """Compiled, the loss's chunk loops are the muse::lce_* custom ops unless MUSE_LOSS_OPAQUE=0."""
    if value is None:
        monkeypatch.delenv("MUSE_LOSS_OPAQUE", raising=False)
    else:
        monkeypatch.setenv("MUSE_LOSS_OPAQUE", value)
    torch.manual_seed(0)
    model = build_model("stage1", "tiny", vocab_size=64, d_model=16, n_layers=1)
    ids = torch.randint(0, 64, (1, 9))
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for m in gm.modules() if hasattr(m, "graph") for n in m.graph.nodes)
        return gm.forward

    torch._dynamo.reset()
    loss = torch.compile(lambda i, t: model_loss(model, i, t), backend=backend, fullgraph=True)(ids[:, :-1], ids[:, 1:])
    loss.backward()
    ops = {t for t in seen if t.startswith("muse.lce_")}
    assert (ops == {"muse.lce_vocab_forward.default", "muse.lce_vocab_backward.default"}) == custom_ops, ops
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_compiled_code_keeps_the_intermediate_fp16_rounding(device):
    """After set_gemm_policy, inductor rounds an intermediate fp16 value as eager code does: the residual
    sum before the LayerNorm (3 + 2^-11 is 3 in fp16), alone and in the pair. Without emulate_precision_casts the
    fused kernel kept the sum in fp32 and the output moved by up to 2.4 ULP (a FAIL of the layer_norm property
    under compiled); torch 2.11 also folded the rounding away with it on (its ``pointless_convert`` pattern; on an
    H100 the pair moved by 159,360 ULP), which set_gemm_policy now stops."""
    if device == "cpu" and tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 12):
        pytest.skip("torch < 2.12's C++ code generator reuses the unrounded value (docs/numerics.md §1)")
    z = torch.full((2, 4), 3.0, dtype=torch.float16, device=device)
    r = torch.tensor([[2.0**-11, 0.0, -(2.0**-11), 1.0], [0.0] * 4], dtype=torch.float16, device=device)

    def f(a, b):
        return C.layer_norm(C.ComplexTensor(a), None, None, 1e-5, C.ComplexTensor(b)).planes

    def pair(a, b):
        y, y2 = C.layer_norm_pair(C.ComplexTensor(a), C.ComplexTensor(b), (None, None, 1e-5), (None, None, 1e-5))
        return y.planes, y2.planes

    C.set_gemm_policy()
    from torch._inductor.fx_passes import joint_graph

    checks = [e.extra_check for es in joint_graph.patterns.patterns.values() for e in es
              if getattr(e, "handler", None) is getattr(joint_graph, "pointless_convert", None)]
    assert all(c.__name__ == "_not_narrowing" for c in checks)
    with kernels.environment(MUSE_KERNELS="0"):
        torch._dynamo.reset()
        assert torch.equal(torch.compile(f, fullgraph=True)(z, r), f(z, r))
        zp, rp = torch.stack((z, 0 * z)), torch.stack((r, 0 * r))
        for got, want in zip(torch.compile(pair, fullgraph=True)(zp, rp), pair(zp, rp), strict=True):
            assert torch.equal(got, want)


@pytest.fixture
def _simdlen():
    """inductor's cpp.simdlen restored after the test."""
    import torch._inductor.config as inductor_config

    saved = inductor_config.cpp.simdlen
    yield inductor_config
    inductor_config.cpp.simdlen = saved


def test_policy_keeps_cpu_code_to_avx2_width(_simdlen):
    """On x86 the policy sets inductor's C++ vector width to 256 bits unless the user set one."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 only: other architectures keep inductor's default")
    _simdlen.cpp.simdlen = None
    C.set_gemm_policy()
    assert _simdlen.cpp.simdlen == C._policy.CPU_SIMDLEN == 256
    _simdlen.cpp.simdlen = 512  # a user's explicit choice stays
    C.set_gemm_policy()
    assert _simdlen.cpp.simdlen == 512


def test_compiled_cpu_code_reads_transposed_fp16_right(_simdlen):
    """An fp16 tensor read transposed, widened and multiplied (the chunked scans' layout) compiles to the eager
    values on the CPU. Inductor's AVX-512 code for it, built by GCC 12.2, returned NaN and zeros (2026-12-06), and
    compiled CPU training of mix-tiny skipped every step; the policy's AVX2 width gives the right values."""
    from muse.scan.selective_diag import selective_diag_scan

    _simdlen.cpp.simdlen = None
    C.set_gemm_policy()
    torch.manual_seed(0)
    x = torch.randn(2, 2, 64, 64).half()
    w = torch.randn(2, 2, 64, 64)

    def product(a, b):
        return (a.float().transpose(-1, -2) * b).sum(0)

    assert torch.equal(torch.compile(product, fullgraph=True)(x, w), product(x, w))

    planes = torch.randn(2, 2, 64, 64).half().requires_grad_()
    log_decay = (-2 * torch.rand(2, 64, 64)).requires_grad_()

    def scan(p, ld):
        return selective_diag_scan(C.ComplexTensor(p), ld, out_dtype=torch.float16)[0].planes.float()

    def grads(fn):
        y = fn(planes, log_decay)
        return (y, *torch.autograd.grad((y * y).sum(), [planes, log_decay]))

    with kernels.environment(MUSE_KERNELS="0"):
        for got, want in zip(grads(torch.compile(scan, fullgraph=True)), grads(scan), strict=True):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)

"""Triton kernels for layer_norm and modrelu against the PyTorch reference (CPU: Triton's interpreter).

Every case checks that the kernel really ran (a counter on the launch functions), so a silent
fallback to the reference cannot pass.  Sizes stay small: the interpreter is slow.
"""

from __future__ import annotations

import math

import pytest
import torch

import muse.complex as C
from muse import kernels
from tests.kernels._launches import DEVICES, count_launches

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)


@pytest.fixture
def launches(monkeypatch, kernel_device):
    """Kernels on; counts the wrappers' launches (tests/kernels/_launches.py)."""
    counts = count_launches(monkeypatch, kernel_device, ("layer_norm_forward", "layer_norm_pair_forward",
                                                         "layer_norm_backward", "modrelu_forward", "modrelu_backward"))
    return counts


def _rand(*shape, device, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(torch.float16).to(device)


def _run(fn, z_planes, params, grad, kernels_on: bool):
    """Output planes and gradients (z, then each tensor param) with kernels on or off."""
    with kernels.environment(MUSE_KERNELS="1" if kernels_on else "0"):
        p = z_planes.clone().requires_grad_(True)
        ps = [None if t is None else t.clone().requires_grad_(True) for t in params]
        out = fn(C.ComplexTensor(p), *ps)
        out.planes.backward(grad)
    return out.planes.detach(), [p.grad] + [t.grad for t in ps if t is not None]


def _ref64(fn, z_planes, params, grad):
    """The same function in float64 (the PyTorch path): the reference for both implementations."""
    with kernels.environment(MUSE_KERNELS="0"):
        p = z_planes.double().requires_grad_(True)
        ps = [None if t is None else t.double().requires_grad_(True) for t in params]
        out = fn(C.ComplexTensor(p), *ps)
        out.planes.backward(grad.double())
    return out.planes.detach(), [p.grad] + [t.grad for t in ps if t is not None]


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((a.double() - ref).norm() / ref.norm().clamp_min(1e-300))


def _ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| in fp16 ULPs of b (ulp(0) = 2**-24)."""
    b64 = b.double().abs()
    ulp = torch.where(b64 >= 2.0**-14, 2.0 ** (torch.floor(torch.log2(b64.clamp_min(2.0**-14))) - 10), 2.0**-24)
    return float(((a.double() - b.double()).abs() / ulp).max()) if a.numel() else 0.0


def _check_against_reference(fn, z, params, launches, names):
    grad = _rand(*z.shape, device=z.device, seed=99)
    k_out, k_grads = _run(fn, z, params, grad, kernels_on=True)
    for name in names:
        assert launches.get(name, 0) >= 1, f"{name} did not run (counts {launches})"
    e_out, e_grads = _run(fn, z, params, grad, kernels_on=False)
    r_out, r_grads = _ref64(fn, z, params, grad)
    assert torch.isfinite(k_out).all()
    # Forward: both round one fp32 result once; they may differ by at most 1 ULP where the fp32
    # values straddle a rounding boundary (different summation order).
    assert _ulps(k_out, e_out) <= 1.0, _ulps(k_out, e_out)
    for kg, eg, rg in zip(k_grads, e_grads, r_grads, strict=True):
        assert kg.dtype == eg.dtype and kg.shape == eg.shape
        k_err, e_err = _rel(kg, rg), _rel(eg, rg)
        # fp16 rounding of each gradient element costs <= 2**-11 relative; the fp32 arithmetic far less.
        assert k_err <= 2.0**-10, (k_err, e_err)


SHAPES = [(3, 17), (5,), (2, 3, 64), (1, 130), (37, 8), (300, 8)]  # (300, 8): several row tiles per backward program


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("affine", ["weight+bias", "none", "weight"])
def test_layer_norm_kernel_matches_reference(kernel_device, shape, affine, launches):
    z = _rand(2, *shape, device=kernel_device, scale=2.0, seed=1)
    d = shape[-1]
    w = None if affine == "none" else (1 + 0.3 * _rand(d, device=kernel_device, seed=2).float()).half()
    b = _rand(d, device=kernel_device, seed=3) if affine == "weight+bias" else None
    _check_against_reference(lambda zz, ww, bb: C.layer_norm(zz, ww, bb, 1e-5), z, [w, b], launches,
                             ["layer_norm_forward", "layer_norm_backward"])


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the interpreter's sums to inf
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # and its inf - inf
@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 17), (1, 130), (300, 8)], ids=str)
@pytest.mark.parametrize("affine", ["weight+bias", "none"])
def test_layer_norm_with_a_residual_is_one_kernel_and_the_two_ops_bit_for_bit(kernel_device, shape, affine, launches):
    """Without grad, LN(z + r) is one launch that never writes the sum, with the values of add then the
    LayerNorm kernel to the bit (the sum rounded once as C.add rounds it; overflowing sums included);
    with grad it is those two ops."""
    z = _rand(2, *shape, device=kernel_device, scale=2.0, seed=11)
    r = _rand(2, *shape, device=kernel_device, scale=3.0, seed=12)
    r[0, ..., 0] = 65504.0
    z[0, ..., 0] = 65504.0 if shape[-1] > 8 else 1.0  # a sum that overflows to inf, in some rows
    d = shape[-1]
    w = None if affine == "none" else (1 + 0.3 * _rand(d, device=kernel_device, seed=2).float()).half()
    b = _rand(d, device=kernel_device, seed=3) if affine == "weight+bias" else None
    zc, rc = C.ComplexTensor(z), C.ComplexTensor(r)
    with torch.no_grad():
        fused = C.layer_norm(zc, w, b, 1e-5, residual=rc).planes
        assert launches == {"layer_norm_forward": 1}
        two = C.layer_norm(C.add(zc, rc), w, b, 1e-5).planes
    assert launches == {"layer_norm_forward": 2}
    assert torch.equal(fused.isnan(), two.isnan())
    # bit for bit under the interpreter; on CUDA two compiled kernels may contract fp32 expressions differently
    assert _ulps(fused.nan_to_num(), two.nan_to_num()) <= (0.0 if kernel_device == "cpu" else 1.0)
    zg = z.clone().requires_grad_(True)
    out = C.layer_norm(C.ComplexTensor(zg), w, b, 1e-5, residual=rc)
    out.planes.float().nan_to_num().sum().backward()
    assert launches == {"layer_norm_forward": 3, "layer_norm_backward": 1}
    assert torch.equal(out.planes.detach().nan_to_num(), two.nan_to_num()) and zg.grad is not None


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 17), (1, 130), (300, 8)], ids=str)
@pytest.mark.parametrize("affine", ["weight+bias", "none", "mixed"])
def test_layer_norm_pair_is_one_kernel_and_the_two_norms_bit_for_bit(kernel_device, shape, affine, launches):
    """Without grad, (LN1(z + r), LN2(LN1(z + r))) is one launch with the values of two LayerNorm kernels to
    the bit (the second from the rounded first, as if read back; overflowing sums included); with grad it is
    the two autograd norms, with the same values."""
    z = _rand(2, *shape, device=kernel_device, scale=2.0, seed=21)
    r = _rand(2, *shape, device=kernel_device, scale=3.0, seed=22)
    r[0, ..., 0] = 65504.0
    z[0, ..., 0] = 65504.0 if shape[-1] > 8 else 1.0
    d = shape[-1]
    w1 = None if affine == "none" else (1 + 0.3 * _rand(d, device=kernel_device, seed=2).float()).half()
    b1 = _rand(d, device=kernel_device, seed=3) if affine != "none" else None
    w2 = None if affine != "weight+bias" else (1 - 0.2 * _rand(d, device=kernel_device, seed=4).float()).half()
    b2 = _rand(d, device=kernel_device, seed=5) if affine != "none" else None
    zc, rc = C.ComplexTensor(z), C.ComplexTensor(r)
    with torch.no_grad():
        y, y2 = C.layer_norm_pair(zc, rc, (w1, b1, 1e-5), (w2, b2, 1e-3))
        assert launches == {"layer_norm_pair_forward": 1}
        one = C.layer_norm(zc, w1, b1, 1e-5, residual=rc)
        two = C.layer_norm(one, w2, b2, 1e-3)
    assert launches == {"layer_norm_pair_forward": 1, "layer_norm_forward": 2}
    tol = 0.0 if kernel_device == "cpu" else 1.0  # two compiled CUDA kernels may contract fp32 differently
    for got, want in ((y, one), (y2, two)):
        assert torch.equal(got.planes.isnan(), want.planes.isnan())
        assert _ulps(got.planes.nan_to_num(), want.planes.nan_to_num()) <= tol
    zg = z.clone().requires_grad_(True)
    gy, gy2 = C.layer_norm_pair(C.ComplexTensor(zg), rc, (w1, b1, 1e-5), (w2, b2, 1e-3))
    gy2.planes.float().nan_to_num().sum().backward()
    assert launches["layer_norm_pair_forward"] == 1 and launches["layer_norm_backward"] == 2
    assert torch.equal(gy2.planes.detach().nan_to_num(), two.planes.nan_to_num()) and zg.grad is not None


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("case", ["finite", "inf sum", "nan input"])
def test_layer_norm_pair_flags_a_nonfinite_output_in_its_pass(kernel_device, case, launches):
    """flags[slot] becomes 1 exactly when the first output has a non-finite value, as the PyTorch path sets it;
    the other slots and an already set flag stay as they were."""
    z = _rand(2, 37, 16, device=kernel_device, scale=2.0, seed=31)
    r = _rand(2, 37, 16, device=kernel_device, seed=32)
    if case == "inf sum":
        z[1, 20, 3], r[1, 20, 3] = 65504.0, 65504.0  # the imaginary sum overflows: that row's output is NaN
    if case == "nan input":
        r[0, 36, 15] = float("nan")
    got = {}
    for on in (True, False):
        flags = torch.tensor([0, 0, 1, 0], dtype=torch.int32, device=kernel_device)
        with torch.no_grad(), kernels.environment(MUSE_KERNELS="1" if on else "0"):
            y, _ = C.layer_norm_pair(C.ComplexTensor(z), C.ComplexTensor(r), (None, None, 1e-5), (None, None, 1e-5),
                                     nonfinite=(flags, 1))
            C.layer_norm_pair(C.ComplexTensor(z), C.ComplexTensor(r), (None, None, 1e-5), (None, None, 1e-5),
                              nonfinite=(flags, 2))
        got[on] = flags.tolist()
        assert bool(flags[1]) == (not bool(y.planes.isfinite().all()))
    assert launches == {"layer_norm_pair_forward": 2}
    assert got[True] == got[False] == [0, int(case != "finite"), 1, 0]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("case", ["finite", "inf input", "nan input", "nan weight"])
def test_layer_norm_flags_a_nonfinite_input_in_its_pass(kernel_device, case, launches):
    """nonfinite_input: flags[slot] becomes 1 exactly when z holds a NaN/Inf (not when only the output does: a
    NaN weight), as the PyTorch path sets it; other slots and an already set flag stay as they were."""
    z = _rand(2, 37, 16, device=kernel_device, seed=41)
    w = _rand(16, device=kernel_device, seed=42)
    if case == "inf input":
        z[1, 20, 3] = float("inf")
    if case == "nan input":
        z[0, 36, 15] = float("nan")
    if case == "nan weight":
        w[4] = float("nan")
    got, outs = {}, {}
    for on in (True, False):
        flags = torch.tensor([0, 0, 1], dtype=torch.int32, device=kernel_device)
        with torch.no_grad(), kernels.environment(MUSE_KERNELS="1" if on else "0"):
            outs[on] = C.layer_norm(C.ComplexTensor(z), w, None, 1e-5, nonfinite_input=(flags, 1)).planes
            C.layer_norm(C.ComplexTensor(z), w, None, 1e-5, nonfinite_input=(flags, 2))
        got[on] = flags.tolist()
    assert launches == {"layer_norm_forward": 2}
    assert got[True] == got[False] == [0, int(case in ("inf input", "nan input")), 1]
    assert torch.equal(outs[True].isnan(), outs[False].isnan())
    assert (case == "finite") == bool(outs[True].isfinite().all())


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_the_norms_flag_writing_custom_ops_pass_opcheck(kernel_device, launches):
    """The norm ops that write a model's flags in place (``muse::layer_norm_flag_fwd``, ``muse::add_layer_norm_pair_fwd``):
    schema, fake tensors and AOT dispatch agree with the real ops (``torch.library.opcheck``), with and without flags
    (finite inputs: opcheck compares outputs with NaN unequal; the compiled-graph tests above set the flags)."""
    z = _rand(2, 5, 8, device=kernel_device, seed=51)
    r, w = _rand(2, 5, 8, device=kernel_device, seed=52), _rand(8, device=kernel_device, seed=53)
    result = torch.library.opcheck(kernels.layer_norm_flag_fwd.op,
                                   (z, w, w, 1e-5, torch.zeros(3, dtype=torch.int32, device=kernel_device), 1))
    assert all(v == "SUCCESS" for v in result.values()), result
    for flags in (None, torch.zeros(3, dtype=torch.int32, device=kernel_device)):
        result = torch.library.opcheck(kernels.add_layer_norm_pair_fwd.op, (z, r, w, None, 1e-5, w, w, 1e-5, flags, 2))
        assert all(v == "SUCCESS" for v in result.values()), result


def test_layer_norm_nonfinite_input_rejects_bad_arguments():
    z = C.ComplexTensor(torch.zeros(2, 3, 4, dtype=torch.float16))
    with pytest.raises(TypeError, match="nonfinite must be a \\(flags, slot\\) tuple or None, got list"):
        C.layer_norm(z, nonfinite_input=[torch.zeros(3, dtype=torch.int32), 0])
    with pytest.raises(TypeError, match="flags must be a 1-D torch.int32 tensor"):
        C.layer_norm(z, nonfinite_input=(torch.zeros(3, dtype=torch.int64), 0))
    with pytest.raises(ValueError, match="slot must be below flags' length 3"):
        C.layer_norm(z, nonfinite_input=(torch.zeros(3, dtype=torch.int32), 3))
    with pytest.raises(TypeError, match="slot must be an int"):
        C.layer_norm(z, nonfinite_input=(torch.zeros(3, dtype=torch.int32), 1.0))


def test_layer_norm_pair_rejects_bad_arguments():
    z = C.ComplexTensor(torch.zeros(2, 3, 4, dtype=torch.float16))
    with pytest.raises(TypeError, match="residual must be a ComplexTensor"):
        C.layer_norm_pair(z, z.planes, (None, None, 1e-5), (None, None, 1e-5))
    with pytest.raises(ValueError, match="residual must match"):
        C.layer_norm_pair(z, C.ComplexTensor(torch.zeros(2, 3, 5, dtype=torch.float16)), (None, None, 1e-5),
                          (None, None, 1e-5))
    with pytest.raises(ValueError, match="weight must have shape"):
        C.layer_norm_pair(z, z, (None, None, 1e-5), (torch.ones(5, dtype=torch.float16), None, 1e-5))
    with pytest.raises(ValueError, match="eps"):
        C.layer_norm_pair(z, z, (None, None, 1e-5), (None, None, 0.0))
    with pytest.raises(TypeError, match="flags must be a 1-D torch.int32 tensor"):
        C.layer_norm_pair(z, z, (None, None, 1e-5), (None, None, 1e-5), nonfinite=(torch.zeros(3), 0))
    with pytest.raises(ValueError, match="slot must be below flags' length 3"):
        C.layer_norm_pair(z, z, (None, None, 1e-5), (None, None, 1e-5),
                          nonfinite=(torch.zeros(3, dtype=torch.int32), 3))


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_seed_block_inference_reads_its_residual_in_the_norm(kernel_device, launches):
    """The seed preset's blocks (LN -> linear -> modReLU -> dropout -> + z -> LN): in inference each block's
    second norm takes the residual and the next norm (the next block's first, or the final norm) in one
    pass; the logits equal those of the training path's separate ops."""
    from muse.models import build_model

    torch.manual_seed(0)
    model = build_model("stage1", "tiny", vocab_size=64, max_seq_len=16, device=kernel_device).eval()
    ids = torch.randint(0, 64, (2, 16), device=kernel_device)
    with torch.no_grad():
        inference = model(ids)
    assert launches == {"layer_norm_pair_forward": model.config.n_layers, "layer_norm_forward": 1,
                        "modrelu_forward": model.config.n_layers}
    launches.clear()
    with torch.enable_grad():
        training_path = model(ids)
    assert "layer_norm_pair_forward" not in launches

    def counts():
        """The per-stage NaN counts of one forward, the same with the kernels (paired passes) and without."""
        stats = []
        for on in ("1", "0"):
            model.reset_statistics()
            with torch.no_grad(), kernels.environment(MUSE_KERNELS=on):
                model(ids)
            stats.append(model.get_statistics()["nonfinite_by_stage"])
        assert stats[0] == stats[1]
        return stats[0]

    with torch.no_grad():  # a NaN weight in block 1: both paths count that block's output and the logits
        model.blocks[1].linear.weight[0, 0, 0] = float("nan")
    paired = counts()
    assert paired["embedding"] == 0 and paired["layer_0"] == 0 and paired["layer_1"] == 1 and paired["logits"] == 1
    with torch.no_grad():  # a NaN token row: the first norm's pass counts the first activations, as the ops do
        model.embedding.weight[1, ids[0, 3]] = float("nan")
    embedded = counts()
    assert embedded["embedding"] == 1 and embedded["layer_0"] == 1
    if kernel_device == "cpu":
        assert torch.equal(inference, training_path.detach())
    else:  # two compiled kernels, within an fp16 ULP of each other
        assert torch.allclose(inference, training_path.detach(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_layer_norm_with_a_residual_in_a_compiled_graph(kernel_device, launches):
    """Inference inside torch.compile: the fused custom op, no graph break, the eager values."""
    torch._dynamo.reset()
    z, r = _rand(2, 4, 8, device=kernel_device, seed=13), _rand(2, 4, 8, device=kernel_device, seed=14)

    def f(p, q):
        return C.layer_norm(C.ComplexTensor(p), residual=C.ComplexTensor(q)).planes

    with torch.no_grad():
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(z, r)
        assert launches == {"layer_norm_forward": 1}
        assert torch.equal(out, f(z, r))


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_layer_norm_pair_in_a_compiled_graph(kernel_device, backend, launches):
    """Inference inside torch.compile: the pair's custom op, no graph break, the eager values; its flag write
    into a buffer made in the graph (as Stage1Model.trunk makes it) reaches the graph's output."""
    torch._dynamo.reset()
    z, r = _rand(2, 4, 8, device=kernel_device, seed=15), _rand(2, 4, 8, device=kernel_device, seed=16)
    r[1, 2, 5] = float("inf")
    w = _rand(8, device=kernel_device, seed=17)

    def f(p, q):
        flags = torch.zeros(3, dtype=torch.int32, device=p.device)
        y, y2 = C.layer_norm_pair(C.ComplexTensor(p), C.ComplexTensor(q), (None, None, 1e-5), (w, w, 1e-5),
                                  nonfinite=(flags, 1))
        return y.planes, y2.planes, flags

    with torch.no_grad():
        out = torch.compile(f, fullgraph=True, backend=backend)(z, r)
        assert launches == {"layer_norm_pair_forward": 1}
        want = f(z, r)
        assert want[2].tolist() == [0, 1, 0]
        for got, ref in zip(out, want, strict=True):
            assert torch.equal(got.nan_to_num(), ref.nan_to_num())


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_layer_norm_input_flag_in_a_compiled_graph(kernel_device, backend, launches):
    """Inference inside torch.compile: the norm's custom op counts its input into a buffer made in the graph
    (as Stage1Model.trunk makes it), no graph break, the eager values."""
    torch._dynamo.reset()
    z = _rand(2, 4, 8, device=kernel_device, seed=18)
    z[0, 1, 2] = float("nan")
    w = _rand(8, device=kernel_device, seed=19)

    def f(p):
        flags = torch.zeros(2, dtype=torch.int32, device=p.device)
        return C.layer_norm(C.ComplexTensor(p), w, w, 1e-5, nonfinite_input=(flags, 0)).planes, flags

    with torch.no_grad():
        out = torch.compile(f, fullgraph=True, backend=backend)(z)
        assert launches == {"layer_norm_forward": 1}
        want = f(z)
        assert want[1].tolist() == [1, 0]
        for got, ref in zip(out, want, strict=True):
            assert torch.equal(got.nan_to_num(), ref.nan_to_num())


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_layer_norm_with_and_without_flags_in_one_inductor_graph(kernel_device, launches):
    """A norm that counts its input and one that does not, in one inductor graph (as Stage 1's trunk has
    them): both kernels run, the eager values.  Inductor failed to lower the flag op's output when the
    norm without flags went through the same mutating op (flags None; twenty-ninth session)."""
    torch._dynamo.reset()
    z = _rand(2, 4, 8, device=kernel_device, seed=20)
    w = _rand(8, device=kernel_device, seed=21)

    def f(p):
        flags = torch.zeros(1, dtype=torch.int32, device=p.device)
        y = C.layer_norm(C.ComplexTensor(p), w, w, 1e-5, nonfinite_input=(flags, 0))
        return C.layer_norm(y, w, None, 1e-5).planes, flags

    with torch.no_grad():
        out = torch.compile(f, fullgraph=True, backend="inductor")(z)
        assert launches == {"layer_norm_forward": 2}
        want = f(z)
        assert want[1].tolist() == [0]
        for got, ref in zip(out, want, strict=True):
            assert torch.equal(got, ref)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias_kind", ["vector", "scalar"])
def test_modrelu_kernel_matches_reference(kernel_device, shape, bias_kind, launches):
    z = _rand(2, *shape, device=kernel_device, seed=4)
    bias = 0.5 * _rand(shape[-1], device=kernel_device, seed=5).float()
    bias = (bias if bias_kind == "vector" else bias[0]).half()
    _check_against_reference(C.modrelu, z, [bias], launches, ["modrelu_forward", "modrelu_backward"])


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_kernels_take_non_contiguous_inputs(kernel_device, launches):
    """A transposed view is made contiguous before the launch; results equal the reference's."""
    base = _rand(2, 16, 6, device=kernel_device, seed=6)
    z = C.ComplexTensor(base.transpose(1, 2))  # (2, 6, 16), non-contiguous
    assert not z.planes.is_contiguous()
    bias = _rand(16, device=kernel_device, seed=7)
    out_k = C.modrelu(z, bias).planes
    ln_k = C.layer_norm(z).planes
    with kernels.environment(MUSE_KERNELS="0"):
        out_e = C.modrelu(z, bias).planes
        ln_e = C.layer_norm(z).planes
    assert torch.equal(out_k, out_e)
    assert _ulps(ln_k, ln_e) <= 1.0
    assert launches["modrelu_forward"] == 1 and launches["layer_norm_forward"] == 1


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's inf/inf
@pytest.mark.parametrize("kernel_device", DEVICES)
def test_modrelu_kernel_special_values(kernel_device, launches):
    """z = 0 gives 0; b = -inf gives 0; a NaN bias gives NaN; inf stays non-finite (the contract)."""
    z = torch.tensor([[0.0, 3.0, 1.0, math.inf, 2.0], [0.0, 4.0, 1.0, 0.0, 0.0]], dtype=torch.float16,
                     device=kernel_device)
    bias = torch.tensor([1.0, -math.inf, math.nan, -1.0, -3.0], dtype=torch.float16, device=kernel_device)
    out = C.modrelu(C.ComplexTensor(z), bias).planes.float().cpu()
    assert launches["modrelu_forward"] == 1
    assert out[:, 0].tolist() == [0.0, 0.0]
    assert out[:, 1].tolist() == [0.0, 0.0]
    assert torch.isnan(out[:, 2]).any()
    assert not torch.isfinite(out[:, 3]).all()
    assert out[:, 4].tolist() == [0.0, 0.0]  # |z| + b = -1 <= 0


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_empty_input(kernel_device, launches):
    z = C.ComplexTensor(torch.zeros(2, 0, 8, dtype=torch.float16, device=kernel_device))
    assert C.layer_norm(z).shape == (0, 8)
    assert C.modrelu(z, torch.zeros(8, dtype=torch.float16, device=kernel_device)).shape == (0, 8)


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_double_backward_takes_the_reference_path(kernel_device, launches):
    """create_graph=True needs a differentiable backward: the PyTorch one runs, so grad-of-grad works."""
    z = _rand(2, 3, 8, device=kernel_device, seed=8).requires_grad_(True)
    out = C.layer_norm(C.ComplexTensor(z))
    (g,) = torch.autograd.grad(out.planes.float().pow(2).sum(), z, create_graph=True)
    assert launches.get("layer_norm_backward", 0) == 0
    (gg,) = torch.autograd.grad(g.float().sum(), z)
    assert torch.isfinite(gg).all()


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_float32_planes_use_the_reference(kernel_device, launches):
    z = C.ComplexTensor(torch.randn(2, 4, 8, device=kernel_device))
    C.layer_norm(z)
    C.modrelu(z, torch.zeros(8, device=kernel_device))
    assert launches == {}


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_compiled_graphs_without_listed_ops_use_the_pytorch_path(kernel_device, launches):
    """Inside torch.compile with MUSE_KERNELS_IN_COMPILE empty the element-wise kernels stay off (the
    compiler fuses the ops): no kernel launches, no graph break, the same result."""
    from muse.nn import ComplexLayerNorm, ModReLU

    torch._dynamo.reset()
    norm, act = ComplexLayerNorm(8, device=kernel_device), ModReLU(8, device=kernel_device)

    def f(p):
        return act(norm(C.ComplexTensor(p))).planes

    z = _rand(2, 4, 8, device=kernel_device, seed=9).requires_grad_(True)
    with kernels.environment(MUSE_KERNELS_IN_COMPILE=""):
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(z)
    out.float().sum().backward()
    assert launches == {}
    with kernels.environment(MUSE_KERNELS="0"):
        ref = f(z.detach())
    assert _ulps(out.detach(), ref.detach()) <= 1.0


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_kernels_listed_in_compile_run_inside_compiled_graphs(kernel_device, launches):
    """MUSE_KERNELS_IN_COMPILE names the element-wise ops whose kernels run inside a compiled graph
    (forward and backward, as custom ops: no graph break); the others keep the compiler's code."""
    from muse.nn import ComplexLayerNorm, ModReLU

    torch._dynamo.reset()
    norm, act = ComplexLayerNorm(8, device=kernel_device), ModReLU(8, device=kernel_device)

    def f(p):
        return act(norm(C.ComplexTensor(p))).planes

    z = _rand(2, 4, 8, device=kernel_device, seed=9).requires_grad_(True)
    with kernels.environment(MUSE_KERNELS_IN_COMPILE="layer_norm"):
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(z)
    out.float().sum().backward()
    assert launches == {"layer_norm_forward": 1, "layer_norm_backward": 1}
    with kernels.environment(MUSE_KERNELS="0"):
        ref = f(z.detach())
    assert _ulps(out.detach(), ref.detach()) <= 1.0


def test_in_compile_default_lists_layer_norm_and_modrelu_and_an_empty_list_none(monkeypatch):
    """Unset, MUSE_KERNELS_IN_COMPILE means layer_norm and modrelu (the measured default); set to the empty
    string it names nothing; reports record the value in force."""
    monkeypatch.setenv(kernels.INTERPRET_ENV, "1")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    planes = torch.zeros(2, 1, 4, dtype=torch.float16)
    with kernels.environment(MUSE_KERNELS_IN_COMPILE=None, MUSE_KERNELS=None):
        assert kernels.use_kernel(planes, op="layer_norm") and kernels.use_kernel(planes, op="modrelu")
        assert not kernels.use_kernel(planes, op="sum_rows")
        assert kernels.settings()["MUSE_KERNELS_IN_COMPILE"] == "layer_norm,modrelu"
    with kernels.environment(MUSE_KERNELS_IN_COMPILE=""):
        assert not kernels.use_kernel(planes, op="layer_norm") and not kernels.use_kernel(planes, op="modrelu")
        assert kernels.settings()["MUSE_KERNELS_IN_COMPILE"] == ""


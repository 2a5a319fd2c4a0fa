"""The same semantics on every device of the ``device`` parameter (cpu, plus cuda where a GPU is present).

Each test computes on ``device`` and compares with the CPU result; the cuda cases are marked
``cuda`` and skip without a GPU (``--muse-device`` picks the devices, as in verification/)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import (
    assert_bitwise_equal,
    assert_ct_bitwise,
    assert_within_ulps,
    cuda_test,
    fp16_ulp,
)

import muse.complex as C
from muse.complex import ComplexTensor, _policy
from muse.models import build_model
from muse.nn import ComplexLinear, RealLinear


def _z(*shape, dtype=torch.float16, seed=0) -> ComplexTensor:
    return C.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _assert_ct_within_ulps(got: ComplexTensor, want: ComplexTensor, n: float = 1, what: str = "result"):
    assert got.dtype == want.dtype == torch.float16 and got.shape == want.shape
    assert_within_ulps(got.real, want.real, n, f"{what} (real)")
    assert_within_ulps(got.imag, want.imag, n, f"{what} (imag)")


def test_moves_between_devices_are_exact(device):
    z = _z(3, 4)
    g = z.to(device)
    assert g.is_cuda == (device == "cuda") and g.device.type == device and g.dtype == torch.float16
    assert g.is_planar()
    assert_ct_bitwise(g.cpu(), z, f"cpu -> {device} -> cpu")
    assert z.to(device, torch.complex64).dtype == torch.float32
    assert_ct_bitwise(C.from_complex(C.to_complex(g)).cpu(), z, f"complex64 round trip on {device}")


@pytest.mark.parametrize("x_shape, k, n", [((16,), 64, 32), ((4, 33), 33, 17), ((2, 8, 256), 256, 64)])
def test_linear_within_one_ulp_of_cpu_fp32(device, x_shape, k, n):
    x = _z(*x_shape[:-1], k)
    w, b = _z(n, k, seed=1), _z(n, seed=2)
    want = C.linear(x.float(), w.float(), b.float()).half()  # CPU: fp32 upcast, one rounding
    got = C.linear(x.to(device), w.to(device), b.to(device))
    assert got.device.type == device and got.is_planar()
    _assert_ct_within_ulps(got.cpu(), want, 1, f"linear {x_shape}x({n},{k})")


def test_long_linear_within_fp32_accumulation_bound_of_cpu(device):
    """K = 4096 (8192 in the block GEMM): results that cancel to far below sum|x||w| can differ by
    several fp16 ulps of the result, because CPU and cuBLAS accumulate in fp32 in different orders
    (measured on an H200: up to 13 ulps at |y| ~ 0.06, with |error| <= 0.42 eps32 sum|x||w|).  The
    bound is 1 fp16 ulp of the result plus the two fp32 accumulation errors."""
    k, n = 4096, 64
    x, w, b = _z(2, 8, k), _z(n, k, seed=1), _z(n, seed=2)
    want = C.linear(x.float(), w.float(), b.float()).half()
    got = C.linear(x.to(device), w.to(device), b.to(device)).cpu()
    xa = torch.cat((x.real, x.imag), -1).double().abs()
    wa = torch.cat((torch.cat((w.real, w.imag), 1), torch.cat((w.imag, w.real), 1)), 0).double().abs()
    mag = F.linear(xa, wa).unflatten(-1, (2, n)).movedim(-2, 0)  # sum |x_k||w_k| per output, as planes
    g, v = got.planes.double(), want.planes.double()
    bound = fp16_ulp(torch.maximum(g.abs(), v.abs())) + 2 * (2 * k) ** 0.5 * 2.0**-24 * mag
    err = (g - v).abs()
    assert (err <= bound).all(), f"max err / bound = {(err / bound).max().item():.3g}"
    # where ulp16(y) >= |y| 2**-11 exceeds 8 eps32 sum|x||w| (little cancellation) they agree to 1 ulp
    big = v.abs() > 2.0**-10 * mag
    assert big.float().mean() > 0.8
    assert_within_ulps(g[big], v[big], 1, "long linear, well-conditioned outputs")


@pytest.mark.parametrize("a_shape, b_shape", [((8, 64), (64, 8)), ((3, 5, 256), (256, 7)), ((64,), (64,)),
                                              ((2, 16), (16,))])
def test_matmul_within_one_ulp_of_cpu_fp32(device, a_shape, b_shape):
    a, b = _z(*a_shape), _z(*b_shape, seed=1)
    want = C.matmul(a.float(), b.float()).half()
    got = C.matmul(a.to(device), b.to(device))
    _assert_ct_within_ulps(got.cpu(), want, 1, f"matmul {a_shape} @ {b_shape}")
    r = torch.randn(*b_shape, generator=torch.Generator().manual_seed(3)).half()
    _assert_ct_within_ulps(C.matmul(a.to(device), r.to(device)).cpu(), C.matmul(a.float(), r.float()).half(), 1,
                           "matmul with a real operand")


def test_fp32_accumulation_sets_and_restores_cuda_flags(device):
    m = torch.backends.cuda.matmul
    before = (m.allow_fp16_reduced_precision_reduction, m.allow_tf32)
    with _policy.fp32_accumulation(torch.device(device)):
        inside = (m.allow_fp16_reduced_precision_reduction, m.allow_tf32)
        assert not torch.is_autocast_enabled(device)
    assert inside == ((False, False) if device == "cuda" else before)
    assert (m.allow_fp16_reduced_precision_reduction, m.allow_tf32) == before


def test_elementwise_ops_match_cpu(device):
    a, b = _z(256), _z(256, seed=1)
    ga, gb = a.to(device), b.to(device)
    for name in ("add", "sub", "mul"):
        assert_ct_bitwise(getattr(C, name)(ga, gb).cpu(), getattr(C, name)(a, b), f"{name} on {device}")
    _assert_ct_within_ulps(C.div(ga, gb).cpu(), C.div(a, b), 1, f"div on {device}")
    assert_within_ulps(C.abs(ga).cpu(), C.abs(a), 1, f"abs on {device}")
    big = ComplexTensor(torch.tensor([[300.0], [400.0]], dtype=torch.float16, device=device))
    assert C.abs(big).item() == 500.0
    assert_bitwise_equal(C.conj(ga).cpu().planes, C.conj(a).planes, f"conj on {device}")


def test_layers_match_cpu(device):
    z = _z(4, 64)
    w, b = torch.rand(64).half() + 0.5, torch.randn(64).half()
    _assert_ct_within_ulps(C.layer_norm(z.to(device), w.to(device), b.to(device)).cpu(), C.layer_norm(z, w, b), 2, "layer_norm")
    _assert_ct_within_ulps(C.modrelu(z.to(device), b.to(device)).cpu(), C.modrelu(z, b), 1, "modrelu")
    gen = torch.Generator(device=device).manual_seed(0)
    y = C.dropout(z.to(device), 0.5, generator=gen)
    assert torch.equal(y.real == 0, y.imag == 0)


def test_modules_match_cpu(device):
    torch.manual_seed(0)
    m = ComplexLinear(32, 16)
    x = _z(5, 32)
    want = m(x)
    got = m.to(device)(x.to(device))
    _assert_ct_within_ulps(got.cpu(), want, 1, f"ComplexLinear on {device}")
    r = RealLinear(32, 8, dtype=torch.float16)
    xr = torch.randn(4, 32).half()
    assert_within_ulps(r.to(device)(xr.to(device)).cpu(), F.linear(xr.float(), r.weight.cpu().float(),
                                                           r.bias.cpu().float()).half(), 1, "RealLinear")


@cuda_test
def test_mixed_cuda_cpu_devices_rejected():
    with pytest.raises(ValueError, match="a is on cuda:0 but b is on cpu"):
        C.add(_z(3).cuda(), _z(3))
    with pytest.raises(ValueError, match="x is on cpu but weight is on cuda:0"):
        C.linear(_z(2, 4), _z(3, 4).cuda())


def test_model_forward_backward(device):
    torch.manual_seed(0)
    model = build_model("stage1", "tiny", device=device).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 128), device=device)
    logits, diag = model(ids, return_diagnostics=True)
    assert logits.shape == (2, 128, 50257) and logits.dtype == torch.float16
    assert logits.device.type == device
    assert torch.isfinite(logits).all()
    assert all(v["planar"] for k, v in diag.items() if k != "output")
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    assert abs(loss.item() - math.log(50257)) < 1.0
    loss.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:  # the frozen zeta position table (seed fidelity)
            assert p.grad is None, name
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        norm = p.grad.float().norm().item()
        assert 1e-6 <= norm <= 1e3, f"{name}: gradient norm {norm}"
    stats = model.get_statistics()
    assert stats["forward_count"] == 1 and stats["nonfinite_count"] == 0


def test_model_matches_cpu(device):
    torch.manual_seed(0)
    cpu = build_model("stage1", "tiny", vocab_size=1000).eval()
    gpu = build_model("stage1", "tiny", vocab_size=1000, device=device).eval()
    gpu.load_state_dict(cpu.state_dict())
    ids = torch.randint(0, 1000, (2, 32))
    a, b = cpu(ids), gpu(ids.to(device)).cpu()
    torch.testing.assert_close(b.float(), a.float(), rtol=2e-2, atol=2e-2)

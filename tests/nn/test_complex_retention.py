"""ComplexRetention (muse.nn.mixers): its definition, causality, mixing, continued sequences, gradients,
the Triton scan behind it, and bad input refused by name."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import muse.complex as C
from muse import kernels
from muse.init import zeta_zeros
from muse.nn import ComplexRetention
from tests.kernels._launches import DEVICES, count_launches

D, H = 16, 2


def _x(shape, dtype=torch.float16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return C.ComplexTensor(torch.randn(2, *shape, generator=gen).to(dtype))


def _layer(dtype=torch.float16, **kw):
    torch.manual_seed(0)
    layer = ComplexRetention(D, H, dtype=dtype, **kw)
    with torch.no_grad():  # a gate bias away from zero and unequal gains, so both are exercised
        layer.norm_weight.copy_(torch.linspace(0.5, 1.5, D))
        if layer.gate_act is not None:
            layer.gate_act.bias.fill_(-0.3)
    return layer


def _reference(layer: ComplexRetention, x: C.ComplexTensor) -> torch.Tensor:
    """The docstring's recurrence, a loop in complex128: S_t = a_t R S_{t-1} + k_t [Re v_t, Im v_t]^T,
    y_t = Re(q_t^H S_t) / sqrt(2 dk), RMS norm, gain, gate, out_proj.  Returns planes (2, B, S, d)."""
    p = layer.proj(x).planes.double()
    pc = torch.complex(p[0], p[1])  # (B, S, F)
    dk, dv, nh = layer.dk, layer.dv, layer.n_heads
    q, k, v, g, a = torch.split(pc, layer.splits, dim=-1)
    b, s, _ = q.shape
    q, k, v = q.view(b, s, nh, dk), k.view(b, s, nh, dk), v.view(b, s, nh, dv)
    rot = torch.exp(1j * layer.omega.double())  # (dk,)
    decay = torch.exp(-F.softplus(a.real))  # (B, S, H)
    state = torch.zeros(b, nh, dk, 2 * dv, dtype=torch.complex128)
    out = []
    for t in range(s):
        vt = torch.cat((v[:, t].real, v[:, t].imag), dim=-1)  # (B, H, 2 dv)
        state = decay[:, t, :, None, None] * rot[:, None] * state + k[:, t, :, :, None] * vt[:, :, None, :]
        y = (q[:, t].conj()[..., None] * state).sum(dim=-2).real / math.sqrt(2 * dk)  # (B, H, 2 dv)
        y = y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + layer.eps)
        out.append(torch.complex(y[..., :dv], y[..., dv:]).reshape(b, nh * dv))
    y = torch.stack(out, dim=1) * layer.norm_weight.double()  # (B, S, d)
    if layer.gate_act is not None:
        bias = layer.gate_act.bias.double()
        g = g * F.relu(g.abs() + bias) / g.abs()  # modReLU
        y = y * g
    y = C.ComplexTensor(torch.stack((y.real, y.imag)).to(x.dtype))
    return layer.out_proj(y).planes


@pytest.mark.parametrize("phase_init", ["geometric", "zeta", "none"])
@pytest.mark.parametrize("gate", [True, False])
def test_matches_its_definition(phase_init, gate):
    layer = _layer(torch.float64, phase_init=phase_init, gate=gate, chunk_size=8)  # several chunks
    x = _x((2, 21, D), torch.float64)
    torch.testing.assert_close(layer(x).planes, _reference(layer, x), rtol=1e-10, atol=1e-10)


def test_parameters_dtypes_and_phases():
    layer = _layer()
    assert layer.d_key == D // 2 and layer.dk == D // 2 // H and layer.dv == D // H
    assert layer.proj.weight.shape == (2, 2 * (D // 2) + 2 * D + H, D) and layer.out_proj.bias is None
    assert layer.norm_weight.dtype == torch.float32 and layer.omega.dtype == torch.float32
    assert "omega" not in layer.state_dict() and not any(n == "omega" for n, _ in layer.named_parameters())
    y = layer(_x((2, 9, D)))
    assert y.dtype == torch.float16 and y.shape == (2, 9, D) and y.is_planar()
    torch.manual_seed(0)
    n = 32
    geometric = ComplexRetention(2 * n, 1, d_key=n).omega.double()
    torch.testing.assert_close(geometric, 10000.0 ** (-torch.arange(n, dtype=torch.float64) / n), rtol=1e-6, atol=0)
    zeta = ComplexRetention(2 * n, 1, d_key=n, phase_init="zeta").omega.double()
    torch.testing.assert_close(zeta, math.pi * zeta_zeros(n) / zeta_zeros(n)[-1], rtol=1e-6, atol=0)
    assert torch.equal(ComplexRetention(2 * n, 1, d_key=n, phase_init="none").omega, torch.zeros(n))
    # the decay starts at RetNet's per-head retentions 1 - 2^(-5-h) (for a zero input)
    retention = torch.exp(-F.softplus(layer.proj.bias[0, -H:].double()))
    torch.testing.assert_close(retention, 1 - torch.exp2(-5.0 - torch.arange(H, dtype=torch.float64)),
                               rtol=1e-3, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_future_tokens_leave_earlier_outputs_bit_identical(dtype):
    layer = _layer(dtype, chunk_size=8)
    x = _x((2, 40, D), dtype)
    y = layer(x)
    for t in (0, 9, 33):
        changed = x.planes.clone()
        changed[:, :, t + 1:] = torch.randn_like(changed[:, :, t + 1:])
        y2 = layer(C.ComplexTensor(changed))
        assert torch.equal(y.planes[:, :, : t + 1], y2.planes[:, :, : t + 1])
        assert not torch.equal(y.planes[:, :, t + 1:], y2.planes[:, :, t + 1:])


def test_an_earlier_token_changes_later_outputs():
    layer = _layer(torch.float32)
    x = _x((1, 30, D), torch.float32)
    y = layer(x)
    for s, t in ((0, 1), (3, 20), (10, 29)):
        changed = x.planes.clone()
        changed[:, :, s] += 1.0
        diff = (layer(C.ComplexTensor(changed)).planes[:, :, t] - y.planes[:, :, t]).abs().max()
        assert diff > 1e-3, (s, t, float(diff))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_continued_and_token_by_token_equal_forward(dtype, tol):
    """The state carries the physical S (rotated to the end of each call), so any split gives the same outputs."""
    layer = _layer(dtype, chunk_size=8)
    x = _x((2, 27, D), dtype)
    y, final = layer.forward_with_state(x)
    torch.testing.assert_close(y.planes, layer(x).planes, rtol=0, atol=0)
    scale = float(y.planes.detach().abs().max())
    for cut in (1, 8, 19):
        ya, sa = layer.forward_with_state(C.ComplexTensor(x.planes[:, :, :cut]))
        yb, sb = layer.forward_with_state(C.ComplexTensor(x.planes[:, :, cut:]), sa)
        assert float((torch.cat((ya.planes, yb.planes), dim=2) - y.planes).abs().max()) <= tol * scale
        assert float((sb.planes - final.planes).abs().max()) <= tol * float(final.planes.abs().max())
    state, outs = layer.initial_state(2), []
    for t in range(x.shape[1]):
        o, state = layer.forward_with_state(C.ComplexTensor(x.planes[:, :, t:t + 1]), state)
        outs.append(o.planes)
    assert float((torch.cat(outs, dim=2) - y.planes).abs().max()) <= tol * scale


def test_state_shape_and_dtype():
    layer = _layer()
    _, state = layer.forward_with_state(_x((3, 5, D)))
    assert state.shape == (3, H, D // 2 // H, 2 * D // H) and state.dtype == torch.float32
    zero = layer.initial_state(3)
    assert zero.shape == state.shape and zero.dtype == state.dtype and not zero.planes.any()


def test_gradients_reach_every_parameter_and_gradcheck():
    layer = _layer(torch.float64, chunk_size=4)
    x = _x((1, 9, D), torch.float64)
    planes = x.planes.clone().requires_grad_(True)
    layer(C.ComplexTensor(planes)).planes.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    small = ComplexRetention(4, 2, dtype=torch.float64, chunk_size=2)
    inp = _x((1, 5, 4), torch.float64).planes.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: small(C.ComplexTensor(p)).planes, (inp,))


def test_fp16_training_step_is_finite_at_long_length():
    """S = 8192 with the slowest decays: outputs and gradients stay finite (the state is fp32)."""
    torch.manual_seed(0)
    layer = ComplexRetention(32, 2)
    with torch.no_grad():
        layer.proj.bias[0, -2:].fill_(-30.0)  # retention exp(-softplus(-30)) = 1 - 1e-13
    x = _x((1, 8192, 32))
    planes = x.planes.clone().requires_grad_(True)
    y = layer(C.ComplexTensor(planes))
    y.planes.float().square().mean().backward()
    assert torch.isfinite(y.planes).all() and torch.isfinite(planes.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_triton_scan_agrees_with_the_pytorch_form(kernel_device, monkeypatch):
    """The layer's scan through the Triton kernel (CUDA, or the CPU interpreter): outputs, states and
    gradients within 1e-3 of the largest entry of the PyTorch form's (fp16 planes in and out)."""
    if not kernels.HAS_TRITON:
        pytest.skip("triton is not installed")
    launches = count_launches(monkeypatch, kernel_device, ("hebbian_forward", "hebbian_backward"))
    layer = _layer().to(kernel_device)
    x = _x((2, 40, D)).planes.to(kernel_device)

    def run():
        planes = x.clone().requires_grad_(True)
        layer.zero_grad()
        y, state = layer.forward_with_state(C.ComplexTensor(planes), layer.initial_state(2))
        (y.planes.float().square().mean() + state.planes.square().mean()).backward()
        grads = [planes.grad] + [p.grad for p in layer.parameters()]
        return [y.planes.float(), state.planes] + [g.float() for g in grads]

    with_kernel = run()
    launched = {"hebbian_forward": 2, "hebbian_backward": 1}  # the scan region reruns in backward (recomputed)
    assert launches == launched
    monkeypatch.setenv(kernels.ENV, "0")
    reference = run()
    assert launches == launched
    for got, want in zip(with_kernel, reference, strict=True):
        assert float((got - want).abs().max()) <= 1e-3 * float(want.abs().max()) + 1e-3, float((got - want).abs().max())


def test_bad_input_is_refused_by_name():
    layer = _layer()
    with pytest.raises(TypeError, match="x must be"):
        layer(torch.zeros(2, 1, 3, D))
    with pytest.raises(ValueError, match="x must have shape"):
        layer(_x((3, D)))
    with pytest.raises(ValueError, match="d_model=16"):
        layer(_x((1, 3, D + 1)))
    with pytest.raises(TypeError, match="dtype"):
        layer(_x((1, 3, D), torch.float32))
    with pytest.raises(TypeError, match="initial_state must be"):
        layer.forward_with_state(_x((1, 3, D)), torch.zeros(3))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        layer.forward_with_state(_x((2, 3, D)), layer.initial_state(1))
    for kw, exc, needle in [
        (dict(n_heads=3), ValueError, "divisible by n_heads"),
        (dict(n_heads=2, d_key=5), ValueError, "d_key .5. must be divisible"),
        (dict(n_heads=0), ValueError, "n_heads"),
        (dict(phase_init="rope"), ValueError, "phase_init"),
        (dict(phase_init=1), TypeError, "phase_init"),
        (dict(gate=1), TypeError, "gate"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(eps=0.0), ValueError, "eps"),
    ]:
        with pytest.raises(exc, match=needle):
            ComplexRetention(D, **kw)

"""ComplexRecurrence (muse.nn.mixers): init, causality, mixing, step() vs forward, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import muse.complex as C
from muse.init import zeta_zeros
from muse.nn import ComplexRecurrence
from muse.scan.complex_diag import decay_powers


def _x(shape, dtype=torch.float16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return C.ComplexTensor(torch.randn(2, *shape, generator=gen).to(dtype))


def _layer(dtype=torch.float16, **kw):
    torch.manual_seed(0)
    return ComplexRecurrence(16, dtype=dtype, **kw)


def test_parameters_and_dtypes():
    layer = _layer(d_state=24)
    assert layer.nu.dtype == torch.float32 and layer.omega.dtype == torch.float32
    assert layer.in_proj.weight.shape == (2, 24, 16) and layer.in_proj.bias is None
    assert layer.out_proj.weight.shape == (2, 16, 24) and layer.out_proj.bias is None
    assert layer.skip.dtype == torch.float16
    y = layer(_x((2, 9, 16)))
    assert y.dtype == torch.float16 and y.shape == (2, 9, 16) and y.is_planar()


def test_ring_init_and_gamma():
    torch.manual_seed(0)
    layer = ComplexRecurrence(8, d_state=4000, r_min=0.4, r_max=0.99, dtype=torch.float32)
    radius, _ = layer.decay()
    assert radius.min() >= 0.4 - 1e-6 and radius.max() <= 0.99 + 1e-6
    # |lambda|^2 is uniform on [r_min^2, r_max^2] (uniform on the ring's area)
    sq = radius.detach().double() ** 2
    assert abs(float(sq.mean()) - (0.4**2 + 0.99**2) / 2) < 0.01
    gamma = layer.gamma().double()
    torch.testing.assert_close(gamma, torch.sqrt(1 - radius.double() ** 2), rtol=1e-5, atol=0)
    layer.nu.data.fill_(math.log(1e-7))  # |lambda| = 1 - 1e-7: 1 - |lambda|^2 is 0 in fp32 arithmetic
    assert float(layer.gamma()[0]) == pytest.approx(math.sqrt(2e-7), rel=1e-3)


def test_omega_inits():
    zeta = _layer(d_state=50).omega.double()
    gammas = zeta_zeros(50)
    torch.testing.assert_close(zeta, math.pi * gammas / gammas[-1], rtol=1e-6, atol=0)
    assert zeta.min() > 0 and float(zeta.max()) == pytest.approx(math.pi)
    uniform = _layer(d_state=2000, omega_init="uniform").omega
    assert uniform.min() > 0 and uniform.max() <= math.pi + 1e-6
    assert abs(float(uniform.mean()) - math.pi / 2) < 0.1


@pytest.mark.parametrize("lambda_kind", ["complex", "real"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_future_tokens_leave_earlier_outputs_bit_identical(dtype, lambda_kind):
    layer = _layer(dtype, lambda_kind=lambda_kind)
    x = _x((2, 40, 16), dtype)
    y = layer(x)
    for t in (0, 9, 33):
        changed = x.planes.clone()
        changed[:, :, t + 1:] = torch.randn_like(changed[:, :, t + 1:])
        y2 = layer(C.ComplexTensor(changed))
        assert torch.equal(y.planes[:, :, : t + 1], y2.planes[:, :, : t + 1])


def test_an_earlier_token_changes_later_outputs():
    """Mixing: changing token s < t changes the output at t (the layer is not per-token)."""
    layer = _layer(torch.float32)
    x = _x((1, 30, 16), torch.float32)
    y = layer(x)
    for s, t in ((0, 1), (3, 20), (10, 29)):
        changed = x.planes.clone()
        changed[:, :, s] += 1.0
        y2 = layer(C.ComplexTensor(changed))
        assert not torch.equal(y.planes[:, :, t], y2.planes[:, :, t]), (s, t)
        assert torch.equal(y.planes[:, :, :s], y2.planes[:, :, :s])


@pytest.mark.parametrize("lambda_kind", ["complex", "real"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.float16, 2e-2)])
def test_step_equals_forward(dtype, tol, lambda_kind):
    layer = _layer(dtype, lambda_kind=lambda_kind)
    x = _x((3, 25, 16), dtype)
    y, final = layer.forward_with_state(x)
    state = None
    for t in range(25):
        y_t, state = layer.step(x[:, t], state)
        torch.testing.assert_close(y_t.planes.double(), y.planes[:, :, t].double(), rtol=tol, atol=tol)
    torch.testing.assert_close(state.planes.double(), final.planes.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("lambda_kind", ["complex", "real"])
def test_prefill_then_steps_equals_forward(lambda_kind):
    """forward_with_state on a prompt, then step() per token: the O(1) generation path."""
    layer = _layer(torch.float64, lambda_kind=lambda_kind)
    x = _x((2, 30, 16), torch.float64)
    y = layer(x)
    y_pre, state = layer.forward_with_state(x[:, :17])
    torch.testing.assert_close(y_pre.planes, y.planes[:, :, :17], rtol=1e-12, atol=1e-12)
    for t in range(17, 30):
        y_t, state = layer.step(x[:, t], state)
        torch.testing.assert_close(y_t.planes, y.planes[:, :, t], rtol=1e-12, atol=1e-12)
    assert layer.initial_state(2).shape == (2, 16)


def test_gradients_reach_every_parameter_and_gradcheck():
    layer = _layer(torch.float64, d_state=6)
    x = _x((2, 12, 16), torch.float64).requires_grad_(True)
    layer(x).planes.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name

    small = _layer(torch.float64, d_state=3)
    small.in_proj = type(small.in_proj)(16, 3, bias=False, dtype=torch.float64)
    xs = _x((1, 7, 16), torch.float64).planes.requires_grad_(True)
    params = (small.nu, small.omega, small.skip)
    assert torch.autograd.gradcheck(lambda xp, *_: small(C.ComplexTensor(xp)).planes, (xs, *params))


def test_bad_input():
    layer = _layer()
    with pytest.raises(TypeError, match="x must be a ComplexTensor"):
        layer(torch.zeros(2, 3, 16))
    with pytest.raises(ValueError, match="d_model=16"):
        layer(_x((2, 3, 8)))
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        layer(_x((2, 3, 16), torch.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., seq, d_model\)"):
        layer(_x((16,)))
    with pytest.raises(ValueError, match="r_min must be <= r_max"):
        ComplexRecurrence(4, r_min=0.99, r_max=0.9)
    with pytest.raises(ValueError, match="r_max must be < 1.0"):
        ComplexRecurrence(4, r_max=1.0)
    with pytest.raises(ValueError, match="omega_init must be one of"):
        ComplexRecurrence(4, omega_init="random")
    with pytest.raises(ValueError, match="lambda_kind must be one of"):
        ComplexRecurrence(4, lambda_kind="imaginary")
    with pytest.raises(TypeError, match="lambda_kind must be one of"):
        ComplexRecurrence(4, lambda_kind=True)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        layer.forward_with_state(_x((2, 3, 16)), C.ComplexTensor(torch.zeros(2, 3, 16)))


def test_real_lambda_fixes_omega_at_zero_as_a_buffer():
    """lambda_kind="real": omega is a zero buffer (not trained, not saved), nu keeps the same ring."""
    complex_, real = _layer(d_state=24), _layer(d_state=24, lambda_kind="real")
    assert "omega" not in dict(real.named_parameters()) and "omega" in dict(real.named_buffers())
    assert "omega" not in real.state_dict()
    assert sum(p.numel() for p in complex_.parameters()) - sum(p.numel() for p in real.parameters()) == 24
    assert real.omega.dtype == torch.float32 and not real.omega.any()
    assert torch.equal(real.nu, complex_.nu)  # the same draw of |lambda|
    assert not real.decay()[1].any()
    assert "lambda_kind='real'" in repr(real)
    x = _x((2, 9, 16))
    assert not torch.equal(real(x).planes, complex_(x).planes)


def test_real_lambda_keeps_zero_phase_through_a_training_step():
    layer = _layer(torch.float32, lambda_kind="real")
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
    nu0 = layer.nu.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        layer(_x((2, 12, 16), torch.float32)).planes.square().sum().backward()
        opt.step()
    assert not layer.omega.any() and layer.omega.grad is None
    assert not torch.equal(layer.nu, nu0)
    re, im = decay_powers(layer.nu, layer.omega, torch.arange(1, 5), torch.float64)
    assert not im.any() and (re > 0).all()


VARIANTS = [dict(conv_kernel=4), dict(gate=True), dict(conv_kernel=4, gate=True), dict(conv_kernel=1),
            dict(lambda_kind="real", decay="input"), dict(lambda_kind="real", decay="input", conv_kernel=3, gate=True),
            dict(lambda_kind="real", decay="input", decay_rank=4), dict(lambda_kind="real", decay="drive", gate=True),
            dict(decay="input"), dict(decay="input", decay_rank=4, gate=True, conv_kernel=2), dict(decay="drive")]


@pytest.mark.parametrize("kw", VARIANTS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_conv_and_gate_are_causal_bit_for_bit(kw, dtype):
    layer = _layer(dtype, **kw)
    x = _x((2, 40, 16), dtype)
    y = layer(x)
    for t in (0, 2, 9, 33):
        changed = x.planes.clone()
        changed[:, :, t + 1:] = torch.randn_like(changed[:, :, t + 1:])
        assert torch.equal(y.planes[:, :, : t + 1], layer(C.ComplexTensor(changed)).planes[:, :, : t + 1])


@pytest.mark.parametrize("kw", VARIANTS, ids=str)
def test_conv_and_gate_step_and_split_equal_forward(kw):
    """Prefill + continuation and per-token steps carry the convolution window in the state."""
    layer = _layer(torch.float64, **kw)
    x = _x((3, 23, 16), torch.float64)
    y, final = layer.forward_with_state(x)
    y1, s1 = layer.forward_with_state(x[:, :5])
    y2, s2 = layer.forward_with_state(x[:, 5:], s1)
    torch.testing.assert_close(torch.cat([y1.planes, y2.planes], -2), y.planes, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2.planes, final.planes, rtol=1e-12, atol=1e-12)
    state = None
    for t in range(23):
        y_t, state = layer.step(x[:, t], state)
        torch.testing.assert_close(y_t.planes, y.planes[:, :, t], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.planes, final.planes, rtol=1e-12, atol=1e-12)
    k = kw.get("conv_kernel", 0)
    assert tuple(layer.initial_state(3).shape) == ((3, k, 16) if k else (3, 16))


def test_conv_matches_its_definition():
    """u_t = sum_k w_k (B x)_{t-k} with complex w: checked against complex128 arithmetic."""
    layer = _layer(torch.float64, conv_kernel=3, d_state=5)
    x = _x((2, 9, 16), torch.float64)
    u = layer.in_proj(x).planes
    got, window = layer._conv(u, None)
    uc, w = torch.complex(u[0], u[1]), torch.complex(layer.conv_weight[0], layer.conv_weight[1])
    want = torch.zeros_like(uc)
    for t in range(9):
        for j in range(3):
            if t - j >= 0:
                want[:, t] += w[j] * uc[:, t - j]
    torch.testing.assert_close(torch.complex(got[0], got[1]), want, rtol=1e-13, atol=1e-13)
    assert torch.equal(window, u[..., -2:, :])


def test_conv_and_gate_parameters_and_gradients():
    layer = _layer(torch.float64, conv_kernel=4, gate=True, d_state=6)
    names = dict(layer.named_parameters())
    assert names["conv_weight"].shape == (2, 4, 6) and names["conv_weight"].dtype == torch.float64
    assert names["gate_proj.weight"].shape == (2, 6, 16) and names["gate_act.bias"].shape == (6,)
    x = _x((2, 12, 16), torch.float64)
    layer(x).planes.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert "conv_kernel=4" in repr(layer) and "gate=True" in repr(layer)


def test_conv_and_gate_bad_arguments():
    with pytest.raises(ValueError, match="conv_kernel"):
        ComplexRecurrence(4, conv_kernel=-1)
    with pytest.raises(TypeError, match="gate must be a bool"):
        ComplexRecurrence(4, gate=1)
    layer = _layer(torch.float32, conv_kernel=3)
    x = _x((2, 4, 16), torch.float32)
    with pytest.raises(ValueError, match=r"initial_state must have shape \(\.\.\., 3, 16\)"):
        layer.forward_with_state(x, C.ComplexTensor(torch.zeros(2, 2, 16)))
    with pytest.raises(TypeError, match="initial_state must be a ComplexTensor"):
        layer.forward_with_state(x, torch.zeros(2, 2, 3, 16))


def test_input_decay_is_lambda_to_a_gated_power_with_its_own_gain():
    """decay="input": a_t = lambda^(c sigmoid(Re(A x_t))) and gamma_t = sqrt(1 - a_t^2), checked against the
    definition run step by step in float64 (lambda real)."""
    layer = _layer(torch.float64, lambda_kind="real", decay="input", decay_scale=2.0, d_state=5)
    assert layer.decay_proj.weight.shape == (2, 5, 16) and layer.decay_proj.bias is not None
    x = _x((2, 11, 16), torch.float64)
    u = layer.in_proj(x).planes
    r = torch.sigmoid(layer.decay_proj(x).planes[0])
    a = torch.exp(-torch.exp(layer.nu.double())) ** (2.0 * r)  # (B, S, n)
    h = torch.zeros(2, 2, 5, dtype=torch.float64)
    want = []
    for t in range(11):
        h = a[:, t] * h + torch.sqrt(1 - a[:, t] ** 2) * u[:, :, t]
        want.append(h)
    got = layer._scan(u, None, None, layer._rate(x))[0]
    torch.testing.assert_close(got, torch.stack(want, dim=-2), rtol=1e-12, atol=1e-12)
    assert "decay='input'" in repr(layer) and "decay_scale=2.0" in repr(layer)


def test_input_decay_with_a_complex_lambda_turns_the_state_by_the_same_power():
    """decay="input", complex lambda: a_t = lambda^(c r_t) = exp(c r_t (-exp(nu) + i omega)), gain
    sqrt(1 - |a_t|^2), against the definition in complex128; omega starts in (0, max_phase / c]."""
    layer = _layer(torch.float64, decay="input", decay_scale=2.0, d_state=5)
    assert layer.omega.requires_grad and 0 < float(layer.omega.min()) and float(layer.omega.max()) <= math.pi / 2 + 1e-12
    x = _x((2, 11, 16), torch.float64)
    u = layer.in_proj(x).planes
    r = torch.sigmoid(layer.decay_proj(x).planes[0])
    a = torch.exp(2.0 * r * torch.complex(-torch.exp(layer.nu.double()), layer.omega.double()))  # (B, S, n)
    h = torch.zeros(2, 5, dtype=torch.complex128)
    want = []
    for t in range(11):
        h = a[:, t] * h + torch.sqrt(1 - a[:, t].abs() ** 2) * torch.complex(u[0, :, t], u[1, :, t])
        want.append(h)
    want = torch.stack(want, dim=-2)
    got = layer._scan(u, None, None, layer._rate(x))[0]
    torch.testing.assert_close(got, torch.stack((want.real, want.imag)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lambda_kind", ["real", "complex"])
@pytest.mark.parametrize("kw", [dict(decay="input"), dict(decay="input", decay_rank=3), dict(decay="drive")], ids=str)
def test_input_decay_trains_every_parameter(kw, lambda_kind):
    layer = _layer(torch.float64, lambda_kind=lambda_kind, d_state=6, **kw)
    layer(_x((2, 12, 16), torch.float64)).planes.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_low_rank_and_drive_rates_match_their_definitions():
    x = _x((2, 9, 16), torch.float64)
    low = _layer(torch.float64, lambda_kind="real", decay="input", decay_rank=3, d_state=5)
    assert low.decay_proj.weight.shape == (2, 3, 16) and low.decay_proj.bias is None
    assert low.decay_up.weight.shape == (5, 3)
    u = low.in_proj(x).planes
    z = low.decay_proj(x).planes[0]
    torch.testing.assert_close(low._region_rate(u, low._rate(x)), z @ low.decay_up.weight.T + low.decay_up.bias)
    drive = _layer(torch.float64, lambda_kind="real", decay="drive", d_state=5)
    assert drive._rate(x) is None and drive.decay_weight.shape == (2, 5)
    u = drive.in_proj(x).planes
    want = (torch.complex(drive.decay_weight[0], drive.decay_weight[1]) * torch.complex(u[0], u[1])).real
    torch.testing.assert_close(drive._region_rate(u, None), want + drive.decay_bias)


def test_input_decay_bad_arguments():
    with pytest.raises(ValueError, match="decay must be one of"):
        ComplexRecurrence(4, decay="dynamic")
    with pytest.raises(ValueError, match="decay_rank"):
        ComplexRecurrence(4, lambda_kind="real", decay="input", decay_rank=-1)
    with pytest.raises(ValueError, match="decay_scale"):
        ComplexRecurrence(4, lambda_kind="real", decay="input", decay_scale=0.0)

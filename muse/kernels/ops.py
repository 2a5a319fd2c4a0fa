"""The kernels as ``torch.library`` custom ops (``muse::*``): opaque to torch.compile, with fake
implementations for tracing, so a model that runs kernels still compiles with ``fullgraph=True``."""

import torch


def _k():
    from muse.kernels import _triton

    return _triton


@torch.library.custom_op("muse::layer_norm_fwd", mutates_args=())
def layer_norm_fwd(planes: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   eps: float) -> torch.Tensor:
    """Complex LayerNorm forward of float16 planes (2, ..., d): fp32 statistics, one rounding."""
    return _k().layer_norm_forward(planes, weight, bias, eps)


@layer_norm_fwd.register_fake
def _(planes, weight, bias, eps):
    return torch.empty_like(planes, memory_format=torch.contiguous_format)


@torch.library.custom_op("muse::layer_norm_bwd", mutates_args=())
def layer_norm_bwd(planes: torch.Tensor, weight: torch.Tensor | None, grad: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, sums (2, d) fp32): sums[0] reduces to grad_weight, sums[1] to grad_bias."""
    return _k().layer_norm_backward(planes, weight, grad, eps)


@layer_norm_bwd.register_fake
def _(planes, weight, grad, eps):
    d = planes.shape[-1] if planes.dim() > 1 else 1
    return (torch.empty_like(planes, memory_format=torch.contiguous_format),
            planes.new_empty((2, d), dtype=torch.float32))


@torch.library.custom_op("muse::modrelu_fwd", mutates_args=())
def modrelu_fwd(planes: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """modReLU forward of float16 planes with a (d,) or 0-d bias: fp32, one rounding."""
    return _k().modrelu_forward(planes, bias)


@modrelu_fwd.register_fake
def _(planes, bias):
    return torch.empty_like(planes, memory_format=torch.contiguous_format)


@torch.library.custom_op("muse::modrelu_bwd", mutates_args=())
def modrelu_bwd(planes: torch.Tensor, bias: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_bias in fp32 with bias's shape)."""
    return _k().modrelu_backward(planes, bias, grad)


@modrelu_bwd.register_fake
def _(planes, bias, grad):
    return (torch.empty_like(planes, memory_format=torch.contiguous_format),
            bias.new_empty(bias.shape, dtype=torch.float32))


@torch.library.custom_op("muse::bk_green_bwd", mutates_args=())
def bk_green_bwd(g: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_a (..., S), grad_G0 (...)) of the BK-Core resolvent from its output G and grad_G (complex64)."""
    return _k().bk_green_backward(g, grad)


@bk_green_bwd.register_fake
def _(g, grad):
    return torch.empty_like(g, memory_format=torch.contiguous_format), g.new_empty(g.shape[:-1])


@torch.library.custom_op("muse::bk_green", mutates_args=())
def bk_green(a: torch.Tensor, z_re: float, z_im: float, initial_state: torch.Tensor | None) -> torch.Tensor:
    """BK-Core resolvent G_i = 1 / ((a_i - z) - G_{i-1}) of complex64 a (..., S), G_0 = initial_state
    (...) or 0: a sequential fp32 loop per lane.  Differentiable in a and initial_state."""
    return _k().bk_green_forward(a, z_re, z_im, initial_state)


@bk_green.register_fake
def _(a, z_re, z_im, initial_state):
    return torch.empty_like(a, memory_format=torch.contiguous_format)


def _bk_green_setup(ctx, inputs, output):
    ctx.has_g0 = inputs[3] is not None
    ctx.save_for_backward(output)


def _bk_green_backward(ctx, grad):
    (g,) = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: the differentiable PyTorch adjoint
        from muse.scan.bk import bk_green_adjoint

        grad_a, grad_g0 = bk_green_adjoint(g, grad)
    else:
        grad_a, grad_g0 = bk_green_bwd(g, grad)
    return grad_a, None, None, grad_g0 if ctx.has_g0 else None


bk_green.register_autograd(_bk_green_backward, setup_context=_bk_green_setup)

@torch.library.custom_op("muse::hebbian_bwd", mutates_args=())
def hebbian_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, eta: float,
                initial_state: torch.Tensor | None, grad_y: torch.Tensor, grad_state: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dW_0) of the decayed linear attention (float32)."""
    return _k().hebbian_backward(q, k, v, log_decay, eta, initial_state, grad_y, grad_state)


@hebbian_bwd.register_fake
def _(q, k, v, log_decay, eta, initial_state, grad_y, grad_state):
    state = q.new_empty((*q.shape[:-2], q.shape[-1], v.shape[-1]))
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format), state)


@torch.library.custom_op("muse::hebbian", mutates_args=())
def hebbian(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, eta: float,
            initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, W_S) of W_t = exp(l_t) W_{t-1} + eta k_t v_t^T, y_t = q_t^T W_t from W_0 = initial_state
    (None: 0): q, k (..., S, d_k), v (..., S, d_v), log_decay (..., S), float32.  Differentiable."""
    return _k().hebbian_forward(q, k, v, log_decay, eta, initial_state)


@hebbian.register_fake
def _(q, k, v, log_decay, eta, initial_state):
    return (torch.empty_like(v, memory_format=torch.contiguous_format),
            q.new_empty((*q.shape[:-2], q.shape[-1], v.shape[-1])))


def _hebbian_setup(ctx, inputs, output):
    q, k, v, log_decay, eta, initial_state = inputs
    ctx.eta = eta
    ctx.has_w0 = initial_state is not None
    ctx.save_for_backward(q, k, v, log_decay, initial_state, output[1])


def _hebbian_backward(ctx, grad_y, grad_state):
    q, k, v, log_decay, w0, ws = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: autograd of the PyTorch form, itself differentiable
        from muse.scan.hebbian import hebbian_reference_with_state

        outs = hebbian_reference_with_state(q, k, v, log_decay, ctx.eta, w0)
        pairs = [(o, g) for o, g in zip(outs, (grad_y, grad_state), strict=True) if o.requires_grad and g is not None]
        inputs = [q, k, v, log_decay, w0]
        wrt = [t for t in inputs if t is not None and t.requires_grad]
        found = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True,
                                    allow_unused=True) if pairs and wrt else [None] * len(wrt)
        by_id = {id(t): (torch.zeros_like(t) if gr is None else gr) for t, gr in zip(wrt, found, strict=True)}
        grads = [None if t is None else by_id.get(id(t)) for t in inputs]
        return (*grads[:4], None, grads[4])
    dq, dk, dv, dw0 = hebbian_bwd(q, k, v, log_decay, ctx.eta, w0, grad_y, grad_state)
    # Everything depends on log_decay through L_t = sum_{r <= t} l_r, and y_t = sum_s (q_t e^{L_t}) .
    # (k_s e^{-L_s}) v_s, W_S = e^{L_S} (W_0 + sum_s k_s e^{-L_s} v_s^T): so dL_t = q_t . dq_t - k_t . dk_t
    # (+ <dW_S, W_S> at t = S), and dl_r = sum_{t >= r} dL_t.
    d_cum = (q * dq).sum(dim=-1) - (k * dk).sum(dim=-1)  # (..., S)
    if grad_state is not None and d_cum.shape[-1]:
        d_cum = torch.cat([d_cum[..., :-1], d_cum[..., -1:] + (grad_state * ws).sum(dim=(-2, -1))[..., None]], dim=-1)
    d_log_decay = d_cum.flip(-1).cumsum(-1).flip(-1)
    return dq, dk, dv, d_log_decay, None, dw0 if ctx.has_w0 else None


hebbian.register_autograd(_hebbian_backward, setup_context=_hebbian_setup)

__all__ = ["bk_green", "bk_green_bwd", "hebbian", "hebbian_bwd", "layer_norm_bwd", "layer_norm_fwd", "modrelu_bwd", "modrelu_fwd"]

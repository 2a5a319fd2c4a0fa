"""The kernels as ``torch.library`` custom ops (``muse::*``): opaque to torch.compile, with fake
implementations for tracing, so a model that runs kernels still compiles with ``fullgraph=True``.

Each public function here calls its Triton wrapper directly where the custom op adds nothing: eager, grad
mode off (inside MUSE's autograd functions), no dispatch mode and no functorch transform active.  On the
H200's host the custom op's dispatch cost 40-47 µs a call on top of a 50-110 µs wrapper (docs/performance.md,
sixteenth session); everywhere else (tracing, fake tensors, memory trackers, grad mode) the call goes
through the custom op as before."""

import functools

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode


def _k():
    from muse.kernels import _triton

    return _triton


def _direct() -> bool:
    """True where a kernel may skip its custom op: eager code outside any tracing or dispatch mode, grad mode off."""
    return (not torch.compiler.is_compiling() and not torch.is_grad_enabled()
            and _get_current_dispatch_mode() is None and not torch._C._are_functorch_transforms_active())


def _kernel_op(name: str, mutates_args: tuple[str, ...] = ()):
    """``torch.library.custom_op(name)`` of the decorated function, called directly where :func:`_direct`
    allows; the returned function keeps ``register_fake`` and exposes the custom op as ``.op``."""
    def wrap(fn):
        op = torch.library.custom_op(name, fn, mutates_args=mutates_args)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return fn(*args, **kwargs) if _direct() else op(*args, **kwargs)
        call.op = op
        call.register_fake = op.register_fake
        return call
    return wrap


@_kernel_op("muse::layer_norm_fwd")
def layer_norm_fwd(planes: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   eps: float) -> torch.Tensor:
    """Complex LayerNorm forward of float16 planes (2, ..., d): fp32 statistics, one rounding."""
    return _k().layer_norm_forward(planes, weight, bias, eps)


@layer_norm_fwd.register_fake
def _(planes, weight, bias, eps):
    return torch.empty_like(planes, memory_format=torch.contiguous_format)


@_kernel_op("muse::layer_norm_flag_fwd", mutates_args=("flags",))
def layer_norm_flag_fwd(planes: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                        eps: float, flags: torch.Tensor, slot: int) -> torch.Tensor:
    """:func:`layer_norm_fwd` that also sets flags[slot] (int32) to 1 where a value of ``planes`` is not
    finite: a model's count of the norm's input, taken in the same pass.  An op apart because inductor
    cannot lower a single-output op that mutates an argument passed as None (CPU and H100, torch 2.11 and
    2.13; twenty-ninth session)."""
    return _k().layer_norm_forward(planes, weight, bias, eps, flags=flags, slot=slot)


@layer_norm_flag_fwd.register_fake
def _(planes, weight, bias, eps, flags, slot):
    return torch.empty_like(planes, memory_format=torch.contiguous_format)


@_kernel_op("muse::add_layer_norm_fwd")
def add_layer_norm_fwd(planes: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None,
                       bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """LN(planes + residual) of float16 planes, the sum rounded once as ``C.add`` rounds it and never
    written: a residual connection and the norm after it in one pass (inference)."""
    return _k().layer_norm_forward(planes, weight, bias, eps, residual)


@add_layer_norm_fwd.register_fake
def _(planes, residual, weight, bias, eps):
    return torch.empty_like(planes, memory_format=torch.contiguous_format)


@_kernel_op("muse::add_layer_norm_pair_fwd", mutates_args=("flags",))
def add_layer_norm_pair_fwd(planes: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None,
                            bias: torch.Tensor | None, eps: float, weight2: torch.Tensor | None,
                            bias2: torch.Tensor | None, eps2: float, flags: torch.Tensor | None,
                            slot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, LN2(y)) with y = LN(planes + residual) of float16 planes: a post-norm block's output and the
    next norm of it in one pass (inference); y is written once and not read back.  ``flags`` (int32,
    or None): flags[slot] becomes 1 where a value of y is not finite."""
    return _k().layer_norm_pair_forward(planes, residual, weight, bias, eps, weight2, bias2, eps2, flags, slot)


@add_layer_norm_pair_fwd.register_fake
def _(planes, residual, weight, bias, eps, weight2, bias2, eps2, flags, slot):
    like = torch.empty_like(planes, memory_format=torch.contiguous_format)
    return like, torch.empty_like(like)


@_kernel_op("muse::layer_norm_bwd")
def layer_norm_bwd(planes: torch.Tensor, weight: torch.Tensor | None, grad: torch.Tensor,
                   eps: float, sums_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, sums (2, d) in ``sums_dtype``, summed in fp32, rounded once): sums[0] is grad_weight,
    sums[1] grad_bias."""
    return _k().layer_norm_backward(planes, weight, grad, eps, sums_dtype)


@layer_norm_bwd.register_fake
def _(planes, weight, grad, eps, sums_dtype):
    d = planes.shape[-1] if planes.dim() > 1 else 1
    return (torch.empty_like(planes, memory_format=torch.contiguous_format),
            planes.new_empty((2, d), dtype=sums_dtype))


@_kernel_op("muse::modrelu_fwd")
def modrelu_fwd(planes: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """modReLU forward of float16 planes with a (d,) or 0-d bias: fp32, one rounding."""
    return _k().modrelu_forward(planes, bias)


@modrelu_fwd.register_fake
def _(planes, bias):
    return torch.empty_like(planes, memory_format=torch.contiguous_format)


@_kernel_op("muse::modrelu_bwd")
def modrelu_bwd(planes: torch.Tensor, bias: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_bias with bias's shape and dtype, summed in fp32, rounded once)."""
    return _k().modrelu_backward(planes, bias, grad)


@modrelu_bwd.register_fake
def _(planes, bias, grad):
    return (torch.empty_like(planes, memory_format=torch.contiguous_format), torch.empty_like(bias))


@_kernel_op("muse::bk_green_fwd")
def bk_green_fwd(a: torch.Tensor, z_re: float, z_im: float, initial_state: torch.Tensor | None) -> torch.Tensor:
    """BK-Core resolvent G_i = 1 / ((a_i - z) - G_{i-1}) of complex64 a (..., S), G_0 = initial_state
    (...) or 0: a sequential fp32 loop per lane."""
    return _k().bk_green_forward(a, z_re, z_im, initial_state)


@bk_green_fwd.register_fake
def _(a, z_re, z_im, initial_state):
    return torch.empty_like(a, memory_format=torch.contiguous_format)


@_kernel_op("muse::bk_green_bwd")
def bk_green_bwd(g: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_a (..., S), grad_G0 (...)) of the BK-Core resolvent from its output G and grad_G (complex64)."""
    return _k().bk_green_backward(g, grad)


@bk_green_bwd.register_fake
def _(g, grad):
    return torch.empty_like(g, memory_format=torch.contiguous_format), g.new_empty(g.shape[:-1])


@_kernel_op("muse::hebbian_fwd")
def hebbian_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, eta: float,
                initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, W_S) of W_t = exp(l_t) W_{t-1} + eta k_t v_t^T, y_t = q_t^T W_t from W_0 = initial_state
    (None: 0): q, k (..., S, d_k), v (..., S, d_v), log_decay (..., S), float32."""
    return _k().hebbian_forward(q, k, v, log_decay, eta, initial_state)


@hebbian_fwd.register_fake
def _(q, k, v, log_decay, eta, initial_state):
    return (torch.empty_like(v, memory_format=torch.contiguous_format),
            q.new_empty((*q.shape[:-2], q.shape[-1], v.shape[-1])))


@_kernel_op("muse::hebbian_bwd")
def hebbian_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, eta: float,
                initial_state: torch.Tensor | None, grad_y: torch.Tensor, grad_state: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dW_0) of the decayed linear attention (float32); d(log_decay) is formed by the caller."""
    return _k().hebbian_backward(q, k, v, log_decay, eta, initial_state, grad_y, grad_state)


@hebbian_bwd.register_fake
def _(q, k, v, log_decay, eta, initial_state, grad_y, grad_state):
    state = q.new_empty((*q.shape[:-2], q.shape[-1], v.shape[-1]))
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format), state)


@_kernel_op("muse::selective_scan_fwd")
def selective_scan_fwd(x: torch.Tensor, log_decay: torch.Tensor, initial_state: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, h_S) of h_t = exp(l_t) h_{t-1} + x_t: x (2, B, S, n), log_decay (B, S, n), h_0 (2, B, n) or None
    (0), float32."""
    return _k().selective_scan_forward(x, log_decay, initial_state)


@selective_scan_fwd.register_fake
def _(x, log_decay, initial_state):
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((2, x.shape[1], x.shape[3]))


@_kernel_op("muse::selective_scan_bwd")
def selective_scan_bwd(log_decay: torch.Tensor, y: torch.Tensor, initial_state: torch.Tensor | None,
                       grad_y: torch.Tensor, grad_state: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, d log_decay, dh_0) of the selective scan, float32, from its output y."""
    return _k().selective_scan_backward(log_decay, y, initial_state, grad_y, grad_state)


@selective_scan_bwd.register_fake
def _(log_decay, y, initial_state, grad_y, grad_state):
    return (torch.empty_like(y, memory_format=torch.contiguous_format),
            torch.empty_like(log_decay, memory_format=torch.contiguous_format), y.new_empty((2, y.shape[1], y.shape[3])))


@_kernel_op("muse::complex_mm")
def complex_mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, conj_a: bool,
               conj_b: bool) -> torch.Tensor:
    """Planes (2, M, N) of op(a) @ op(b) + bias for float16 planes a (2, M, K), b (2, K, N) of any strides
    (transposed views are free), bias (2, N) or None, op = conj where asked: fp32 accumulation, one rounding."""
    return _k().complex_mm(a, b, bias, conj_a, conj_b)


@complex_mm.register_fake
def _(a, b, bias, conj_a, conj_b):
    return a.new_empty((2, a.shape[1], b.shape[2]))


@_kernel_op("muse::sum_rows")
def sum_rows(planes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(2, d): the sums over all rows of planes (2, ..., d) in fp32, rounded once to ``dtype`` (a complex
    linear's bias gradient)."""
    return _k().sum_rows(planes, dtype)


@sum_rows.register_fake
def _(planes, dtype):
    return planes.new_empty((2, planes.shape[-1]), dtype=dtype)


# The cross-entropy chunk bodies are plain functions, not custom ops: muse.train.loss calls them only
# outside tracing (eager code, or inside its own custom ops, which torch.compile never looks into).
def lse_rows(z: torch.Tensor, row_max: torch.Tensor, row_sum: torch.Tensor) -> None:
    """One chunk (n, width) of an online fp32 log-sum-exp, updating the (n,) fp32 row_max and row_sum in place."""
    _k().lse_rows(z, row_max, row_sum)


def softmax_grad(z: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor,
                 dtype: torch.dtype, offset: int = 0, in_place: bool = True, on_target: float = 1.0,
                 uniform: float = 0.0) -> torch.Tensor:
    """(exp(z - lse) - on_target onehot(targets - offset) - uniform) * keep in fp32 for the logits z of
    vocabulary rows offset.., rounded once to ``dtype`` (over z when it can and ``in_place``; else z is left
    as it is). Label smoothing eps: on_target 1 - eps, uniform eps / V; the defaults give softmax - onehot."""
    return _k().softmax_grad(z, lse, targets, keep, dtype, offset, in_place, on_target, uniform)


__all__ = ["add_layer_norm_fwd", "add_layer_norm_pair_fwd", "bk_green_bwd", "bk_green_fwd", "complex_mm", "hebbian_bwd", "hebbian_fwd", "selective_scan_bwd", "selective_scan_fwd", "layer_norm_bwd", "layer_norm_flag_fwd", "layer_norm_fwd", "lse_rows", "modrelu_bwd", "modrelu_fwd",
           "softmax_grad", "sum_rows"]

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


__all__ = ["layer_norm_bwd", "layer_norm_fwd", "modrelu_bwd", "modrelu_fwd"]

"""Complex layer normalisation."""

from __future__ import annotations

import torch
from torch import nn

import muse.complex as C
from muse._checks import check_float, check_float_dtype, check_int, check_type


class ComplexLayerNorm(nn.Module):
    """Per-sample complex LayerNorm over the last dim with real ``weight`` (1) and ``bias`` (0).

    See :func:`muse.complex.layer_norm`: complex mean, variance E|z - mu|^2, the bias
    shifts the real part.
    """

    def __init__(self, features: int, eps: float = 1e-5, dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.features = check_int("features", features, min_value=1)
        self.eps = check_float("eps", eps, min_value=0.0, min_inclusive=False)
        dtype = check_float_dtype("dtype", dtype)
        self.weight = nn.Parameter(torch.ones(features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(features, dtype=dtype, device=device))

    def forward(self, z: C.ComplexTensor, residual: C.ComplexTensor | None = None,
                nonfinite_input: tuple[torch.Tensor, int] | None = None) -> C.ComplexTensor:
        """LN(z), or LN(z + residual) (a post-norm residual connection, one pass in inference); with
        ``nonfinite_input`` = (flags, slot) also flags[slot] = 1 where z holds a NaN/Inf
        (:func:`muse.complex.layer_norm`)."""
        return C.layer_norm(z, self.weight, self.bias, self.eps, residual=residual, nonfinite_input=nonfinite_input)

    def pair(self, z: C.ComplexTensor, residual: C.ComplexTensor, then: ComplexLayerNorm,
             nonfinite: tuple[torch.Tensor, int] | None = None) -> tuple[C.ComplexTensor, C.ComplexTensor]:
        """(y, then(y)) with y = LN(z + residual): a post-norm block's output and the next norm of it, one
        pass in inference (:func:`muse.complex.layer_norm_pair`, which also takes ``nonfinite``)."""
        check_type("then", then, ComplexLayerNorm, "a ComplexLayerNorm")
        return C.layer_norm_pair(z, residual, (self.weight, self.bias, self.eps), (then.weight, then.bias, then.eps),
                                 nonfinite)

    def extra_repr(self) -> str:
        return f"features={self.features}, eps={self.eps}"

"""Phase-preserving activation."""

from __future__ import annotations

import torch
from torch import nn

import muse.complex as C
from muse._checks import check_float_dtype, check_int


class ModReLU(nn.Module):
    """modReLU: ReLU(|z| + b) z / |z| with a learned real bias per feature (init 0 = identity)."""

    def __init__(self, features: int, dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.features = check_int("features", features, min_value=1)
        self.bias = nn.Parameter(torch.zeros(features, dtype=check_float_dtype("dtype", dtype), device=device))

    def forward(self, z: C.ComplexTensor) -> C.ComplexTensor:
        return C.modrelu(z, self.bias)

    def extra_repr(self) -> str:
        return f"features={self.features}"

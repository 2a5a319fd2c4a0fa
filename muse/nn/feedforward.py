"""The real-valued position-wise MLP of the real models (the GPT reference, Phase 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from muse._checks import check_int, check_type


class RealFeedForward(nn.Module):
    """Linear(d_model, d_hidden) ``fc`` -> GELU (exact erf form) -> Linear(d_hidden, d_model) ``proj``.

    Plain ``nn.Linear`` layers with PyTorch's default init: the models that use it set their
    own init (GPT-2's N(0, 0.02) and a scaled ``proj``, or the seed's zeta init) by walking
    their ``nn.Linear`` modules, and ``fc`` is created before ``proj``, so a seeded model
    draws the same numbers as before this module was shared.  Real floating input
    (..., d_model) -> (..., d_model); under autocast the linears follow autocast.
    """

    def __init__(self, d_model: int, d_hidden: int, bias: bool = True, device=None):
        super().__init__()
        check_int("d_model", d_model, min_value=1)
        check_int("d_hidden", d_hidden, min_value=1)
        check_type("bias", bias, bool, "a bool")
        self.fc = nn.Linear(d_model, d_hidden, bias=bias, device=device)
        self.proj = nn.Linear(d_hidden, d_model, bias=bias, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))  # (..., d_model)


__all__ = ["RealFeedForward"]

"""Complex dropout."""

from __future__ import annotations

from torch import nn

import muse.complex as C
from muse._checks import check_probability


class ComplexDropout(nn.Module):
    """Drops whole complex entries (one mask for both parts) with probability ``p``."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        self.p = check_probability("p", p)

    def forward(self, z: C.ComplexTensor) -> C.ComplexTensor:
        return C.dropout(z, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

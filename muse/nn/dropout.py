"""Complex dropout."""

from __future__ import annotations

from torch import nn

import muse.complex as C
from muse._checks import check_choice, check_probability


class ComplexDropout(nn.Module):
    """Dropout with probability ``p``; ``mode`` "shared" drops whole complex entries (one mask
    for both parts), "independent" drops the real and imaginary parts with separate masks."""

    def __init__(self, p: float = 0.1, mode: str = "shared"):
        super().__init__()
        self.p = check_probability("p", p)
        self.mode = check_choice("mode", mode, C.DROPOUT_MODES)

    def forward(self, z: C.ComplexTensor) -> C.ComplexTensor:
        return C.dropout(z, self.p, self.training, mode=self.mode)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"

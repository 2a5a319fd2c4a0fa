"""Complex token embedding with a zeta position table."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

import muse.complex as C
from muse._checks import (
    check_float,
    check_float_dtype,
    check_int,
    check_probability,
    check_token_ids,
)
from muse.init import ZetaEmbedding


class ComplexEmbedding(nn.Module):
    """Token ids -> complex vectors: ``(E[id] + P[pos]) e^{i phase}``, then complex dropout.

    ``weight`` (2, vocab, d) holds the real and imaginary token tables (each part
    ~ N(0, 1/2), so E|z|^2 = 1).  ``position`` is a trainable :class:`ZetaEmbedding`
    (max_seq_len, d) added to the real part; ``initial_phase`` (a constant, not a
    parameter) optionally rotates every entry.  The sum and rotation are computed in
    fp32 and rounded once.
    """

    def __init__(self, vocab_size: int, d_model: int, max_seq_len: int, dropout: float = 0.1,
                 zeta_scale: float = 1.0, initial_phase: float | None = None,
                 dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, min_value=1)
        self.d_model = check_int("d_model", d_model, min_value=1)
        self.max_seq_len = check_int("max_seq_len", max_seq_len, min_value=1)
        self.p = check_probability("dropout", dropout)
        if initial_phase is not None:
            if isinstance(initial_phase, bool) or not isinstance(initial_phase, numbers.Real):
                raise TypeError(f"initial_phase must be a real number or None, got {type(initial_phase).__name__}")
            initial_phase = check_float("initial_phase", initial_phase)
        self.initial_phase = initial_phase
        dtype = check_float_dtype("dtype", dtype)
        self.weight = nn.Parameter(torch.empty(2, vocab_size, d_model, dtype=dtype, device=device))
        self.position = ZetaEmbedding(max_seq_len, d_model, trainable=True, scale=zeta_scale,
                                      dtype=dtype, device=device)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        w = torch.randn(self.weight.shape, dtype=torch.float32, device=self.weight.device)
        self.weight.copy_(w * math.sqrt(0.5))
        self.position.reset_parameters()

    @property
    def weight_real(self) -> torch.Tensor:
        return self.weight[0]

    @property
    def weight_imag(self) -> torch.Tensor:
        return self.weight[1]

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> C.ComplexTensor:
        """(B, S) ids (and optional (B, S) or (S,) positions) -> ComplexTensor (B, S, d)."""
        input_ids = check_token_ids("input_ids", input_ids, self.vocab_size, self.max_seq_len)
        pos = self.position.lookup(input_ids, positions)  # (S, d) or (B, S, d)
        z = C.embedding(input_ids, C.ComplexTensor(self.weight), pos, self.initial_phase)
        return C.dropout(z, self.p, self.training)

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, d_model={self.d_model}, max_seq_len={self.max_seq_len}, "
                f"dropout={self.p}, initial_phase={self.initial_phase}")

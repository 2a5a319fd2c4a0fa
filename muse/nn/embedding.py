"""Complex token embedding with a zeta position table."""

from __future__ import annotations

import numbers

import torch
from torch import nn

import muse.complex as C
from muse._checks import (
    check_choice,
    check_float,
    check_float_dtype,
    check_int,
    check_probability,
    check_token_ids,
    check_type,
)
from muse.init import ZetaEmbedding, zeta_position_table

#: Token-table init: "normal" = each part ~ N(0, 1/2), so E|z|^2 = 1; "zeta" = the zeta
#: position pattern indexed by token id, row t = zeta_position_table row t, times zeta_scale
#: for the real table and zeta_scale / 2 for the imaginary one (the seed's code).
EMBEDDING_INITS = ("normal", "zeta")
_ZETA_ROWS_PER_CHUNK = 4096  # the float64 pattern is built in pieces to bound peak memory


class ComplexEmbedding(nn.Module):
    """Token ids -> complex vectors: ``(E[id] + P[pos]) e^{i phase}``, then complex dropout.

    ``weight`` (2, vocab, d) holds the real and imaginary token tables, initialised as
    ``init`` says (:data:`EMBEDDING_INITS`).  ``position`` is a :class:`ZetaEmbedding`
    (max_seq_len, d) added to the real part: a trainable parameter, or with
    ``trainable_positions=False`` a frozen one (still counted by ``parameters()``).
    ``initial_phase`` (a constant, not a parameter) optionally rotates every entry.  The sum
    and rotation are computed in fp32 and rounded once.  ``dropout_mode`` is
    :func:`muse.complex.dropout`'s ``mode``.
    """

    def __init__(self, vocab_size: int, d_model: int, max_seq_len: int, dropout: float = 0.1,
                 zeta_scale: float = 1.0, initial_phase: float | None = None,
                 dtype: torch.dtype = torch.float16, device=None, *, trainable_positions: bool = True,
                 init: str = "normal", dropout_mode: str = "shared"):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, min_value=1)
        self.d_model = check_int("d_model", d_model, min_value=1)
        self.max_seq_len = check_int("max_seq_len", max_seq_len, min_value=1)
        self.p = check_probability("dropout", dropout)
        self.zeta_scale = check_float("zeta_scale", zeta_scale)
        if initial_phase is not None:
            if isinstance(initial_phase, bool) or not isinstance(initial_phase, numbers.Real):
                raise TypeError(f"initial_phase must be a real number or None, got {type(initial_phase).__name__}")
            initial_phase = check_float("initial_phase", initial_phase)
        self.initial_phase = initial_phase
        check_type("trainable_positions", trainable_positions, bool, "a bool")
        self.init = check_choice("init", init, EMBEDDING_INITS)
        self.dropout_mode = check_choice("dropout_mode", dropout_mode, C.DROPOUT_MODES)
        dtype = check_float_dtype("dtype", dtype)
        self.weight = nn.Parameter(torch.empty(2, vocab_size, d_model, dtype=dtype, device=device))
        self.position = ZetaEmbedding(max_seq_len, d_model, trainable=trainable_positions, scale=zeta_scale,
                                      dtype=dtype, device=device, as_parameter=True)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.position.reset_parameters()
        if self.weight.is_meta:
            return
        if self.init == "normal":
            w = torch.randn(self.weight.shape, dtype=torch.float32, device=self.weight.device)
            self.weight.copy_(w * 0.5**0.5)
            return
        for start in range(0, self.vocab_size, _ZETA_ROWS_PER_CHUNK):
            rows = min(_ZETA_ROWS_PER_CHUNK, self.vocab_size - start)
            pattern = zeta_position_table(rows, self.d_model, self.zeta_scale, start=start)
            self.weight[0, start:start + rows].copy_(pattern)
            self.weight[1, start:start + rows].copy_(pattern * 0.5)

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
        return C.dropout(z, self.p, self.training, mode=self.dropout_mode)

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, d_model={self.d_model}, max_seq_len={self.max_seq_len}, "
                f"dropout={self.p}, initial_phase={self.initial_phase}, init={self.init}, "
                f"dropout_mode={self.dropout_mode}")

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
    check_same_device,
    check_token_ids,
    check_type,
)
from muse.complex.layers import embedding_unchecked
from muse.init import ZetaEmbedding, zeta_position_table
from muse.nn.linear import HEAD_INITS, check_head_input

#: Token-table init: "normal" = each part ~ N(0, 1/2), so E|z|^2 = 1; "zeta" = the zeta
#: position pattern indexed by token id, row t = zeta_position_table row t, times zeta_scale
#: for the real table and zeta_scale / 2 for the imaginary one (the seed's code).
EMBEDDING_INITS = ("normal", "zeta")
#: Token tables: "complex" = a real and an imaginary table (the seed's); "real" = the real one only, so the
#: tokens enter on the real axis, initialised as the complex table's real plane is.
EMBEDDING_TABLES = ("complex", "real")
_ZETA_ROWS_PER_CHUNK = 4096  # the float64 pattern is built in pieces to bound peak memory


class ComplexEmbedding(nn.Module):
    """Token ids -> complex vectors: ``(E[id] + P[pos]) e^{i phase}``, then complex dropout.

    ``weight`` (2, vocab, d) holds the real and imaginary token tables, initialised as
    ``init`` says (:data:`EMBEDDING_INITS`); with ``table="real"`` it is (1, vocab, d), the real
    table only, and every token's imaginary part is 0 (vocab x d fewer parameters).  ``position`` is a :class:`ZetaEmbedding`
    (max_seq_len, d) added to the real part: a trainable parameter, or with
    ``trainable_positions=False`` a frozen one (still counted by ``parameters()``).
    ``initial_phase`` (a constant, not a parameter) optionally rotates every entry.  The sum
    and rotation are computed in fp32 and rounded once.  ``dropout_mode`` is
    :func:`muse.complex.dropout`'s ``mode``.
    """

    def __init__(self, vocab_size: int, d_model: int, max_seq_len: int, dropout: float = 0.1,
                 zeta_scale: float = 1.0, initial_phase: float | None = None,
                 dtype: torch.dtype = torch.float16, device=None, *, trainable_positions: bool = True,
                 init: str = "normal", dropout_mode: str = "shared", table: str = "complex"):
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
        self.table = check_choice("table", table, EMBEDDING_TABLES)
        dtype = check_float_dtype("dtype", dtype)
        planes = 2 if table == "complex" else 1
        self.weight = nn.Parameter(torch.empty(planes, vocab_size, d_model, dtype=dtype, device=device))
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
            if self.table == "complex":
                self.weight[1, start:start + rows].copy_(pattern * 0.5)

    @property
    def weight_real(self) -> torch.Tensor:
        return self.weight[0]

    @property
    def weight_imag(self) -> torch.Tensor | None:
        """The imaginary table; None with ``table="real"``."""
        return self.weight[1] if self.table == "complex" else None

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> C.ComplexTensor:
        """(B, S) ids (and optional (B, S) or (S,) positions) -> ComplexTensor (B, S, d)."""
        input_ids = check_token_ids("input_ids", input_ids, self.vocab_size, self.max_seq_len)
        check_same_device([("input_ids", input_ids.device), ("weight", self.weight.device)])
        pos = self.position.lookup(input_ids, positions)  # (S, d) or (B, S, d)
        # the ids are checked above under their own name: the lookup does not check (nor read) them again
        table = C.ComplexTensor(self.weight) if self.table == "complex" else self.weight[0]
        z = embedding_unchecked(input_ids, table, pos, self.initial_phase)
        return C.dropout(z, self.p, self.training, mode=self.dropout_mode)

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, d_model={self.d_model}, max_seq_len={self.max_seq_len}, "
                f"dropout={self.p}, initial_phase={self.initial_phase}, init={self.init}, "
                f"dropout_mode={self.dropout_mode}, table={self.table}")


class TiedRealHead(nn.Module):
    """An LM head whose (V, d) weight IS the real plane of a :class:`ComplexEmbedding`'s token
    table (weight tying, Press & Wolf 2017); it owns only its bias (V,).

    A Stage 1 head reads Re(final hidden), so scoring it against the real token table is the
    natural tie.  ``weight`` is ``embedding.weight[0]``, a view read at each use (the table's
    dtype, contiguous, no copy), so the one table parameter collects the gradients of both uses
    and a state dict holds it once.  The embedding is referenced, not registered as a submodule:
    its parameters stay named and counted under the embedding.  ``init`` (:data:`HEAD_INITS`)
    sets the bias as :class:`RealLinear`'s does: "default" U(-1/sqrt(d), 1/sqrt(d)), "normal" 0.
    """

    def __init__(self, embedding: ComplexEmbedding, init: str = "default"):
        super().__init__()
        check_type("embedding", embedding, ComplexEmbedding, "a ComplexEmbedding")
        self.init = check_choice("init", init, HEAD_INITS)
        self.in_features, self.out_features = embedding.d_model, embedding.vocab_size
        self.__dict__["embedding"] = embedding  # a plain reference: not a submodule, no second copy
        table = embedding.weight
        self.bias = nn.Parameter(torch.empty(embedding.vocab_size, dtype=table.dtype, device=table.device))
        self.reset_parameters()

    @property
    def weight(self) -> torch.Tensor:
        """The (V, d) real plane of the embedding's token table (a view)."""
        return self.embedding.weight_real

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The bias only: the weight is the embedding's to initialise."""
        if self.init == "default":
            bound = 1 / self.in_features**0.5
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        check_head_input(x, self.in_features, weight.dtype)
        return C.gemm_linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tied to the embedding's real plane"

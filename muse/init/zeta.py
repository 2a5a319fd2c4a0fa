"""Riemann zeta zeros for initialisation: a verified table, a deterministic extension, initialisers.

``zeta_zeros.txt`` (package data) holds gamma_n, the imaginary parts of the first
zeros 1/2 + i gamma_n, computed by ``scripts/gen_zeta_zeros.py`` with
``mpmath.zetazero``.  Beyond the table, :func:`zeta_zeros` continues with a seeded
GUE-spacing extension: spacings drawn from the Wigner surmise
P(s) = (32/pi^2) s^2 exp(-4 s^2 / pi) (mean 1), unfolded with the local mean spacing
2 pi / log(gamma / 2 pi).  The same ``seed`` always gives the same zeros (the seed
model drew fresh random zeros on every call).

Zeros collide in float16 from n = 606 (gamma_606 = 946.766 and gamma_607 = 947.079 both
round to 947), so gamma is never stored in fp16 here: frequencies and tables are computed
in float64.
"""

from __future__ import annotations

import functools
import math
from importlib import resources

import numpy as np
import torch
from torch import nn

from muse._checks import (
    assert_in_range,
    check_float,
    check_int,
    check_tensor,
    check_type,
    host_sync_forbidden,
)

TABLE_FILE = "zeta_zeros.txt"


@functools.lru_cache(maxsize=1)
def zeta_table() -> np.ndarray:
    """The shipped table gamma_1..gamma_N as a read-only float64 array."""
    text = resources.files("muse.init").joinpath(TABLE_FILE).read_text()
    rows = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    ns = np.array([int(r[0]) for r in rows])
    if not np.array_equal(ns, np.arange(1, len(rows) + 1)):
        raise RuntimeError(f"{TABLE_FILE} is corrupt: indices are not 1..{len(rows)}")
    gammas = np.array([float(r[1]) for r in rows], dtype=np.float64)
    gammas.setflags(write=False)
    return gammas


def wigner_spacings(count: int, rng: np.random.Generator) -> np.ndarray:
    """GUE nearest-neighbour spacings (Wigner surmise, beta = 2, mean 1).

    If X ~ chi(3) then s = sqrt(pi/8) X has density (32/pi^2) s^2 exp(-4 s^2 / pi).
    """
    return math.sqrt(math.pi / 8.0) * np.linalg.norm(rng.standard_normal((count, 3)), axis=1)


def gue_extension(start: float, count: int, seed: int = 0) -> np.ndarray:
    """``count`` synthetic zeros after height ``start``: unfolded Wigner spacings, deterministic in ``seed``."""
    rng = np.random.default_rng(np.random.PCG64(seed))
    spacings = wigner_spacings(count, rng)
    out = np.empty(count, dtype=np.float64)
    gamma = start
    for k in range(count):
        gamma += spacings[k] * 2.0 * math.pi / math.log(gamma / (2.0 * math.pi))
        out[k] = gamma
    return out


def zeta_zeros(n: int, seed: int = 0) -> torch.Tensor:
    """gamma_1..gamma_n (float64): exact table values, then the seeded GUE extension."""
    n = check_int("n", n, min_value=0)
    check_int("seed", seed, min_value=0)
    table = zeta_table()
    if n <= len(table):
        return torch.from_numpy(table[:n].copy())
    ext = gue_extension(float(table[-1]), n - len(table), seed)
    return torch.from_numpy(np.concatenate([table, ext]))


def zeta_position_table(max_len: int, d_model: int, scale: float = 1.0, start: int = 0) -> torch.Tensor:
    """PE[p, 2i] = sin(p gamma_i / 2pi), PE[p, 2i+1] = cos(p gamma_i / 2pi), times ``scale``; float64.

    Rows p = start .. start + max_len - 1 (``start`` lets a large table be built in pieces).
    """
    max_len = check_int("max_len", max_len, min_value=1)
    d_model = check_int("d_model", d_model, min_value=1)
    scale = check_float("scale", scale)
    start = check_int("start", start, min_value=0)
    freqs = zeta_zeros((d_model + 1) // 2) / (2.0 * math.pi)  # (ceil(d/2),)
    angles = torch.arange(start, start + max_len, dtype=torch.float64)[:, None] * freqs[None, :]
    pe = torch.empty(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)[:, : (d_model + 1) // 2]
    pe[:, 1::2] = torch.cos(angles)[:, : d_model // 2]
    return pe * scale


def _complex_linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The (2, out, in) planar weight of a complex linear layer, or None."""
    w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor) and w.dim() == 3 and w.shape[0] == 2 and hasattr(module, "in_features"):
        return w
    return None


class ZetaInitializer:
    """Zeta-zero initialisation schemes (static methods, as in the seed)."""

    @staticmethod
    def get_zeta_zeros(n: int, seed: int = 0) -> torch.Tensor:
        return zeta_zeros(n, seed)

    @staticmethod
    @torch.no_grad()
    def initialize_linear_zeta(module: nn.Module, scale: float = 10.0, seed: int = 0) -> None:
        """Keep the singular vectors of W, set its singular values to scale / gamma_i.

        Works for ``nn.Linear`` (real W) and complex linear layers with a planar
        (2, out, in) weight (complex SVD, W = U diag(scale/gamma) V^H).
        """
        check_type("module", module, nn.Module, "an nn.Module")
        scale = check_float("scale", scale, min_value=0.0, min_inclusive=False)
        planar = _complex_linear_weight(module)
        weight = planar if planar is not None else getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or (planar is None and weight.dim() != 2):
            raise TypeError(
                f"module must be nn.Linear or a complex linear layer, got {type(module).__name__}"
            )
        w = torch.complex(planar[0].double(), planar[1].double()) if planar is not None else weight.double()
        u, _, vh = torch.linalg.svd(w, full_matrices=False)
        s = scale / zeta_zeros(u.shape[1], seed).to(w.real.dtype)
        new = (u * s.to(u.dtype)) @ vh
        if planar is not None:
            planar.copy_(torch.stack((new.real, new.imag)).to(planar.dtype))
        else:
            weight.copy_(new.to(weight.dtype))

    @staticmethod
    @torch.no_grad()
    def initialize_embedding_zeta(embedding: nn.Embedding, scale: float = 1.0) -> None:
        """Overwrite an (n, d) embedding table with the zeta position table."""
        check_type("embedding", embedding, nn.Embedding, "an nn.Embedding")
        n, d = embedding.weight.shape
        embedding.weight.copy_(zeta_position_table(n, d, scale).to(embedding.weight.dtype))


class ZetaEmbedding(nn.Module):
    """Position embedding with zeta-zero frequencies: trainable, frozen, or a fixed buffer.

    ``trainable=True``: the table is a parameter that learns.  ``trainable=False``: by
    default a buffer (not in ``parameters()``); with ``as_parameter=True`` a frozen
    parameter (``requires_grad=False``), counted by ``parameters()`` but never updated.
    """

    def __init__(
        self,
        max_len: int,
        d_model: int,
        trainable: bool = False,
        scale: float = 1.0,
        dtype: torch.dtype = torch.float32,
        device=None,
        as_parameter: bool | None = None,
    ):
        super().__init__()
        self.max_len = check_int("max_len", max_len, min_value=1)
        self.d_model = check_int("d_model", d_model, min_value=1)
        check_type("trainable", trainable, bool, "a bool")
        if as_parameter is None:
            as_parameter = trainable
        check_type("as_parameter", as_parameter, bool, "a bool or None")
        if trainable and not as_parameter:
            raise ValueError("as_parameter must be True (or None) when trainable=True: a buffer cannot learn")
        self.trainable = trainable
        self.scale = check_float("scale", scale)
        table = zeta_position_table(max_len, d_model, scale)
        if dtype in (torch.float16, torch.bfloat16, torch.float32):
            limit = torch.finfo(dtype).max / 2  # headroom for the token embedding added to it
            peak = float(table.abs().max())
            if peak > limit:
                raise ValueError(
                    f"scale (zeta_scale) = {scale:g} gives position entries up to {peak:g}, beyond "
                    f"{limit:g} (half the largest {dtype} value): the embeddings would overflow; "
                    f"use |zeta_scale| <= {limit / (peak / abs(scale)):g}")
        table = table.to(dtype=dtype, device=device)
        if as_parameter:
            self.weight = nn.Parameter(table, requires_grad=trainable)
        else:
            self.register_buffer("weight", table)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(zeta_position_table(self.max_len, self.d_model, self.scale))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Rows of the table for integer ``positions`` of any shape -> (*positions.shape, d_model)."""
        check_tensor("positions", positions)
        if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor, got {positions.dtype}")
        if positions.numel() and host_sync_forbidden(positions):  # compiled or a CUDA graph capture
            positions = assert_in_range(positions, 0, self.max_len, f"positions outside [0, {self.max_len})")
        elif positions.numel():
            lo, hi = int(positions.min()), int(positions.max())
            if lo < 0 or hi >= self.max_len:
                raise ValueError(f"positions must be in [0, {self.max_len}), got values in [{lo}, {hi}]")
        return self.weight[positions]

    def lookup(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Position rows for (B, S) ``input_ids``: rows 0..S-1 as (S, d) (they broadcast over B),
        or the rows of explicit ``positions`` of shape (B, S) or (S,)."""
        if positions is None:
            return self.weight[: input_ids.shape[1]]
        check_tensor("positions", positions)
        if positions.shape not in (input_ids.shape, input_ids.shape[1:]):
            raise ValueError(
                f"positions must have shape {tuple(input_ids.shape)} or ({input_ids.shape[1]},), "
                f"got {tuple(positions.shape)}"
            )
        return self(positions)

    def extra_repr(self) -> str:
        kind = "parameter" if isinstance(self.weight, nn.Parameter) else "buffer"
        return f"max_len={self.max_len}, d_model={self.d_model}, trainable={self.trainable}, {kind}"


def apply_zeta_initialization(model: nn.Module, scale: float = 10.0, seed: int = 0) -> dict[str, int]:
    """Zeta-initialise every real and complex linear layer and reset every ZetaEmbedding.

    Token embeddings are left alone: positions live in the position table.
    Returns counts per kind.
    """
    check_type("model", model, nn.Module, "an nn.Module")
    counts = {"linear": 0, "complex_linear": 0, "zeta_embedding": 0}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            ZetaInitializer.initialize_linear_zeta(module, scale, seed)
            counts["linear"] += 1
        elif _complex_linear_weight(module) is not None:
            ZetaInitializer.initialize_linear_zeta(module, scale, seed)
            counts["complex_linear"] += 1
        elif isinstance(module, ZetaEmbedding):
            module.reset_parameters()
            counts["zeta_embedding"] += 1
    return counts


def zeta_statistics(n: int = 100, seed: int = 0) -> dict[str, float]:
    """Spacing statistics of the first ``n`` zeros (table + extension)."""
    n = check_int("n", n, min_value=2)
    z = zeta_zeros(n, seed)
    s = z[1:] - z[:-1]
    return {
        "num_zeros": n,
        "table_size": len(zeta_table()),
        "mean_spacing": float(s.mean()),
        "std_spacing": float(s.std()),
        "min_spacing": float(s.min()),
        "max_spacing": float(s.max()),
    }

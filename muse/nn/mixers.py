"""Token mixers: layers that mix information across positions, over the scans in :mod:`muse.scan`.

Both recurrences run in float32 (float64 for a float64 layer) with autocast off, so a
bf16/fp16 autocast run keeps them out of half precision; the linears around them follow
autocast.  Each ``forward(x, stats=None)`` maps (B, S, d) -> (B, S, d) causally and, when
``stats`` is a dict, adds its diagnostics to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from muse._checks import check_float, check_int, check_shift
from muse.scan import bk_diagonal, bk_green_scan, hebbian_parallel


def _recurrence_dtype(x: torch.Tensor) -> torch.dtype:
    """float32, or float64 for a float64 model: the recurrences never run in half precision."""
    return torch.promote_types(x.dtype, torch.float32)


def _no_autocast(x: torch.Tensor):
    """Switch autocast off around a recurrence, so a bf16/fp16 AMP run keeps it in fp32."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y > 0: log(expm1(y))."""
    return torch.log(torch.expm1(y))


class BKCore(nn.Module):
    """Causal non-Hermitian resolvent features: x (B, S, d) -> Linear(Re G, Im G) (B, S, d).

    V_i = potential(x_i) - i softplus(gamma(x_i)) per channel; a_i = V_i + 2;
    G_i = theta_{i-1} / theta_i by :func:`bk_green_scan`.
    """

    def __init__(self, d_model: int, channels: int = 1, z: complex = 1j, device=None):
        super().__init__()
        d = check_int("d_model", d_model, min_value=1)
        c = check_int("channels", channels, min_value=1)
        self.z = check_shift("z", z)
        self.potential = nn.Linear(d, c, device=device)
        self.gamma = nn.Linear(d, c, device=device)
        self.out = nn.Linear(2 * c, d, device=device)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        rdt = _recurrence_dtype(x)
        v = self.potential(x).to(rdt).transpose(1, 2)  # (B, C, S)
        gamma = F.softplus(self.gamma(x).to(rdt)).transpose(1, 2)  # (B, C, S), >= 0: dissipation
        with _no_autocast(x):
            g = bk_green_scan(bk_diagonal(v, gamma), self.z)  # (B, C, S) complex, |g| <= 1 / Im z
        feats = torch.cat([g.real, g.imag], dim=1).transpose(1, 2)  # (B, S, 2C)
        if stats is not None:
            with torch.no_grad():
                stats["bk_green_abs_max"] = g.abs().max().item() if g.numel() else 0.0
                stats["bk_gamma_mean"] = gamma.mean().item() if gamma.numel() else 0.0
        return self.out(feats.to(x.dtype))  # (B, S, d)


class DissipativeHebbian(nn.Module):
    """Decayed causal linear attention: y_t = eta sum_{s<=t} exp(L_t - L_s) (q_t . k_s) v_s, per head.

    L_t = -dt sum_{r<=t} Gamma_r with Gamma = softplus(linear(x)) >= 0 per head and token.
    q is scaled by 1 / sqrt(d_head) so q . k has unit scale at init, as in attention.
    Gamma's bias starts at RetNet's per-head retentions exp(-Gamma dt) = 1 - 2^(-5-h),
    so heads begin with memory lengths from 32 to 2^(4+H) tokens.
    """

    def __init__(self, d_model: int, n_heads: int, eta: float = 1.0, dt: float = 1.0,
                 chunk_size: int | None = 128, device=None):
        super().__init__()
        d = check_int("d_model", d_model, min_value=1)
        h = check_int("n_heads", n_heads, min_value=1)
        if d % h:
            raise ValueError(f"d_model ({d}) must be divisible by n_heads ({h})")
        self.n_heads, self.d_head = h, d // h
        self.eta = check_float("eta", eta, min_value=0.0, min_inclusive=False)
        self.dt = check_float("dt", dt, min_value=0.0, min_inclusive=False)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
        self.q = nn.Linear(d, d, device=device)
        self.k = nn.Linear(d, d, device=device)
        self.v = nn.Linear(d, d, device=device)
        self.gamma = nn.Linear(d, h, device=device)
        self.out = nn.Linear(d, d, device=device)

    @torch.no_grad()
    def reset_gamma_bias(self) -> None:
        """Bias b_h with exp(-softplus(b_h) dt) = 1 - 2^(-5-h)."""
        h = torch.arange(self.n_heads, dtype=torch.float64)
        gamma = -torch.log1p(-torch.exp2(-5.0 - h)) / self.dt  # (H,)
        self.gamma.bias.copy_(_inverse_softplus(gamma).to(self.gamma.bias.dtype))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, S, dh)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        b, s, d = x.shape
        rdt = _recurrence_dtype(x)
        q = self._heads(self.q(x).to(rdt)) / math.sqrt(self.d_head)  # (B, H, S, dh)
        k = self._heads(self.k(x).to(rdt))  # (B, H, S, dh)
        v = self._heads(self.v(x).to(rdt))  # (B, H, S, dh)
        log_decay = -self.dt * F.softplus(self.gamma(x).to(rdt)).transpose(1, 2)  # (B, H, S), <= 0
        with _no_autocast(x):
            y = hebbian_parallel(q, k, v, log_decay, self.eta, self.chunk_size)  # (B, H, S, dh)
        if stats is not None:
            with torch.no_grad():
                stats["hebbian_retention_mean"] = log_decay.exp().mean().item() if log_decay.numel() else 0.0
        return self.out(y.transpose(1, 2).reshape(b, s, d).to(x.dtype))  # (B, S, d)


__all__ = ["BKCore", "DissipativeHebbian"]

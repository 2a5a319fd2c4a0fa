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

from muse._checks import check_float, check_int, check_shift, check_type
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
    """Causal non-Hermitian resolvent features: x (B, S, d) -> Linear(norm(Re G, Im G)) (B, S, d).

    Per channel V_i = potential(x_i) - i Gamma_i with Gamma = softplus(gamma(x_i)) >= 0
    (Gamma = 0 without ``dissipation``); a_i = V_i + ``shift``; H has off-diagonal
    products b c = ``coupling`` > 0.  G_i = theta_{i-1} / theta_i by :func:`bk_green_scan`
    on the rescaled problem (a - z) / sqrt(b c) (same G up to the factor 1 / sqrt(b c)),
    so |G_i| <= 1 / Im z for every coupling.  With ``norm`` the 2C features pass a
    LayerNorm before the output projection, so the branch does not sit at the scale of
    one small resolvent entry.
    """

    def __init__(self, d_model: int, channels: int = 1, z: complex = 1j, *, shift: float = 2.0,
                 coupling: float = 1.0, dissipation: bool = True, norm: bool = False, bias: bool = True,
                 device=None):
        super().__init__()
        d = check_int("d_model", d_model, min_value=1)
        c = check_int("channels", channels, min_value=1)
        self.z = check_shift("z", z)
        self.shift = check_float("shift", shift)
        self.coupling = check_float("coupling", coupling, min_value=0.0, min_inclusive=False)
        check_type("dissipation", dissipation, bool, "a bool")
        check_type("norm", norm, bool, "a bool")
        check_type("bias", bias, bool, "a bool")
        self.potential = nn.Linear(d, c, bias=bias, device=device)
        self.gamma = nn.Linear(d, c, bias=bias, device=device) if dissipation else None
        self.norm = nn.LayerNorm(2 * c, device=device) if norm else None
        self.out = nn.Linear(2 * c, d, device=device)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        rdt = _recurrence_dtype(x)
        v = self.potential(x).to(rdt).transpose(1, 2)  # (B, C, S)
        if self.gamma is None:
            gamma = torch.zeros_like(v)
        else:
            gamma = F.softplus(self.gamma(x).to(rdt)).transpose(1, 2)  # (B, C, S), >= 0: dissipation
        scale = math.sqrt(self.coupling)
        with _no_autocast(x):
            a = bk_diagonal(v, gamma, self.shift)  # (B, C, S) complex
            if scale != 1.0:
                g = bk_green_scan(a / scale, self.z / scale) / scale  # (B, C, S), |g| <= 1 / Im z
            else:
                g = bk_green_scan(a, self.z)  # (B, C, S) complex, |g| <= 1 / Im z
        feats = torch.cat([g.real, g.imag], dim=1).transpose(1, 2)  # (B, S, 2C)
        if stats is not None:
            with torch.no_grad():
                stats["bk_green_abs_max"] = g.abs().max().item() if g.numel() else 0.0
                stats["bk_gamma_mean"] = gamma.mean().item() if gamma.numel() else 0.0
        feats = feats.to(x.dtype)
        if self.norm is not None:
            feats = self.norm(feats)  # (B, S, 2C)
        return self.out(feats)  # (B, S, d)


class HeadRMSNorm(nn.Module):
    """RMS normalisation over each head's d_head entries with a learnable gain per channel (RetNet's GroupNorm
    without the mean): y (B, H, S, dh) -> y / sqrt(mean_dh(y^2) + eps) * weight."""

    def __init__(self, n_heads: int, d_head: int, eps: float = 1e-6, device=None):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.eps = check_float("eps", eps, min_value=0.0, min_inclusive=False)
        self.weight = nn.Parameter(torch.ones(n_heads * d_head, device=device))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(1.0)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (B, H, S, dh)
        return y * self.weight.to(y.dtype).view(self.n_heads, 1, self.d_head)


class DissipativeHebbian(nn.Module):
    """Decayed causal linear attention: y_t = eta sum_{s<=t} exp(L_t - L_s) (q_t . k_s) v_s, per head.

    L_t = -dt sum_{r<=t} (Gamma_r + gamma_min) with Gamma = softplus(linear(x)) >= 0 per head
    and token (one Gamma shared by all heads with ``shared_decay``).  With ``q_scale`` q is
    scaled by 1 / sqrt(d_head), as in attention.  With ``norm`` the read-out y is
    RMS-normalised per head (:class:`HeadRMSNorm`) before the output projection: without
    it y sums ~min(t, memory) terms and its scale grows with position.  Gamma's bias starts
    at RetNet's per-head retentions exp(-Gamma dt) = 1 - 2^(-5-h) (:meth:`reset_gamma_bias`).
    """

    def __init__(self, d_model: int, n_heads: int, eta: float = 1.0, dt: float = 1.0,
                 chunk_size: int | None = 128, *, norm: bool = False, q_scale: bool = True,
                 shared_decay: bool = False, gamma_min: float = 0.0, bias: bool = True, device=None):
        super().__init__()
        d = check_int("d_model", d_model, min_value=1)
        h = check_int("n_heads", n_heads, min_value=1)
        if d % h:
            raise ValueError(f"d_model ({d}) must be divisible by n_heads ({h})")
        self.n_heads, self.d_head = h, d // h
        self.eta = check_float("eta", eta, min_value=0.0, min_inclusive=False)
        self.dt = check_float("dt", dt, min_value=0.0, min_inclusive=False)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
        for name, flag in (("norm", norm), ("q_scale", q_scale), ("shared_decay", shared_decay), ("bias", bias)):
            check_type(name, flag, bool, "a bool")
        self.q_scale = q_scale
        self.gamma_min = check_float("gamma_min", gamma_min, min_value=0.0)
        self.q = nn.Linear(d, d, bias=bias, device=device)
        self.k = nn.Linear(d, d, bias=bias, device=device)
        self.v = nn.Linear(d, d, bias=bias, device=device)
        self.gamma = nn.Linear(d, 1 if shared_decay else h, bias=bias, device=device)
        self.norm = HeadRMSNorm(h, self.d_head, device=device) if norm else None
        self.out = nn.Linear(d, d, device=device)

    @torch.no_grad()
    def reset_gamma_bias(self) -> None:
        """Bias b_h with exp(-(softplus(b_h) + gamma_min) dt) = 1 - 2^(-5-h); no-op without a bias."""
        if self.gamma.bias is None:
            return
        h = torch.arange(self.gamma.out_features, dtype=torch.float64)
        gamma = -torch.log1p(-torch.exp2(-5.0 - h)) / self.dt - self.gamma_min  # (H,)
        gamma = gamma.clamp_min(1e-8)
        self.gamma.bias.copy_(_inverse_softplus(gamma).to(self.gamma.bias.dtype))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, S, dh)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        b, s, d = x.shape
        rdt = _recurrence_dtype(x)
        q = self._heads(self.q(x).to(rdt))  # (B, H, S, dh)
        if self.q_scale:
            q = q / math.sqrt(self.d_head)
        k = self._heads(self.k(x).to(rdt))  # (B, H, S, dh)
        v = self._heads(self.v(x).to(rdt))  # (B, H, S, dh)
        gamma = F.softplus(self.gamma(x).to(rdt)) + self.gamma_min  # (B, S, H) or (B, S, 1)
        log_decay = (-self.dt * gamma).transpose(1, 2).expand(b, self.n_heads, s)  # (B, H, S), <= 0
        with _no_autocast(x):
            y = hebbian_parallel(q, k, v, log_decay, self.eta, self.chunk_size)  # (B, H, S, dh)
            if self.norm is not None:
                y = self.norm(y)  # (B, H, S, dh)
        if stats is not None:
            with torch.no_grad():
                stats["hebbian_retention_mean"] = log_decay.exp().mean().item() if log_decay.numel() else 0.0
        return self.out(y.transpose(1, 2).reshape(b, s, d).to(x.dtype))  # (B, S, d)


__all__ = ["BKCore", "DissipativeHebbian", "HeadRMSNorm"]

"""Token mixers: layers that mix information across positions, over the scans in :mod:`muse.scan`.

``BKCore`` and ``DissipativeHebbian`` (Phase 2, real) and ``ComplexRecurrence`` (Stage 1, planar
complex).  The real recurrences run in float32 (float64 for a float64 layer) with autocast off, so a
bf16/fp16 autocast run keeps them out of half precision; the linears around them follow
autocast.  Each ``forward(x, stats=None)`` maps (B, S, d) -> (B, S, d) causally and, when
``stats`` is a dict, adds its diagnostics to it; ``forward_with_state(x, initial_state=None)``
continues a sequence from the state the part before it left and returns (y, final state), a
state whose size does not depend on the length (incremental decoding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import muse.complex as C
from muse._checks import (
    check_choice,
    check_float,
    check_float_dtype,
    check_int,
    check_shift,
    check_type,
)
from muse.complex.recompute import rebuilt, recomputed, remember
from muse.init import zeta_zeros
from muse.nn.activation import ModReLU
from muse.nn.linear import ComplexLinear
from muse.scan import (
    bk_diagonal,
    bk_green_scan,
    complex_diag_scan,
    complex_diag_step,
    complex_retention,
    hebbian_parallel,
    hebbian_parallel_with_state,
    selective_diag_scan,
    selective_diag_step,
)


def _recurrence_dtype(x: torch.Tensor) -> torch.dtype:
    """float32, or float64 for a float64 model: the recurrences never run in half precision."""
    return torch.promote_types(x.dtype, torch.float32)


def _no_autocast(x: torch.Tensor):
    """Switch autocast off around a recurrence, so a bf16/fp16 AMP run keeps it in fp32."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y > 0: log(expm1(y))."""
    return torch.log(torch.expm1(y))


def _retnet_rates(n_heads: int) -> torch.Tensor:
    """Decay rates Gamma_h (float64) with exp(-Gamma_h) = 1 - 2^(-5-h): RetNet's per-head retentions."""
    h = torch.arange(n_heads, dtype=torch.float64)
    return -torch.log1p(-torch.exp2(-5.0 - h))


class BKCore(nn.Module):
    """Causal non-Hermitian resolvent features: x (B, S, d) -> Linear(norm(Re G, Im G)) (B, S, d).

    Per channel V_i = potential(x_i) - i Gamma_i with Gamma = softplus(gamma(x_i)) >= 0
    (Gamma = 0 without ``dissipation``); a_i = V_i + ``shift``; H has off-diagonal
    products b c = ``coupling`` > 0.  G_i = theta_{i-1} / theta_i by :func:`bk_green_scan`
    on the rescaled problem (a - z) / sqrt(b c) (same G up to the factor 1 / sqrt(b c)),
    so |G_i| <= 1 / Im z for every coupling.  With ``norm`` the 2C features pass a
    LayerNorm before the output projection, so the branch does not sit at the scale of
    one small resolvent entry.  Everything but the resolvent is per token (the LayerNorm is over
    the 2C features of one position), so the decoding state is the last G of each channel.
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
        return self._run(x, None, stats)[0]

    def forward_with_state(self, x: torch.Tensor, initial_state: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(y (B, S, d), final state): the state is the scan's last G (B, C), complex64 (complex128
        for a float64 layer), on the rescaled problem; None starts afresh.  S >= 1."""
        if x.dim() != 3 or x.shape[1] == 0:
            raise ValueError(f"x must have shape (B, S >= 1, d), got {tuple(x.shape)}")
        y, g = self._run(x, initial_state, None)
        return y, g[..., -1]  # (B, S, d), (B, C)

    def _run(self, x: torch.Tensor, initial_state: torch.Tensor | None, stats: dict | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        rdt = _recurrence_dtype(x)
        v = self.potential(x).to(rdt).transpose(1, 2)  # (B, C, S)
        if self.gamma is None:
            gamma = torch.zeros_like(v)
        else:
            # softplus after a contiguous transpose: same values; aot_eager's softplus backward cannot take
            # a transposed gradient (torch 2.13: "view size is not compatible")
            gamma = F.softplus(self.gamma(x).to(rdt).transpose(1, 2).contiguous())  # (B, C, S), >= 0: dissipation
        scale = math.sqrt(self.coupling)
        with _no_autocast(x):
            a = bk_diagonal(v, gamma, self.shift)  # (B, C, S) complex
            if scale != 1.0:
                g_scan = bk_green_scan(a / scale, self.z / scale, initial_state)  # (B, C, S)
                g = g_scan / scale  # (B, C, S), |g| <= 1 / Im z
            else:
                g = g_scan = bk_green_scan(a, self.z, initial_state)  # (B, C, S) complex, |g| <= 1 / Im z
        feats = torch.cat([g.real, g.imag], dim=1).transpose(1, 2)  # (B, S, 2C)
        if stats is not None:
            with torch.no_grad():
                stats["bk_green_abs_max"] = g.abs().max().item() if g.numel() else 0.0
                stats["bk_gamma_mean"] = gamma.mean().item() if gamma.numel() else 0.0
        feats = feats.to(x.dtype)
        if self.norm is not None:
            feats = self.norm(feats)  # (B, S, 2C)
        return self.out(feats), g_scan  # (B, S, d), the scan's G (B, C, S)


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
    Everything but the fast weights is per token, so the decoding state is W (B, H, d_head, d_head).
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
        gamma = _retnet_rates(self.gamma.out_features) / self.dt - self.gamma_min  # (H,)
        gamma = gamma.clamp_min(1e-8)
        self.gamma.bias.copy_(_inverse_softplus(gamma).to(self.gamma.bias.dtype))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, S, dh)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        return self._run(x, None, False, stats)[0]

    def forward_with_state(self, x: torch.Tensor, initial_state: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(y (B, S, d), final fast weights W (B, H, d_head, d_head) in float32, float64 for a float64
        layer); ``initial_state`` the W the tokens before x left (None: zeros)."""
        if x.dim() != 3:
            raise ValueError(f"x must have shape (B, S, d), got {tuple(x.shape)}")
        return self._run(x, initial_state, True, None)

    def _run(self, x: torch.Tensor, initial_state: torch.Tensor | None, with_state: bool, stats: dict | None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, s, d = x.shape
        rdt = _recurrence_dtype(x)
        q = self._heads(self.q(x).to(rdt))  # (B, H, S, dh)
        if self.q_scale:
            q = q / math.sqrt(self.d_head)
        k = self._heads(self.k(x).to(rdt))  # (B, H, S, dh)
        v = self._heads(self.v(x).to(rdt))  # (B, H, S, dh)
        gamma = F.softplus(self.gamma(x).to(rdt).transpose(1, 2).contiguous()) + self.gamma_min  # (B, H or 1, S)
        log_decay = (-self.dt * gamma).expand(b, self.n_heads, s)  # (B, H, S), <= 0 (see BKCore for the layout)
        with _no_autocast(x):
            if with_state:
                y, state = hebbian_parallel_with_state(q, k, v, log_decay, self.eta, self.chunk_size,
                                                       initial_state)  # (B, H, S, dh), (B, H, dh, dh)
            else:
                y, state = hebbian_parallel(q, k, v, log_decay, self.eta, self.chunk_size), None
            if self.norm is not None:
                y = self.norm(y)  # (B, H, S, dh)
        if stats is not None:
            with torch.no_grad():
                stats["hebbian_retention_mean"] = log_decay.exp().mean().item() if log_decay.numel() else 0.0
        return self.out(y.transpose(1, 2).reshape(b, s, d).to(x.dtype)), state  # (B, S, d)


OMEGA_INITS = ("zeta", "uniform")
#: ComplexRecurrence's lambda: "complex" (a trained phase omega) or "real" (omega fixed at 0).
LAMBDA_KINDS = ("complex", "real")
#: ComplexRecurrence's decay: "static" (lambda per channel), "input" (per token, from the input: Griffin's RG-LRU) or
#: "drive" (per token, from each channel's own drive B x: no extra activation memory).
DECAY_KINDS = ("static", "input", "drive")


def _compute_planes(p: torch.Tensor) -> torch.Tensor:
    return p.to(C.compute_dtype(p.dtype))


def _mul_planes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C.mul on planes (b may be a real tensor): the gate's and the skip's products."""
    return C.mul(C.ComplexTensor(a), b if b.dim() < a.dim() else C.ComplexTensor(b)).planes


def _gated(h: torch.Tensor, g: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """h * modReLU(g) on planes: the recurrence's output gate (one region, so only h and g are kept)."""
    return _mul_planes(h, C.modrelu(C.ComplexTensor(g), bias).planes)


class ComplexRecurrence(nn.Module):
    """Complex diagonal linear recurrence (LRU; Orvieto et al. 2023) on planar complex inputs.

        h_t = lambda * h_{t-1} + gamma * (B x_t),   y_t = C h_t + D * x_t,
        lambda = exp(-exp(nu) + i omega),           gamma = sqrt(1 - |lambda|^2),

    per state channel n (``d_state`` of them).  B = ``in_proj`` (d_model -> d_state) and
    C = ``out_proj`` (d_state -> d_model) are :class:`ComplexLinear` without bias; D = ``skip`` is
    a real per-feature weight.  gamma keeps
    E|h|^2 ~ E|Bx|^2 for white inputs, whatever |lambda|.

    Init: |lambda| uniform on the ring r_min <= |lambda| <= r_max (density ~ r, the LRU's
    nu = log(-log(u (r_max^2 - r_min^2) + r_min^2) / 2)); omega from the first ``d_state``
    Riemann zeta zeros scaled into (0, max_phase] (``omega_init="zeta"``), or uniform on
    (0, max_phase] (``"uniform"``); D ~ N(0, 1) as in the LRU.

    Two options from the gated recurrences that work for language (H3, Mamba, Griffin's recurrent
    block): ``conv_kernel`` = K > 0 puts a causal depthwise complex convolution of width K on B x
    before the scan, u_t = sum_{k<K} w_k * (B x)_{t-k} (float32, complex weights per state
    channel), so the layer sees the last K tokens exactly rather than through a decaying sum;
    ``gate=True`` multiplies the state by a complex gate before the read-out,
    y_t = C (h_t * modReLU(G x_t)) + D * x_t (G a ComplexLinear d_model -> d_state with bias).

    ``lambda_kind="real"`` (the ablation of issue 12: Griffin, De et al. 2024, found complex
    recurrences unhelpful for language) fixes omega = 0, so lambda = exp(-exp(nu)) is real and
    positive: omega is then a zero buffer, not a parameter (no optimizer can move it, and the
    parameter count drops by d_state), and ``omega_init`` is not used.  The inputs, the state and
    everything else stay complex.  A separate switch rather than an ``omega_init`` value because
    it changes what trains, not how it starts.

    ``decay="input"`` makes the decay a function of the token, as Griffin's
    RG-LRU (De et al. 2024) and Mamba do: a_t = lambda^(c r_t) with r_t = sigmoid(Re(A x_t)), A a
    ComplexLinear d_model -> d_state with bias and c = ``decay_scale`` (Griffin's 8), and the input
    gain gamma_t = sqrt(1 - |a_t|^2) per token; the scan is :func:`muse.scan.selective_diag_scan`.  With a
    complex lambda the same power turns the state too, by c r_t omega per token (Mamba-3's data-dependent
    rotation, which lets a diagonal recurrence count and track parity where a positive real decay cannot);
    omega then starts in (0, max_phase / c], so one token turns the state by at most max_phase at init.
    ``decay_rank`` = r > 0 makes A low-rank, as Mamba's dt projection: Re(A1 x) (A1 d_model -> r, complex, no
    bias) then a real r -> d_state linear with bias inside the scan's recomputed region, so backward keeps
    r values a token instead of d_state.  ``decay="drive"`` takes the rate from the channel's own drive,
    r_t = Re(w (B x_t)) + b with complex w and real b per state channel: nothing more to keep for backward.

    nu and omega are float32 parameters whatever ``dtype`` is (fp16 cannot hold |lambda| =
    0.999: its spacing below 1 is 4.9e-4); the state is float32 too.  Inputs and outputs are
    planar ComplexTensors of ``dtype``.  Causal: y_t depends on x_1..x_t only.
    """

    def __init__(self, d_model: int, d_state: int | None = None, r_min: float = 0.9, r_max: float = 0.999,
                 omega_init: str = "zeta", max_phase: float = math.pi, chunk_size: int | None = None,
                 dtype: torch.dtype = torch.float16, device=None, lambda_kind: str = "complex",
                 conv_kernel: int = 0, gate: bool = False, decay: str = "static", decay_scale: float = 8.0,
                 decay_rank: int = 0):
        super().__init__()
        self.d_model = check_int("d_model", d_model, min_value=1)
        self.d_state = d_model if d_state is None else check_int("d_state", d_state, min_value=1)
        self.r_min = check_float("r_min", r_min, min_value=0.0)
        self.r_max = check_float("r_max", r_max, max_value=1.0, max_inclusive=False)
        if self.r_min > self.r_max:
            raise ValueError(f"r_min must be <= r_max, got r_min={r_min} and r_max={r_max}")
        check_type("omega_init", omega_init, str, f"one of {OMEGA_INITS}")
        if omega_init not in OMEGA_INITS:
            raise ValueError(f"omega_init must be one of {OMEGA_INITS}, got {omega_init!r}")
        self.omega_init = omega_init
        self.lambda_kind = check_choice("lambda_kind", lambda_kind, LAMBDA_KINDS)
        self.decay_kind = check_choice("decay", decay, DECAY_KINDS)
        self.decay_scale = check_float("decay_scale", decay_scale, min_value=0.0, min_inclusive=False)
        self.decay_rank = check_int("decay_rank", decay_rank, min_value=0)
        self.max_phase = check_float("max_phase", max_phase, min_value=0.0, min_inclusive=False)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
        self.conv_kernel = check_int("conv_kernel", conv_kernel, min_value=0)
        check_type("gate", gate, bool, "a bool")
        self.gated = gate
        dtype = check_float_dtype("dtype", dtype)
        param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.in_proj = ComplexLinear(d_model, self.d_state, bias=False, dtype=dtype, device=device)
        self.out_proj = ComplexLinear(self.d_state, d_model, bias=False, dtype=dtype, device=device)
        self.skip = nn.Parameter(torch.empty(d_model, dtype=dtype, device=device))
        self.nu = nn.Parameter(torch.empty(self.d_state, dtype=param_dtype, device=device))
        if self.lambda_kind == "complex":
            self.omega = nn.Parameter(torch.empty(self.d_state, dtype=param_dtype, device=device))
        else:  # a constant of the architecture: not trained, not saved
            self.register_buffer("omega", torch.zeros(self.d_state, dtype=param_dtype, device=device),
                                 persistent=False)
        self.conv_weight = None
        if self.conv_kernel:  # (2, K, d_state): w_k multiplies the input k tokens back
            self.conv_weight = nn.Parameter(torch.empty(2, self.conv_kernel, self.d_state, dtype=param_dtype,
                                                        device=device))
        self.gate_proj = self.gate_act = None
        if self.gated:
            self.gate_proj = ComplexLinear(d_model, self.d_state, dtype=dtype, device=device)
            self.gate_act = ModReLU(self.d_state, dtype=dtype, device=device)
        self.decay_proj = self.decay_up = self.decay_weight = self.decay_bias = None
        if self.decay_kind == "input" and self.decay_rank:
            self.decay_proj = ComplexLinear(d_model, self.decay_rank, bias=False, dtype=dtype, device=device)
            self.decay_up = nn.Linear(self.decay_rank, self.d_state, dtype=param_dtype, device=device)
        elif self.decay_kind == "input":
            self.decay_proj = ComplexLinear(d_model, self.d_state, dtype=dtype, device=device)
        elif self.decay_kind == "drive":  # (2, n): w per channel; b per channel
            self.decay_weight = nn.Parameter(torch.empty(2, self.d_state, dtype=param_dtype, device=device))
            self.decay_bias = nn.Parameter(torch.empty(self.d_state, dtype=param_dtype, device=device))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        n, dev = self.d_state, self.nu.device
        u = torch.rand(n, dtype=torch.float64, device=dev)
        radius_sq = u * (self.r_max**2 - self.r_min**2) + self.r_min**2
        self.nu.copy_(torch.log(-0.5 * torch.log(radius_sq)))
        if self.lambda_kind == "real":
            self.omega.zero_()
        elif self.omega_init == "zeta":
            zeros = zeta_zeros(n).to(dev)
            self.omega.copy_(self._omega_max() * zeros / zeros[-1])
        else:
            self.omega.copy_(self._omega_max() * (1.0 - torch.rand(n, dtype=torch.float64, device=dev)))
        self.skip.copy_(torch.randn(self.d_model, dtype=torch.float32, device=dev))
        if self.conv_weight is not None:  # nn.Conv1d's depthwise default, U(-1/sqrt(K), 1/sqrt(K)) per part
            bound = 1.0 / math.sqrt(self.conv_kernel)
            self.conv_weight.uniform_(-bound, bound)
        if self.gate_proj is not None:
            self.gate_proj.reset_parameters()
            self.gate_act.bias.zero_()
        if self.decay_proj is not None:
            self.decay_proj.reset_parameters()
        if self.decay_up is not None:
            self.decay_up.reset_parameters()
        if self.decay_weight is not None:  # rate std ~ |B x| / sqrt(2) at init, like the full projection's
            self.decay_weight.normal_(0.0, 0.5)
            self.decay_bias.zero_()

    def _omega_max(self) -> float:
        """The top of omega's initial range: max_phase, over c when the per-token power scales the phase too."""
        return self.max_phase if self.decay_kind == "static" else self.max_phase / self.decay_scale

    def decay(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(|lambda|, arg lambda) per state channel, in the parameter dtype."""
        return torch.exp(-torch.exp(self.nu)), self.omega

    def gamma(self) -> torch.Tensor:
        """sqrt(1 - |lambda|^2) = sqrt(-expm1(-2 exp(nu))): accurate as |lambda| -> 1."""
        return torch.sqrt(-torch.expm1(-2.0 * torch.exp(self.nu)))

    def _rate(self, x: C.ComplexTensor) -> torch.Tensor | None:
        """What the scan's region needs for the per-token rate: Re(A x) (fp16, (..., S, n); (..., S, r) when
        low-rank); None for a static decay or one from the drive."""
        return None if self.decay_proj is None else self.decay_proj(x).planes[0]

    def _region_rate(self, u: torch.Tensor, src: torch.Tensor | None) -> torch.Tensor | None:
        """The pre-sigmoid rate (..., S, n) inside the scan's region, from the drive planes u and :meth:`_rate`."""
        if self.decay_weight is not None:
            w, uu = self.decay_weight, u.to(self.decay_weight.dtype)
            return w[0] * uu[0] - w[1] * uu[1] + self.decay_bias
        if self.decay_up is not None:
            return F.linear(src.to(self.decay_up.weight.dtype), self.decay_up.weight, self.decay_up.bias)
        return src

    def log_decay(self, rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log |a_t|, arg a_t) of a_t = lambda^(c sigmoid(rate)) in the state dtype, from the pre-sigmoid rate of
        :meth:`_region_rate`: -c sigmoid(rate) exp(nu) <= 0 and c sigmoid(rate) omega (None for a real lambda)."""
        power = self.decay_scale * torch.sigmoid(rate.to(self.nu.dtype))
        return -power * torch.exp(self.nu), (power * self.omega if self.lambda_kind == "complex" else None)

    def _drive(self, x: C.ComplexTensor, past: torch.Tensor | None
               ) -> tuple[C.ComplexTensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """gamma * conv(B x) in the state dtype (one rounding fewer than storing it in fp16), the
        convolution's new window (the last K - 1 inputs (2, ..., K - 1, d_state), None without one), the
        per-token log-decay (None for a static decay) and phase (None unless per-token and complex)."""
        u, window, log_a, phase = recomputed(self._scaled_drive, self.in_proj(x).planes, past, self._rate(x))
        return C.ComplexTensor(u), window, log_a, phase

    def _scan(self, u: torch.Tensor, h0: torch.Tensor | None, past: torch.Tensor | None,
              src: torch.Tensor | None):
        """The fp16 planes of B x -> (h (2, ..., S, n) in u's dtype, final state, convolution window):
        drive and scan as one region, so backward keeps u and reruns both rather than store fp32 states."""
        d, window, log_a, phase = self._scaled_drive(u, past, src)
        h0 = None if h0 is None else C.ComplexTensor(h0)
        if log_a is None:
            h, state = complex_diag_scan(C.ComplexTensor(d), self.nu, self.omega, initial_state=h0,
                                         output_final_state=True, out_dtype=u.dtype, chunk_size=self.chunk_size)
        else:
            h, state = selective_diag_scan(C.ComplexTensor(d), log_a, initial_state=h0, output_final_state=True,
                                           out_dtype=u.dtype, chunk_size=self.chunk_size, phase=phase)
        return h.planes, state.planes, window

    def _scaled_drive(self, u: torch.Tensor, past: torch.Tensor | None, src: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The fp16 planes of B x -> gamma * conv(B x) in the state dtype, the convolution window and the
        per-token log-decay and phase (gamma_t = sqrt(1 - |a_t|^2) then; None, None and the static gamma
        otherwise)."""
        rate = self._region_rate(u, src) if self.decay_kind != "static" else None
        u = u.to(self.nu.dtype)  # (2, ..., S, n)
        window = None
        if self.conv_weight is not None:
            u, window = self._conv(u, past)
        if rate is None:
            return u * self.gamma(), window, None, None
        log_a, phase = self.log_decay(rate)
        return u * torch.sqrt(-torch.expm1(2.0 * log_a)), window, log_a, phase

    def _conv(self, u: torch.Tensor, past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal depthwise complex convolution of the planes u (2, ..., S, n) after the K - 1 inputs
        ``past`` (None: zeros); returns (the output planes, the last K - 1 inputs)."""
        k, s = self.conv_kernel, u.shape[-2]
        if past is None:
            past = u.new_zeros(*u.shape[:-2], k - 1, u.shape[-1])
        full = torch.cat([past, u], dim=-2)  # (2, ..., K - 1 + S, n)
        w = self.conv_weight
        re = im = None
        for j in range(k):
            seg = full[..., k - 1 - j:k - 1 - j + s, :]  # the input j tokens back
            pr = w[0, j] * seg[0] - w[1, j] * seg[1]
            pi = w[0, j] * seg[1] + w[1, j] * seg[0]
            re, im = (pr, pi) if re is None else (re + pr, im + pi)
        return torch.stack((re, im)), full[..., full.shape[-2] - (k - 1):, :]

    def _readout(self, h: C.ComplexTensor, x: C.ComplexTensor) -> C.ComplexTensor:
        """C (h * modReLU(G x)) + D * x.  Backward keeps h and G x (the gated product, C's input, is
        recomputed from them) and x's source (the LayerNorm's input), never fp32 copies."""
        h = h.to(x.dtype)
        if self.gate_proj is not None:
            g, bias = self.gate_proj(x).planes, self.gate_act.bias
            h = C.ComplexTensor(remember(recomputed(_gated, h.planes, g, bias), _gated, h.planes, g, bias))
        # D * x keeps an fp32 copy of x: rebuilt in backward from x's source
        skip = rebuilt(lambda xc: _mul_planes(xc, self.skip).to(x.dtype), (_compute_planes, (x.planes,)))
        return C.add(self.out_proj(h), C.ComplexTensor(skip))

    def _split_state(self, state: C.ComplexTensor | None) -> tuple[C.ComplexTensor | None, torch.Tensor | None]:
        """(recurrence state, convolution window) of a layer state; see :meth:`initial_state`."""
        if state is None or self.conv_weight is None:
            return state, None
        check_type("initial_state", state, C.ComplexTensor, "a ComplexTensor from initial_state()")
        if state.ndim < 2 or tuple(state.shape[-2:]) != (self.conv_kernel, self.d_state):
            raise ValueError(f"initial_state must have shape (..., {self.conv_kernel}, {self.d_state}) (the "
                             f"recurrence state and the convolution window), got {tuple(state.shape)}")
        p = state.planes
        return C.ComplexTensor(p[..., 0, :]), p[..., 1:, :]

    def _join_state(self, h: C.ComplexTensor, window: torch.Tensor | None) -> C.ComplexTensor:
        if window is None:
            return h
        return C.ComplexTensor(torch.cat([h.planes[..., None, :], window.to(h.planes.dtype)], dim=-2))

    def _check_input(self, x: C.ComplexTensor, what: str) -> None:
        check_type("x", x, C.ComplexTensor, f"a ComplexTensor of shape {what}")
        if x.ndim < 1 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape {what} with d_model={self.d_model}, got {tuple(x.shape)}")
        if x.dtype != self.skip.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer holds {self.skip.dtype}")

    def forward(self, x: C.ComplexTensor) -> C.ComplexTensor:
        """x (..., S, d_model) -> y (..., S, d_model), from a zero state."""
        return self.forward_with_state(x)[0]

    def forward_with_state(self, x: C.ComplexTensor, initial_state: C.ComplexTensor | None = None
                           ) -> tuple[C.ComplexTensor, C.ComplexTensor]:
        """(y, final state): the state after the last token, (..., d_state) in the state dtype."""
        self._check_input(x, "(..., seq, d_model)")
        if x.ndim < 2:
            raise ValueError(f"x must have shape (..., seq, d_model), got {tuple(x.shape)}")
        h0, past = self._split_state(initial_state)
        h, state, window = recomputed(self._scan, self.in_proj(x).planes, None if h0 is None else h0.planes, past,
                                      self._rate(x))
        return self._readout(C.ComplexTensor(h), x), self._join_state(C.ComplexTensor(state), window)

    def initial_state(self, *batch: int) -> C.ComplexTensor:
        """A zero state in the state dtype: (*batch, d_state), or with a convolution (*batch, K, d_state)
        (row 0 the recurrence state, rows 1..K-1 the last K - 1 convolution inputs, oldest first)."""
        if self.conv_weight is not None:
            return C.ComplexTensor(self.nu.new_zeros(2, *batch, self.conv_kernel, self.d_state))
        return C.ComplexTensor(self.nu.new_zeros(2, *batch, self.d_state))

    def step(self, x_t: C.ComplexTensor, state: C.ComplexTensor | None = None
             ) -> tuple[C.ComplexTensor, C.ComplexTensor]:
        """One token: x_t (..., d_model) and the previous state (or None = zeros) -> (y_t, new state).

        O(1) per token; the same values as :meth:`forward` at that position (up to the scan's
        rounding, docs/numerics.md).
        """
        self._check_input(x_t, "(..., d_model)")
        h0, past = self._split_state(state)
        if past is not None:
            past = past.to(self.nu.dtype)
        u, window, log_a, phase = self._drive(C.ComplexTensor(x_t.planes[..., None, :]), past)
        u = C.ComplexTensor(u.planes[..., 0, :])
        if log_a is None:
            h = complex_diag_step(u, self.nu, self.omega, h0)
        else:
            h = selective_diag_step(u, log_a[..., 0, :], h0, None if phase is None else phase[..., 0, :])
        return self._readout(h, x_t), self._join_state(h, window)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, r_min={self.r_min}, r_max={self.r_max}, "
                f"omega_init={self.omega_init!r}, lambda_kind={self.lambda_kind!r}, conv_kernel={self.conv_kernel}, "
                f"gate={self.gated}, decay={self.decay_kind!r}, decay_scale={self.decay_scale}, "
                f"decay_rank={self.decay_rank}")


#: ComplexRetention's key phases omega: "geometric" (RoPE's base^(-j/d_head) spectrum), "zeta" (the first
#: d_head Riemann zeta zeros scaled into (0, pi], as ComplexRecurrence's omega), "none" (omega = 0).
PHASE_INITS = ("geometric", "zeta", "none")


class ComplexRetention(nn.Module):
    """Decayed complex linear attention (retention; Sun et al. 2023, RetNet): a content-addressed mixer.

    Per head, with complex query, key and value q_t, k_t (d_key / n_heads channels), v_t (d_model / n_heads):

        S_t = a_t R S_{t-1} + k_t [Re v_t, Im v_t]^T,   y_t = Re(q_t^H S_t) / sqrt(2 d_head_key)

    a complex matrix state S (key channels x the value's two planes).  R = diag(exp(i omega)) turns each
    key channel by a fixed phase per step, so the score of key s at query t is
    Re(conj(q_t) . k_s exp(i omega (t - s))): content and relative position, as RoPE's rotation
    (``phase_init``).  a_t = exp(-softplus(Re(w . x_t + b))) in (0, 1) is a decay per head and token
    (Phase 2's dissipative Hebbian rule, in complex form), starting at RetNet's retentions 1 - 2^(-5-h).
    The read-out is RMS-normalised per head with a real gain per value channel (phase-equivariant),
    multiplied by the complex gate modReLU(G x) with ``gate``, and mapped back by ``out_proj``.

    The scan is :func:`muse.scan.complex_retention`: real decayed linear attention (the Hebbian scan,
    its Triton kernel on CUDA) on the concatenated planes of q and k turned by exp(-i omega t) (local
    positions t = 1..S of each call), so the state entering a call is the physical S and the state
    leaving it is turned by exp(i omega S): no absolute position is needed to continue a sequence.  The projections
    are one :class:`ComplexLinear` (q, k, v, G and the decay's pre-activation); the scan, the norm and
    the state are float32 (float64 for a float64 layer), inputs and outputs planar ``dtype``.  Causal.
    """

    def __init__(self, d_model: int, n_heads: int = 8, d_key: int | None = None, phase_init: str = "geometric",
                 gate: bool = True, chunk_size: int | None = 128, eps: float = 1e-6,
                 dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.d_model = check_int("d_model", d_model, min_value=1)
        self.n_heads = check_int("n_heads", n_heads, min_value=1)
        self.d_key = max(d_model // 2, n_heads) if d_key is None else check_int("d_key", d_key, min_value=1)
        for name, width in (("d_model", self.d_model), ("d_key", self.d_key)):
            if width % self.n_heads:
                raise ValueError(f"{name} ({width}) must be divisible by n_heads ({self.n_heads})")
        self.phase_init = check_choice("phase_init", phase_init, PHASE_INITS)
        check_type("gate", gate, bool, "a bool")
        self.gated = gate
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
        self.eps = check_float("eps", eps, min_value=0.0, min_inclusive=False)
        dtype = check_float_dtype("dtype", dtype)
        param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.dk, self.dv = self.d_key // self.n_heads, self.d_model // self.n_heads
        # the projection's parts: q, k, v, G x, the decay's pre-activation
        self.splits = (self.d_key, self.d_key, self.d_model, self.d_model if gate else 0, self.n_heads)
        self.proj = ComplexLinear(d_model, sum(self.splits), dtype=dtype, device=device)
        self.out_proj = ComplexLinear(d_model, d_model, bias=False, dtype=dtype, device=device)
        self.norm_weight = nn.Parameter(torch.ones(d_model, dtype=param_dtype, device=device))
        self.gate_act = ModReLU(d_model, dtype=dtype, device=device) if gate else None
        # a constant of the architecture, as RoPE's frequencies: not trained, not saved
        self.register_buffer("omega", torch.zeros(self.dk, dtype=param_dtype, device=device), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.proj.reset_parameters()
        self.out_proj.reset_parameters()
        self.norm_weight.fill_(1.0)
        if self.gate_act is not None:
            self.gate_act.bias.zero_()
        rates = _inverse_softplus(_retnet_rates(self.n_heads))  # the decay's pre-activation bias
        self.proj.bias[0, -self.n_heads:].copy_(rates.to(self.proj.bias.dtype))
        n, dev = self.dk, self.omega.device
        if self.phase_init == "geometric":
            omega = 10000.0 ** (-torch.arange(n, dtype=torch.float64) / n)
        elif self.phase_init == "zeta":
            zeros = zeta_zeros(n)
            omega = math.pi * zeros / zeros[-1]
        else:
            omega = torch.zeros(n, dtype=torch.float64)
        self.omega.copy_(omega.to(dev))

    def _check_input(self, x: C.ComplexTensor) -> None:
        check_type("x", x, C.ComplexTensor, "a ComplexTensor of shape (B, S, d_model)")
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, S, d_model) with d_model={self.d_model}, got {tuple(x.shape)}")
        if x.dtype != self.proj.weight.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer holds {self.proj.weight.dtype}")

    def _check_state(self, state: C.ComplexTensor | None, batch: int) -> None:
        if state is None:
            return
        check_type("initial_state", state, C.ComplexTensor, "a ComplexTensor from initial_state()")
        shape = (batch, self.n_heads, self.dk, 2 * self.dv)
        if tuple(state.shape) != shape or state.dtype != self.norm_weight.dtype:
            raise ValueError(f"initial_state must have shape {shape} and dtype {self.norm_weight.dtype}, got "
                             f"{tuple(state.shape)} and {state.dtype}")

    def _heads(self, planes: torch.Tensor, width: int) -> torch.Tensor:
        two, b, s, _ = planes.shape
        return planes.reshape(two, b, s, self.n_heads, width).transpose(2, 3)  # (2, B, H, S, w)

    def _mix(self, p: torch.Tensor, w0: torch.Tensor | None, with_state: bool):
        """Projected fp16 planes (2, B, S, F) -> normalised read-out planes (2, B, S, d) in p's dtype, and
        the final state planes (2, B, H, dk, 2 dv) (None without ``with_state``)."""
        rdt = _recurrence_dtype(p)
        q, k, v, _, a = torch.split(p, self.splits, dim=-1)
        b, s = p.shape[1], p.shape[2]
        q = C.ComplexTensor(self._heads(q.to(rdt), self.dk) / math.sqrt(2 * self.dk))  # (B, H, S, dk)
        k = C.ComplexTensor(self._heads(k.to(rdt), self.dk))
        v = C.ComplexTensor(self._heads(v.to(rdt), self.dv))  # (B, H, S, dv)
        log_decay = -F.softplus(a[0].to(rdt)).transpose(1, 2).contiguous()  # (B, H, S), < 0
        y, state = complex_retention(q, k, v, log_decay, self.omega, None if w0 is None else C.ComplexTensor(w0),
                                     with_state, self.chunk_size)
        y = y.planes  # (2, B, H, S, dv)
        y = y * torch.rsqrt(y.pow(2).mean(dim=(0, -1), keepdim=True) + self.eps)  # RMS over the head's 2 dv reals
        y = y.transpose(2, 3).reshape(2, b, s, self.d_model)
        return (y * self.norm_weight.to(rdt)).to(p.dtype), None if state is None else state.planes

    def forward(self, x: C.ComplexTensor) -> C.ComplexTensor:
        """x (B, S, d_model) -> y (B, S, d_model), from a zero state."""
        self._check_input(x)
        return self._run(x, None, False)[0]

    def forward_with_state(self, x: C.ComplexTensor, initial_state: C.ComplexTensor | None = None
                           ) -> tuple[C.ComplexTensor, C.ComplexTensor]:
        """(y, the state after the last token (B, H, dk, 2 dv) in the state dtype); ``initial_state``
        the state the tokens before x left (None: zeros)."""
        self._check_input(x)
        self._check_state(initial_state, x.shape[0])
        return self._run(x, initial_state, True)

    def _run(self, x: C.ComplexTensor, initial_state: C.ComplexTensor | None, with_state: bool):
        p = self.proj(x).planes  # (2, B, S, F)
        w0 = None if initial_state is None else initial_state.planes
        with _no_autocast(p):
            y, state = recomputed(self._mix, p, w0, with_state)
        if self.gate_act is not None:
            g = p[..., 2 * self.d_key + self.d_model:2 * self.d_key + 2 * self.d_model]
            y = recomputed(_gated, y, g, self.gate_act.bias)
        return self.out_proj(C.ComplexTensor(y)), None if state is None else C.ComplexTensor(state)

    def initial_state(self, batch_size: int) -> C.ComplexTensor:
        """A zero state (batch_size, n_heads, d_head_key, 2 d_head) in the state dtype."""
        return C.ComplexTensor(self.norm_weight.new_zeros(2, batch_size, self.n_heads, self.dk, 2 * self.dv))

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, d_key={self.d_key}, "
                f"phase_init={self.phase_init!r}, gate={self.gated}, chunk_size={self.chunk_size}")


__all__ = ["LAMBDA_KINDS", "OMEGA_INITS", "PHASE_INITS", "BKCore", "ComplexRecurrence", "ComplexRetention",
           "DissipativeHebbian", "HeadRMSNorm"]

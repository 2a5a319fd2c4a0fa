"""Token mixers: modules that combine information across sequence positions (causally)."""

from __future__ import annotations

import math

import torch
from torch import nn

import muse.complex as C
from muse._checks import check_float, check_int, check_type
from muse.init import zeta_zeros
from muse.nn.linear import ComplexLinear, _check_dtype
from muse.scan import complex_diag_scan, complex_diag_step

OMEGA_INITS = ("zeta", "uniform")


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

    nu and omega are float32 parameters whatever ``dtype`` is (fp16 cannot hold |lambda| =
    0.999: its spacing below 1 is 4.9e-4); the state is float32 too.  Inputs and outputs are
    planar ComplexTensors of ``dtype``.  Causal: y_t depends on x_1..x_t only.
    """

    def __init__(self, d_model: int, d_state: int | None = None, r_min: float = 0.9, r_max: float = 0.999,
                 omega_init: str = "zeta", max_phase: float = math.pi, chunk_size: int | None = None,
                 dtype: torch.dtype = torch.float16, device=None):
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
        self.max_phase = check_float("max_phase", max_phase, min_value=0.0, min_inclusive=False)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
        dtype = _check_dtype(dtype)
        param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.in_proj = ComplexLinear(d_model, self.d_state, bias=False, dtype=dtype, device=device)
        self.out_proj = ComplexLinear(self.d_state, d_model, bias=False, dtype=dtype, device=device)
        self.skip = nn.Parameter(torch.empty(d_model, dtype=dtype, device=device))
        self.nu = nn.Parameter(torch.empty(self.d_state, dtype=param_dtype, device=device))
        self.omega = nn.Parameter(torch.empty(self.d_state, dtype=param_dtype, device=device))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        n, dev = self.d_state, self.nu.device
        u = torch.rand(n, dtype=torch.float64, device=dev)
        radius_sq = u * (self.r_max**2 - self.r_min**2) + self.r_min**2
        self.nu.copy_(torch.log(-0.5 * torch.log(radius_sq)))
        if self.omega_init == "zeta":
            zeros = zeta_zeros(n).to(dev)
            self.omega.copy_(self.max_phase * zeros / zeros[-1])
        else:
            self.omega.copy_(self.max_phase * (1.0 - torch.rand(n, dtype=torch.float64, device=dev)))
        self.skip.copy_(torch.randn(self.d_model, dtype=torch.float32, device=dev))

    def decay(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(|lambda|, arg lambda) per state channel, in the parameter dtype."""
        return torch.exp(-torch.exp(self.nu)), self.omega

    def gamma(self) -> torch.Tensor:
        """sqrt(1 - |lambda|^2) = sqrt(-expm1(-2 exp(nu))): accurate as |lambda| -> 1."""
        return torch.sqrt(-torch.expm1(-2.0 * torch.exp(self.nu)))

    def _drive(self, x: C.ComplexTensor) -> C.ComplexTensor:
        """gamma * (B x) in the state dtype (one rounding fewer than storing it in fp16)."""
        u = self.in_proj(x)
        return C.ComplexTensor(u.planes.to(self.nu.dtype) * self.gamma())

    def _readout(self, h: C.ComplexTensor, x: C.ComplexTensor) -> C.ComplexTensor:
        return C.add(self.out_proj(h.to(x.dtype)), C.mul(x, self.skip))

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
        h, state = complex_diag_scan(self._drive(x), self.nu, self.omega, initial_state=initial_state,
                                     output_final_state=True, out_dtype=x.dtype, chunk_size=self.chunk_size)
        return self._readout(h, x), state

    def initial_state(self, *batch: int) -> C.ComplexTensor:
        """A zero state of shape (*batch, d_state) in the state dtype."""
        return C.ComplexTensor(self.nu.new_zeros(2, *batch, self.d_state))

    def step(self, x_t: C.ComplexTensor, state: C.ComplexTensor | None = None
             ) -> tuple[C.ComplexTensor, C.ComplexTensor]:
        """One token: x_t (..., d_model) and the previous state (or None = zeros) -> (y_t, new state).

        O(1) per token; the same values as :meth:`forward` at that position (up to the scan's
        rounding, docs/numerics.md).
        """
        self._check_input(x_t, "(..., d_model)")
        h = complex_diag_step(self._drive(x_t), self.nu, self.omega, state)
        return self._readout(h, x_t), h

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, r_min={self.r_min}, r_max={self.r_max}, "
                f"omega_init={self.omega_init!r}")


__all__ = ["OMEGA_INITS", "ComplexRecurrence"]

"""Muon for real and planar complex matrices: momentum, then the polar factor of the update.

Muon (Jordan et al. 2024; Liu et al. 2025, "Muon is scalable for LLM training") replaces a weight
matrix's update by the orthogonal factor ``U V^H`` of its (Nesterov) momentum ``U S V^H``, computed
approximately by a quintic Newton-Schulz iteration.  ``torch.optim.Muon`` (torch >= 2.9) does this
for real 2-D parameters only; this class adds the planar complex weight ``(2, out, in)`` of
``ComplexLinear``.

For ``W = W_r + i W_i`` and a real loss, ``G = dL/dW_r + i dL/dW_i`` is the steepest-descent
direction, and the update is the **complex** polar factor of ``G``: the same iteration with
``X X^H`` on a complex64 copy.  That is the real iteration on ``[[G_r, -G_i], [G_i, G_r]]`` (the
real form of a complex matrix, which products, sums and ``^H`` preserve), not Muon on each plane
or on the planes stacked, which would orthogonalise a different matrix.

The step follows Moonshot's rule (``adjust_lr_fn="match_rms_adamw"`` in torch): an update of root
mean square ``rms`` = 0.2 per real entry and unit learning rate, so a run keeps AdamW's learning rate
and weight decay.  A real ``A x B`` polar factor has RMS ``1/sqrt(max(A, B))``, so its scale is
``rms sqrt(max(A, B))``; a complex one spreads the same Frobenius norm over twice the real entries:
``rms sqrt(2 max(A, B))``.  Weight decay is decoupled, ``W <- W (1 - lr wd)``, as in AdamW.  (0.2 is
AdamW's typical steady update; Jordan's short runs step about ten times further, lr 0.05 on
``sqrt(max(1, A/B))``, i.e. ``rms`` near 2 at lr 1e-3: ``rms`` is the knob.)
"""

from __future__ import annotations

import math

import torch

from muse._checks import check_float, check_int, check_type

NS_QUINTIC = (3.4445, -4.7750, 2.0315)  # Jordan's coefficients (also torch.optim.Muon's)


def is_planar(shape) -> bool:
    """A ``(2, out, in)`` parameter: a planar complex matrix (``ComplexLinear.weight``)."""
    return len(shape) == 3 and shape[0] == 2


def orthogonalize(update: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  coefficients: tuple[float, float, float] = NS_QUINTIC) -> torch.Tensor:
    """Newton-Schulz approximation of the polar factor of ``update`` in fp32: a real ``(out, in)``
    matrix, or a planar complex ``(2, out, in)`` one (orthogonalised as one complex matrix)."""
    planar = is_planar(update.shape)
    if not planar and update.ndim != 2:
        raise ValueError(f"update must be (out, in) or planar (2, out, in), got shape {tuple(update.shape)}")
    x = torch.complex(update[0].float(), update[1].float()) if planar else update.float()
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mH
    x = x / torch.linalg.matrix_norm(x).clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    a, b, c = coefficients
    for _ in range(steps):
        gram = x @ x.mH
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    if tall:
        x = x.mH
    return torch.stack((x.real, x.imag)) if planar else x


def update_scale(shape, rms: float = 0.2) -> float:
    """The step's factor on the learning rate: RMS ``rms`` per real entry (see the module docstring)."""
    rows, cols = shape[-2], shape[-1]
    return rms * math.sqrt((2 if is_planar(shape) else 1) * max(rows, cols))


class Muon(torch.optim.Optimizer):
    """Muon on fp32 real ``(out, in)`` and planar complex ``(2, out, in)`` parameters.

    Momentum as torch's: ``B <- mu B + (1 - mu) G``, the update ``(1 - mu) G + mu B`` with Nesterov;
    its polar factor, scaled by :func:`update_scale` (``lr * rms`` per real entry), is the step.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, eps: float = 1e-7, rms: float = 0.2):
        check_float("lr", lr, min_value=0.0, min_inclusive=False)
        check_float("weight_decay", weight_decay, min_value=0.0)
        check_float("momentum", momentum, min_value=0.0, max_value=1.0, max_inclusive=False)
        check_type("nesterov", nesterov, bool, "a bool")
        check_int("ns_steps", ns_steps, min_value=1)
        check_float("eps", eps, min_value=0.0, min_inclusive=False)
        check_float("rms", rms, min_value=0.0, min_inclusive=False)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_steps=ns_steps, eps=eps, rms=rms))
        for group in self.param_groups:
            for p in group["params"]:
                if not (p.ndim == 2 or is_planar(p.shape)):
                    raise ValueError(f"Muon takes (out, in) or planar (2, out, in) parameters, got shape {tuple(p.shape)}")
                if p.dtype != torch.float32:
                    raise TypeError(f"Muon needs fp32 parameters (masters), got {p.dtype}")

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("closure is not supported")
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1.0 - mu)
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
                p.mul_(1.0 - lr * wd)
                p.add_(orthogonalize(update, group["ns_steps"], group["eps"]), alpha=-lr * update_scale(p.shape, group["rms"]))

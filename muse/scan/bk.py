"""The causal BK-Core resolvent: :func:`bk_green_sequential` (the definition) and :func:`bk_green_scan`.

For a tridiagonal H with diagonal a_i and off-diagonals -1 (so b*c = 1), and a shift z
with Im z > 0, G_i is the last diagonal entry of (H_[1..i] - z)^{-1}, the inverse of
the leading i x i block:

    G_i = theta_{i-1} / theta_i = 1 / r_i,
    r_1 = a_1 - z,   r_i = (a_i - z) - 1 / r_{i-1}.

G_i depends on a_1..a_i only, so the mixer is causal.  The recursion needs only the previous
G: r_i = (a_i - z) - G_{i-1} with G_0 = 0, so a sequence can be continued from the last G of
the part before it (``initial_state``; the incremental decoding of Phase 2).  If Im a_i <= 0 for every i
(a dissipative potential), then |G_i| <= 1 / Im z:

    Im r_1 = Im a_1 - Im z <= -Im z.  If Im r_{i-1} <= -Im z < 0 then
    Im(1 / r_{i-1}) = -Im r_{i-1} / |r_{i-1}|^2 >= 0, so
    Im r_i = Im a_i - Im z - Im(1 / r_{i-1}) <= -Im z.
    Hence |r_i| >= |Im r_i| >= Im z (no r_i is 0) and |G_i| <= 1 / Im z.

The scan writes r_i as a Moebius map of r_{i-1}: with M_i = [[a_i - z, -1], [1, 0]],
P_i = M_i M_{i-1} ... M_1 and [theta_i, theta_{i-1}]^T = P_i [1, 0]^T, so
G_i = P_i[1, 0] / P_i[0, 0].  The prefix products come from a Hillis-Steele scan
(log2 S steps, each one batched 2x2 complex product).  Only the ratio matters
(the products are projective), so every partial product is divided by its largest
entry after each step: theta_i grows like |a - z|^i and would overflow otherwise.

Pure torch (autograd, CPU and GPU): real float32/float64 inputs give a complex64/complex128 scan.
Where ``muse.kernels.enabled`` picks it (complex64 on CUDA, or Triton's interpreter),
:func:`bk_green_scan` runs the sequential recursion as a Triton kernel instead (one fp32 loop per
lane; backward: the reverse recursion of :func:`bk_green_adjoint`), also inside torch.compile,
which cannot fuse the scan; this scan is the reference and the CPU path.
"""

from __future__ import annotations

import torch

from muse import kernels
from muse._checks import check_float, check_float_tensor, check_shift, check_tensor

_COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def _check_diagonal(a: object) -> torch.Tensor:
    check_tensor("a", a)
    if a.dtype not in _COMPLEX_DTYPES:
        raise TypeError(f"a must have dtype complex64 or complex128, got {a.dtype}")
    if a.dim() < 1:
        raise ValueError(f"a must have a last (sequence) dimension, got shape {tuple(a.shape)}")
    return a


def bk_diagonal(potential: torch.Tensor, gamma: torch.Tensor, shift: float = 2.0) -> torch.Tensor:
    """a = V + shift with V = potential - i * gamma: the diagonal of H (complex).

    shift = 2 gives H = -Laplacian + V; shift = 0 the original Phase 2's diagonal a = V.
    """
    shift = check_float("shift", shift)
    check_float_tensor("potential", potential)
    check_float_tensor("gamma", gamma)
    if potential.shape != gamma.shape:
        raise ValueError(f"potential and gamma must have the same shape, got "
                         f"{tuple(potential.shape)} and {tuple(gamma.shape)}")
    return torch.complex(potential + shift, -gamma)  # (..., S)


def _check_initial_state(initial_state: object, a: torch.Tensor) -> torch.Tensor | None:
    """None, or the G before a[..., 0]: a complex tensor of shape a.shape[:-1] and a's dtype."""
    if initial_state is None:
        return None
    check_tensor("initial_state", initial_state)
    if initial_state.dtype != a.dtype or initial_state.shape != a.shape[:-1]:
        raise ValueError(f"initial_state must have shape {tuple(a.shape[:-1])} and dtype {a.dtype}, got "
                         f"{tuple(initial_state.shape)} and {initial_state.dtype}")
    return initial_state


def bk_green_sequential(a: torch.Tensor, z: complex, initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: G_i = 1 / r_i with r_i = (a_i - z) - G_{i-1}, G_0 = ``initial_state`` (None: 0,
    i.e. r_1 = a_1 - z); a (..., S) -> (..., S)."""
    a = _check_diagonal(a)
    z = check_shift("z", z)
    g = _check_initial_state(initial_state, a)
    out = [a[..., :0]]  # keeps an empty sequence valid
    for i in range(a.shape[-1]):
        r = a[..., i] - z if g is None else (a[..., i] - z) - g  # (...)
        g = 1.0 / r
        out.append(g[..., None])
    return torch.cat(out, dim=-1)  # (..., S)


def bk_green_adjoint(g: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_a (..., S), grad_G0 (...)) of the resolvent from its output G and grad_G (..., S): the reverse
    recursion (the Triton kernel's backward, in PyTorch; differentiable, so double backward works).

    dG_i/da_i = -G_i^2 and dG_i/dG_{i-1} = G_i^2 (holomorphic), so with PyTorch's convention
    (grad = dL/dRe + i dL/dIm, grad_in = grad_out * conj(f')): lambda_i = grad_i + mu_{i+1},
    mu_i = lambda_i conj(G_i)^2, grad_a_i = -mu_i, grad_G0 = mu_1 (mu_{S+1} = 0).
    """
    mu = torch.zeros_like(g[..., 0])  # (...)
    out = []
    for i in reversed(range(g.shape[-1])):
        mu = (grad[..., i] + mu) * g[..., i].conj() ** 2  # (...)
        out.append(-mu)
    grad_a = torch.stack(out[::-1], dim=-1) if out else torch.zeros_like(g)  # (..., S)
    return grad_a, mu


class _BKGreenKernel(torch.autograd.Function):
    """The Triton kernels (muse.kernels.bk_green_fwd / _bwd) with autograd; a backward that must itself be
    differentiable (create_graph=True) runs :func:`bk_green_adjoint` instead."""

    @staticmethod
    def forward(ctx, a, z_re, z_im, g0):
        g = kernels.bk_green_fwd(a, z_re, z_im, g0)
        ctx.has_g0 = g0 is not None
        ctx.save_for_backward(g)
        return g

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            grad_a, grad_g0 = bk_green_adjoint(g, grad)
        else:
            grad_a, grad_g0 = kernels.bk_green_bwd(g, grad)
        return grad_a, None, None, grad_g0 if ctx.has_g0 else None


def _renormalise(m: torch.Tensor) -> torch.Tensor:
    """Divide each 2x2 matrix of ``m`` (..., S, 2, 2) by its largest |entry|.

    The scale is detached: the result is only used through the scale-invariant ratio
    P[1, 0] / P[0, 0], whose gradient through the scale is exactly zero.
    """
    with torch.no_grad():
        s = m.abs().amax(dim=(-2, -1), keepdim=True)  # (..., S, 1, 1)
        s = torch.where(s > 0, s, torch.ones_like(s))  # det P = 1 in exact arithmetic; guard anyway
    return m / s


def moebius_prefix_products(m: torch.Tensor) -> torch.Tensor:
    """Inclusive scan P_i = M_i M_{i-1} ... M_1 of complex 2x2 matrices, up to a positive scale per i.

    ``m`` is (..., S, 2, 2).  Hillis-Steele: after the step with offset o, P_i holds the
    product of M_{max(1, i-2o+1)}..M_i, so ceil(log2 S) steps suffice, each one batched
    matmul; every step renormalises (see :func:`_renormalise`).
    """
    m = _renormalise(m)
    n = m.shape[-3]
    offset = 1
    while offset < n:
        prod = m[..., offset:, :, :] @ m[..., :-offset, :, :]  # (..., S - o, 2, 2): P_i times P_{i-o}
        m = _renormalise(torch.cat([m[..., :offset, :, :], prod], dim=-3))  # (..., S, 2, 2)
        offset *= 2
    return m


def bk_green_scan(a: torch.Tensor, z: complex, initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """Causal resolvent diagonal G_i = theta_{i-1} / theta_i by a log-depth scan; a (..., S) -> (..., S).

    Same values as :func:`bk_green_sequential` (see the module docstring for the bound
    |G_i| <= 1 / Im z when Im a <= 0).  ``initial_state`` G_0 (..., ) continues a sequence:
    [theta_i, theta_{i-1}] = P_i [1, G_0], so G_i = (P_i[1, 0] + P_i[1, 1] G_0) / (P_i[0, 0] +
    P_i[0, 1] G_0); G_0 = 0 is the fresh start.  The final state is the output's last entry.
    """
    a = _check_diagonal(a)
    z = check_shift("z", z)
    g0 = _check_initial_state(initial_state, a)
    if a.dtype == torch.complex64 and kernels.enabled(a, *(() if g0 is None else (g0,)), in_compile=True):
        return _BKGreenKernel.apply(a, z.real, z.imag, g0)  # (..., S)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    top = torch.stack([a - z, -one], dim=-1)  # (..., S, 2): row [a_i - z, -1]
    bottom = torch.stack([one, zero], dim=-1)  # (..., S, 2): row [1, 0]
    p = moebius_prefix_products(torch.stack([top, bottom], dim=-2))  # (..., S, 2, 2)
    if g0 is None:
        return p[..., 1, 0] / p[..., 0, 0]  # (..., S)
    g0 = g0[..., None]  # (..., 1)
    return (p[..., 1, 0] + p[..., 1, 1] * g0) / (p[..., 0, 0] + p[..., 0, 1] * g0)  # (..., S)


__all__ = ["bk_diagonal", "bk_green_adjoint", "bk_green_scan", "bk_green_sequential", "moebius_prefix_products"]

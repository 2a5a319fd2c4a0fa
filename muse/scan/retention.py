"""Complex retention: decayed linear attention with complex queries and keys that turn with position.

Per head, with complex q_t, k_t (d_k channels), complex v_t (d_v channels), a log-decay l_t <= 0 and
fixed phases omega (d_k,), the state S is complex over the key channel and real over the value's
two planes, (d_k, 2 d_v):

    S_t = exp(l_t) R S_{t-1} + k_t [Re v_t, Im v_t]^T,   R = diag(exp(i omega)),
    y_t = Re(q_t^H S_t)   (2 d_v reals: the real and imaginary planes of a complex d_v vector),

so y_t = sum_{s <= t} exp(L_t - L_s) Re(sum_j conj(q_tj) k_sj exp(i omega_j (t - s))) v_s: real weights
of content and relative position (RetNet, Sun et al. 2023).  Both forms share the fla-style signature
``y, final_state = op(q, k, v, log_decay, omega, initial_state=None, output_final_state=False)`` with
planar :class:`~muse.complex.ComplexTensor` q, k (..., S, d_k), v (..., S, d_v), real log_decay
(..., S) and omega (d_k,), all float32 or float64; y is a ComplexTensor (..., S, d_v), the state a
ComplexTensor (..., d_k, 2 d_v), in that dtype.

* :func:`complex_retention_sequential` -- the definition, one Python step per token.
* :func:`complex_retention` -- the form the model uses: q and k turned by exp(-i omega t) (local
  positions t = 1..S; angles formed in float64 and rounded once), their planes concatenated, and
  :func:`muse.scan.hebbian_parallel_with_state` (its Triton kernel where ``muse.kernels`` picks
  it) on them; the state entering is the physical S, the state leaving is turned by exp(i omega S),
  so a sequence continues without absolute positions.  The error bound is in docs/numerics.md
  ("ComplexRetention").
"""

from __future__ import annotations

import torch

import muse.complex as C
from muse._checks import check_float_tensor, check_int, check_type
from muse.scan.hebbian import hebbian_parallel, hebbian_parallel_with_state


def _check(q, k, v, log_decay, omega, initial_state) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_type(name, t, C.ComplexTensor, "a ComplexTensor")
    check_float_tensor("log_decay", log_decay)
    check_float_tensor("omega", omega)
    if q.ndim < 2 or q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (..., S, d_k), got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.ndim != q.ndim or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v must have shape {tuple(q.shape[:-1])} + (d_v,), got {tuple(v.shape)}")
    if tuple(log_decay.shape) != tuple(q.shape[:-1]):
        raise ValueError(f"log_decay must have shape {tuple(q.shape[:-1])}, got {tuple(log_decay.shape)}")
    if tuple(omega.shape) != (q.shape[-1],):
        raise ValueError(f"omega must have shape ({q.shape[-1]},), got {tuple(omega.shape)}")
    dtypes = {q.dtype, k.dtype, v.dtype, log_decay.dtype}
    if len(dtypes) != 1 or q.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"q, k, v and log_decay must share one dtype, float32 or float64, got {q.dtype}, "
                        f"{k.dtype}, {v.dtype}, {log_decay.dtype}")
    if initial_state is not None:
        check_type("initial_state", initial_state, C.ComplexTensor, "a ComplexTensor or None")
        shape = (*q.shape[:-2], q.shape[-1], 2 * v.shape[-1])
        if tuple(initial_state.shape) != shape or initial_state.dtype != q.dtype:
            raise ValueError(f"initial_state must have shape {shape} and dtype {q.dtype}, got "
                             f"{tuple(initial_state.shape)} and {initial_state.dtype}")


def turns(omega: torch.Tensor, steps: torch.Tensor, dtype: torch.dtype) -> C.ComplexTensor:
    """exp(i omega t) for each t in ``steps``, a ComplexTensor (len(steps), d_k) of ``dtype``: the angles
    are formed in float64 and rounded once (in float32, omega t alone would be off by ~omega t 2^-24)."""
    angle = steps.to(torch.float64)[:, None] * omega.to(torch.float64)
    return C.ComplexTensor(torch.stack((torch.cos(angle), torch.sin(angle))).to(dtype))


def complex_retention_sequential(q: C.ComplexTensor, k: C.ComplexTensor, v: C.ComplexTensor,
                                 log_decay: torch.Tensor, omega: torch.Tensor,
                                 initial_state: C.ComplexTensor | None = None, output_final_state: bool = False
                                 ) -> tuple[C.ComplexTensor, C.ComplexTensor | None]:
    """The definition, one step per token (the reference of the tests)."""
    _check(q, k, v, log_decay, omega, initial_state)
    qp, kp, vp = q.planes, k.planes, v.planes
    dv = vp.shape[-1]
    rot = turns(omega, torch.ones(1, device=omega.device), qp.dtype).planes[:, 0, :, None]  # (2, d_k, 1)
    if initial_state is None:
        s = qp.new_zeros(2, *qp.shape[1:-2], qp.shape[-1], 2 * dv)
    else:
        s = initial_state.planes
    out = []
    for t in range(qp.shape[-2]):
        s = torch.stack((rot[0] * s[0] - rot[1] * s[1], rot[0] * s[1] + rot[1] * s[0]))  # R S
        vt = torch.cat((vp[0, ..., t, :], vp[1, ..., t, :]), dim=-1)[..., None, :]  # (..., 1, 2 d_v)
        s = torch.exp(log_decay[..., t, None, None]) * s + kp[:, ..., t, :, None] * vt
        y = (qp[0, ..., t, :, None] * s[0] + qp[1, ..., t, :, None] * s[1]).sum(dim=-2)  # Re(q^H S), (..., 2 d_v)
        out.append(torch.stack((y[..., :dv], y[..., dv:]))[..., None, :])
    y = torch.cat(out, dim=-2) if out else vp.new_zeros(vp.shape)
    return C.ComplexTensor(y), C.ComplexTensor(s) if output_final_state else None


def complex_retention(q: C.ComplexTensor, k: C.ComplexTensor, v: C.ComplexTensor, log_decay: torch.Tensor,
                      omega: torch.Tensor, initial_state: C.ComplexTensor | None = None,
                      output_final_state: bool = False, chunk_size: int | None = None
                      ) -> tuple[C.ComplexTensor, C.ComplexTensor | None]:
    """The parallel form: turned keys and queries through the decayed linear attention (module docstring)."""
    _check(q, k, v, log_decay, omega, initial_state)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, min_value=1)
    dtype, s = q.dtype, q.shape[-2]
    positions = torch.arange(1, s + 1, dtype=torch.float64, device=log_decay.device)
    back = turns(-omega, positions, dtype)  # exp(-i omega t), (S, d_k)
    qt, kt = C.mul(q, back).planes, C.mul(k, back).planes
    qr = torch.cat((qt[0], qt[1]), dim=-1)  # (..., S, 2 d_k): Re(conj(a) b) = ar . br + ai . bi
    kr = torch.cat((kt[0], kt[1]), dim=-1)
    vr = torch.cat((v.planes[0], v.planes[1]), dim=-1)  # (..., S, 2 d_v)
    dv = v.shape[-1]
    if output_final_state or initial_state is not None:
        w0 = None if initial_state is None else torch.cat((initial_state.planes[0], initial_state.planes[1]), dim=-2)
        y, w = hebbian_parallel_with_state(qr, kr, vr, log_decay, 1.0, chunk_size, w0)
        w = torch.stack((w[..., : q.shape[-1], :], w[..., q.shape[-1]:, :]))  # (2, ..., d_k, 2 d_v)
        turn = turns(omega, torch.full((1,), float(s), dtype=torch.float64, device=log_decay.device), dtype)
        state = C.mul(C.ComplexTensor(w), C.ComplexTensor(turn.planes.transpose(1, 2)))  # exp(i omega S) S
    else:
        y, state = hebbian_parallel(qr, kr, vr, log_decay, 1.0, chunk_size), None
    y = C.ComplexTensor(torch.stack((y[..., :dv], y[..., dv:])))
    return y, state if output_final_state else None


__all__ = ["complex_retention", "complex_retention_sequential", "turns"]

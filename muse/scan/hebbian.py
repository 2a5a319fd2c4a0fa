"""Decayed causal linear attention (dissipative Hebbian fast weights): sequential and parallel forms.

:func:`hebbian_sequential` is the plain loop that states the definition; :func:`hebbian_parallel`
the vectorised (optionally chunked) form the model uses.  The recurrence

    W_t = exp(l_t) W_{t-1} + eta k_t v_t^T,   y_t = q_t^T W_t,   W_0 = 0,

with l_t = log-decay <= 0 (the model uses l_t = -dt * Gamma_t), unrolls to

    y_t = eta * sum_{s <= t} exp(L_t - L_s) (q_t . k_s) v_s,   L_t = sum_{r <= t} l_r.

L_t - L_s is formed as a segment sum sum_{s < r <= t} l_r (no difference of two
large cumulative sums, which loses precision for long sequences) and set to -inf
for s > t BEFORE the exp, so masked weights are exact zeros and no inf * 0 arises.
With ``chunk_size`` the sequence is cut into chunks: the quadratic form inside each
chunk, the fast-weight state W passed between chunks (again by segment sums over
chunk totals), so memory is O(S * chunk) instead of O(S^2).

:func:`hebbian_parallel_with_state` continues a sequence from a fast-weight state W_0 and returns
W at its end (Phase 2's incremental decoding): the state is (..., d_k, d_v) whatever the length.

Pure torch (autograd, CPU and GPU), float32 or float64.  Where ``muse.kernels.enabled`` picks
it (float32 on CUDA, or Triton's interpreter; also inside torch.compile), both parallel forms run
one Triton kernel forward and one backward instead (its own chunk length; ``chunk_size`` shapes
only the PyTorch form, the result is the same up to rounding); the PyTorch code here is the
reference and the CPU path.
"""

from __future__ import annotations

import math

import torch

from muse import kernels
from muse._checks import check_float, check_float_tensor, check_int


def _check_hebbian(q, k, v, log_decay, eta) -> float:
    for name, t in (("q", q), ("k", k), ("v", v), ("log_decay", log_decay)):
        check_float_tensor(name, t)
    if q.dim() < 2 or q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (..., S, d_k), got "
                         f"{tuple(q.shape)} and {tuple(k.shape)}")
    if v.dim() != q.dim() or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v must have shape {tuple(q.shape[:-1])} + (d_v,), got {tuple(v.shape)}")
    if log_decay.shape != q.shape[:-1]:
        raise ValueError(f"log_decay must have shape {tuple(q.shape[:-1])}, got {tuple(log_decay.shape)}")
    if len({q.dtype, k.dtype, v.dtype, log_decay.dtype}) != 1:
        raise TypeError("q, k, v and log_decay must share one dtype, got "
                        f"{q.dtype}, {k.dtype}, {v.dtype}, {log_decay.dtype}")
    return check_float("eta", eta)


def _check_state(initial_state: object, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The W_0 of a continued sequence: zeros for None, else a (..., d_k, d_v) tensor of q's dtype."""
    shape = (*q.shape[:-2], q.shape[-1], v.shape[-1])
    if initial_state is None:
        return q.new_zeros(shape)
    check_float_tensor("initial_state", initial_state)
    if tuple(initial_state.shape) != shape or initial_state.dtype != q.dtype:
        raise ValueError(f"initial_state must have shape {shape} and dtype {q.dtype}, got "
                         f"{tuple(initial_state.shape)} and {initial_state.dtype}")
    return initial_state


def hebbian_sequential(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                       eta: float = 1.0, initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """Reference loop: W_t = exp(l_t) W_{t-1} + eta k_t v_t^T, y_t = q_t^T W_t.

    q, k (..., S, d_k); v (..., S, d_v); log_decay l (..., S), <= 0; W_0 = ``initial_state``
    (..., d_k, d_v) or zeros.  Returns (..., S, d_v).
    """
    eta = _check_hebbian(q, k, v, log_decay, eta)
    w = _check_state(initial_state, q, v)  # (..., d_k, d_v)
    out = [v[..., :0, :]]  # keeps an empty sequence valid
    for t in range(q.shape[-2]):
        w = torch.exp(log_decay[..., t, None, None]) * w + eta * k[..., t, :, None] * v[..., t, None, :]
        out.append((q[..., t, :, None] * w).sum(dim=-2)[..., None, :])  # (..., 1, d_v)
    return torch.cat(out, dim=-2)  # (..., S, d_v)


def segment_sum(x: torch.Tensor) -> torch.Tensor:
    """out[..., t, s] = sum_{s < r <= t} x[..., r] for s <= t, -inf for s > t; x (..., n) -> (..., n, n).

    Each entry sums only its own terms (a masked cumsum), so it is as accurate as a
    short sum even where the full cumulative sum is large.
    """
    n = x.shape[-1]
    strict = torch.ones(n, n, dtype=torch.bool, device=x.device).tril(-1)  # r > s
    xx = x[..., :, None].expand(*x.shape, n)  # (..., n_r, n_s): xx[..., r, s] = x_r
    seg = torch.cumsum(xx.masked_fill(~strict, 0.0), dim=-2)  # (..., n_t, n_s)
    causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril(0)  # s <= t
    return seg.masked_fill(~causal, -math.inf)


def hebbian_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                     eta: float = 1.0, chunk_size: int | None = None) -> torch.Tensor:
    """y_t = eta * sum_{s <= t} exp(L_t - L_s) (q_t . k_s) v_s, in parallel (optionally chunked).

    Shapes as :func:`hebbian_sequential`.  ``chunk_size`` None: one chunk (O(S^2)
    memory per head); an int c: chunks of c positions (O(S c) plus one d_k x d_v state
    per chunk).
    """
    eta = _check_hebbian(q, k, v, log_decay, eta)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, min_value=1)
    if _use_kernel(q, k, v, log_decay):
        return _HebbianKernel.apply(q, k, v, log_decay, eta, None)[0]
    return _parallel(q, k, v, log_decay, eta, chunk_size)


def _use_kernel(*tensors: torch.Tensor | None) -> bool:
    """The Triton kernel: float32 tensors where ``muse.kernels.enabled`` says so (also inside torch.compile)."""
    present = [t for t in tensors if t is not None]
    return all(t.dtype == torch.float32 for t in present) and kernels.enabled(*present, in_compile=True)


def _parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, eta: float,
              chunk_size: int | None) -> torch.Tensor:
    """The PyTorch form of :func:`hebbian_parallel` (checked arguments)."""
    n = q.shape[-2]
    c = max(n, 1) if chunk_size is None else chunk_size
    if n == 0:
        return v * 0.0  # empty, and still on v's graph: a backward through an empty sequence is valid
    c = min(c, n)
    n_chunks = -(-n // c)
    pad = n_chunks * c - n
    if pad:  # padding sits after every real position, so it cannot reach them
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        log_decay = torch.nn.functional.pad(log_decay, (0, pad))
    lead = q.shape[:-2]
    qc = q.reshape(*lead, n_chunks, c, q.shape[-1])  # (..., N, c, d_k)
    kc = k.reshape(*lead, n_chunks, c, k.shape[-1])  # (..., N, c, d_k)
    vc = v.reshape(*lead, n_chunks, c, v.shape[-1])  # (..., N, c, d_v)
    lc = log_decay.reshape(*lead, n_chunks, c)  # (..., N, c)

    # Inside each chunk: masked decay matrix, exact zeros above the diagonal.
    decay = torch.exp(segment_sum(lc))  # (..., N, c_t, c_s)
    scores = qc @ kc.transpose(-1, -2)  # (..., N, c_t, c_s)
    y = eta * ((scores * decay) @ vc)  # (..., N, c, d_v)

    if n_chunks > 1:
        # State carried in from earlier chunks.  Within chunk n:
        #   to_end_s = sum_{s < r < end} l_r (decay from s to the chunk end),
        #   from_start_t = sum_{start <= r <= t} l_r (decay of the incoming state up to t).
        to_end = torch.flip(torch.cumsum(torch.flip(lc[..., 1:], (-1,)), dim=-1), (-1,))  # (..., N, c-1)
        to_end = torch.cat([to_end, torch.zeros_like(lc[..., :1])], dim=-1)  # (..., N, c)
        from_start = torch.cumsum(lc, dim=-1)  # (..., N, c)
        # U_n = eta * sum_s exp(to_end_s) k_s v_s^T: what chunk n adds to the state.
        u = eta * ((kc * torch.exp(to_end)[..., None]).transpose(-1, -2) @ vc)  # (..., N, d_k, d_v)
        # State entering chunk n: S_n = sum_{m < n} exp(sum_{m < j < n} total_j) U_m.
        # segment_sum over chunk totals gives sum_{m < j <= n'} total_j; shifting by one
        # chunk (n' = n - 1) gives the decays between the end of chunk m and the start of n.
        totals = lc.sum(dim=-1)  # (..., N)
        chunk_decay = torch.exp(segment_sum(totals))  # (..., N_to, N_from), chunk_decay[n', m]
        states = torch.einsum("...nm,...mkv->...nkv", chunk_decay[..., :-1, :-1], u[..., :-1, :, :])
        states = torch.cat([torch.zeros_like(u[..., :1, :, :]), states], dim=-3)  # (..., N, d_k, d_v)
        y = y + (qc * torch.exp(from_start)[..., None]) @ states  # (..., N, c, d_v)

    return y.reshape(*lead, n_chunks * c, v.shape[-1])[..., :n, :]  # (..., S, d_v)


def hebbian_parallel_with_state(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                                eta: float = 1.0, chunk_size: int | None = None,
                                initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, W_S): :func:`hebbian_parallel` continued from W_0 = ``initial_state`` (None: zeros).

    y_t = (what :func:`hebbian_parallel` gives from W_0 = 0) + exp(L_t) q_t^T W_0 and
    W_S = exp(L_S) W_0 + eta sum_s exp(sum_{s < r <= S} l_r) k_s v_s^T, with L_t = sum_{r <= t} l_r
    over this call's positions; the decay to the end is a reversed cumsum (each entry sums only
    its own terms).  Shapes as :func:`hebbian_sequential`; W is (..., d_k, d_v).
    """
    eta = _check_hebbian(q, k, v, log_decay, eta)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, min_value=1)
    w0 = _check_state(initial_state, q, v)  # (..., d_k, d_v)
    if _use_kernel(q, k, v, log_decay, initial_state):
        return _HebbianKernel.apply(q, k, v, log_decay, eta, initial_state)
    return _parallel_with_state(q, k, v, log_decay, eta, chunk_size, w0)


class _HebbianKernel(torch.autograd.Function):
    """The Triton kernels (muse.kernels.hebbian_fwd / _bwd) with autograd: (y, W_S).  A backward that must
    itself be differentiable (create_graph=True) differentiates the PyTorch form instead."""

    @staticmethod
    def forward(ctx, q, k, v, log_decay, eta, w0):
        y, ws = kernels.hebbian_fwd(q, k, v, log_decay, eta, w0)
        ctx.eta = eta
        ctx.save_for_backward(q, k, v, log_decay, w0, ws)
        return y, ws

    @staticmethod
    def backward(ctx, grad_y, grad_state):
        q, k, v, log_decay, w0, ws = ctx.saved_tensors
        if torch.is_grad_enabled():
            return tuple(_reference_grads(q, k, v, log_decay, ctx.eta, w0, grad_y, grad_state))
        dq, dk, dv, dw0 = kernels.hebbian_bwd(q, k, v, log_decay, ctx.eta, w0, grad_y, grad_state)
        # log_decay enters through L_t = sum_{r <= t} l_r only: y_t = sum_s (q_t e^{L_t}) . (k_s e^{-L_s}) v_s
        # (+ q_t e^{L_t} W_0) and W_S = e^{L_S} (W_0 + sum_s k_s e^{-L_s} v_s^T), so dL_t = q_t . dq_t -
        # k_t . dk_t (+ <dW_S, W_S> at t = S), and dl_r = sum_{t >= r} dL_t.
        d_cum = (q * dq).sum(dim=-1) - (k * dk).sum(dim=-1)  # (..., S)
        if grad_state is not None and d_cum.shape[-1]:
            last = d_cum[..., -1:] + (grad_state * ws).sum(dim=(-2, -1))[..., None]
            d_cum = torch.cat([d_cum[..., :-1], last], dim=-1)
        d_log_decay = d_cum.flip(-1).cumsum(-1).flip(-1)  # (..., S)
        return dq, dk, dv, d_log_decay, None, None if w0 is None else dw0


def _reference_grads(q, k, v, log_decay, eta, w0, grad_y, grad_state) -> list:
    """Gradients (q, k, v, log_decay, eta, W_0) by autograd of the PyTorch form, with create_graph."""
    outs = _parallel_with_state(q, k, v, log_decay, eta, 128, _check_state(w0, q, v))
    pairs = [(o, g) for o, g in zip(outs, (grad_y, grad_state), strict=True) if o.requires_grad and g is not None]
    inputs = [q, k, v, log_decay, w0]
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    found = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True,
                                allow_unused=True) if pairs and wrt else [None] * len(wrt)
    by_id = {id(t): (torch.zeros_like(t) if gr is None else gr) for t, gr in zip(wrt, found, strict=True)}
    grads = [None if t is None else by_id.get(id(t)) for t in inputs]
    return [*grads[:4], None, grads[4]]


def hebbian_reference_with_state(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                                 eta: float, initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hebbian_parallel_with_state` in PyTorch whatever the switch says (the kernel's reference);
    chunks of 128."""
    eta = _check_hebbian(q, k, v, log_decay, eta)
    return _parallel_with_state(q, k, v, log_decay, eta, 128, _check_state(initial_state, q, v))


def _parallel_with_state(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, eta: float,
                         chunk_size: int | None, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch form of :func:`hebbian_parallel_with_state` (checked arguments, W_0 a tensor)."""
    y = _parallel(q, k, v, log_decay, eta, chunk_size)  # (..., S, d_v)
    if q.shape[-2] == 0:
        return y, w0
    from_start = torch.cumsum(log_decay, dim=-1)  # (..., S): L_t
    y = y + (q * torch.exp(from_start)[..., None]) @ w0  # (..., S, d_v)
    to_end = torch.flip(torch.cumsum(torch.flip(log_decay[..., 1:], (-1,)), dim=-1), (-1,))  # (..., S-1)
    to_end = torch.cat([to_end, torch.zeros_like(log_decay[..., :1])], dim=-1)  # (..., S)
    w = torch.exp(from_start[..., -1])[..., None, None] * w0 \
        + eta * ((k * torch.exp(to_end)[..., None]).transpose(-1, -2) @ v)  # (..., d_k, d_v)
    return y, w


__all__ = ["hebbian_parallel", "hebbian_parallel_with_state", "hebbian_reference_with_state", "hebbian_sequential",
           "segment_sum"]

"""Complex diagonal linear recurrence: a sequential reference and a chunked form.

Per channel d, with a constant complex decay

    lambda_d = exp(-exp(nu_d) + i omega_d),   |lambda_d| = exp(-exp(nu_d)) < 1,

and inputs x_t (which already carry any input gain, e.g. gamma * B u_t), the state is

    h_t = lambda * h_{t-1} + x_t,   h_{-1} = initial_state (0 if None),

and the output is y_t = h_t.  Unrolled: h_t = sum_{s <= t} lambda^(t-s) x_s + lambda^(t+1) h_{-1}.

Both forms share the fla-style signature
``y, final_state = op(x, nu, omega, initial_state=None, output_final_state=False)``;
``x`` is a planar :class:`~muse.complex.ComplexTensor` (..., S, D); ``nu`` and ``omega``
are real (D,) tensors.  Arithmetic runs in float32 (float64 when ``x`` is float64), the
state is kept in that dtype, and ``y`` is rounded once to ``out_dtype`` (default x.dtype).

* :func:`complex_diag_scan_sequential` -- the definition, one Python step per token.
* :func:`complex_diag_scan` -- the chunked form the model uses.  The sequence is cut into
  chunks of length L.  Inside a chunk, h = T x with the lower-triangular Toeplitz matrix
  T[k, j] = lambda^(k-j) (one batched GEMM per plane); the chunk-end states are then
  combined by a second, (n_c x n_c) Toeplitz product with entries lambda^(L m); finally each
  position adds lambda^(k+1) times the state entering its chunk.  Each distinct power (L + 1
  within a chunk, n_c across chunks) is evaluated once and gathered into the Toeplitz matrices;
  every power lambda^n is
  evaluated directly as exp(n (-exp(nu))) (cos(n omega) + i sin(n omega)) in float64 and
  rounded once to the compute dtype, so no error accumulates through repeated
  multiplication (in float32 the phase n*omega alone would be off by ~n*omega*2^-24, about
  1.5e-3 rad at n = 8192).  Masked entries (k < j) are exact zeros, so the form is causal
  bit for bit.  The error bound is in docs/numerics.md ("Complex diagonal recurrence").

Everything is plain torch (autograd, CPU and CUDA) and compiles with ``torch.compile``.
"""

from __future__ import annotations

import math

import torch

import muse.complex as C
from muse._checks import check_float_tensor, check_int, check_type
from muse.complex.recompute import recomputed

MIN_CHUNK, MAX_CHUNK = 8, 64


def default_chunk_size(seq_len: int) -> int:
    """The chunk length for a sequence of ``seq_len``: the power of two nearest sqrt(S), in [8, 64].

    sqrt(S) balances the two Toeplitz products (O(S L) and O(S^2 / L) work per channel).  Found by
    integer comparisons only (L doubles while S > 2 L^2; a tie S = 2 L^2 rounds log2 L to even, as
    ``round`` does): under ``torch.compile`` with a dynamic S the comparisons become guards and L a
    constant, where ``sqrt``/``log2`` of S would put a symbolic float in the kernels (torch 2.11's
    Triton code generator then fails on an fp64 floor division).
    """
    check_int("seq_len", seq_len, min_value=0)
    chunk = MIN_CHUNK
    while chunk < MAX_CHUNK and seq_len > 2 * chunk * chunk:
        chunk *= 2
    if chunk < MAX_CHUNK and seq_len == 2 * chunk * chunk and chunk.bit_length() % 2 == 0:
        chunk *= 2
    return chunk


def decay_powers(nu: torch.Tensor, omega: torch.Tensor, n: torch.Tensor,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(Re, Im) of lambda^n for integer exponents ``n`` >= 0 (any shape) -> (*n.shape, D) in ``dtype``.

    Evaluated in float64 (n * omega is exact there for |n| < 2^29) and rounded once.  They depend on
    the parameters only, so with gradients on they are recomputed in backward rather than their
    float64 intermediates kept (same values).  Eager only: under torch.compile the partitioner
    decides what to recompute.
    """
    return recomputed(_decay_powers, nu, omega, n, dtype)


def _decay_powers(nu: torch.Tensor, omega: torch.Tensor, n: torch.Tensor,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    nu64, om64 = nu.to(torch.float64), omega.to(torch.float64)
    nf = n.to(device=nu.device, dtype=torch.float64).unsqueeze(-1)  # (*n, 1)
    mag = torch.exp(-nf * torch.exp(nu64))  # (*n, D)
    ang = nf * om64
    return (mag * torch.cos(ang)).to(dtype), (mag * torch.sin(ang)).to(dtype)


def _check_args(x, nu, omega, initial_state, output_final_state, out_dtype):
    check_type("x", x, C.ComplexTensor, "a ComplexTensor of shape (..., seq, channels)")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., seq, channels), got {tuple(x.shape)}")
    channels = x.shape[-1]
    for name, p in (("nu", nu), ("omega", omega)):
        check_float_tensor(name, p)
        if p.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},) (one value per channel of x), "
                             f"got {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"x is on {x.device} but {name} is on {p.device}; move them to the same device")
    return check_state_and_out_dtype(x, initial_state, output_final_state, out_dtype)


def check_state_and_out_dtype(x: C.ComplexTensor, initial_state, output_final_state, out_dtype) -> torch.dtype:
    """The arguments every diagonal scan shares, checked by name: ``initial_state`` (None or a ComplexTensor of
    x's batch dims and channels, on x's device), ``output_final_state`` (bool), ``out_dtype`` (None: x's)."""
    channels = x.shape[-1]
    if initial_state is not None:
        check_type("initial_state", initial_state, C.ComplexTensor, "a ComplexTensor or None")
        want = (*x.shape[:-2], channels)
        if tuple(initial_state.shape) != want:
            raise ValueError(f"initial_state must have shape {want} (x's batch dims and channels), "
                             f"got {tuple(initial_state.shape)}")
        if initial_state.device != x.device:
            raise ValueError(f"x is on {x.device} but initial_state is on {initial_state.device}")
    check_type("output_final_state", output_final_state, bool, "a bool")
    if out_dtype is None:
        return x.dtype
    check_type("out_dtype", out_dtype, torch.dtype, "a torch.dtype")
    if out_dtype not in (torch.float16, torch.float32, torch.float64):
        raise TypeError(f"out_dtype must be float16, float32 or float64, got {out_dtype}")
    return out_dtype


def _split(x: C.ComplexTensor, initial_state: C.ComplexTensor | None, cd: torch.dtype):
    """Planes in the compute dtype, batch dims flattened: x (2, B, S, D), h0 (2, B, D) or None."""
    seq, channels = x.shape[-2], x.shape[-1]
    batch = math.prod(x.shape[:-2])
    xp = x.planes.to(cd).reshape(2, batch, seq, channels)
    h0 = None if initial_state is None else initial_state.planes.to(cd).reshape(2, xp.shape[1], channels)
    return xp, h0


def _finish(y: torch.Tensor, h_last: torch.Tensor | None, x: C.ComplexTensor, out_dtype: torch.dtype,
            output_final_state: bool):
    out = C.ComplexTensor(y.to(out_dtype).reshape(2, *x.shape))
    if not output_final_state:
        return out, None
    return out, C.ComplexTensor(h_last.reshape(2, *x.shape[:-2], x.shape[-1]))


def complex_diag_scan_sequential(x: C.ComplexTensor, nu: torch.Tensor, omega: torch.Tensor,
                                 initial_state: C.ComplexTensor | None = None,
                                 output_final_state: bool = False, out_dtype: torch.dtype | None = None):
    """Reference: h_t = lambda h_{t-1} + x_t, one step per token; returns (y, final_state or None).

    lambda is rounded once to the compute dtype and the state multiplied by it S times,
    so in float32 the error grows with t (about 2t u sum |lambda|^(t-s) |x_s|); in float64 it
    is the reference the chunked form is checked against.
    """
    out_dtype = _check_args(x, nu, omega, initial_state, output_final_state, out_dtype)
    cd = C.compute_dtype(x.dtype)
    xp, h0 = _split(x, initial_state, cd)
    lr, li = decay_powers(nu, omega, torch.ones((), dtype=torch.long), cd)  # (D,)
    hr = xp.new_zeros(xp.shape[1], xp.shape[3]) if h0 is None else h0[0]
    hi = torch.zeros_like(hr) if h0 is None else h0[1]
    outs = []
    for t in range(xp.shape[2]):
        hr, hi = lr * hr - li * hi + xp[0, :, t], lr * hi + li * hr + xp[1, :, t]  # (B, D)
        outs.append(torch.stack((hr, hi)))
    y = torch.stack(outs, dim=2) if outs else xp.new_zeros(xp.shape)  # (2, B, S, D)
    return _finish(y, torch.stack((hr, hi)), x, out_dtype, output_final_state)


def complex_diag_step(x: C.ComplexTensor, nu: torch.Tensor, omega: torch.Tensor,
                      state: C.ComplexTensor | None = None) -> C.ComplexTensor:
    """One step h = lambda state + x for x (..., D); returns the new state in the compute dtype."""
    check_type("x", x, C.ComplexTensor, "a ComplexTensor of shape (..., channels)")
    if x.ndim < 1:
        raise ValueError("x must have a channel dimension, got a 0-d ComplexTensor")
    y, h = complex_diag_scan_sequential(x.unsqueeze(-2), nu, omega, initial_state=state, output_final_state=True,
                                        out_dtype=C.compute_dtype(x.dtype))
    return h


def _chunked_planes(xp: torch.Tensor, nu: torch.Tensor, omega: torch.Tensor, h0: torch.Tensor | None,
                    chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked scan on planes: xp (2, B, S, D) -> (h (2, B, S, D), h_S-1 (2, B, D)); pure tensor code."""
    _, batch, seq, channels = xp.shape
    cd = xp.dtype
    nc = -(-seq // chunk)
    pad = nc * chunk - seq
    if pad:
        xp = torch.cat([xp, xp.new_zeros(2, batch, pad, channels)], dim=2)  # zeros after the end: causal
    xc = xp.reshape(2, batch, nc, chunk, channels)  # (2, B, nc, L, D)
    dev = xp.device

    # 1. inside each chunk: local_k = sum_{j <= k} lambda^(k-j) x_j
    k = torch.arange(chunk, device=dev)
    lag = k[:, None] - k[None, :]  # (L, L)
    # the L + 1 distinct powers lambda^0 .. lambda^L (steps 1 and 3), gathered into the Toeplitz matrix:
    # evaluating them on the (L, L) lag matrix itself made L times the float64 temporaries
    powers_r, powers_i = decay_powers(nu, omega, torch.arange(chunk + 1, device=dev), cd)  # (L + 1, D)
    tr, ti = powers_r[lag.clamp(min=0)], powers_i[lag.clamp(min=0)]  # (L, L, D)
    keep = (lag >= 0)[..., None]
    tr, ti = torch.where(keep, tr, 0.0), torch.where(keep, ti, 0.0)
    a = torch.einsum("kjd,pbcjd->pbckd", tr, xc)  # (2, B, nc, L, D): Tr x_re, Tr x_im
    b = torch.einsum("kjd,pbcjd->pbckd", ti, xc)  # Ti x_re, Ti x_im
    local = torch.stack((a[0] - b[1], a[1] + b[0]))  # (2, B, nc, L, D)

    # 2. across chunks: H_c = sum_{c' <= c} lambda^(L (c - c')) e_c' + lambda^(L (c + 1)) h0; the h0 term is added
    # after the (nc x nc) product (traced with a dynamic length, an (nc + 1)^2 product with h0 as chunk -1 broke
    # inductor's value ranges in backward; the slice of `local` is made contiguous, whose strides inductor's
    # backward otherwise took from the first length it saw)
    ends = local[:, :, :, -1].contiguous()  # (2, B, nc, D)
    c = torch.arange(nc, device=dev)
    clag = c[:, None] - c[None, :]  # (nc, nc)
    gr, gi = decay_powers(nu, omega, torch.arange(nc + 1, device=dev) * chunk, cd)  # (nc + 1, D): lambda^(L c)
    qr, qi = gr[clag.clamp(min=0)], gi[clag.clamp(min=0)]  # (nc, nc, D)
    ckeep = (clag >= 0)[..., None]
    qr, qi = torch.where(ckeep, qr, 0.0), torch.where(ckeep, qi, 0.0)
    a = torch.einsum("cgd,pbgd->pbcd", qr, ends)
    b = torch.einsum("cgd,pbgd->pbcd", qi, ends)
    states = torch.stack((a[0] - b[1], a[1] + b[0]))  # (2, B, nc, D): the state after each chunk
    if h0 is None:
        first = states.new_zeros(2, batch, 1, channels)
    else:
        sr, si = gr[1:], gi[1:]  # (nc, D): lambda^(L (c + 1))
        h0r, h0i = h0[0][:, None], h0[1][:, None]  # (B, 1, D)
        states = states + torch.stack((sr * h0r - si * h0i, sr * h0i + si * h0r))
        first = h0[:, :, None]
    entering = torch.cat([first, states[:, :, :-1]], dim=2)  # (2, B, nc, D): h0 (or 0), H_0, ..., H_{nc-2}

    # 3. each position adds lambda^(k+1) times the state entering its chunk
    pr, pi = powers_r[1:], powers_i[1:]  # (L, D): lambda^(k + 1)
    er, ei = entering[0][:, :, None], entering[1][:, :, None]  # (B, nc, 1, D)
    hr = local[0] + (pr * er - pi * ei)
    hi = local[1] + (pr * ei + pi * er)
    h = torch.stack((hr, hi)).reshape(2, batch, nc * chunk, channels)[:, :, :seq]
    return h, h[:, :, -1]


def complex_diag_scan(x: C.ComplexTensor, nu: torch.Tensor, omega: torch.Tensor,
                      initial_state: C.ComplexTensor | None = None, output_final_state: bool = False,
                      out_dtype: torch.dtype | None = None, chunk_size: int | None = None):
    """Chunked scan: same values as :func:`complex_diag_scan_sequential` within the bound of docs/numerics.md.

    Returns ``(y, final_state)``: y (..., S, D) in ``out_dtype``; final_state (..., D) in the
    compute dtype when ``output_final_state`` is true, else None.  ``chunk_size`` defaults
    to :func:`default_chunk_size`.
    """
    out_dtype = _check_args(x, nu, omega, initial_state, output_final_state, out_dtype)
    seq = x.shape[-2]
    chunk = default_chunk_size(seq) if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
    cd = C.compute_dtype(x.dtype)
    xp, h0 = _split(x, initial_state, cd)
    if seq == 0:
        h_last = h0 if h0 is not None else xp.new_zeros(2, xp.shape[1], xp.shape[3])
        return _finish(xp, h_last, x, out_dtype, output_final_state)
    with C.fp32_accumulation(xp.device):
        h, h_last = _chunked_planes(xp, nu, omega, h0, chunk)
    return _finish(h, h_last, x, out_dtype, output_final_state)


__all__ = [
    "complex_diag_scan", "complex_diag_scan_sequential", "complex_diag_step", "decay_powers",
    "default_chunk_size",
]

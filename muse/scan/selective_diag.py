"""Diagonal linear recurrence with a decay per token (a selective scan): sequential and chunked forms.

Per channel d and position t, with a real log-decay l_t <= 0 given per token (Griffin's RG-LRU and
Mamba make it a function of the input; Stage 1's ``ComplexRecurrence(decay="input")`` does),

    h_t = exp(l_t) h_{t-1} + x_t,   h_{-1} = initial_state (0 if None),

and the output is y_t = h_t.  Unrolled: h_t = sum_{s <= t} exp(sum_{s < r <= t} l_r) x_s + exp(sum_{r <= t} l_r) h_{-1}.
x and h are complex (planar); the decay is real, so the two planes run the same real recurrence.

Signature as :mod:`muse.scan.complex_diag`:
``y, final_state = op(x, log_decay, initial_state=None, output_final_state=False, out_dtype=None)``; ``x`` a
planar :class:`~muse.complex.ComplexTensor` (..., S, D), ``log_decay`` a real (..., S, D) tensor of the
compute dtype (float32, or float64 for float64 x).  Arithmetic in that dtype, y rounded once to ``out_dtype``.

* :func:`selective_diag_scan_sequential` -- the definition, one step per token.
* :func:`selective_diag_scan` -- chunks of L tokens.  Inside a chunk, h = T x with
  T[k, j] = exp(sum_{j < r <= k} l_r) for j <= k and an exact 0 above the diagonal (the segment sums of
  :func:`muse.scan.hebbian.segment_sum`, each a short sum of its own terms, so every exponent is <= 0 and
  nothing overflows however strong the decay); the states entering the chunks follow from the chunk totals
  by the same segment sums over chunks.  Causal bit for bit: masked entries are exact zeros.

Pure torch (autograd, CPU and CUDA); compiles with ``torch.compile``.
"""

from __future__ import annotations

import math

import torch

import muse.complex as C
from muse._checks import check_float_tensor, check_int, check_type
from muse.scan.hebbian import segment_sum

DEFAULT_CHUNK = 32


def _check_args(x, log_decay, initial_state, output_final_state, out_dtype):
    check_type("x", x, C.ComplexTensor, "a ComplexTensor of shape (..., seq, channels)")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., seq, channels), got {tuple(x.shape)}")
    check_float_tensor("log_decay", log_decay)
    if tuple(log_decay.shape) != tuple(x.shape):
        raise ValueError(f"log_decay must have x's shape {tuple(x.shape)}, got {tuple(log_decay.shape)}")
    cd = C.compute_dtype(x.dtype)
    if log_decay.dtype != cd:
        raise TypeError(f"log_decay must be {cd} (x's compute dtype), got {log_decay.dtype}")
    if log_decay.device != x.device:
        raise ValueError(f"x is on {x.device} but log_decay is on {log_decay.device}; move them to the same device")
    if initial_state is not None:
        check_type("initial_state", initial_state, C.ComplexTensor, "a ComplexTensor or None")
        want = (*x.shape[:-2], x.shape[-1])
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


def _h0(initial_state: C.ComplexTensor | None, x: C.ComplexTensor, cd: torch.dtype) -> torch.Tensor:
    if initial_state is None:
        return x.planes.new_zeros(2, *x.shape[:-2], x.shape[-1], dtype=cd)
    return initial_state.planes.to(cd)


def _finish(y: torch.Tensor, h_last: torch.Tensor, out_dtype: torch.dtype, output_final_state: bool):
    return C.ComplexTensor(y.to(out_dtype)), C.ComplexTensor(h_last) if output_final_state else None


def selective_diag_scan_sequential(x: C.ComplexTensor, log_decay: torch.Tensor,
                                   initial_state: C.ComplexTensor | None = None,
                                   output_final_state: bool = False, out_dtype: torch.dtype | None = None):
    """Reference: h_t = exp(l_t) h_{t-1} + x_t, one step per token; returns (y, final_state or None)."""
    out_dtype = _check_args(x, log_decay, initial_state, output_final_state, out_dtype)
    cd = log_decay.dtype
    xp = x.planes.to(cd)  # (2, ..., S, D)
    a = torch.exp(log_decay)
    h = _h0(initial_state, x, cd)
    outs = []
    for t in range(x.shape[-2]):
        h = a[..., t, :] * h + xp[..., t, :]
        outs.append(h)
    y = torch.stack(outs, dim=-2) if outs else xp.new_zeros(xp.shape)
    return _finish(y, h, out_dtype, output_final_state)


def selective_diag_step(x: C.ComplexTensor, log_decay: torch.Tensor,
                        state: C.ComplexTensor | None = None) -> C.ComplexTensor:
    """One step h = exp(l) state + x for x and l (..., D); returns the new state in the compute dtype."""
    check_type("x", x, C.ComplexTensor, "a ComplexTensor of shape (..., channels)")
    if x.ndim < 1:
        raise ValueError("x must have a channel dimension, got a 0-d ComplexTensor")
    check_float_tensor("log_decay", log_decay)
    _, h = selective_diag_scan_sequential(x.unsqueeze(-2), log_decay.unsqueeze(-2), initial_state=state,
                                          output_final_state=True, out_dtype=C.compute_dtype(x.dtype))
    return h


def selective_diag_scan(x: C.ComplexTensor, log_decay: torch.Tensor, initial_state: C.ComplexTensor | None = None,
                        output_final_state: bool = False, out_dtype: torch.dtype | None = None,
                        chunk_size: int | None = None):
    """The chunked form of :func:`selective_diag_scan_sequential` (chunks of ``chunk_size``, default 32)."""
    out_dtype = _check_args(x, log_decay, initial_state, output_final_state, out_dtype)
    chunk = DEFAULT_CHUNK if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
    cd = log_decay.dtype
    h0 = _h0(initial_state, x, cd)  # (2, ..., D)
    seq = x.shape[-2]
    if seq == 0:
        return _finish(x.planes.to(cd), h0, out_dtype, output_final_state)
    chunk = min(chunk, seq)
    n_chunks = -(-seq // chunk)
    pad = n_chunks * chunk - seq
    # channels before positions: v (2, ..., D, S), l (..., D, S); padding after the end cannot reach back
    v = torch.nn.functional.pad(x.planes.to(cd).transpose(-1, -2), (0, pad))
    lt = torch.nn.functional.pad(log_decay.transpose(-1, -2), (0, pad))
    vc = v.reshape(*v.shape[:-1], n_chunks, chunk)  # (2, ..., D, N, L)
    lc = lt.reshape(*lt.shape[:-1], n_chunks, chunk)  # (..., D, N, L)

    decay = torch.exp(segment_sum(lc))  # (..., D, N, L_t, L_s), exact zeros for s > t
    y = (decay @ vc.unsqueeze(-1)).squeeze(-1)  # (2, ..., D, N, L): in-chunk sums from a zero state

    # the decay from position s to its chunk's end (reversed cumsum: each entry sums only its own terms)
    to_end = torch.flip(torch.cumsum(torch.flip(lc[..., 1:], (-1,)), dim=-1), (-1,))
    to_end = torch.cat([to_end, torch.zeros_like(lc[..., :1])], dim=-1)  # (..., D, N, L)
    added = (torch.exp(to_end) * vc).sum(dim=-1)  # (2, ..., D, N): what each chunk adds to the state
    # states S_0 = h0, S_{m+1} = exp(total_m) S_m + added_m, as one segment-sum product over N + 1 entries
    totals = torch.cat([torch.zeros_like(lc[..., :1, 0]), lc.sum(dim=-1)], dim=-1)  # (..., D, N + 1)
    entries = torch.cat([h0.unsqueeze(-1), added], dim=-1)  # (2, ..., D, N + 1)
    states = (torch.exp(segment_sum(totals)) @ entries.unsqueeze(-1)).squeeze(-1)  # (2, ..., D, N + 1)
    from_start = torch.cumsum(lc, dim=-1)  # (..., D, N, L): decay of the entering state up to t
    y = y + torch.exp(from_start) * states[..., :-1].unsqueeze(-1)
    y = y.reshape(*y.shape[:-2], n_chunks * chunk)[..., :seq].transpose(-1, -2)  # (2, ..., S, D)
    return _finish(y, states[..., -1], out_dtype, output_final_state)


__all__ = ["DEFAULT_CHUNK", "selective_diag_scan", "selective_diag_scan_sequential", "selective_diag_step"]

"""Diagonal linear recurrence with a decay per token (a selective scan): sequential and chunked forms.

Per channel d and position t, with a real log-decay l_t <= 0 given per token (Griffin's RG-LRU and
Mamba make it a function of the input; Stage 1's ``ComplexRecurrence(decay="input")`` does),

    h_t = exp(l_t) h_{t-1} + x_t,   h_{-1} = initial_state (0 if None),

and the output is y_t = h_t.  Unrolled: h_t = sum_{s <= t} exp(sum_{s < r <= t} l_r) x_s + exp(sum_{r <= t} l_r) h_{-1}.
x and h are complex (planar); the decay is real, so the two planes run the same real recurrence.

``phase`` (a real theta_t per token, optional) makes the decay complex, h_t = exp(l_t + i theta_t) h_{t-1} + x_t (a
per-token rotation of the state, Mamba-3's data-dependent rotation).  The parallel form runs the real recurrence on
the counter-rotated inputs: with Phi_t = sum_{r <= t} theta_r, g_t = exp(-i Phi_t) h_t obeys
g_t = exp(l_t) g_{t-1} + exp(-i Phi_t) x_t from g_{-1} = h_{-1}, and h_t = exp(i Phi_t) g_t.  Phi is summed in float64
and reduced mod 2 pi before the rotations are taken in the compute dtype, so its rounding does not grow with S.

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

Pure torch (autograd, CPU and CUDA); compiles with ``torch.compile``.  Where ``muse.kernels.enabled`` picks it
(float32 on CUDA, or Triton's interpreter; also inside torch.compile), :func:`selective_diag_scan` runs one
Triton kernel forward and one backward instead (``muse.kernels.selective_scan_fwd`` / ``_bwd``: per lane, an
associative scan over tiles of tokens with the state carried between tiles, no (L x L) matrices, so memory is
that of the inputs and outputs); the chunked PyTorch form is the CPU path and the reference.
"""

from __future__ import annotations

import math

import torch

import muse.complex as C
from muse import kernels
from muse._checks import check_float_tensor, check_int, check_type
from muse.scan.complex_diag import check_state_and_out_dtype
from muse.scan.hebbian import segment_sum

DEFAULT_CHUNK = 32


def _check_per_token(name: str, t: object, x: C.ComplexTensor) -> None:
    check_float_tensor(name, t)
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
    cd = C.compute_dtype(x.dtype)
    if t.dtype != cd:
        raise TypeError(f"{name} must be {cd} (x's compute dtype), got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"x is on {x.device} but {name} is on {t.device}; move them to the same device")


def _check_args(x, log_decay, initial_state, output_final_state, out_dtype, phase=None):
    check_type("x", x, C.ComplexTensor, "a ComplexTensor of shape (..., seq, channels)")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., seq, channels), got {tuple(x.shape)}")
    _check_per_token("log_decay", log_decay, x)
    if phase is not None:
        _check_per_token("phase", phase, x)
    return check_state_and_out_dtype(x, initial_state, output_final_state, out_dtype)


def _turn(p: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The planes p (2, ...) times exp(i angle), given cos and sin of the angle."""
    return torch.stack((cos * p[0] - sin * p[1], sin * p[0] + cos * p[1]))


_SHORT_SCAN = 32


def _cumsum_seq(v: torch.Tensor) -> torch.Tensor:
    """torch.cumsum(v, dim=-2) as scans of at most 32 entries: in-block sums plus the block totals' own running
    sum.  Inductor (torch 2.11, CUDA) fails to generate its split scan for a long float64 cumsum, and scans of 32 or
    fewer are never split.  Each entry is still a sum of its own terms, each addition rounded once."""
    seq = v.shape[-2]
    if seq <= _SHORT_SCAN:
        return torch.cumsum(v, dim=-2)
    blocks = -(-seq // _SHORT_SCAN)
    padded = torch.nn.functional.pad(v, (0, 0, 0, blocks * _SHORT_SCAN - seq))
    inner = torch.cumsum(padded.unflatten(-2, (blocks, _SHORT_SCAN)), dim=-2)  # (..., blocks, 32, D)
    # (..., blocks, D): the running sum of the blocks before each one, shifted rather than subtracted, so no
    # entry depends on a later term even by a rounding (causal bit for bit)
    before = torch.nn.functional.pad(_cumsum_seq(inner[..., :-1, -1, :]), (0, 0, 1, 0))
    return (inner + before.unsqueeze(-2)).flatten(-3, -2)[..., :seq, :]


def rotations(phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos Phi, sin Phi) of Phi_t = sum_{r <= t} phase_r along the sequence (dim -2), in phase's dtype: summed in
    float64 and reduced mod 2 pi first, so each angle is within a rounding of 2 pi of its exact value."""
    total = torch.remainder(_cumsum_seq(phase.to(torch.float64)), 2.0 * math.pi).to(phase.dtype)
    return torch.cos(total), torch.sin(total)


def _h0(initial_state: C.ComplexTensor | None, x: C.ComplexTensor, cd: torch.dtype) -> torch.Tensor:
    if initial_state is None:
        return x.planes.new_zeros(2, *x.shape[:-2], x.shape[-1], dtype=cd)
    return initial_state.planes.to(cd)


def _finish(y: torch.Tensor, h_last: torch.Tensor, out_dtype: torch.dtype, output_final_state: bool):
    return C.ComplexTensor(y.to(out_dtype)), C.ComplexTensor(h_last) if output_final_state else None


def selective_diag_scan_sequential(x: C.ComplexTensor, log_decay: torch.Tensor,
                                   initial_state: C.ComplexTensor | None = None,
                                   output_final_state: bool = False, out_dtype: torch.dtype | None = None,
                                   phase: torch.Tensor | None = None):
    """Reference: h_t = exp(l_t + i phase_t) h_{t-1} + x_t (phase None: 0), one step per token; returns
    (y, final_state or None)."""
    out_dtype = _check_args(x, log_decay, initial_state, output_final_state, out_dtype, phase)
    cd = log_decay.dtype
    xp = x.planes.to(cd)  # (2, ..., S, D)
    a = torch.exp(log_decay)
    h = _h0(initial_state, x, cd)
    turn = None if phase is None else (torch.cos(phase), torch.sin(phase))
    outs = []
    for t in range(x.shape[-2]):
        prev = h if turn is None else _turn(h, turn[0][..., t, :], turn[1][..., t, :])
        h = a[..., t, :] * prev + xp[..., t, :]
        outs.append(h)
    y = torch.stack(outs, dim=-2) if outs else xp.new_zeros(xp.shape)
    return _finish(y, h, out_dtype, output_final_state)


def selective_diag_step(x: C.ComplexTensor, log_decay: torch.Tensor,
                        state: C.ComplexTensor | None = None, phase: torch.Tensor | None = None) -> C.ComplexTensor:
    """One step h = exp(l + i phase) state + x for x, l and phase (..., D); returns the new state in the compute
    dtype."""
    check_type("x", x, C.ComplexTensor, "a ComplexTensor of shape (..., channels)")
    if x.ndim < 1:
        raise ValueError("x must have a channel dimension, got a 0-d ComplexTensor")
    check_float_tensor("log_decay", log_decay)
    if phase is not None:
        check_float_tensor("phase", phase)
        phase = phase.unsqueeze(-2)
    _, h = selective_diag_scan_sequential(x.unsqueeze(-2), log_decay.unsqueeze(-2), initial_state=state,
                                          output_final_state=True, out_dtype=C.compute_dtype(x.dtype), phase=phase)
    return h


def selective_diag_scan(x: C.ComplexTensor, log_decay: torch.Tensor, initial_state: C.ComplexTensor | None = None,
                        output_final_state: bool = False, out_dtype: torch.dtype | None = None,
                        chunk_size: int | None = None, phase: torch.Tensor | None = None):
    """The chunked form of :func:`selective_diag_scan_sequential` (chunks of ``chunk_size``, default 32); with
    ``phase``, the real scan of the counter-rotated inputs, turned back (the module docstring)."""
    out_dtype = _check_args(x, log_decay, initial_state, output_final_state, out_dtype, phase)
    chunk = DEFAULT_CHUNK if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
    if phase is not None:
        return _rotated_scan(x, log_decay, initial_state, output_final_state, out_dtype, chunk, phase)
    cd = log_decay.dtype
    h0 = _h0(initial_state, x, cd)  # (2, ..., D)
    seq = x.shape[-2]
    if seq == 0:
        return _finish(x.planes.to(cd), h0, out_dtype, output_final_state)
    if cd == torch.float32 and kernels.enabled(x.planes, log_decay, in_compile=True):
        return _kernel_scan(x, log_decay, initial_state, h0, out_dtype, output_final_state)
    chunk = min(chunk, seq)
    n_chunks = (seq + chunk - 1) // chunk  # not -(-seq // chunk): traced with a dynamic length, that form broke inductor
    pad = n_chunks * chunk - seq
    # channels before positions: v (2, ..., D, S), l (..., D, S); padded in front with x = 0 and l = 0, which carry
    # h0 unchanged to the first token (padding after the end, until the thirty-fourth session, made inductor's CPU
    # backward leave dx of the last chunk unwritten when N >= 3: docs/numerics.md, "Gradients under every
    # implementation")
    v = torch.nn.functional.pad(x.planes.to(cd).transpose(-1, -2), (pad, 0))
    lt = torch.nn.functional.pad(log_decay.transpose(-1, -2), (pad, 0))
    vc = v.reshape(*v.shape[:-1], n_chunks, chunk)  # (2, ..., D, N, L)
    lc = lt.reshape(*lt.shape[:-1], n_chunks, chunk)  # (..., D, N, L)

    decay = torch.exp(segment_sum(lc))  # (..., D, N, L_t, L_s), exact zeros for s > t
    y = (decay @ vc.unsqueeze(-1)).squeeze(-1)  # (2, ..., D, N, L): in-chunk sums from a zero state

    # the decay from position s to its chunk's end (reversed cumsum: each entry sums only its own terms)
    to_end = torch.flip(torch.cumsum(torch.flip(lc[..., 1:], (-1,)), dim=-1), (-1,))
    to_end = torch.cat([to_end, torch.zeros_like(lc[..., :1])], dim=-1)  # (..., D, N, L)
    added = (torch.exp(to_end) * vc).sum(dim=-1)  # (2, ..., D, N): what each chunk adds to the state
    # the state after chunk m, S_(m+1) = exp(total_m) S_m + added_m from S_0 = h0: a segment-sum product over the
    # N chunks plus h0 decayed by the running totals (N entries, not N + 1 with h0 among them: traced with a
    # dynamic length, the (N + 1)^2 matrix's sizes broke inductor's value ranges)
    totals = lc.sum(dim=-1)  # (..., D, N)
    after = (torch.exp(segment_sum(totals)) @ added.unsqueeze(-1)).squeeze(-1)  # (2, ..., D, N)
    after = after + torch.exp(torch.cumsum(totals, dim=-1)) * h0.unsqueeze(-1)
    entering = torch.cat([h0.unsqueeze(-1), after[..., :-1]], dim=-1)  # (2, ..., D, N): S_0 .. S_(N-1)
    from_start = torch.cumsum(lc, dim=-1)  # (..., D, N, L): decay of the entering state up to t
    y = y + torch.exp(from_start) * entering.unsqueeze(-1)
    # (2, ..., S, D), contiguous: a consumer that saved the transposed view for backward (the phase's turn) got,
    # traced with a dynamic length, an inductor backward with the view's strides fixed at the first length seen
    y = y.reshape(*y.shape[:-2], n_chunks * chunk)[..., pad:].transpose(-1, -2).contiguous()
    return _finish(y, after[..., -1], out_dtype, output_final_state)


def _rotated_scan(x, log_decay, initial_state, output_final_state, out_dtype, chunk, phase):
    """h = exp(i Phi) g, g the real-decay scan of exp(-i Phi) x from g_{-1} = h_{-1}."""
    cd = log_decay.dtype
    if x.shape[-2] == 0:
        return _finish(x.planes.to(cd), _h0(initial_state, x, cd), out_dtype, output_final_state)
    cos, sin = rotations(phase)
    back = C.ComplexTensor(_turn(x.planes.to(cd), cos, -sin))
    g, g_last = selective_diag_scan(back, log_decay, initial_state, output_final_state=True, out_dtype=cd,
                                    chunk_size=chunk)
    y = _turn(g.planes, cos, sin)
    h_last = _turn(g_last.planes, cos[..., -1, :], sin[..., -1, :])
    return _finish(y, h_last, out_dtype, output_final_state)


def _kernel_scan(x, log_decay, initial_state, h0, out_dtype, output_final_state):
    """The Triton kernels on the batch dims flattened: (2, B, S, D) planes, (B, S, D) log-decays."""
    seq, d = x.shape[-2], x.shape[-1]
    batch = math.prod(x.shape[:-2])
    xp = x.planes.to(torch.float32).reshape(2, batch, seq, d)
    w0 = None if initial_state is None else h0.reshape(2, batch, d)
    y, hs = _SelectiveKernel.apply(xp, log_decay.reshape(batch, seq, d), w0)
    return _finish(y.reshape(2, *x.shape), hs.reshape(2, *x.shape[:-2], d), out_dtype, output_final_state)


class _SelectiveKernel(torch.autograd.Function):
    """The Triton kernels with autograd: (y, h_S) in float32.  A backward that must itself be differentiable
    (create_graph=True) differentiates the chunked PyTorch form instead."""

    @staticmethod
    def forward(ctx, xp, log_decay, h0):
        y, hs = kernels.selective_scan_fwd(xp, log_decay, h0)
        ctx.save_for_backward(xp, log_decay, h0, y)
        return y, hs

    @staticmethod
    def backward(ctx, grad_y, grad_state):
        xp, log_decay, h0, y = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _reference_grads(xp, log_decay, h0, grad_y, grad_state)
        dx, dl, dh0 = kernels.selective_scan_bwd(log_decay, y, h0, grad_y, grad_state)
        return dx, dl, None if h0 is None else dh0


def _reference_grads(xp, log_decay, h0, grad_y, grad_state):
    """(dx, d log_decay, dh_0) by autograd of the chunked PyTorch form, with create_graph."""
    with kernels.environment(**{kernels.ENV: "0"}):
        state = None if h0 is None else C.ComplexTensor(h0)
        y, hs = selective_diag_scan(C.ComplexTensor(xp), log_decay, state, output_final_state=True,
                                    out_dtype=torch.float32)
    inputs = [t for t in (xp, log_decay, h0) if t is not None and t.requires_grad]
    found = torch.autograd.grad([y.planes, hs.planes], inputs, [grad_y, grad_state], create_graph=True,
                                allow_unused=True) if inputs else []
    by_id = {id(t): (torch.zeros_like(t) if g is None else g) for t, g in zip(inputs, found, strict=True)}
    return tuple(None if t is None else by_id.get(id(t)) for t in (xp, log_decay, h0))


__all__ = ["DEFAULT_CHUNK", "rotations", "selective_diag_scan", "selective_diag_scan_sequential", "selective_diag_step"]

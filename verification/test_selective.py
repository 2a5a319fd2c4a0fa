"""The selective diagonal scan (muse.scan.selective_diag_scan) in float32 against the float64 definition.

Bound (docs/numerics.md, "Selective diagonal recurrence"): per component of y_t and of the final state,

    |got - exact| <= eps M + (2 S + 8) 2^-53 M,
    eps = gamma_((e + 2) S + 2 ceil(S / T) + 2)  (impl triton),
    eps = gamma_(2L + N + 3 + 3e) + gamma_(L + N) (Lambda_S + 2 Lambda_c)  (impl eager and compiled),

the first for the Triton kernel (the recurrence scanned in tiles of T tokens), the second for the chunked PyTorch form
(chunks of L, N of them; Lambda_c the largest sum of |l| over one chunk, Lambda_S over the sequence;
the decays are exp of segment sums whose exponents are off by at most gamma times those sums), e the
device's expf error in ulps (verification.bounds.LIBM_ULPS), M_t = sum_s a(s..t) |x_s|_1 + a(0..t) |h_0|_1
(float64) and the last term the float64 loop's own error; plus 2^-100 absolute for float32 underflow (as the
constant-decay scan's bound).  Inputs are fp16 values (as the layer's
projections give) and decays up to 8 nats a step, computed in float32.

With a per-token phase theta (drawn in three cases of four, up to 30 rad a token) the op scans the counter-rotated inputs
and turns the result back; the bound becomes

    2 eps M + 2 sqrt(2) (gamma_2 + delta) M + (4 S + 8) 2^-53 M,
    delta = 2 pi u + e_trig u + (S + 4) 2^-53 Theta_S,

delta the error of each cos / sin of the running angle (its float64 sum off by (S + 4) 2^-53 Theta_S, Theta_S the
largest sum of |theta| over the sequence, reduced mod 2 pi and rounded to float32, then e_trig ulps of cos / sin),
gamma_2 each rotation's two roundings, sqrt(2) the 1-norm growth of a turned complex number (docs/numerics.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from muse import kernels
from muse.scan import selective_diag_scan, selective_diag_scan_sequential
from muse.scan.selective_diag import DEFAULT_CHUNK
from verification import strategies as vs
from verification.bounds import LIBM_ULPS, device_kind
from verification.checks import check_close
from verification.harness import ct, impl_label, planes, run, tensor

U = 2.0**-24
UNDERFLOW = 2.0**-100  # absolute: decayed values below float32's normal range lose relative precision


def _gamma(n: float) -> float:
    return n * U / (1 - n * U)


@st.composite
def selective_case(draw):
    b, s, d = draw(st.integers(1, 2)), draw(st.integers(1, 40)), draw(st.integers(1, 5))
    band = draw(st.sampled_from(["small", "mixed"]))
    x = draw(vs.complex_arrays((b, s, d), band=band))
    h0 = draw(st.none() | vs.complex_arrays((b, d), band=band))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.0, 1e-3, 0.1, 2.0, 8.0]))
    log_decay = (-rng.uniform(0.0, scale, (b, s, d))).astype(np.float32)
    chunk = draw(st.sampled_from([None, 1, 4, 16]))
    turn = draw(st.sampled_from([None, 0.1, 3.0, 30.0]))
    phase = None if turn is None else rng.uniform(-turn, turn, (b, s, d)).astype(np.float32)
    return x, h0, log_decay, chunk, phase


def _weights(x, h0, log_decay):
    """M for y (b, S, d) and for the final state (b, d), float64."""
    a = np.exp(log_decay.astype(np.float64))
    xa = np.abs(x.astype(np.float64)).sum(0)
    m = np.zeros(xa.shape[::2]) if h0 is None else np.abs(h0.astype(np.float64)).sum(0)
    out = np.empty_like(xa)
    for t in range(xa.shape[1]):
        m = a[:, t] * m + xa[:, t]
        out[:, t] = m
    return out, m


def chunk_terms(s: int, chunk: int | None, log_decay: np.ndarray) -> tuple[int, int, float, float]:
    """(L, N, Lambda_c, Lambda_S) of the chunked form: chunks of L end at the sequence's end (the first one holds
    the remainder; the form pads in front), Lambda_c the largest sum of |l| over one chunk, Lambda_S over the
    sequence."""
    size = min(DEFAULT_CHUNK if chunk is None else chunk, s)
    n = math.ceil(s / size)
    ld = np.abs(log_decay.astype(np.float64))
    pad = (-s) % size
    lam_c = float(np.pad(ld, [(0, 0), (pad, 0), (0, 0)]).reshape(ld.shape[0], n, size, -1).sum(2).max())
    return size, n, lam_c, float(ld.sum(1).max())


def scan_eps(s: int, chunk: int | None, log_decay: np.ndarray, device: str, impl: str) -> float:
    """The bound's relative factor for ``impl``: the Triton kernel's (tiles of T) or the chunked form's (eager,
    compiled)."""
    e = LIBM_ULPS[device_kind(device)]["exp"]
    if impl == "triton":
        return _gamma((e + 2) * s + 2 * math.ceil(s / kernels.SELECTIVE_TILE) + 2)
    size, n, lam_c, lam_s = chunk_terms(s, chunk, log_decay)
    return _gamma(2 * size + n + 3 + 3 * e) + _gamma(size + n) * (lam_s + 2 * lam_c)


def phase_tol(eps: float, s: int, phase: np.ndarray, device: str) -> float:
    """The rotated form's relative factor from the real scan's eps (the module docstring)."""
    e_trig = max(LIBM_ULPS[device_kind(device)][f] for f in ("sin", "cos"))
    theta = float(np.abs(phase.astype(np.float64)).sum(1).max())
    delta = 2 * math.pi * U + e_trig * U + (s + 4) * 2.0**-53 * theta
    return 2 * eps + 2 * math.sqrt(2) * (_gamma(2) + delta) + (4 * s + 8) * 2.0**-53


def scan_call(x, log_decay, h0, chunk, phase):
    """The op as the suite calls it (one function, so the compiled implementation keeps one graph per pattern)."""
    return selective_diag_scan(x, log_decay, h0, output_final_state=True, out_dtype=torch.float32, chunk_size=chunk,
                               phase=phase)


@given(case=selective_case())
def test_selective_diag_scan_accuracy(device, impl, case):
    """float32 y and final state within eps M of the float64 definition (mixed, per component), under each
    implementation: eager (the chunked PyTorch form), compiled (that form under torch.compile), triton (the kernels)."""
    x, h0, log_decay, chunk, phase = case
    s = x.shape[-2]
    y, state = run(impl, scan_call, ct(x.astype(np.float32), device), tensor(log_decay, device),
                   None if h0 is None else ct(h0.astype(np.float32), device), chunk,
                   None if phase is None else tensor(phase, device))
    y64, s64 = selective_diag_scan_sequential(ct(x.astype(np.float64), "cpu"),
                                              torch.from_numpy(log_decay.astype(np.float64)),
                                              None if h0 is None else ct(h0.astype(np.float64), "cpu"),
                                              output_final_state=True,
                                              phase=None if phase is None else torch.from_numpy(phase.astype(np.float64)))
    m_y, m_s = _weights(x, h0, log_decay)
    eps = scan_eps(s, chunk, log_decay, device, impl)
    tol = eps + (2 * s + 8) * 2.0**-53 if phase is None else phase_tol(eps, s, phase, device)
    call = (f"muse.scan.selective_diag_scan(x, log_decay, h0, output_final_state=True, chunk_size={chunk}, "
            f"phase={'None' if phase is None else 'theta'}), S={s}")
    label = impl_label(device, impl)
    check_close("selective_diag_scan", label, planes(y), planes(y64), rtol=0.0,
                atol=np.broadcast_to(tol * m_y + UNDERFLOW, (2, *m_y.shape)), call=call)
    check_close("selective_diag_scan_state", label, planes(state), planes(s64), rtol=0.0,
                atol=np.broadcast_to(tol * m_s + UNDERFLOW, (2, *m_s.shape)), call=call)

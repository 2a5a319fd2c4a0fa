"""Complex retention (muse.scan.complex_retention) in float32 against the float64 definition.

Bound (docs/numerics.md, "ComplexRetention"): per component of y_t and of the final state,

    |got - exact| <= (eps_y + 4 gamma_3) M + (8 S + 4 d_k + 16) 2^-53 M,

with eps_y the decayed linear attention's bound for d_k' = 2 d_k (the Hebbian scan: chunks of BT, N
chunks, Lambda the largest |log_decay| sum over one chunk; BT and N taken as the larger/more of the
kernel's 16 and the PyTorch form's chunk, so one bound covers both paths), 4 gamma_3 the turns of q,
k (and of the state) by exp(-+i omega t) (two products and a sum per part, the turn's own rounding),
M the same sums on absolute values, sum_s exp(L_t - L_s) 2 sum_j (|Re q_tj| + |Im q_tj|)
(|Re k_sj| + |Im k_sj|) |v_s| (the state: without q), and the last term the float64 loop's own error;
plus an absolute underflow term

    tau = (40 d_k S + N + 16) 2^-126 (1 + Q)(1 + K)(1 + V)   (the state: without (1 + Q)),

each float32 operation erring by at most 2^-126 absolute below the normal range (flush to zero on GPUs,
gradual underflow on CPUs), times the largest factor that can follow it: Q = max_t sum_j (|Re q_tj| +
|Im q_tj|), K likewise over k, V = max |v| (40 d_k S bounds the operations of the S turned, 2 d_k-long
products a component sums, N + 16 the chunk carries and the turns).  Inputs are fp16 values (as the
layer's projections give), computed in float32.  Checked under each implementation: eager (the PyTorch
form), compiled (that form under torch.compile), triton (the Hebbian kernel); one bound covers all three.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from muse.init import zeta_zeros
from muse.scan import complex_retention, complex_retention_sequential
from verification import bounds as B
from verification import strategies as vs
from verification.checks import check_close
from verification.harness import ct, impl_label, planes, run, tensor


def _phases(kind: str, dk: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "geometric":
        om = 10000.0 ** (-np.arange(dk) / dk)
    elif kind == "zeta":
        z = zeta_zeros(dk).numpy()
        om = math.pi * z / z[-1]
    else:
        om = rng.uniform(0.0, math.pi, dk)
    return om.astype(np.float32)


@st.composite
def retention_case(draw):
    b, h, s = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 40))
    dk, dv = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    band = draw(st.sampled_from(["small", "mixed"]))
    q = draw(vs.complex_arrays((b, h, s, dk), band=band))
    k = draw(vs.complex_arrays((b, h, s, dk), band=band))
    v = draw(vs.complex_arrays((b, h, s, dv), band=band))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.0, 1e-3, 0.1, 2.0, 8.0]))
    log_decay = (-rng.uniform(0.0, scale, (b, h, s))).astype(np.float32)
    omega = _phases(draw(st.sampled_from(["geometric", "zeta", "random"])), dk, rng)
    chunk = draw(st.sampled_from([None, 1, 4, 16]))
    return q, k, v, log_decay, omega, chunk


def _abs_sums(q, k, v, log_decay):
    """M for y (..., S, d_v) and for the state (..., d_k, d_v), float64."""
    qa = np.abs(q[0].astype(np.float64)) + np.abs(q[1].astype(np.float64))  # (..., S, d_k)
    ka = np.abs(k[0].astype(np.float64)) + np.abs(k[1].astype(np.float64))
    va = np.maximum(np.abs(v[0].astype(np.float64)), np.abs(v[1].astype(np.float64)))  # (..., S, d_v)
    cum = np.cumsum(log_decay.astype(np.float64), axis=-1)
    s = q.shape[-2]
    decay = np.exp(cum[..., :, None] - cum[..., None, :]) * np.tril(np.ones((s, s)))  # (..., t, s)
    scores = 2.0 * qa @ np.swapaxes(ka, -1, -2)  # (..., t, s)
    m_y = (scores * decay) @ va  # (..., S, d_v)
    to_end = np.exp(cum[..., -1:] - cum)  # (..., S)
    m_w = 2.0 * np.swapaxes(ka * to_end[..., None], -1, -2) @ va  # (..., d_k, d_v)
    return m_y, m_w


def _eps(s: int, dk: int, chunk: int | None, log_decay: np.ndarray) -> float:
    """eps_y of the Hebbian scan for the real form's 2 d_k, plus 4 gamma_3 for the turns."""
    return B.hebbian_eps(s, 2 * dk, 1, chunk, log_decay)[0] + 4 * B.gamma(3)


def _underflow(q, k, v, chunk: int | None) -> tuple[float, float]:
    """tau for y and for the state (module docstring)."""
    s, dk = q.shape[-2], q.shape[-1]
    n = math.ceil(s / min(B.HEBB_CHUNK, s if chunk is None else chunk)) if s else 0

    def parts(a):
        return float((np.abs(a[0].astype(np.float64)) + np.abs(a[1].astype(np.float64))).sum(-1).max()) if a.size else 0.0

    big_k = parts(k)
    big_v = float(np.abs(v.astype(np.float64)).max()) if v.size else 0.0
    tau_w = (40 * dk * s + n + 16) * B.ETA_NORMAL32 * (1 + big_k) * (1 + big_v)
    return tau_w * (1 + parts(q)), tau_w


def _retention(q, k, v, log_decay, omega, chunk):
    """The op as the suite calls it (one function, so the compiled implementation keeps one graph per pattern)."""
    return complex_retention(q, k, v, log_decay, omega, output_final_state=True, chunk_size=chunk)


@given(case=retention_case())
def test_complex_retention_accuracy(device, impl, case):
    """float32 y and final state within (eps_y + 4 gamma_3) M + tau of the float64 definition (mixed, per
    component), under each implementation."""
    q, k, v, log_decay, omega, chunk = case
    s, dk, dv = q.shape[-2], q.shape[-1], v.shape[-1]
    args = [ct(x.astype(np.float32), device) for x in (q, k, v)]
    y, state = run(impl, _retention, *args, tensor(log_decay, device), tensor(omega, device), chunk)
    ref = [ct(x.astype(np.float64), "cpu") for x in (q, k, v)]
    y64, s64 = complex_retention_sequential(*ref, torch.from_numpy(log_decay.astype(np.float64)),
                                            torch.from_numpy(omega.astype(np.float64)), output_final_state=True)
    m_y, m_w = _abs_sums(q, k, v, log_decay)
    eps = _eps(s, dk, chunk, log_decay)
    tau_y, tau_w = _underflow(q, k, v, chunk)
    ref_err = (8 * s + 4 * dk + 16) * 2.0**-53
    tol_y = np.broadcast_to((eps + ref_err) * m_y + tau_y, (2, *m_y.shape))
    m_w2 = np.concatenate([m_w, m_w], axis=-1)  # the state's columns: both planes of v
    tol_w = np.broadcast_to((eps + ref_err) * m_w2 + tau_w, (2, *m_w2.shape))
    call = (f"muse.scan.complex_retention(q, k, v, log_decay, omega, output_final_state=True, chunk_size={chunk})"
            f" with d_k={dk}, d_v={dv}, S={s}")
    label = impl_label(device, impl)
    check_close("complex_retention", label, planes(y), planes(y64), rtol=0.0, atol=tol_y, call=call)
    check_close("complex_retention_state", label, planes(state), planes(s64), rtol=0.0, atol=tol_w, call=call)

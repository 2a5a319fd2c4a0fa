"""Gradients under every implementation (eager, compiled, triton) within stated bounds (docs/numerics.md,
"Gradients under every implementation").

The forward properties cannot see a backward that is wrong while the forward is right (the thirty-third
session's inductor miscompile broke only the selective scan's backward on the CPU), so each op whose backward
the models train through is checked here against an exact or float64 reference:

* ``linear``: dx = dy conj(W) and dW = dy^T conj(x) are GEMMs of 2·out and 2·rows exact products (§GEMM:
  E = gamma_m Σ|p|, one fp16 rounding; the block form's dW rounds its two real halves and then their sum),
  db an fp32 sum of the rows rounded once: gamma_(rows-1) Σ|dy|.
* ``complex_diag_scan``: dx_s = Σ_{t>=s} conj(lambda)^(t-s) dy_t is the same recurrence run backwards with
  conj(lambda), so the forward's bound holds with the reversed scale M'_s = Σ_{t>=s} |lambda|^(t-s) |dy_t|_1.
* ``selective_diag_scan``: dx (and dh_0) likewise, with M'_s = Σ_{t>=s} a(s..t) |dy_t|_1 + a(s..S) |dh_S|_1;
  d log_decay_t = a_t Σ_planes G_t h_(t-1) (G the backward state) within eps_l a_t M_(t-1) M'_t.
* ``modrelu``: dx = g + (b/r)(g - u Re(conj(u) g)) on the active set and db = Σ Re(conj(u) g), each operation's
  rounding followed through (elements whose activity the fp32 magnitude may flip are left out of dx).
* ``layer_norm``: dx = r (h - mean h - n m2) with h = g w, m2 = mean <h, n>; dW = Σ <g, n>, db = Σ g_re; the
  recomputed n within the forward's bound, then each operation's rounding followed through.
* ``complex_retention``: the Hebbian scan's gradient counts on the real form plus the turns, against the same
  gradients on absolute values (mixed, like the forward).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import muse.complex as C
from muse.scan import (
    complex_diag_scan,
    complex_diag_scan_sequential,
    complex_retention,
    complex_retention_sequential,
    selective_diag_scan_sequential,
)
from muse.scan.complex_diag import default_chunk_size
from muse.scan.hebbian import hebbian_reference_with_state
from verification import bounds as B
from verification import reference as R
from verification import strategies as vs
from verification.checks import check_close, check_ulps, cplx
from verification.harness import ct, host, impl_label, run_grads, tensor
from verification.plugin import examples
from verification.test_layers import layer_norm_case, modrelu_case
from verification.test_linalg import K_SIZES
from verification.test_retention import retention_case
from verification.test_scan import scan_case
from verification.test_selective import (
    UNDERFLOW,
    chunk_terms,
    phase_tol,
    scan_call,
    scan_eps,
    selective_case,
)
from verification.ulp import F16, ulp

U = B.U


def _conj(p: np.ndarray) -> np.ndarray:
    return np.stack((p[0], -p[1]))


# ----------------------------------------------------------------------------------------------- linear
def _dw_halves_bound(exact, abs_sums: np.ndarray, n_terms: int, device: str) -> list[np.ndarray]:
    """dW of the block form (eager, compiled): each of the two real GEMM halves (|value| <= S) errs by E and is
    rounded to fp16, then their sum is rounded: ulp16(S + E) + E + 0.5 ulp16(|dW| + that), in ULPs."""
    out = []
    for c, e in enumerate(exact):
        err = B.gemm_abs(abs_sums[c], n_terms, device)
        halves = ulp(abs_sums[c] + err, F16) + err
        out.append(B.in_ulps(halves + 0.5 * ulp(np.abs(e.hi) + halves, F16), e.hi))
    return out


@st.composite
def linear_grad_case(draw):
    """x, W, b up to 255 and dy up to 4 in magnitude (subnormals included): no gradient overflows fp16, which
    the forward property already covers."""
    rows = draw(st.sampled_from([(), (1,), (3,), (2, 3)]))
    fin, fout = draw(K_SIZES), draw(st.integers(1, 8))
    x = draw(vs.complex_arrays((*rows, fin), band="small"))
    w = draw(vs.complex_arrays((fout, fin), band="small"))
    bias = draw(st.one_of(st.none(), vs.complex_arrays((fout,), band="small")))
    dy = draw(vs.complex_arrays((*rows, fout), band="unit"))
    return x, w, bias, dy


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the interpreter's masked lanes
@given(case=linear_grad_case())
def test_linear_gradients(device, impl, case):
    """dx, dW, db of x W^T + b (fp16 planes) within the GEMM bound of their exact values, under each
    implementation (triton: the complex_mm kernel's backward, one rounding for dW)."""
    x, w, bias, dy = case
    args = (ct(x, device), ct(w, device), None if bias is None else ct(bias, device))
    grads = run_grads(impl, C.linear, args, [tensor(dy, device)])
    fin, fout = w.shape[2], w.shape[1]
    rows = math.prod(x.shape[1:-1])
    x2, dy2 = x.reshape(2, rows, fin), dy.reshape(2, rows, fout)
    label = impl_label(device, impl)
    call = f"C.linear(x, W, b) with x {x.shape[1:]}, W {w.shape[1:]}, bias {bias is not None}, backward(dy)"

    re, im, sums = R.matmul(dy2, _conj(w))  # dx (rows, fin): 2 fout terms
    got = host(grads[0]).reshape(2, rows, fin)
    bound = [B.in_ulps(B.mixed(e.hi, B.gemm_abs(sums[c], 2 * fout, device)), e.hi) for c, e in enumerate((re, im))]
    check_ulps("linear_grad_x", label, [got[0], got[1]], [re, im], bound, call=call,
               locate=lambda c, ix: {"dy_row": dy2[:, ix[0], :], "w_col": w[:, :, ix[1]]})

    re, im, sums = R.matmul(dy2.transpose(0, 2, 1), _conj(x2))  # dW (fout, fin): 2 rows terms
    got = host(grads[1])
    if impl == "triton":
        bound = [B.in_ulps(B.mixed(e.hi, B.gemm_abs(sums[c], 2 * rows, device)), e.hi) for c, e in enumerate((re, im))]
    else:
        bound = _dw_halves_bound((re, im), sums, 2 * rows, device)
    check_ulps("linear_grad_weight", label, [got[0], got[1]], [re, im], bound, call=call,
               locate=lambda c, ix: {"dy_col": dy2[:, :, ix[0]], "x_col": x2[:, :, ix[1]]})

    if bias is not None:
        re, im, sums = R.reduce_sum(dy2, dim=0)  # db (fout,): rows terms
        got = host(grads[2])
        bound = [B.in_ulps(B.mixed(e.hi, B.sum_abs(sums[c], rows)), e.hi) for c, e in enumerate((re, im))]
        check_ulps("linear_grad_bias", label, [got[0], got[1]], [re, im], bound, call=call,
                   locate=lambda c, ix: {"dy_col": dy2[:, :, ix[0]]})


# ------------------------------------------------------------------------------------ complex diagonal scan
def _diag_scan(x, nu, omega, h0, chunk):
    return complex_diag_scan(x, nu, omega, h0, chunk_size=chunk)[0]


@st.composite
def diag_grad_case(draw):
    x, nu, omega, h0, chunk = draw(scan_case())
    dy = draw(vs.complex_arrays(x.shape[1:], band=draw(st.sampled_from(["small", "mixed"]))))
    return x, nu, omega, h0, chunk, dy


@given(case=diag_grad_case())
def test_complex_diag_scan_gradients(device, impl, case):
    """dx (fp16) within 0.5 ulp(|dx| + E) + E, E = gamma_(4L + 2 n_c + 19) M'_s of the exact backward
    recurrence (conj(lambda), reversed); dh_0 (fp32) within E + the float64 reference's own error."""
    if impl == "triton":
        pytest.skip("complex_diag_scan has no Triton kernel")
    x, nu, omega, h0, chunk, dy = case
    seq = x.shape[2]
    used = default_chunk_size(seq) if chunk is None else chunk
    args = (ct(x, device), tensor(nu, device), tensor(omega, device), None if h0 is None else ct(h0, device), chunk)
    grads = run_grads(impl, _diag_scan, args, [tensor(dy, device)])
    label = impl_label(device, impl)
    call = f"muse.scan.complex_diag_scan(x, nu, omega, h0, chunk_size={chunk}), S={seq}, backward(dy)"

    rev = np.ascontiguousarray(dy[:, :, ::-1, :])
    re, im = R.complex_diag_scan(rev, nu, -omega)
    re, im = (R.Exact(*(np.ascontiguousarray(v[:, ::-1, :]) for v in (e.hi, e.lo, e.f16))) for e in (re, im))
    weights = B.complex_diag_weights(rev, nu)[:, ::-1, :]
    e = B.complex_diag_scan_abs(weights, seq, used)
    bound = [B.in_ulps(B.mixed(re.hi, e), re.hi), B.in_ulps(B.mixed(im.hi, e), im.hi)]
    got = host(grads[0])
    check_ulps("complex_diag_scan_grad_x", label, [got[0], got[1]], [re, im], bound, call=call,
               locate=lambda c, ix: {"dy": dy[:, ix[0], ix[1]:, ix[2]], "nu": nu[ix[2]:ix[2] + 1],
                                     "omega": omega[ix[2]:ix[2] + 1]})
    if h0 is not None:
        h64 = torch.tensor(h0, dtype=torch.float64, requires_grad=True)
        y64, _ = complex_diag_scan_sequential(C.ComplexTensor(torch.tensor(x, dtype=torch.float64)),
                                              torch.tensor(nu, dtype=torch.float64),
                                              torch.tensor(omega, dtype=torch.float64), C.ComplexTensor(h64))
        (want,) = torch.autograd.grad(y64.planes, h64, torch.tensor(dy, dtype=torch.float64))
        radius = np.exp(-np.exp(nu.astype(np.float64)))
        m0 = radius * weights[:, 0, :]  # the scale of dh_0 = conj(lambda) dx_0 (exact)
        tol = B.complex_diag_scan_abs(m0, seq, used) + (2 * seq + 8) * 2.0**-53 * m0
        check_close("complex_diag_scan_grad_h0", label, host(grads[3]).astype(np.float64), host(want), rtol=0.0,
                    atol=np.broadcast_to(tol, want.shape), call=call)


# ----------------------------------------------------------------------------------- selective diagonal scan
def _reverse_weights(dy: np.ndarray, dstate: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M'_s = Σ_{t>=s} a(s..t) |dy_t|_1 + a(s..S) |dh_S|_1 (b, S, d) and the scale of dh_0, a(0..S) included."""
    l1 = np.abs(dy.astype(np.float64)).sum(0)
    m = np.abs(dstate.astype(np.float64)).sum(0)
    out = np.empty_like(l1)
    for t in range(l1.shape[1] - 1, -1, -1):
        m = m + l1[:, t]
        out[:, t] = m
        m = a[:, t] * m
    return out, m


def _forward_weights(x: np.ndarray, h0: np.ndarray | None, a: np.ndarray) -> np.ndarray:
    """M_(t-1) for each t (b, S, d): the forward scale of the state each step multiplies."""
    l1 = np.abs(x.astype(np.float64)).sum(0)
    m = np.zeros((l1.shape[0], l1.shape[2])) if h0 is None else np.abs(h0.astype(np.float64)).sum(0)
    out = np.empty_like(l1)
    for t in range(l1.shape[1]):
        out[:, t] = m
        m = a[:, t] * m + l1[:, t]
    return out


def _selective_eps(s: int, chunk: int | None, log_decay: np.ndarray, device: str, impl: str) -> tuple[float, float]:
    """(eps for dx and dh_0, eps_l for d log_decay): the forward's eps for the backward recurrence; eps_l the
    Triton kernel's 2 eps + gamma_(e+3) (G_t and h_(t-1) each within eps, then a_t, two products and the planes'
    sum), the chunked form's gamma_(2L + 2N + 3e + 10) + gamma_(L+N)(Lambda_S + 2 Lambda_c) (docs/numerics.md)."""
    eps = scan_eps(s, chunk, log_decay, device, impl)
    e = B.LIBM_ULPS[B.device_kind(device)]["exp"]
    if impl == "triton":
        return eps, 2 * eps + B.gamma(e + 3)
    size, n, lam_c, lam_s = chunk_terms(s, chunk, log_decay)
    return eps, B.gamma(2 * size + 2 * n + 3 * e + 10) + B.gamma(size + n) * (lam_s + 2 * lam_c)


@st.composite
def selective_grad_case(draw):
    x, h0, log_decay, chunk, phase = draw(selective_case())
    band = draw(st.sampled_from(["small", "mixed"]))
    dy = draw(vs.complex_arrays(x.shape[1:], band=band)).astype(np.float32)
    dstate = draw(vs.complex_arrays((x.shape[1], x.shape[3]), band=band)).astype(np.float32)
    x_dtype = draw(st.sampled_from([np.float32, np.float16]))  # fp16 planes: the mixers' projections, widened inside
    return x.astype(x_dtype), h0, log_decay, chunk, phase, dy, dstate


@settings(max_examples=examples(0.3))  # the interpreter runs forward and backward kernels: ~3 s an example
@given(case=selective_grad_case())
def test_selective_diag_scan_gradients(device, impl, case):
    """dx, dh_0 within eps M' and d log_decay within eps_l a_t M_(t-1) M'_t of the float64 definition's
    gradients (plus its own error), under each implementation; with a phase, dx and dh_0 within the rotated
    form's tolerance (the phase's own gradient is not bounded here).  fp16 x gets an fp16 dx: one more rounding."""
    x, h0, log_decay, chunk, phase, dy, dstate = case
    s = x.shape[-2]
    x32 = x.astype(np.float32)
    h32 = None if h0 is None else h0.astype(np.float32)
    args = (ct(x, device), tensor(log_decay, device), None if h32 is None else ct(h32, device), chunk,
            None if phase is None else tensor(phase, device))
    got = run_grads(impl, scan_call, args, [tensor(dy, device), tensor(dstate, device)])

    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x32, log_decay)]
    if h32 is not None:
        leaves.append(torch.tensor(h32, dtype=torch.float64, requires_grad=True))
    y64, s64 = selective_diag_scan_sequential(
        C.ComplexTensor(leaves[0]), leaves[1], None if h32 is None else C.ComplexTensor(leaves[2]),
        output_final_state=True, phase=None if phase is None else torch.from_numpy(phase.astype(np.float64)))
    want = torch.autograd.grad([y64.planes, s64.planes], leaves,
                               [torch.tensor(dy, dtype=torch.float64), torch.tensor(dstate, dtype=torch.float64)])

    a = np.exp(log_decay.astype(np.float64))
    m_rev, m_h0 = _reverse_weights(dy, dstate, a)
    eps, eps_l = _selective_eps(s, chunk, log_decay, device, impl)
    own = (2 * s + 8) * 2.0**-53
    tol = eps + own if phase is None else phase_tol(eps, s, phase, device)
    label = impl_label(device, impl)
    call = (f"muse.scan.selective_diag_scan(x, log_decay, h0, output_final_state=True, chunk_size={chunk}, "
            f"phase={'None' if phase is None else 'theta'}), S={s}, backward(dy, dstate)")
    err_x = np.broadcast_to(tol * m_rev + UNDERFLOW, want[0].shape)
    if x.dtype == np.float16:
        err_x = B.mixed(host(want[0]), err_x)
    check_close("selective_diag_scan_grad_x", label, host(got[0]).astype(np.float64), host(want[0]), rtol=0.0,
                atol=err_x, call=call)
    if h32 is not None:
        check_close("selective_diag_scan_grad_h0", label, host(got[2]).astype(np.float64), host(want[2]), rtol=0.0,
                    atol=np.broadcast_to(tol * m_h0 + UNDERFLOW, want[2].shape), call=call)
    if phase is None:
        scale = a * _forward_weights(x, h0, a) * m_rev
        check_close("selective_diag_scan_grad_log_decay", label, host(got[1]).astype(np.float64), host(want[1]),
                    rtol=0.0, atol=(eps_l + 2 * own) * scale + UNDERFLOW, call=call)


# --------------------------------------------------------------------------------------------------- modReLU
def _modrelu_grad_bounds(z: np.ndarray, bias: np.ndarray, g: np.ndarray):
    """Exact (float64) dx planes, db, and their bounds before the fp16 rounding, with the elements whose activity the
    fp32 magnitude may flip (|r + b| <= t_max r: either value is right there) masked out of dx and allowed in db.

    Computed (eager, compiled, kernel alike): r^ = r(1 + t), u = x / r^, k = b / r^ (each eps_d relative), ug =
    u_re g_re + u_im g_im (eps_1 of S1 = |u_re g_re| + |u_im g_im|), w = g - u ug (e_w), q = k w (e_q),
    dx = g + q, every operation rounded once in fp32 (an FMA rounds less: within the same bound)."""
    u32 = B.U
    t_max = B.abs_rel()
    eps_d = (1 + u32) / (1 - t_max) - 1
    eps_1 = (1 + eps_d) * (1 + u32) ** 2 - 1
    eps_2 = (1 + eps_d) * (1 + eps_1) * (1 + u32) - 1
    zf = z.astype(np.float64)
    gf = np.broadcast_to(g.astype(np.float64), zf.shape)
    b = np.broadcast_to(bias.astype(np.float64), zf.shape[1:])
    r = np.hypot(zf[0], zf[1])
    safe = np.where(r > 0, r, 1.0)
    u = zf / safe
    ug = u[0] * gf[0] + u[1] * gf[1]
    s1 = np.abs(u[0] * gf[0]) + np.abs(u[1] * gf[1])
    k = b / safe
    active = (r > 0) & (r + b > 0)
    ambiguous = (r > 0) & (np.abs(r + b) <= 1.01 * t_max * r)
    dx = np.where(active, gf + k * (gf - u * ug), 0.0)
    w_abs = np.abs(gf) + np.abs(u) * s1
    e_w = eps_2 * np.abs(u) * s1 + u32 * (np.abs(gf) + np.abs(u) * s1 * (1 + eps_2))
    e_q = np.abs(k) * (e_w * (1 + eps_d) * (1 + u32) + w_abs * ((1 + eps_d) * (1 + u32) - 1))
    e_dx = e_q + u32 * (np.abs(gf) + np.abs(k) * (w_abs + e_w) * (1 + eps_d) * (1 + u32) + e_q)
    e_dx = e_dx + 16 * 2.0**-53 * (np.abs(gf) + np.abs(k) * w_abs)  # the float64 reference's own error
    rows = tuple(range(zf.ndim - 1 - bias.ndim))  # the dims summed into db: all for a 0-d bias, else the rows
    db = np.where(active, ug, 0.0).sum(axis=rows)
    n = max(int(np.prod([zf.shape[1 + i] for i in rows])), 1)
    counted = np.where(active | ambiguous, s1 * (1 + eps_1), 0.0)
    e_db = (np.where(active, eps_1 * s1, 0.0).sum(axis=rows) + B.gamma(max(n - 1, 0)) * counted.sum(axis=rows)
            + np.where(ambiguous, s1 * (1 + eps_1), 0.0).sum(axis=rows) + 16 * 2.0**-53 * counted.sum(axis=rows))
    return dx, np.where(ambiguous, np.inf, e_dx), db, e_db


@st.composite
def modrelu_grad_case(draw):
    z, bias = draw(modrelu_case())
    g = draw(vs.complex_arrays(z.shape[1:], band="unit"))
    return z, bias, g


@pytest.mark.filterwarnings("ignore:overflow encountered")
@given(case=modrelu_grad_case())
def test_modrelu_gradients(device, impl, case):
    """dx (fp16) and db (the bias's dtype) of modReLU within the bounds of docs/numerics.md ("Gradients under every
    implementation"), measured against the float64 formula g + (b/r)(g - u Re(conj(u) g)) on the active set."""
    z, bias, g = case
    got = run_grads(impl, C.modrelu, (ct(z, device), tensor(bias, device)), [tensor(g, device)])
    dx, e_dx, db, e_db = _modrelu_grad_bounds(z, bias, g)
    label = impl_label(device, impl)
    call = f"C.modrelu(z, b) with z {z.shape[1:]}, b {bias.shape}, backward(g)"
    with np.errstate(over="ignore"):  # an exact value past fp16's range rounds to inf, as the op's would
        dx_exact = [R.Exact(c, np.zeros_like(c), c.astype(np.float16)) for c in dx]
    with np.errstate(invalid="ignore", over="ignore"):
        bound = [B.in_ulps(B.mixed(dx[c], e_dx[c]), dx[c]) for c in range(2)]
    keep = [np.isfinite(e_dx[c]) for c in range(2)]
    got_dx = host(got[0]).astype(np.float64)
    check_ulps("modrelu_grad_x", label, [got_dx[0], got_dx[1]], dx_exact, bound, where=keep, call=call,
               args=[cplx("z", z), cplx("g", g)])
    check_close("modrelu_grad_bias", label, host(got[1]).astype(np.float64), db, rtol=0.0,
                atol=B.mixed(db, e_db), call=call)


# ------------------------------------------------------------------------------------------------- LayerNorm
def _layer_norm_grad_bounds(z: np.ndarray, weight, g: np.ndarray, eps: float, device: str):
    """Exact (float64) dx planes, dW, db of the complex LayerNorm and their bounds before the final rounding.

    The backward recomputes c^ = z - mu^ and r^ = 1/sqrt(v^ + eps) as the forward does, so n^ = c^ r^ is within
    e_n (the forward's bound without weight or bias); h = g w (u_w: 0 without a weight); m2 = (1/d) Σ <h, n>
    (2d rounded products summed in any order and divided: gamma_(2d+2)); hbar = mean h (gamma_(d+1));
    t = (h - hbar) - n m2 (three roundings); dx = r^ t (one rounding). dW = Σ_rows <g, n^> (gamma_(2R+1)),
    db = Σ_rows g_re (gamma_R)."""
    u = B.U
    d = z.shape[-1]
    _, _, stats = R.layer_norm(z, None, None, eps)
    r = 1 / np.sqrt(stats["var"] + eps)
    n = np.stack((stats["c_re"], stats["c_im"])) * r
    e_n = np.stack(B.layer_norm_abs(stats, n[0], n[1], None, None, eps, device))
    big_n = np.abs(n) + e_n
    w = np.ones(d) if weight is None else weight.astype(np.float64)
    u_w = 0.0 if weight is None else u
    gf = g.astype(np.float64)
    h = gf * w
    ha = np.abs(h) * (1 + u_w)
    hbar = h.mean(axis=-1, keepdims=True)
    e_hb = (u_w * np.abs(h).sum(axis=-1, keepdims=True) + B.gamma(d + 1) * ha.sum(axis=-1, keepdims=True)) / d
    m2 = (h * n).sum(axis=(0, -1))[..., None] / d
    e_m = ((u_w * np.abs(h) * big_n + np.abs(h) * e_n).sum(axis=(0, -1))[..., None]
           + B.gamma(2 * d + 2) * (ha * big_n).sum(axis=(0, -1))[..., None]) / d
    big_m = np.abs(m2) + e_m
    t = h - hbar - n * m2
    a_mag = np.abs(h) + np.abs(hbar) + u_w * np.abs(h) + e_hb
    e_t = (u_w * np.abs(h) + e_hb + u * a_mag + e_n * big_m + np.abs(n) * e_m + u * big_n * big_m
           + u * (1 + u) * (a_mag + big_n * big_m))
    grow = (1 + B.layer_norm_rstd_rel(stats, eps, device)) * (1 + u)
    dx = r * t
    ref = 32 * 2.0**-53 * r * (np.abs(h) + np.abs(hbar) + np.abs(n) * np.abs(m2) + e_t)
    e_dx = r * grow * e_t + r * np.abs(t) * (grow - 1) + ref
    rows = max(int(np.prod(z.shape[1:-1])), 1)
    g2, n2, en2, bn2 = (a.reshape(2, rows, d) for a in (gf, np.broadcast_to(n, z.shape), e_n, big_n))
    dw = (g2 * n2).sum(axis=(0, 1))
    e_dw = ((np.abs(g2) * en2).sum(axis=(0, 1)) + B.gamma(2 * rows + 1) * (np.abs(g2) * bn2).sum(axis=(0, 1))
            + 32 * 2.0**-53 * (np.abs(g2) * np.abs(n2)).sum(axis=(0, 1)))
    db = g2[0].sum(axis=0)
    e_db = B.gamma(rows) * np.abs(g2[0]).sum(axis=0)
    return dx, e_dx, dw, e_dw, db, e_db


@st.composite
def layer_norm_grad_case(draw):
    """z of any band, weight and g of unit magnitude, a weight and a bias or not."""
    z, _, _, eps, _ = draw(layer_norm_case())
    weight = draw(st.one_of(st.none(), vs.real_arrays(z.shape[-1:], band="unit")))
    bias = draw(st.one_of(st.none(), vs.real_arrays(z.shape[-1:], band="unit")))
    g = draw(vs.complex_arrays(z.shape[1:], band="unit"))
    return z, weight, bias, eps, g


@pytest.mark.filterwarnings("ignore:overflow encountered")
@given(case=layer_norm_grad_case())
def test_layer_norm_gradients(device, impl, case):
    """dx (fp16), dW and db (the parameters' dtype) of the complex LayerNorm within the bounds of docs/numerics.md
    ("Gradients under every implementation"), against the float64 r (g w - mean(g w) - n m2), Σ <g, n>, Σ g_re
    (triton: the one-pass backward kernel with its fp32 partial sums)."""
    z, weight, bias, eps, g = case
    dx, e_dx, dw, e_dw, db, e_db = _layer_norm_grad_bounds(z, weight, g, eps, device)
    assume(np.all(np.abs(dx) + e_dx < 6e4))  # a gradient past fp16's range is the finiteness suite's matter
    args = (ct(z, device), None if weight is None else tensor(weight, device),
            None if bias is None else tensor(bias, device), eps)
    grads = run_grads(impl, C.layer_norm, args, [tensor(g, device)])
    label = impl_label(device, impl)
    call = (f"C.layer_norm(z, weight, bias, eps={eps}) with z {z.shape[1:]}, weight {weight is not None}, "
            f"bias {bias is not None}, backward(g)")
    with np.errstate(over="ignore"):  # an exact value past fp16's range rounds to inf, as the op's would
        dx_exact = [R.Exact(c, np.zeros_like(c), c.astype(np.float16)) for c in dx]
    bound = [B.in_ulps(B.mixed(dx[c], e_dx[c]), dx[c]) for c in range(2)]
    got = host(grads[0]).astype(np.float64)

    def locate(c, ix):
        return {"z": z[(slice(None), *ix[:-1], slice(None))], "g": g[(slice(None), *ix[:-1], slice(None))],
                "eps": np.array(eps)}

    check_ulps("layer_norm_grad_x", label, [got[0], got[1]], dx_exact, bound, call=call, locate=locate)
    params = [grads[i] for i in range(1, len(grads))]
    if weight is not None:
        check_close("layer_norm_grad_weight", label, host(params.pop(0)).astype(np.float64), dw, rtol=0.0,
                    atol=B.mixed(dw, e_dw), call=call)
    if bias is not None:
        check_close("layer_norm_grad_bias", label, host(params.pop(0)).astype(np.float64), db, rtol=0.0,
                    atol=B.mixed(db, e_db), call=call)


# ------------------------------------------------------------------------------------------ complex retention


def _retention(q, k, v, log_decay, omega, chunk):
    return complex_retention(q, k, v, log_decay, omega, output_final_state=True, chunk_size=chunk)


def _retention_scales(q, k, v, log_decay, dy, dstate):
    """M for dq, dk (complex, (2, ..., S, d_k)), dv ((2, ..., S, d_v)) and d log_decay ((..., S)), float64: the real
    form's gradients on absolute values (each turned component of q, k bounded by |re| + |im|), turned back."""
    dk_, dv_ = q.shape[-1], v.shape[-1]

    def both(a):  # (2, ..., n) -> (..., 2n): the real form's columns, each bounded by |re| + |im|
        m = np.abs(a[0].astype(np.float64)) + np.abs(a[1].astype(np.float64))
        return torch.from_numpy(np.concatenate([m, m], axis=-1))

    def cat(a):  # (2, ..., n) -> (..., 2n): the two planes side by side, absolute
        return torch.from_numpy(np.abs(np.concatenate([a[0], a[1]], axis=-1).astype(np.float64)))

    qa, ka = both(q).requires_grad_(True), both(k).requires_grad_(True)
    va = cat(v).requires_grad_(True)
    y, w = hebbian_reference_with_state(qa, ka, va, torch.from_numpy(log_decay.astype(np.float64)), 1.0, None)
    outs, grads = [y], [cat(dy)]
    if dstate is not None:
        ga = np.abs(dstate[0].astype(np.float64)) + np.abs(dstate[1].astype(np.float64))  # (..., d_k, 2 d_v)
        outs.append(w)
        grads.append(torch.from_numpy(np.concatenate([ga, ga], axis=-2)))
    mq, mk, mv = (t.numpy() for t in torch.autograd.grad(outs, [qa, ka, va], grads))
    m_cum = (qa.detach().numpy() * mq).sum(-1) + (ka.detach().numpy() * mk).sum(-1)  # (..., S)
    if dstate is not None and m_cum.shape[-1]:
        m_cum[..., -1] += (grads[1].numpy() * w.detach().numpy()).sum((-2, -1))
    m_l = np.flip(np.cumsum(np.flip(m_cum, -1), -1), -1)

    def turn_back(m):  # (..., 2 d_k) -> (2, ..., d_k): each component of conj-turned (re, im) within |re| + |im|
        return np.stack([m[..., :dk_] + m[..., dk_:]] * 2)

    return turn_back(mq), turn_back(mk), np.stack((mv[..., :dv_], mv[..., dv_:])), m_l


def _retention_grad_eps(s: int, dk: int, dv: int, chunk: int | None, log_decay: np.ndarray) -> tuple[float, float, int]:
    """(eps_g, eps_l, N): the Hebbian gradient counts for the real form's 2 d_k and 2 d_v, plus 8 gamma_3 for the turns
    of q and k forward and of dq and dk back."""
    _, eps_g, eps_l, n = B.hebbian_eps(s, 2 * dk, 2 * dv, chunk, log_decay)
    return eps_g + 8 * B.gamma(3), eps_l + 8 * B.gamma(3), n


@st.composite
def retention_grad_case(draw):
    q, k, v, log_decay, omega, chunk = draw(retention_case())
    band = draw(st.sampled_from(["small", "mixed"]))
    dy = draw(vs.complex_arrays(v.shape[1:], band=band))
    dstate = draw(st.one_of(st.none(), vs.complex_arrays((*q.shape[1:-2], q.shape[-1], 2 * v.shape[-1]), band=band)))
    return q, k, v, log_decay, omega, chunk, dy, dstate


@given(case=retention_grad_case())
def test_complex_retention_gradients(device, impl, case):
    """dq, dk, dv and d log_decay (float32) of complex_retention within 2 eps M + tau of the float64 sequential
    definition's autograd (eps_g for dq, dk, dv; eps_l for d log_decay; M the same gradients on absolute values),
    under each implementation (triton: the Hebbian kernel's backward)."""
    q, k, v, log_decay, omega, chunk, dy, dstate = case
    s, dk, dv = q.shape[-2], q.shape[-1], v.shape[-1]
    args = (*(ct(x.astype(np.float32), device) for x in (q, k, v)), tensor(log_decay, device), tensor(omega, device),
            chunk)
    got = run_grads(impl, _retention, args, [tensor(dy.astype(np.float32), device),
                                             None if dstate is None else tensor(dstate.astype(np.float32), device)])
    ref = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v, log_decay)]
    y64, s64 = complex_retention_sequential(*(C.ComplexTensor(t) for t in ref[:3]), ref[3],
                                            torch.from_numpy(omega.astype(np.float64)), output_final_state=True)
    outs = [(y64.planes, dy)] + ([] if dstate is None else [(s64.planes, dstate)])
    want = torch.autograd.grad([o for o, _ in outs], ref, [torch.from_numpy(g.astype(np.float64)) for _, g in outs],
                               allow_unused=True)
    m_q, m_k, m_v, m_l = _retention_scales(q, k, v, log_decay, dy, dstate)
    eps_g, eps_l, n = _retention_grad_eps(s, dk, dv, chunk, log_decay)

    def parts(a):
        return float((np.abs(a[0].astype(np.float64)) + np.abs(a[1].astype(np.float64))).sum(-1).max()) if a.size else 0.0

    big = (1 + parts(q)) * (1 + parts(k)) * (1 + float(np.abs(v.astype(np.float64)).max(initial=0.0))) \
        * (1 + max(parts(dy), 0.0 if dstate is None else parts(dstate)))
    tau = 2 * (40 * max(dk, dv) * s + n + 16) * B.ETA_NORMAL32 * big * (1 + s)
    ref_err = (16 * s + 8 * max(dk, dv) + 32) * 2.0**-53
    label = impl_label(device, impl)
    call = (f"muse.scan.complex_retention(q, k, v, log_decay, omega, output_final_state=True, chunk_size={chunk}) "
            f"with d_k={dk}, d_v={dv}, S={s}, backward(dy, dstate {dstate is not None})")
    for name, i, m, eps in (("q", 0, m_q, eps_g), ("k", 1, m_k, eps_g), ("v", 2, m_v, eps_g),
                            ("log_decay", 3, m_l, eps_l)):
        w = np.zeros(ref[i].shape) if want[i] is None else host(want[i])
        g = np.zeros(ref[i].shape) if got[i] is None else host(got[i]).astype(np.float64)
        check_close(f"complex_retention_grad_{name}", label, g, w, rtol=0.0, atol=(2 * eps + ref_err) * m + tau,
                    call=call)

"""Phase 2's BK-Core resolvent (muse.scan.bk_green_scan, complex64) and its gradient under every implementation,
against the complex128 recursion (docs/numerics.md, "Phase 2's scans under the Triton kernels").

Two computations, two bounds, each evaluated along the lane from the reference:

* triton (the kernel: the sequential recursion r_i = (a_i - z) - G_(i-1), G_i = 1/r_i, and the reverse
  recursion for the gradient): E_i and D_i of that section, doubled for the higher-order terms.
* eager and compiled (the log-depth Moebius scan: prefix products P_i = M_i ... M_1 of
  M_j = [[a_j - z, -1], [1, 0]] by a Hillis-Steele scan with a renormalisation per step, G_i = P_i[1,0]/P_i[0,0]):
  every entry of P^_i is within e_i |M|_i of P_i, |M|_i = |M_i| ... |M_1| on entrywise moduli (|M_j|[0,0] =
  |a_j - z| + |a_j| + |z|, which also covers forming a_j - z). The tree for P_i has i leaves (each within gamma_3:
  z's rounding, the subtraction, the first renormalisation) and i - 1 products (2x2 complex: gamma_4), and every
  node is renormalised at most L + 1 times (L = ceil(log2 S)), so e_i = gamma_(3i + 4(i-1) + (L+1)(2i-1)). Then
  |G^_i - G_i| <= (d10 + |G_i| d00) / (|P00| - d00) (1 + gamma_6) + gamma_6 |G_i|, d = e_i |M|_i. The gradient
  grad_a_j = Σ_(i>=j) conj(dG_i/da_j) lambda_i with dG_i/da_j = (Q10 - G_i Q00)/P00, Q = M_i..M_(j+1) E M_(j-1)..M_1
  (E = [[1, 0], [0, 0]]): autograd evaluates the same products transposed with the forward's computed values, so
  within gamma_K M_j, M_j = Σ_i |lambda_i| (|Q|10 + |G_i| |Q|00) / (|P00| - d00) on moduli, K = 2 K_fwd + 12 S + 16
  (the forward's count for the factors it reuses, the adjoint's products, renormalisations and additions along
  the tree, the division's adjoint), doubled for the higher-order terms.

The diagonal is dissipative as Phase 2 builds it (a = V + 2 - i Gamma, Im a <= 0, so |G| <= 1/Im z).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from muse.scan import bk_green_scan, bk_green_sequential
from verification import bounds as B
from verification.checks import check_close
from verification.harness import host, impl_label, run, run_grads, tensor

U = 2.0**-24


@st.composite
def bk_case(draw):
    lanes, s = draw(st.integers(1, 3)), draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spread = draw(st.sampled_from([0.1, 1.5, 4.0]))
    v = (spread * rng.standard_normal((lanes, s))).astype(np.float32)
    gamma = np.log1p(np.exp(rng.standard_normal((lanes, s)))).astype(np.float32) * draw(st.sampled_from([0.0, 1.0]))
    a_re, a_im = (v + 2.0).astype(np.float32), (-gamma).astype(np.float32)
    z = draw(st.sampled_from([1j, 0.3 + 0.7j, 2j]))
    w = rng.standard_normal((2, lanes, s)).astype(np.float32)
    return a_re, a_im, z, w


def _green(a_re, a_im, z):
    return bk_green_scan(torch.complex(a_re, a_im), z)


def _reference(a_re, a_im, z, w):
    """(G, grad_a) in complex128 by the recursion, for upstream gradient w (complex)."""
    re = torch.tensor(a_re, dtype=torch.float64, requires_grad=True)
    im = torch.tensor(a_im, dtype=torch.float64, requires_grad=True)
    g = bk_green_sequential(torch.complex(re, im), z)
    wt = torch.complex(torch.tensor(w[0], dtype=torch.float64), torch.tensor(w[1], dtype=torch.float64))
    if g.shape[-1] == 0:
        return g.detach().numpy(), np.zeros(g.shape, dtype=np.complex128)
    gr, gi = torch.autograd.grad(g, [re, im], wt)
    return g.detach().numpy(), (gr + 1j * gi).numpy()


def _kernel_bounds(a, z, g, grad_a, lam_in):
    """(2E, 2D): the kernel's recursion bounds along each lane (tests/kernels/test_kernels_bk_resolvent.py)."""
    n = a.shape[-1]
    e = np.zeros(a.shape)
    prev = np.zeros(a.shape[:-1])
    for i in range(n):
        gi = np.abs(g[..., i])
        prev = gi**2 * (prev + U * (abs(z) + np.abs(a[..., i] - z) + 1.0 / gi)) + 4 * U * gi
        e[..., i] = prev
    d = np.zeros(a.shape)
    nxt = np.zeros(a.shape[:-1])
    for i in reversed(range(n)):
        gi = np.abs(g[..., i])
        lam = np.abs(lam_in[..., i] - (grad_a[..., i + 1] if i + 1 < n else 0.0))
        nxt = gi**2 * (nxt + U * lam) + lam * (2 * gi * e[..., i] + 5.1 * U * gi**2)
        d[..., i] = nxt
    return 2 * e, 2 * d


def _scan_bounds(a, z, g, lam_in):
    """(2 E, 2 D) of the log-depth scan (module docstring), float64, per lane and position."""
    lanes, n = a.shape
    levels = math.ceil(math.log2(n)) if n > 1 else 0
    e_fwd = np.array([B.gamma(3 * i + 4 * (i - 1) + (levels + 1) * (2 * i - 1)) for i in range(1, n + 1)])
    k_grad = B.gamma(2 * (3 * n + 4 * (n - 1) + (levels + 1) * (2 * n - 1)) + 12 * n + 16) if n else 0.0
    g6 = B.gamma(6)
    e_out, d_out = np.zeros(a.shape), np.zeros(a.shape)
    for b in range(lanes):
        mats = [np.array([[a[b, j] - z, -1.0], [1.0, 0.0]], dtype=np.complex128) for j in range(n)]
        mabs = [np.array([[abs(a[b, j] - z) + abs(a[b, j]) + abs(z), 1.0], [1.0, 0.0]]) for j in range(n)]
        pre, pre_abs = [np.eye(2, dtype=np.complex128)], [np.eye(2)]
        for j in range(n):
            pre.append(mats[j] @ pre[-1])
            pre_abs.append(mabs[j] @ pre_abs[-1])
        den = np.zeros(n)
        for i in range(n):
            p00 = abs(pre[i + 1][0, 0])
            d = e_fwd[i] * pre_abs[i + 1][:, 0]
            den[i] = p00 - d[0]
            gi = abs(g[b, i])
            e_out[b, i] = (d[1] + gi * d[0]) / den[i] * (1 + g6) + g6 * gi if den[i] > 0 else np.inf
        m = np.zeros(n)
        for i in range(n):  # suffix products |M_i| .. |M_(j+1)| for j = i down to 0
            suf = np.eye(2)
            gi, li = abs(g[b, i]), abs(lam_in[b, i])
            for j in range(i, -1, -1):
                q = suf[:, 0] * pre_abs[j][0, 0]  # (|Q|[0, 0], |Q|[1, 0]) of the term of a_j
                m[j] += li * (q[1] + gi * q[0]) / den[i] if den[i] > 0 else np.inf
                suf = suf @ mabs[j]
        d_out[b] = k_grad * m + 16 * n * 2.0**-53 * m
    return 2 * e_out, 2 * d_out


@given(case=bk_case())
def test_bk_resolvent_and_gradient(device, impl, case):
    """G (complex64) and grad a within the bound of the computation that ran (module docstring): the recursion's
    under triton, the log-depth scan's under eager and compiled."""
    a_re, a_im, z, w = case
    args = (tensor(a_re, device), tensor(a_im, device), z)
    wt = torch.complex(tensor(w[0], device), tensor(w[1], device))
    g = run(impl, _green, *args)
    grads = run_grads(impl, _green, args, [wt]) if a_re.shape[-1] else [None, None]
    want_g, want_da = _reference(a_re, a_im, z, w)
    a = a_re.astype(np.float64) + 1j * a_im.astype(np.float64)
    lam_in = w[0].astype(np.float64) + 1j * w[1].astype(np.float64)
    if impl == "triton":
        e, d = _kernel_bounds(a, z, want_g, want_da, lam_in)
    else:
        e, d = _scan_bounds(a, z, want_g, lam_in)
    label = impl_label(device, impl)
    call = f"muse.scan.bk_green_scan(torch.complex(a_re, a_im), z={z}) with a {a.shape}, backward(w)"
    got = host(g).astype(np.complex128)
    check_close("bk_resolvent", label, np.abs(got - want_g), np.zeros(a.shape), rtol=0.0, atol=e, call=call)
    if a.shape[-1]:
        got_da = host(grads[0]).astype(np.float64) + 1j * host(grads[1]).astype(np.float64)
        check_close("bk_resolvent_grad_a", label, np.abs(got_da - want_da), np.zeros(a.shape), rtol=0.0, atol=d,
                    call=call)

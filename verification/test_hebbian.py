"""Phase 2's Hebbian scan (muse.scan.hebbian_parallel_with_state, float32) and its gradients under every
implementation, against the float64 PyTorch form.

Bounds (docs/numerics.md, "Phase 2's scans under the Triton kernels"): mixed, E = 2 eps M, M the same computation
on |q|, |k|, |v|, |W_0| (and |dy|, |dW_S| for the gradients) in float64, eps the first-order count of fp32
roundings on the longest path: eps_y = gamma_(2 d_k + BT + N (BT + 5) + 6) + (N + 1) 2 gamma_BT Lambda for y and
W_S; eps_g = gamma_(2 d + BT + 2 N (BT + 5) + 10) + (N + 1) 2 gamma_BT Lambda (d = max(d_k, d_v)) for dq, dk, dv,
dW_0; eps_g + gamma_(d_k + S + 2) for d log_decay against M_l = Σ_(t>=r) (|q_t|·M_dq_t + |k_t|·M_dk_t)
(+ |dW_S|·M_W at t = S). BT and N are the larger of the kernel's (chunks of 16) and the PyTorch form's chunk, so
one bound covers eager, compiled and triton. Plus the float64 reference's own error and an underflow term
(float32 operations below 2^-126 err by at most 2^-126 absolute).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from muse.scan import hebbian_parallel_with_state
from muse.scan.hebbian import hebbian_reference_with_state
from verification import bounds as B
from verification import strategies as vs
from verification.checks import check_close
from verification.harness import host, impl_label, run, run_grads, tensor


@st.composite
def hebbian_case(draw):
    """fp16-valued float32 inputs (what Phase 2's projections give, rounded), a decay per position, W_0 and the
    state's gradient or not; head sizes past the kernel's 16-column tiles."""
    lead = draw(st.sampled_from([(1,), (2,), (2, 2)]))
    s, dk, dv = draw(st.integers(0, 40)), draw(st.sampled_from([1, 3, 16, 20])), draw(st.sampled_from([1, 2, 17]))
    band = draw(st.sampled_from(["small", "mixed"]))
    q, k = (draw(vs.real_arrays((*lead, s, dk), band=band)) for _ in range(2))
    v = draw(vs.real_arrays((*lead, s, dv), band=band))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    log_decay = (-rng.uniform(0.0, draw(st.sampled_from([0.0, 1e-3, 0.1, 2.0, 8.0])), (*lead, s))).astype(np.float32)
    w0 = draw(st.one_of(st.none(), vs.real_arrays((*lead, dk, dv), band="small")))
    dy = draw(vs.real_arrays((*lead, s, dv), band=band))
    dw = draw(st.one_of(st.none(), vs.real_arrays((*lead, dk, dv), band=band)))
    eta = draw(st.sampled_from([1.0, 0.7]))
    chunk = draw(st.sampled_from([None, 1, 4, 16, 32]))
    return q, k, v, log_decay, w0, dy, dw, eta, chunk


def _hebbian(q, k, v, log_decay, w0, eta, chunk):
    return hebbian_parallel_with_state(q, k, v, log_decay, eta, chunk, w0)


def _float64(q, k, v, log_decay, w0, dy, dw, eta):
    """(y, W_S, dq, dk, dv, d log_decay, dW_0) of the PyTorch form in float64 (dW_S None: W_S not used)."""
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v, log_decay)]
    w = None if w0 is None else torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    y, ws = hebbian_reference_with_state(*ts, eta, w)
    outs = [(o, g) for o, g in ((y, dy), (ws, dw)) if g is not None and o.requires_grad]
    wrt = ts + ([] if w is None else [w])
    grads = torch.autograd.grad([o for o, _ in outs], wrt, [torch.tensor(g, dtype=torch.float64) for _, g in outs],
                                allow_unused=True) if outs else [None] * len(wrt)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads, strict=True)]
    return [y.detach().numpy(), ws.detach().numpy()] + [g.numpy() for g in grads] + ([None] if w is None else [])


def _scales(q, k, v, log_decay, w0, dy, dw, eta):
    """M for (y, W_S, dq, dk, dv, d log_decay, dW_0): the float64 form on absolute values (module docstring)."""
    a = [np.abs(x.astype(np.float64)) for x in (q, k, v)]
    m = _float64(*a, log_decay, None if w0 is None else np.abs(w0.astype(np.float64)), np.abs(dy.astype(np.float64)),
                 None if dw is None else np.abs(dw.astype(np.float64)), eta)
    m_cum = (a[0] * m[2]).sum(-1) + (a[1] * m[3]).sum(-1)
    if dw is not None and m_cum.shape[-1]:
        m_cum[..., -1] += (np.abs(dw.astype(np.float64)) * m[1]).sum((-2, -1))
    m[5] = np.flip(np.cumsum(np.flip(m_cum, -1), -1), -1)
    return m


@given(case=hebbian_case())
def test_hebbian_scan_and_gradients(device, impl, case):
    """y, W_S (float32) within 2 eps_y M; dq, dk, dv, dW_0 within 2 eps_g M; d log_decay within 2 eps_l M_l; each
    plus the float64 reference's error and the underflow term, under each implementation (triton: the Hebbian
    kernel's forward and backward)."""
    q, k, v, log_decay, w0, dy, dw, eta, chunk = case
    s, dk, dv = q.shape[-2], q.shape[-1], v.shape[-1]
    args = (*(tensor(x.astype(np.float32), device) for x in (q, k, v, log_decay)),
            None if w0 is None else tensor(w0.astype(np.float32), device), eta, chunk)
    grad_out = [tensor(dy.astype(np.float32), device), None if dw is None else tensor(dw.astype(np.float32), device)]
    y, ws = run(impl, _hebbian, *args)
    got = run_grads(impl, _hebbian, args, grad_out)
    want = _float64(q, k, v, log_decay, w0, dy, dw, eta)
    m = _scales(q, k, v, log_decay, w0, dy, dw, eta)
    eps_y, eps_g, eps_l, n = B.hebbian_eps(s, dk, dv, chunk, log_decay)

    def big(a):
        return 1 + (float(np.abs(a.astype(np.float64)).sum(-1).max()) if a is not None and a.size else 0.0)

    tau = 2 * (40 * max(dk, dv) * max(s, 1) + n + 16) * B.ETA_NORMAL32 * big(q) * big(k) * big(v) * big(w0) \
        * max(big(dy), big(dw)) * (1 + s)
    ref = (8 * s + 4 * max(dk, dv) + 16) * 2.0**-53
    label = impl_label(device, impl)
    call = (f"muse.scan.hebbian_parallel_with_state(q, k, v, log_decay, eta={eta}, chunk_size={chunk}, "
            f"initial_state {w0 is not None}) with d_k={dk}, d_v={dv}, S={s}, backward(dy, dW_S {dw is not None})")
    outs = [("hebbian", host(y), 0, eps_y), ("hebbian_state", host(ws), 1, eps_y)]
    names = ["q", "k", "v", "log_decay", "initial_state"]
    outs += [(f"hebbian_grad_{names[i]}", np.zeros(want[i + 2].shape) if g is None else host(g), i + 2,
              eps_l if i == 3 else eps_g) for i, g in enumerate(got)]
    for name, value, j, eps in outs:
        check_close(name, label, value.astype(np.float64), want[j], rtol=0.0,
                    atol=(2 * eps + ref) * m[j] + tau, call=call)

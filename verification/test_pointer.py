"""The copy path (``muse.nn.PointerMixture.nll``) against its float64 definition.

Bound (docs/numerics.md, "Copy path"): ``bounds.pointer_nll_abs`` per position, built from the
exact intermediates of the same (fp32-representable) inputs: the query, key and gate GEMMs, the unit
vectors, the scaled cosines, the log-softmax over the earlier positions, the log-sigmoid gate and the
final log-sum-exp over the mixture's terms.  Cases draw small vocabularies so that targets are
offered by earlier positions (the copy terms are exercised), θ from 1 to 200, fp16 and fp32 head
inputs, query-row blocks that do and do not divide the length, and both mixtures ("cache" and
"sentinel").  The op has one implementation
(PyTorch ops, fp32); its compiled loss is checked against eager in tests/nn/test_pointer.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from muse.nn import PointerMixture
from verification import bounds as B
from verification.checks import check_close, real
from verification.harness import host, tensor


@st.composite
def pointer_case(draw):
    s, d, dk = draw(st.integers(1, 24)), draw(st.integers(1, 16)), draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    h = rng.standard_normal((s, d)).astype(draw(st.sampled_from([np.float16, np.float32]))).astype(np.float32)
    scale = draw(st.sampled_from([0.05, 1.0, 4.0]))
    wq = (scale * rng.standard_normal((dk, d))).astype(np.float32)
    wk = wq.copy() if draw(st.booleans()) else (scale * rng.standard_normal((dk, d))).astype(np.float32)
    log_theta = np.float32(math.log(draw(st.sampled_from([1.0, 20.0, 200.0]))))
    wg = (rng.standard_normal(d) * draw(st.sampled_from([0.0, 0.3]))).astype(np.float32)
    bg = np.float32(draw(st.floats(-4.0, 4.0, width=32)))
    vocab = draw(st.integers(1, 6))
    ids = rng.integers(0, vocab, s)
    targets = np.concatenate([ids[1:], rng.integers(0, vocab, 1)])
    vocab_nll = (rng.random(s) * draw(st.sampled_from([1.0, 12.0]))).astype(np.float32)
    block = draw(st.sampled_from([1, 5, 256]))
    mode = draw(st.sampled_from(["cache", "sentinel"]))
    return h, wq, wk, log_theta, wg, bg, ids, targets, vocab_nll, block, mode


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def _exact(h, wq, wk, theta, wg, bg, ids, targets, vocab_nll, mode: str = "cache") -> dict:
    """float64 intermediates and -log p(target) of the definition (muse/nn/pointer.py's docstring); "sentinel":
    the head's weight and the copy weights from one softmax over [gate + log t, s_j for j < t]."""
    h64 = h.astype(np.float64)
    q, k = h64 @ wq.astype(np.float64).T, h64 @ wk.astype(np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        kn = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    cos = qn @ kn.T
    s = theta * cos
    gate = h64 @ wg.astype(np.float64) + float(bg)
    s_len = h.shape[0]
    log_g, log_1mg = _log_sigmoid(gate), _log_sigmoid(-gate)
    log_g[0], log_1mg[0] = -np.inf, 0.0
    sentinel = gate + np.log(np.maximum(np.arange(s_len), 1))
    z = sentinel.copy()  # the sentinel's normaliser; position 0 has no earlier position
    lse_s, nll = np.zeros(s_len), np.zeros(s_len)
    for t in range(1, s_len):
        row = s[t, :t]
        lse_s[t] = row.max() + math.log(np.exp(row - row.max()).sum())
        z[t] = np.logaddexp(sentinel[t], lse_s[t])
    terms0 = (log_1mg if mode == "cache" else sentinel - z) - vocab_nll.astype(np.float64)
    for t in range(s_len):
        values = [terms0[t]]
        if t:
            row = s[t, :t]
            copy = log_g[t] + row - lse_s[t] if mode == "cache" else row - z[t]
            values += [copy[j] for j in range(t) if ids[j + 1] == targets[t]]
        v = np.array(values)
        nll[t] = -(v.max() + math.log(np.exp(v - v.max()).sum()))
    return {"q": q, "k": k, "cos": cos, "s": s, "lse_s": lse_s, "log_g": log_g, "log_1mg": log_1mg,
            "sentinel": sentinel, "z": z, "terms0": terms0, "nll": nll, "mode": mode}


@given(case=pointer_case())
def test_pointer_nll_accuracy(device, case):
    """-log p(target) of the copy path's mixture within the derived bound (docs/numerics.md)."""
    h, wq, wk, log_theta, wg, bg, ids, targets, vocab_nll, block, mode = case
    d, dk = h.shape[1], wq.shape[0]
    pointer = PointerMixture(d, dk, mode=mode, device=device)
    with torch.no_grad():
        pointer.query.weight.copy_(tensor(wq, device))
        pointer.key.weight.copy_(tensor(wk, device))
        pointer.log_theta.fill_(float(log_theta))
        pointer.gate.weight.copy_(tensor(wg[None], device))
        pointer.gate.bias.fill_(float(bg))
        got = pointer.nll(tensor(h[None], device), tensor(ids[None], device), tensor(targets[None], device),
                          tensor(vocab_nll[None], device), block=block)[0]
    theta = float(np.exp(np.float64(log_theta)))
    exact = _exact(h, wq, wk, theta, wg, bg, ids, targets, vocab_nll, mode)
    bound = B.pointer_nll_abs(h.astype(np.float64), wq.astype(np.float64), wk.astype(np.float64), theta,
                              wg.astype(np.float64), float(bg), ids, targets, vocab_nll.astype(np.float64), exact,
                              device)
    args = [real("h", h), real("wq", wq), real("wk", wk), real("wg", wg), real("ids", ids),
            real("targets", targets), real("vocab_nll", vocab_nll)]
    check_close("pointer_nll", device, host(got), exact["nll"], rtol=0, atol=bound, args=args,
                call=f"PointerMixture(mode={mode!r}).nll(h, ids, targets, vocab_nll, block={block}) "
                     f"(theta={theta:.6g}, bg={bg})")

"""linear_cross_entropy: loss and the gradients of hidden, weight and bias against float64.

Every element is checked against the bound of docs/numerics.md ("Linear cross-entropy"),
built by ``bounds.linear_cross_entropy_abs`` from the exact logits of the same rounded
inputs, for fp16, bf16 and fp32 inputs, with and without bias, with ignored targets, both
reductions and chunk sizes that do and do not divide V (chunked) or n (chunked-tokens,
torch-native). Both chunked paths and (where torch has it) the torch-native path are each held to
the bound, so they agree within twice it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from muse import kernels
from muse.train.loss import IGNORE_INDEX, default_chunk_size, has_native, linear_cross_entropy
from verification import bounds as B
from verification.checks import check_close, real
from verification.harness import host, tensor

REF_SLACK = 1 + 2.0**-20  # the float64 reference errs by <= gamma_(n+V+d) in 2**-53 units: far below


@st.composite
def loss_case(draw):
    n, d, v = draw(st.integers(1, 40)), draw(st.integers(1, 16)), draw(st.integers(2, 64))
    storage = draw(st.sampled_from(["float16", "float32", "bfloat16"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w_scale = draw(st.sampled_from([0.02, 0.5, 3.0]))
    h = _rounded(rng.standard_normal((n, d)), storage)
    w = _rounded(w_scale * rng.standard_normal((v, d)), storage)
    b = _rounded(0.5 * rng.standard_normal(v), storage) if draw(st.booleans()) else None
    targets = rng.integers(0, v, n)
    ignore = rng.random(n) < draw(st.sampled_from([0.0, 0.3]))
    ignore[rng.integers(0, n)] = False  # at least one scored token (all ignored: tests/train)
    targets[ignore] = IGNORE_INDEX
    chunk = draw(st.one_of(st.none(), st.integers(1, max(n, v) + 3)))  # vocab rows (chunked) or tokens
    reduction = draw(st.sampled_from(["mean", "sum"]))
    scale = draw(st.sampled_from([1.0, 2.0**12]))
    eps = draw(st.sampled_from([0.0, 0.0, 0.1, 0.7]))  # label smoothing
    return h, w, b, targets, chunk, reduction, scale, storage == "bfloat16", eps


def _rounded(a: np.ndarray, storage: str) -> np.ndarray:
    """``a`` rounded to ``storage``; bfloat16 (which numpy lacks) as float32 arrays of bf16 values."""
    if storage == "bfloat16":
        return torch.from_numpy(a).to(torch.bfloat16).float().numpy()
    return a.astype(storage)


# a logit 108 below the largest: its probability, e^-108, underflows fp32's exp to 0, which only an absolute term
# of the bound covers (a thorough run of the native path found such a case, 2026-12-05)
UNDERFLOW = (np.array([[1.0, -1.0]], dtype=np.float32), np.array([[60.0, 0.0], [-48.0, 0.0], [0.0, 2.0]], dtype=np.float32),
             None, np.array([0]), None, "mean", 1.0, False, 0.0)


def _exact(h, w, b, targets, eps=0.0):
    """Exact-enough float64 logits, softmax and per-token loss of the rounded inputs (label smoothing ``eps``:
    lse - (1 - eps) x_target - eps mean(x))."""
    x = h.astype(np.float64) @ w.astype(np.float64).T + (0.0 if b is None else b.astype(np.float64))
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    p = e / s
    scored = targets != IGNORE_INDEX
    t = np.where(scored, targets, 0)
    loss_tok = (m[:, 0] + np.log(s[:, 0])) - (1 - eps) * x[np.arange(len(t)), t] - eps * x.mean(axis=1)
    return x, p, np.where(scored, loss_tok, 0.0), scored


def _kernels(impl: str) -> str:
    """MUSE_KERNELS for the suite's ``impl``: the chunk bodies in PyTorch (eager) or in Triton."""
    if impl == "compiled":
        pytest.skip("the loss under torch.compile runs these same chunk loops as opaque custom ops "
                    "(tests/train/test_compiled_model_loss.py checks it against eager)")
    return "1" if impl == "triton" else "0"


def _check(device: str, impl: str, h, w, b, targets, chunk, reduction, scale, bf16: bool, eps: float = 0.0,
           bodies: str = "eager", keep_logits: bool = False) -> None:
    """``bf16``: h, w, b are float32 arrays of bf16 values, run as bfloat16 tensors."""
    def leaf(a):
        t = tensor(a, device)
        return (t.to(torch.bfloat16) if bf16 else t).requires_grad_()

    ht, wt = leaf(h), leaf(w)
    bt = None if b is None else leaf(b)
    tt = tensor(targets.astype(np.int64), device)
    with kernels.environment(MUSE_KERNELS=_kernels(bodies)):
        loss = linear_cross_entropy(ht, wt, tt, bt, reduction, chunk_size=chunk, impl=impl, keep_logits=keep_logits,
                                    label_smoothing=eps)
        (loss * scale).backward()
        default_chunk = default_chunk_size(ht, wt, impl)
    x, p, loss_tok, scored = _exact(h, w, b, targets, eps)
    count = int(scored.sum())
    grad_scale = scale / count if reduction == "mean" else scale
    storage = "bfloat16" if bf16 else h.dtype.type
    gemm16 = (bf16 or h.dtype == np.float16) and device == "cuda"
    # chunked: `chunk` vocabulary rows per chunk (its default here: all); the others: all rows per token chunk
    n_vocab_chunk = chunk if impl == "chunked" and chunk else len(w)
    token_chunk = None
    if impl == "chunked-tokens":
        token_chunk = chunk or default_chunk
    bound = B.linear_cross_entropy_abs(h.astype(np.float64), w.astype(np.float64),
                                       None if b is None else b.astype(np.float64), targets, scored, x, p,
                                       loss_tok, storage, grad_scale, gemm16, n_vocab_chunk, device,
                                       token_chunk=token_chunk, label_smoothing=eps)
    if h.dtype == np.float16:  # a gradient beyond fp16's range is inf, which is what loss scaling catches
        assume(all(np.abs(grad_scale * g).max() < 6e4 for g in bound["grads"].values()))
    want_loss, e_loss = loss_tok.sum(), bound["loss"]
    if reduction == "mean":
        want_loss, e_loss = want_loss / count, e_loss / count * (1 + B.U) + B.U * abs(want_loss / count)
    args = [real("h", h), real("w", w), real("targets", targets)] + ([real("b", b)] if b is not None else [])
    call = (f"linear_cross_entropy(h, w, targets, b, {reduction!r}, chunk_size={chunk}, impl={impl!r}, "
            f"keep_logits={keep_logits}, label_smoothing={eps})" + (" with h, w, b as torch.bfloat16" if bf16 else ""))
    label = (impl if bodies == "eager" else f"{impl}+{bodies}") + ("+kept" if keep_logits else "")
    label += "+bf16" if bf16 else ""
    check_close(f"linear_cross_entropy[{label}] loss", device, host(loss), want_loss,
                rtol=0, atol=REF_SLACK * e_loss, args=args, call=call)
    got = {"hidden": ht.grad, "weight": wt.grad, "bias": None if bt is None else bt.grad}
    for name, g in got.items():
        if g is None:
            continue
        assert g.dtype == ht.dtype, f"grad of {name} is {g.dtype}, expected {ht.dtype}"
        check_close(f"linear_cross_entropy[{label}] d{name}", device, host(g.float()),
                    grad_scale * bound["grads"][name], rtol=0, atol=REF_SLACK * bound[name], args=args, call=call)


@given(case=loss_case())
@example(case=UNDERFLOW)
def test_chunked_linear_cross_entropy_accuracy(device, impl, case):
    """Loss and d(hidden, weight, bias) within the derived bound (docs/numerics.md)."""
    _check(device, "chunked", *case, bodies=impl)


@given(case=loss_case())
@example(case=UNDERFLOW)
def test_chunked_kept_logits_linear_cross_entropy_accuracy(device, impl, case):
    """The chunked path keeping its chunks' logits for backward (``keep_logits``) within the same bound."""
    _check(device, "chunked", *case, bodies=impl, keep_logits=True)


@given(case=loss_case())
@example(case=UNDERFLOW)
def test_token_chunked_linear_cross_entropy_accuracy(device, impl, case):
    """The chunked-tokens path (gradients formed in forward, token chunks) within the same derivation."""
    _check(device, "chunked-tokens", *case, bodies=impl)


@pytest.mark.skipif(not has_native(), reason=f"torch {torch.__version__} has no F.linear_cross_entropy")
@given(case=loss_case())
@example(case=UNDERFLOW)
def test_native_linear_cross_entropy_accuracy(device, case):
    """torch's F.linear_cross_entropy (torch >= 2.13) held to the same bound, fp32 inputs (what auto uses)."""
    h, w, b, targets, chunk, reduction, scale, _, eps = case  # bf16 values are float32 arrays already
    f32 = [a if a is None or isinstance(a, np.ndarray) and a.dtype != np.float16 else a.astype(np.float32)
           for a in (h, w, b)]
    _check(device, "torch-native", *f32, targets, chunk, reduction, scale, False, eps)

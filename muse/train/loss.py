"""The language-model loss: from the head's input, without materialising (tokens, vocab) logits.

:func:`linear_cross_entropy` computes ``cross_entropy(hidden @ weight.T + bias, targets)``
with one of two implementations chosen at run time (:func:`loss_path` names it):

- ``"torch-native"``: ``torch.nn.functional.linear_cross_entropy`` with
  ``LinearCrossEntropyOptions`` (torch >= 2.13), used for fp32/fp64 inputs. For fp16
  inputs it returns an fp16 loss and computes the gradients in fp16 inside the forward,
  before a loss scale can reach them, so small gradients flush to zero (docs/training.md).
- ``"chunked"``: :class:`_ChunkedLinearCrossEntropy`, a custom autograd function over
  vocabulary chunks: every chunk's logits for all tokens (rounded to the storage dtype once,
  exactly as ``lm_head`` rounds them). Forward is one pass: an online fp32 log-sum-exp (running
  max, sum of exp(z - max) rescaled when the max grows); it keeps the log-sum-exp (n floats). Backward recomputes each
  chunk's logits, forms the softmax gradient from the saved log-sum-exp, and gets that slice
  of the weight and bias gradients from ONE GEMM over all tokens (the bias's as one more
  column: hidden with a column of ones appended; fp32 accumulation, scaled, one rounding); the
  hidden gradient accumulates over the chunks in fp32. No tensor larger than
  one chunk is alive and no fp32 copy of the weight gradient is needed. With ``keep_logits``
  forward keeps every chunk's logits (the full logits' memory in their 16-bit or storage dtype)
  and backward reads them instead of recomputing: one GEMM fewer per chunk, the same values. On CUDA every chunk is
  a multiple of 128 rows wide (the last one padded with zero rows and -inf bias), so the GEMMs
  see aligned shapes whatever V is (V = 50257 otherwise falls back to slow kernels).
- ``"chunked-tokens"``: :class:`_TokenChunkedLinearCrossEntropy`, chunks of tokens with all
  their logits: log-sum-exp, softmax gradient and the three gradients are formed in the
  forward pass, so each token costs the full-logits path's three GEMMs instead of four (no
  recomputed logits); backward only scales them. Its weight gradient accumulates in fp32, which
  for fp32 weights is the gradient itself (no extra memory), so ``auto`` picks it for fp32/fp64
  inputs where torch has no native loss and no autocast is on.

Under ``torch.compile`` each chunk loop is one opaque custom op (``muse::lce_*``), so compiled
code holds one chunk at a time as eager code does; traced as ordinary ops, inductor kept every
chunk's logits alive together.

:func:`lm_loss` keeps the full-logits loss for callers that already have logits.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

import muse.complex as C
from muse import kernels
from muse._checks import (
    FLOAT_DTYPES,
    check_float,
    check_int,
    check_same_device,
    check_tensor,
    check_type,
)
from muse.models.compile import unwrap

IGNORE_INDEX = -100
IMPLS = ("auto", "torch-native", "chunked", "chunked-tokens")
#: The chunked path's working set: 1/16 of what the full logits (fp16 + fp32 copy) would take,
#: at least CHUNK_BUDGET_MIN_BYTES and at most CHUNK_BUDGET_MAX_BYTES.
CHUNK_BUDGET_FRACTION = 16
CHUNK_BUDGET_MIN_BYTES = 8 * 2**20
CHUNK_BUDGET_MAX_BYTES = 1024 * 2**20
_CUDA_ALIGN = 128  # CUDA vocabulary chunks: a multiple of this many rows


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """fp32 cross-entropy of ``logits`` (B, S, V) against ``targets`` (B, S).

    Targets equal to -100 are not scored. ``reduction="mean"`` averages over the scored
    tokens (NaN when none is scored, like ``F.cross_entropy``); ``"sum"`` returns their sum,
    which evaluation accumulates over windows of different sizes.
    """
    check_tensor("logits", logits)
    check_tensor("targets", targets)
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a floating tensor, got {logits.dtype}")
    if targets.dtype != torch.long:
        raise TypeError(f"targets must be a torch.long tensor, got {targets.dtype}")
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, S, V) and targets (B, S); got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    _check_reduction(reduction)
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
    )


def _check_reduction(reduction: object, allow_none: bool = False) -> None:
    if reduction not in (("mean", "sum", "none") if allow_none else ("mean", "sum")):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def has_native() -> bool:
    """True when this torch has ``F.linear_cross_entropy`` with chunking options (torch >= 2.13)."""
    return hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions")


def loss_path(dtype: torch.dtype, impl: str = "auto", autocast: bool = False) -> str:
    """The implementation :func:`linear_cross_entropy` runs for hidden states of ``dtype``.

    ``"auto"``, for fp32 or fp64 inputs with no autocast enabled: ``"torch-native"`` where it
    exists, else ``"chunked-tokens"``; otherwise (16-bit inputs, or autocast: the chunked path
    runs its GEMMs in the autocast dtype) ``"chunked"``. Asking for ``"torch-native"`` on a
    torch without it is a ValueError.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch-native" and not has_native():
        raise ValueError(f"impl='torch-native' needs torch.nn.functional.linear_cross_entropy "
                         f"(torch >= 2.13); this is torch {torch.__version__}")
    if impl != "auto":
        return impl
    if dtype in (torch.float32, torch.float64) and not autocast:
        return "torch-native" if has_native() else "chunked-tokens"
    return "chunked"


def chunk_budget(vocab_size: int, n_tokens: int) -> int:
    """Bytes the chunked path may use for one chunk: 1/16 of the full logits' 6 bytes per entry, clamped."""
    full = 6 * vocab_size * max(n_tokens, 1)
    return min(max(full // CHUNK_BUDGET_FRACTION, CHUNK_BUDGET_MIN_BYTES), CHUNK_BUDGET_MAX_BYTES)


def auto_chunk_size(vocab_size: int, n_tokens: int, dtype: torch.dtype = torch.float32,
                    budget_bytes: int | None = None, impl: str = "chunked", in_place: bool = False,
                    d: int = 0) -> int:
    """The chunk size that fits ``budget_bytes`` (None: :func:`chunk_budget`).

    ``"chunked"``: vocabulary rows per chunk, all tokens at once (8 bytes per entry: fp16
    logits, their fp32 softmax gradient and its fp16 GEMM copy; or fp32 logits and gradient);
    a multiple of 128 when at least 128, never more than ``vocab_size``. ``"torch-native"``:
    tokens per chunk (6 or 4 bytes per entry); ``"chunked-tokens"``: tokens per chunk (8 bytes
    per entry, as ``"chunked"``); a multiple of 8 when at least 8, never more than ``n_tokens``.
    ``in_place`` (the Triton chunk bodies, which write the gradient over the logits): ``"chunked"``
    counts the logits in ``dtype`` plus each row's fp32 weight-gradient slice of ``d`` + 8 columns;
    ``"chunked-tokens"`` counts 4 bytes per entry for fp32 logits (16-bit inputs keep 8).
    """
    if impl not in IMPLS[1:]:
        raise ValueError(f"impl must be one of {IMPLS[1:]}, got {impl!r}")
    budget = chunk_budget(vocab_size, n_tokens) if budget_bytes is None else budget_bytes
    half = torch.finfo(dtype).bits == 16
    if impl == "torch-native":
        chunk, step, limit = budget // (vocab_size * (6 if half else 4)), 8, n_tokens
    elif impl == "chunked-tokens":
        chunk, step, limit = budget // (vocab_size * (4 if in_place and not half else 8)), 8, n_tokens
    elif in_place:
        row = max(n_tokens, 1) * torch.finfo(dtype).bits // 8 + 4 * (d + _BIAS_COLUMNS)
        chunk, step, limit = budget // row, 128, vocab_size
    else:
        chunk, step, limit = budget // (max(n_tokens, 1) * 8), 128, vocab_size
    chunk = max(1, chunk)
    if chunk >= step:
        chunk -= chunk % step
    return max(1, min(chunk, limit))


def default_chunk_size(hidden: torch.Tensor, weight: torch.Tensor, impl: str) -> int:
    """What ``linear_cross_entropy`` uses when ``chunk_size`` is None: :func:`auto_chunk_size` for
    hidden (..., d) and the (V, d) weight on path ``impl``, in place where the chunk bodies will run
    as Triton kernels (also inside the loss's custom ops when torch.compile traces): the gradient
    then overwrites the logits, which are in the autocast dtype under autocast."""
    n, d = hidden.numel() // max(hidden.shape[-1], 1), hidden.shape[-1]
    in_place = (impl != "torch-native" and hidden.dtype != torch.float64
                and kernels.enabled(hidden, weight, in_compile=_opaque()))
    logits_dtype = _autocast_gemm_dtype(hidden) or hidden.dtype  # autocast: the chunks' logits stay 16-bit
    return auto_chunk_size(weight.shape[0], max(n, 1), logits_dtype, impl=impl, in_place=in_place, d=d)


# torch.mm(..., out_dtype=) (an fp32 result of fp16 operands, CUDA): read once from the op's
# overloads, never by trying at run time (a compiled graph cannot record what a try found).
_MM_OUT_DTYPE = "dtype" in torch.ops.aten.mm.overloads()


def _mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` accumulated in fp32 and returned in fp32 (fp64 for fp64): fp16/bf16 operands stay
    16-bit on CUDA (``out_dtype``), elsewhere they are upcast first."""
    if a.dtype in (torch.float16, torch.bfloat16):
        if a.is_cuda and _MM_OUT_DTYPE:
            return torch.mm(a, b, out_dtype=torch.float32)
        return torch.mm(a.float(), b.float())
    return torch.mm(a, b)


_ADDMM_OUT_DTYPE = "dtype" in torch.ops.aten.addmm.overloads()


def _add_mm_fp32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``acc + a @ b`` into the fp32 ``acc``: one GEMM whose epilogue adds acc (CUDA, 16-bit
    operands: ``addmm(out_dtype=float32)``), else the fp32 product added in place; the same
    rounding either way (the product accumulated in fp32, one rounding of the sum).  Traced by the
    compiler (MUSE_LOSS_OPAQUE=0) it is ``acc + mm(out_dtype=float32)``, which inductor fuses: torch 2.11
    cannot trace ``addmm(out_dtype=)`` (it multiplies the dtype as if it were beta)."""
    if a.is_cuda and _ADDMM_OUT_DTYPE and a.dtype in (torch.float16, torch.bfloat16) and acc.dtype == torch.float32:
        if torch.compiler.is_compiling():
            return acc + _mm_fp32(a, b)
        return torch.addmm(acc, a, b, out_dtype=torch.float32)
    return acc.add_(_mm_fp32(a, b))


def _lse_step(z: torch.Tensor, z_max: torch.Tensor, z_sum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of the online log-sum-exp (z: a chunk's logits, any float dtype): the running per-row
    max and the sum of exp(z - max), the old sum rescaled by exp(old max - new max)."""
    new_max = torch.maximum(z_max, z.amax(1).to(z_max.dtype))
    new_sum = z_sum * (z_max - new_max).exp() + (z.to(z_max.dtype) - new_max[:, None]).exp_().sum(1)
    return new_max, new_sum


def _smoothing(label_smoothing: float, vocab_size: int) -> tuple[float, float]:
    """Label smoothing eps as (on_target, uniform) = (1 - eps, eps / V): the target distribution is
    (1 - eps) onehot + eps / V, so dloss/dlogits = softmax - on_target onehot - uniform."""
    return 1.0 - label_smoothing, label_smoothing / vocab_size


def _smoothed_loss(lse: torch.Tensor, target: torch.Tensor, z: torch.Tensor | None,
                   smoothing: tuple[float, float], z_sum: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token lse - on_target z_target - eps mean(z): the cross-entropy against the smoothed target
    (the row sums ``z_sum`` of the logits, or ``z`` itself (full rows) to sum)."""
    on_target, uniform = smoothing
    if not uniform:
        return lse - target
    if z_sum is None:
        z_sum = z.sum(1, dtype=lse.dtype)
    return lse - on_target * target - uniform * z_sum


def _dlogits(z: torch.Tensor, lse: torch.Tensor, col: torch.Tensor, keep: torch.Tensor,
             gemm_dtype: torch.dtype, smoothing: tuple[float, float] = (1.0, 0.0)) -> torch.Tensor:
    """softmax - onehot(col) in fp32 from the saved log-sum-exp, zero where ``keep`` is 0, rounded
    once to ``gemm_dtype`` for the GEMMs. ``smoothing`` (on_target, uniform): label smoothing's
    softmax - on_target * onehot - uniform (:func:`_smoothing`; (1, 0) is the plain gradient)."""
    on_target, uniform = smoothing
    g = (z.to(lse.dtype) - lse[:, None]).exp_()
    if uniform:
        g.sub_(uniform)
    rows = torch.arange(z.shape[0], device=z.device)
    g.index_put_((rows, col.clamp(min=0)), -on_target * (col >= 0).to(g.dtype), accumulate=True)
    g.mul_(keep[:, None])
    return g.to(gemm_dtype)


_BIAS_COLUMNS = 8  # a column of ones and 7 of zeros: the GEMM's row length stays a multiple of 8


def _with_ones(h: torch.Tensor, need_w: bool) -> tuple[torch.Tensor, int]:
    """The right-hand side of the weight/bias GEMM gᵀ[h | 1 | 0]: (matrix, the ones column's index).
    Without ``need_w`` only the ones (and zero) columns."""
    ones = h.new_zeros(h.shape[0], _BIAS_COLUMNS)
    ones[:, 0] = 1.0
    return (torch.cat([h, ones], 1), h.shape[1]) if need_w else (ones, 0)


_FUSED: dict = {}


def _fused(fn):
    """``fn`` compiled (one fused kernel per call instead of one per op) on CUDA; eager elsewhere,
    while an outer ``torch.compile`` traces, and under a Python dispatch mode (the live-tensor
    tracker: torch >= 2.13 raises for a fullgraph function called under one). MUSE_COMPILE_LOSS=0
    keeps it eager."""
    if (torch.compiler.is_compiling() or os.environ.get("MUSE_COMPILE_LOSS", "1") == "0"
            or _get_current_dispatch_mode() is not None):
        return fn
    if fn not in _FUSED:
        _FUSED[fn] = torch.compile(fn, fullgraph=True)
    return _FUSED[fn]


def _use_kernels(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """The chunk bodies run as Triton kernels (muse.kernels: lse_rows, softmax_grad) where kernels
    are on (CUDA, or the interpreter; never while torch.compile traces) and the arithmetic is fp32."""
    return hidden.dtype != torch.float64 and kernels.enabled(hidden, weight)


def _lse_step_kernel(z: torch.Tensor, z_max: torch.Tensor, z_sum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_lse_step` as one Triton kernel, updating z_max and z_sum in place."""
    kernels.lse_rows(z, z_max, z_sum)
    return z_max, z_sum


def _token_chunk_kernel(z: torch.Tensor, t: torch.Tensor, keep: torch.Tensor, want_grad: bool,
                        smoothing: tuple[float, float] = (1.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_token_chunk` with the log-sum-exp and the softmax gradient as Triton kernels (the
    gradient written over ``z``)."""
    z_max = torch.full((z.shape[0],), -torch.inf, dtype=torch.float32, device=z.device)
    z_sum = torch.zeros(z.shape[0], dtype=torch.float32, device=z.device)
    kernels.lse_rows(z, z_max, z_sum)
    lse = z_max + z_sum.log()
    rows = torch.arange(z.shape[0], device=z.device)
    loss = ((_smoothed_loss(lse, z[rows, t], z, smoothing)) * keep).sum()
    return loss, (kernels.softmax_grad(z, lse, t, keep, z.dtype, on_target=smoothing[0], uniform=smoothing[1])
                  if want_grad else None)


def _chunk_body(hidden: torch.Tensor, weight: torch.Tensor, plain, kernel):
    """The implementation of one chunk body: the Triton ``kernel``, else ``plain`` compiled on CUDA
    (:func:`_fused`), else ``plain``."""
    if _use_kernels(hidden, weight):
        return kernel
    return _fused(plain) if hidden.is_cuda else plain


def _vocab_forward(hidden, weight, bias, safe_targets, scored, chunk, gemm_dtype, keep_logits=False,
                   smoothing=(1.0, 0.0)):
    """The vocabulary-chunked forward: (per-token losses, 0 where not scored; per-token log-sum-exp, both
    in the compute dtype; the kept logits), an online log-sum-exp over the chunks' logits (one pass, rescaled
    sums). With ``keep_logits`` every chunk's logits are written into one (chunks, n, width) tensor that
    backward reads instead of recomputing them; else that tensor is empty. With label ``smoothing``
    (:func:`_smoothing`) the pass also sums each row's logits for the smoothed loss."""
    n = hidden.shape[0]
    acc = C.compute_dtype(hidden.dtype)  # fp32 (fp64 for fp64 inputs)
    chunks = _VocabChunks(hidden, weight, bias, chunk, gemm_dtype)
    lse_step = _chunk_body(hidden, weight, _lse_step, _lse_step_kernel)
    z_max = torch.full((n,), -torch.inf, dtype=acc, device=hidden.device)
    z_sum = torch.zeros(n, dtype=acc, device=hidden.device)
    kept = (hidden.new_empty((chunks.count, n, chunks.chunk), dtype=chunks.logits_dtype) if keep_logits
            else hidden.new_empty(_NONE))
    row_sum = torch.zeros(n, dtype=acc, device=hidden.device) if smoothing[1] else None
    with C.fp32_accumulation(hidden.device):
        for i, (v0, v1) in enumerate(chunks):
            if keep_logits:
                width = chunks.width(v0, v1)
                kept[i, :, width:] = 0  # the last chunk's unused columns off CUDA (no padding there): defined
                z = chunks.logits(v0, out=kept[i, :, :width])
            else:
                z = chunks.logits(v0)
            if row_sum is not None:  # the vocabulary's columns only (not the padded ones, whose logits are -inf)
                row_sum += z[:, : v1 - v0].sum(1, dtype=acc)
            z_max, z_sum = lse_step(z, z_max, z_sum)
    lse = z_max + z_sum.log()
    per = _smoothed_loss(lse, chunks.target_logits(safe_targets), None, smoothing, row_sum)
    return torch.where(scored, per, 0.0), lse, kept


def _scaled_into(dst: torch.Tensor, src: torch.Tensor, scale: torch.Tensor) -> None:
    """dst = src * scale (fp32 product, one rounding to dst's dtype): in eager code one kernel writing
    into dst (``out=``), not a scaled fp32 copy and then a cast; traced, the compiler fuses the two."""
    if torch.compiler.is_compiling():
        dst.copy_(src * scale)
    else:
        torch.mul(src, scale, out=dst)


def _vocab_backward(hidden, weight, bias, targets, keep, lse, scale, chunk, need, gemm_dtype, kept=None,
                    smoothing=(1.0, 0.0)):
    """The vocabulary-chunked backward: (d_hidden, d_weight, d_bias), None where not ``need``ed.

    Per chunk, dlogits = (softmax - onehot) * keep from the saved log-sum-exp (fp32, rounded once
    to the GEMM dtype; ``keep`` per token: 0 where not scored, else 1 or that token's incoming
    gradient); d(weight slice) and d(bias slice) = dlogitsᵀ [hidden | 1], one GEMM over all
    tokens; d(hidden) sums over chunks in fp32; each is multiplied by ``scale`` in fp32 and
    rounded once. The chunk's logits are recomputed, or read from ``kept`` (the forward's, left
    unchanged: backward may run again) when it holds them. Label ``smoothing`` as in :func:`_dlogits`.
    """
    need_h, need_w, need_b = need
    n, v = hidden.shape[0], weight.shape[0]
    acc = C.compute_dtype(hidden.dtype)
    chunks = _VocabChunks(hidden, weight, bias, chunk, gemm_dtype)
    use_kernels = _use_kernels(hidden, weight)
    dlogits = _fused(_dlogits) if hidden.is_cuda and not use_kernels else _dlogits
    keep = keep.to(acc)
    d_hidden = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
    alloc = torch.zeros if n == 0 else torch.empty  # every row is written below when n > 0
    d_weight = alloc(weight.shape, dtype=weight.dtype, device=weight.device) if need_w else None
    d_bias = alloc(v, dtype=bias.dtype, device=bias.device) if need_b else None
    if need_w or need_b:
        rhs, ones_col = _with_ones(chunks.h, need_w) if need_b else (chunks.h, None)
    from_kept = kept is not None and kept.dim() == 3
    with C.fp32_accumulation(hidden.device):
        for i, (v0, v1) in enumerate(chunks if n else ()):
            z = kept[i, :, : chunks.width(v0, v1)] if from_kept else chunks.logits(v0)
            if use_kernels:  # the target's column found in the kernel
                g = kernels.softmax_grad(z, lse, targets, keep, chunks.gemm_dtype, offset=v0, in_place=not from_kept,
                                         on_target=smoothing[0], uniform=smoothing[1])
            else:
                col = torch.where((targets >= v0) & (targets < v1), targets - v0, -1)  # -1: not in this chunk
                g = dlogits(z, lse, col, keep, chunks.gemm_dtype, smoothing)
            del z  # a recomputed chunk's logits: g holds what is needed (or is them, written over)
            if need_w or need_b:
                dwb = _mm_fp32(g.t(), rhs)[: v1 - v0]
                if need_w:
                    _scaled_into(d_weight[v0:v1], dwb[:, : hidden.shape[1]], scale)
                if need_b:
                    _scaled_into(d_bias[v0:v1], dwb[:, ones_col], scale)
                del dwb
            if need_h:
                d_hidden = _add_mm_fp32(d_hidden, g, chunks.weight_rows(v0))
            del g  # before the next chunk's logits are allocated
    if d_hidden is not None:
        out = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
        _scaled_into(out, d_hidden, scale)
        d_hidden = out
    return d_hidden, d_weight, d_bias


def _token_chunk(z: torch.Tensor, t: torch.Tensor, keep: torch.Tensor, want_grad: bool,
                 smoothing: tuple[float, float] = (1.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk of tokens' full logits ``z`` (fp32): the sum of its scored losses and, with
    ``want_grad``, softmax - onehot(t), zero where ``keep`` is 0 (fp32, in place of ``z``); with
    ``smoothing`` as in :func:`_dlogits`."""
    on_target, uniform = smoothing
    lse = torch.logsumexp(z, 1)
    rows = torch.arange(z.shape[0], device=z.device)
    loss = (_smoothed_loss(lse, z[rows, t], z, smoothing) * keep).sum()
    if not want_grad:
        return loss, None
    g = z.sub_(lse[:, None]).exp_()
    if uniform:
        g.sub_(uniform)
    g.index_put_((rows, t), -on_target * torch.ones_like(keep), accumulate=True)
    return loss, g.mul_(keep[:, None])


def _token_forward(hidden, weight, bias, safe, keep, chunk, need, gemm_dtype, smoothing=(1.0, 0.0)):
    """The token-chunked forward: (sum of the scored losses, d_hidden, d_weight, d_bias), the
    gradients unscaled in the compute dtype (None where not ``need``ed).

    Per chunk of tokens: all V logits (one GEMM, rounded to the storage dtype once), their fp32
    log-sum-exp and loss, and when gradients are needed dlogits = softmax - onehot (fp32, rounded
    once to the GEMM dtype), that chunk's d(hidden) = dlogits W and its share of
    d(weight) = dlogitsᵀ hidden and d(bias) = Σ dlogits, accumulated in fp32.
    """
    n, d = hidden.shape
    acc = C.compute_dtype(hidden.dtype)
    need_h, need_w, need_b = need
    want_grad = need_h or need_w or need_b
    gd = gemm_dtype or C.gemm_dtype(hidden.dtype, hidden.device)
    h, w = hidden.to(gd), weight.to(gd)
    b = None if bias is None else bias.to(gd)
    d_hidden = torch.empty((n, d), dtype=acc, device=hidden.device) if need_h else None
    d_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
    d_bias = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if need_b else None
    step = _chunk_body(hidden, weight, _token_chunk, _token_chunk_kernel)
    total = torch.zeros((), dtype=acc, device=hidden.device)
    with C.fp32_accumulation(hidden.device):
        for t0 in range(0, n, chunk):
            hc = h[t0 : t0 + chunk]
            z = torch.mm(hc, w.t()) if b is None else torch.addmm(b, hc, w.t())
            part, g = step(z.to(hidden.dtype).to(acc), safe[t0 : t0 + chunk], keep[t0 : t0 + chunk], want_grad,
                           smoothing)
            total = total + part
            del z
            if g is None:
                continue
            g = g.to(gd)
            if need_h:
                d_hidden[t0 : t0 + chunk] = _mm_fp32(g, w)
            if need_w:
                if g.dtype == acc:
                    d_weight.addmm_(g.t(), hc)
                else:
                    d_weight.add_(_mm_fp32(g.t(), hc))
            if need_b:
                d_bias.add_(g.sum(0, dtype=acc))
            del g  # before the next chunk's logits are allocated
    return total, d_hidden, d_weight, d_bias


# Each chunk loop is also a custom op: one opaque node for torch.compile. Traced as ordinary ops,
# inductor schedules the unrolled chunks so that every chunk's logits are alive together (the
# memory of the full logits, docs/training.md); as an opaque node the loop runs as in eager code,
# one chunk alive at a time. Eager calls run the Python functions directly, so a dispatch-mode
# tracker still sees every tensor. Gradients that are not needed come back as empty tensors.
_NONE = (0,)


def _opaque() -> bool:
    """True while torch.compile traces the loss and MUSE_LOSS_OPAQUE is not 0: the chunk loops are
    then the custom ops below (MUSE_LOSS_OPAQUE=0 traces them as ordinary ops, for comparison)."""
    return torch.compiler.is_compiling() and os.environ.get("MUSE_LOSS_OPAQUE", "1") != "0"


def _none_to_empty(ref: torch.Tensor, *grads):
    return tuple(ref.new_empty(_NONE) if g is None else g for g in grads)


@torch.library.custom_op("muse::lce_vocab_forward", mutates_args=())
def _vocab_forward_op(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      safe_targets: torch.Tensor, scored: torch.Tensor, chunk: int,
                      gemm_dtype: torch.dtype | None, keep_logits: bool, smoothing: list[float]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _vocab_forward(hidden, weight, bias, safe_targets, scored, chunk, gemm_dtype, keep_logits,
                          tuple(smoothing))


@_vocab_forward_op.register_fake
def _(hidden, weight, bias, safe_targets, scored, chunk, gemm_dtype, keep_logits, smoothing):
    acc, n = C.compute_dtype(hidden.dtype), hidden.shape[0]
    if keep_logits:
        width, count, logits_dtype = _VocabChunks.layout(hidden, weight, chunk, gemm_dtype)
        kept = hidden.new_empty((count, n, width), dtype=logits_dtype)
    else:
        kept = hidden.new_empty(_NONE)
    return hidden.new_empty(n, dtype=acc), hidden.new_empty(n, dtype=acc), kept


@torch.library.custom_op("muse::lce_vocab_backward", mutates_args=())
def _vocab_backward_op(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       targets: torch.Tensor, keep: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                       chunk: int, need: list[bool], gemm_dtype: torch.dtype | None, kept: torch.Tensor,
                       smoothing: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = _vocab_backward(hidden, weight, bias, targets, keep, lse, scale, chunk, tuple(need), gemm_dtype, kept,
                            tuple(smoothing))
    return _none_to_empty(hidden, *grads)


@_vocab_backward_op.register_fake
def _(hidden, weight, bias, targets, keep, lse, scale, chunk, need, gemm_dtype, kept, smoothing):
    shapes = ((hidden, hidden.shape), (weight, weight.shape), (weight, weight.shape[:1]))  # bias: weight's dtype
    return tuple(ref.new_empty(shape if want else _NONE) for (ref, shape), want in zip(shapes, need, strict=True))


@torch.library.custom_op("muse::lce_token_forward", mutates_args=())
def _token_forward_op(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      safe: torch.Tensor, keep: torch.Tensor, chunk: int, need: list[bool],
                      gemm_dtype: torch.dtype | None, smoothing: list[float]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    total, *grads = _token_forward(hidden, weight, bias, safe, keep, chunk, tuple(need), gemm_dtype, tuple(smoothing))
    return (total, *_none_to_empty(keep, *grads))


@_token_forward_op.register_fake
def _(hidden, weight, bias, safe, keep, chunk, need, gemm_dtype, smoothing):
    acc = C.compute_dtype(hidden.dtype)
    shapes = (hidden.shape, weight.shape, weight.shape[:1])
    return (keep.new_empty((), dtype=acc),
            *(keep.new_empty(shape if want else _NONE, dtype=acc) for shape, want in zip(shapes, need, strict=True)))


def _empty_to_none(grads, need):
    return tuple(g if want else None for g, want in zip(grads, need, strict=True))


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """The cross-entropies of ``hidden @ weight.T + bias`` over vocabulary chunks
    (:func:`_vocab_forward`, :func:`_vocab_backward`): their sum or mean over the scored tokens,
    or (``reduction`` "none") one per token, 0 where not scored."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, chunk, reduction, need, gemm_dtype, keep_logits,
                smoothing):
        scored = targets != ignore_index
        safe_targets = torch.where(scored, targets, 0)
        count = scored.sum()
        keep_logits = keep_logits and any(need)  # kept for a backward only
        if _opaque():
            per, lse, kept = _vocab_forward_op(hidden, weight, bias, safe_targets, scored, chunk, gemm_dtype,
                                               keep_logits, list(smoothing))
        else:
            per, lse, kept = _vocab_forward(hidden, weight, bias, safe_targets, scored, chunk, gemm_dtype,
                                            keep_logits, smoothing)
        ctx.save_for_backward(hidden, weight, bias, safe_targets, scored, lse, kept)
        ctx.setup = (chunk, need, count, reduction, gemm_dtype, smoothing)
        if reduction == "none":
            return per
        return per.sum() / count if reduction == "mean" else per.sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, scored, lse, kept = ctx.saved_tensors
        chunk, need, count, reduction, gemm_dtype, smoothing = ctx.setup
        acc = C.compute_dtype(hidden.dtype)
        keep = scored.to(acc)
        if reduction == "none":  # each token's own incoming gradient
            keep, scale = keep * grad_out.to(acc), torch.ones((), dtype=acc, device=hidden.device)
        else:
            scale = grad_out.to(acc)
        if reduction == "mean":
            scale = scale / count.clamp(min=1)  # no scored token: zero gradients, like F.cross_entropy
        args = (hidden, weight, bias, targets, keep, lse, scale, chunk)
        if _opaque():
            grads = _empty_to_none(_vocab_backward_op(*args, list(need), gemm_dtype, kept, list(smoothing)), need)
        else:
            grads = _vocab_backward(*args, need, gemm_dtype, kept, smoothing)
        return *grads, None, None, None, None, None, None, None, None


class _TokenChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum (or mean) over scored tokens of the cross-entropies of ``hidden @ weight.T + bias``,
    over token chunks with the gradients formed in forward (:func:`_token_forward`): three GEMMs per
    token, as with full logits. backward multiplies them by the incoming gradient (and 1/count for
    a mean) in fp32 and rounds once; the saved gradients are scaled in place, so it runs once.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, chunk, scale_by_count, need, gemm_dtype, smoothing):
        scored = targets != ignore_index
        safe = torch.where(scored, targets, 0)
        keep = scored.to(C.compute_dtype(hidden.dtype))
        count = scored.sum()
        if _opaque():
            total, *grads = _token_forward_op(hidden, weight, bias, safe, keep, chunk, list(need), gemm_dtype,
                                              list(smoothing))
            grads = _empty_to_none(grads, need)
        else:
            total, *grads = _token_forward(hidden, weight, bias, safe, keep, chunk, need, gemm_dtype, smoothing)
        ctx.save_for_backward(*grads, count)
        ctx.setup = (scale_by_count, hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total / count if scale_by_count else total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        d_hidden, d_weight, d_bias, count = ctx.saved_tensors
        scale_by_count, h_dtype, w_dtype, b_dtype = ctx.setup
        scale = grad_out.to(C.compute_dtype(h_dtype))
        if scale_by_count:
            scale = scale / count.clamp(min=1)  # no scored token: zero gradients, like F.cross_entropy
        grads = [None if g is None else g.mul_(scale).to(dt)
                 for g, dt in ((d_hidden, h_dtype), (d_weight, w_dtype), (d_bias, b_dtype))]
        return (*grads, None, None, None, None, None, None, None)


class _VocabChunks:
    """Iterates (v0, v1) over the vocabulary in ``chunk``-row slices and computes their logits.

    On CUDA the width is rounded up to a multiple of 128 and a chunk that runs past V (the last)
    is padded with zero weight rows and -inf bias, so every GEMM has the same aligned shape;
    padded logits are -inf and their softmax is exactly 0.
    """

    def __init__(self, hidden, weight, bias, chunk: int, gemm_dtype: torch.dtype | None = None):
        self.v = weight.shape[0]
        self.pad = hidden.device.type == "cuda"
        self.chunk, self.count, self.logits_dtype = self.layout(hidden, weight, chunk, gemm_dtype)
        self.storage = hidden.dtype
        self.gemm_dtype = gemm_dtype or C.gemm_dtype(hidden.dtype, hidden.device)
        self.h = hidden.to(self.gemm_dtype)
        # the weight and bias stay in their dtype and are converted a chunk at a time: no (V, d) copy
        # in the GEMM dtype (fp16 weights on CPU, fp32 under autocast) is ever alive
        self.w, self.b = weight, bias
        self._tail = None

    @staticmethod
    def layout(hidden, weight, chunk: int, gemm_dtype: torch.dtype | None) -> tuple[int, int, torch.dtype]:
        """(rows per chunk, number of chunks, the logits' dtype) for these inputs."""
        v = weight.shape[0]
        width = min(chunk, v)
        if hidden.device.type == "cuda":  # aligned GEMM shapes: a multiple of 128 rows (the last chunk padded)
            width = -(-width // _CUDA_ALIGN) * _CUDA_ALIGN
        gd = gemm_dtype or C.gemm_dtype(hidden.dtype, hidden.device)
        # a GEMM dtype narrower than the storage (autocast: bf16 GEMMs, fp32 storage) widens exactly, so the
        # logits stay in it: the same values in half the bytes; a wider one (the CPU's fp32 GEMMs of fp16
        # storage) is rounded to the storage dtype
        narrower = torch.finfo(gd).bits < torch.finfo(hidden.dtype).bits
        return width, -(-v // max(width, 1)), gd if narrower else hidden.dtype

    def __iter__(self):
        return ((v0, min(v0 + self.chunk, self.v)) for v0 in range(0, self.v, self.chunk))

    def width(self, v0: int, v1: int) -> int:
        """Columns of the logits of rows v0..v1: the whole (padded) chunk on CUDA, else v1 - v0."""
        return self.chunk if self.pad else v1 - v0

    def weight_rows(self, v0: int) -> torch.Tensor:
        """Rows v0.. of the weight in the GEMM dtype (the padded tail for the last chunk on CUDA)."""
        if self.pad and v0 + self.chunk > self.v:
            return self._padded(v0)[0]
        return self.w[v0 : v0 + self.chunk].to(self.gemm_dtype)

    def _padded(self, v0: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tail is None:
            rows = self.v - v0
            w = self.w.new_zeros(self.chunk, self.w.shape[1], dtype=self.gemm_dtype)
            w[:rows] = self.w[v0:]
            b = self.w.new_full((self.chunk,), -torch.inf, dtype=self.gemm_dtype)
            b[:rows] = 0.0 if self.b is None else self.b[v0:]
            self._tail = (w, b)
        return self._tail

    def target_logits(self, targets: torch.Tensor) -> torch.Tensor:
        """(n,) logit of each token's target in the compute dtype: an fp32 dot product of d terms
        plus the bias, rounded once to the storage dtype (within the logits' bound of the GEMM's)."""
        acc = C.compute_dtype(self.storage)
        gd = self.gemm_dtype  # the rows as the GEMM sees them (bf16 under autocast), then fp32
        z = (self.h.to(acc) * self.w[targets].to(gd).to(acc)).sum(1)
        if self.b is not None:
            z = z + self.b[targets].to(gd).to(acc)
        return z.to(self.storage).to(acc)

    def logits(self, v0: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """(n, width) logits of rows v0..: one GEMM, one rounding to the storage dtype (held in
        ``logits_dtype``, which widens to it exactly); written into ``out`` when given (by the GEMM
        itself where its dtype is the logits' and ``out`` is contiguous)."""
        if self.pad and v0 + self.chunk > self.v:
            w, b = self._padded(v0)
        else:
            w = self.w[v0 : v0 + self.chunk].to(self.gemm_dtype)
            b = None if self.b is None else self.b[v0 : v0 + self.chunk].to(self.gemm_dtype)
        direct = (out is not None and self.gemm_dtype == self.logits_dtype and out.is_contiguous()
                  and not torch.compiler.is_compiling())
        kw = {"out": out} if direct else {}
        z = torch.mm(self.h, w.t(), **kw) if b is None else torch.addmm(b, self.h, w.t(), **kw)
        if out is None:
            return z.to(self.logits_dtype)
        if not direct:
            out.copy_(z)
        return out


def _check_loss_dtype(name: str, value: object) -> None:
    """A real floating tensor: float16, float32, float64, or bfloat16 (a bf16 model's head, e.g. a GPT run
    from bf16 weights; the same chunked path as fp16)."""
    check_tensor(name, value)
    if value.dtype not in (*FLOAT_DTYPES, torch.bfloat16):
        raise TypeError(f"{name} must have dtype float16, bfloat16, float32 or float64, got {value.dtype}")


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: torch.Tensor | None = None, reduction: str = "mean",
                         ignore_index: int = IGNORE_INDEX, chunk_size: int | None = None,
                         impl: str = "auto", keep_logits: bool = False, label_smoothing: float = 0.0) -> torch.Tensor:
    """``cross_entropy(hidden @ weight.T + bias, targets)`` in fp32 (fp64 for fp64 inputs), no full logits.

    ``hidden`` (..., d) and ``targets`` (...) with the same leading shape; ``weight`` (V, d),
    ``bias`` (V,) or None, all of one floating dtype on one device. Targets equal to
    ``ignore_index`` are not scored; ``"mean"`` averages over the scored tokens (NaN when
    none is), ``"sum"`` adds them, ``"none"`` returns each token's loss (shape of ``targets``, 0
    where not scored; ``"chunked-tokens"`` then runs as ``"chunked"``, whose backward takes a
    gradient per token). ``chunk_size``: vocabulary rows per chunk for ``"chunked"``
    (rounded up to a multiple of 128 on CUDA), tokens per chunk for ``"torch-native"`` and
    ``"chunked-tokens"``; None: :func:`auto_chunk_size` from :func:`chunk_budget`. ``impl``:
    ``"auto"`` or one of the three paths
    (see :func:`loss_path`). ``keep_logits``: the vocabulary-chunked path keeps every chunk's logits
    (the memory of the full logits in their 16-bit or storage dtype) for backward instead of
    recomputing them, one GEMM fewer per chunk, the same values; the other paths never recompute
    them. ``label_smoothing`` eps in [0, 1): the cross-entropy against (1 - eps) onehot + eps / V, as
    ``F.cross_entropy(..., label_smoothing=eps)`` (every path; the vocabulary-chunked one sums each row's
    logits in its one forward pass; ``"auto"`` takes ``"chunked-tokens"`` where it would take torch's loss,
    which forms the full logits when it smooths). Gradients come back in each input's dtype.
    """
    for name, t in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if t is not None:
            _check_loss_dtype(name, t)
    check_tensor("targets", targets)
    if targets.dtype != torch.long:
        raise TypeError(f"targets must be a torch.long tensor, got {targets.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != hidden.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but hidden has {hidden.dtype}; they must match")
    check_same_device([("hidden", hidden.device), ("weight", weight.device), ("targets", targets.device)]
                      + ([("bias", bias.device)] if bias is not None else []))
    if weight.dim() != 2 or hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden must be (..., d) and weight (V, d); got {tuple(hidden.shape)} "
                         f"and {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets must have shape {tuple(hidden.shape[:-1])} (hidden without its last dim), "
                         f"got {tuple(targets.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    _check_reduction(reduction, allow_none=True)
    check_int("ignore_index", ignore_index)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, min_value=1)
    check_type("keep_logits", keep_logits, bool, "a bool")
    eps = check_float("label_smoothing", label_smoothing, min_value=0.0, max_value=1.0, max_inclusive=False)
    smoothing = _smoothing(eps, weight.shape[0])
    path = loss_path(hidden.dtype, impl, autocast=_autocast_gemm_dtype(hidden) is not None)
    if path == "torch-native" and eps and impl == "auto":  # torch's loss only chunks without smoothing
        path = "chunked-tokens"
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    if chunk_size is None:
        chunk_size = default_chunk_size(hidden, weight, path)
    if path == "torch-native":  # our chunk size: its own CPU heuristic picked 1-row chunks (docs/training.md)
        # under torch.compile torch forces allow_retain_graph=True with a warning, which fullgraph cannot
        # trace: ask for it there (one gradient-sized allocation more; eager keeps the leaner default)
        options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_size, chunking_method=None,
                                                     allow_retain_graph=torch.compiler.is_compiling())
        with torch.autocast(hidden.device.type, enabled=False):
            loss = F.linear_cross_entropy(h, weight, t, linear_bias=bias, reduction=reduction,
                                          ignore_index=ignore_index, label_smoothing=eps, options=options)
        loss = loss if loss.dtype == torch.float64 else loss.float()
        return loss.reshape(targets.shape) if reduction == "none" else loss
    grad = torch.is_grad_enabled()
    need = (grad and hidden.requires_grad, grad and weight.requires_grad,
            grad and bias is not None and bias.requires_grad)
    if reduction == "none":  # per-token gradients: only the vocabulary-chunked backward takes them
        if path == "chunked-tokens":
            path, chunk_size = "chunked", default_chunk_size(hidden, weight, "chunked")
        out = _ChunkedLinearCrossEntropy.apply(h, weight, bias, t, ignore_index, chunk_size, reduction, need,
                                               _autocast_gemm_dtype(hidden), keep_logits, smoothing)
        return out.reshape(targets.shape)
    if path == "chunked-tokens":
        return _TokenChunkedLinearCrossEntropy.apply(h, weight, bias, t, ignore_index, chunk_size,
                                                     reduction == "mean", need, _autocast_gemm_dtype(hidden), smoothing)
    return _ChunkedLinearCrossEntropy.apply(h, weight, bias, t, ignore_index, chunk_size, reduction, need,
                                            _autocast_gemm_dtype(hidden), keep_logits, smoothing)


def _autocast_gemm_dtype(hidden: torch.Tensor) -> torch.dtype | None:
    """Under an enabled autocast, fp32 inputs: the autocast dtype, for the GEMMs of forward AND
    backward (as ``lm_head`` + cross-entropy would run them); else None (the storage policy)."""
    kind = hidden.device.type
    if hidden.dtype == torch.float32 and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return None


def model_loss(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor,
               reduction: str = "mean", impl: str = "auto", chunk_size: int | None = None,
               keep_logits: bool = False, label_smoothing: float = 0.0) -> torch.Tensor:
    """The LM loss of ``model`` on ``input_ids``: ``model(ids, return_hidden=True)``, then :func:`head_loss`.

    ``model`` may be wrapped in DistributedDataParallel and/or torch.compile (its forward runs
    through the wrappers, the head is read from the module under them).
    """
    check_type("model", model, torch.nn.Module, "an nn.Module")
    core = unwrap(model)
    _head(core)
    return head_loss(core, model(input_ids, return_hidden=True), input_ids, targets, reduction, impl, chunk_size,
                     keep_logits, label_smoothing)


def _head(core: torch.nn.Module) -> torch.nn.Module:
    head = getattr(core, "lm_head", None)
    if not isinstance(head, torch.nn.Module) or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise TypeError(f"model must have an lm_head module with a .weight; {type(core).__name__} has none")
    return head


def head_loss(model: torch.nn.Module, hidden: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor,
              reduction: str = "mean", impl: str = "auto", chunk_size: int | None = None,
              keep_logits: bool = False, label_smoothing: float = 0.0) -> torch.Tensor:
    """The LM loss from the head input ``hidden`` (B, S, d) that ``model(input_ids, return_hidden=True)``
    gave: the fused loss of its ``lm_head``, mixed with the copy path's when the model has a
    ``pointer`` (the head's loss per token, then :meth:`muse.nn.PointerMixture.nll`). ``reduction`` as
    in :func:`linear_cross_entropy`; ``"none"``: each token's loss (B, S) fp32, 0 where ignored.
    ``label_smoothing`` as there; a model with a copy path takes none (its mixture has no vocabulary mean)."""
    head = _head(model)
    pointer = getattr(model, "pointer", None)
    if pointer is None:
        return linear_cross_entropy(hidden, head.weight, targets, getattr(head, "bias", None), reduction,
                                    chunk_size=chunk_size, impl=impl, keep_logits=keep_logits,
                                    label_smoothing=label_smoothing)
    if label_smoothing != 0.0:
        raise ValueError(f"label_smoothing must be 0 for a model with a copy path ({type(model).__name__} has a "
                         f"pointer: its mixture of the head and the copy distribution has no vocabulary mean), "
                         f"got {label_smoothing!r}")
    _check_reduction(reduction, allow_none=True)
    vocab_nll = linear_cross_entropy(hidden, head.weight, targets, getattr(head, "bias", None), "none",
                                     chunk_size=chunk_size, impl=impl, keep_logits=keep_logits)
    nll = pointer.nll(hidden, input_ids, targets, vocab_nll, IGNORE_INDEX)
    if reduction == "none":
        return nll
    total = nll.sum()
    return total / (targets != IGNORE_INDEX).sum() if reduction == "mean" else total


def compile_model_loss(model: torch.nn.Module, *, backend: str = "inductor", reduction: str = "mean",
                       impl: str = "auto", mode: str | None = None, keep_logits: bool = False,
                       label_smoothing: float = 0.0):
    """``(input_ids, targets) -> model_loss(model, ...)`` compiled as one graph, the model and the
    chunked loss together (fullgraph): the chunk loop costs no per-op host dispatch.  ``model`` is
    the plain module (not a compiled or DDP wrapper).  ``mode``: one of ``muse.models.compile.MODES``;
    under CUDA graphs (``"reduce-overhead"``) the returned loss lives in the graph's memory until the next call.  Sets the
    GEMM policy process-wide first (``muse.complex.set_gemm_policy``)."""
    from muse.models.compile import BACKENDS, GRAPH_MODES, check_mode

    check_type("model", model, torch.nn.Module, "an nn.Module")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_reduction(reduction)
    check_mode(mode)
    check_type("keep_logits", keep_logits, bool, "a bool")
    label_smoothing = check_float("label_smoothing", label_smoothing, min_value=0.0, max_value=1.0,
                                  max_inclusive=False)
    if mode in GRAPH_MODES and backend != "inductor":
        raise ValueError(f"mode={mode!r} needs backend='inductor', got {backend!r}")
    C.set_gemm_policy()

    def loss(input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return model_loss(model, input_ids, targets, reduction, impl, keep_logits=keep_logits,
                          label_smoothing=label_smoothing)

    return torch.compile(loss, backend=backend, fullgraph=True, mode=mode)


__all__ = [
    "CHUNK_BUDGET_FRACTION", "CHUNK_BUDGET_MAX_BYTES", "CHUNK_BUDGET_MIN_BYTES", "IGNORE_INDEX", "IMPLS",
    "auto_chunk_size", "chunk_budget", "compile_model_loss", "default_chunk_size", "has_native", "head_loss",
    "linear_cross_entropy", "lm_loss",
    "loss_path", "model_loss",
]

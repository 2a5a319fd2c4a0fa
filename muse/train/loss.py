"""The language-model loss: from the head's input, without materialising (tokens, vocab) logits.

:func:`linear_cross_entropy` computes ``cross_entropy(hidden @ weight.T + bias, targets)``
with one of two implementations chosen at run time (:func:`loss_path` names it):

- ``"torch-native"``: ``torch.nn.functional.linear_cross_entropy`` with
  ``LinearCrossEntropyOptions`` (torch >= 2.13), used for fp32/fp64 inputs. For fp16
  inputs it returns an fp16 loss and computes the gradients in fp16 inside the forward,
  before a loss scale can reach them, so small gradients flush to zero (docs/training.md).
- ``"chunked"``: :class:`_ChunkedLinearCrossEntropy`, a custom autograd function. Forward
  runs over token chunks: the chunk's logits (rounded to the storage dtype once, exactly as
  ``lm_head`` rounds them) and their fp32 log-sum-exp, kept per token (n floats). Backward
  runs over vocabulary chunks: it recomputes that slice of the logits for every token, forms
  the softmax gradient from the saved log-sum-exp, and gets each slice of the weight and bias
  gradient from ONE GEMM / sum over all tokens (fp32 accumulation, scaled, one rounding);
  the hidden gradient accumulates over the slices in fp32. No tensor larger than one chunk is
  alive and no fp32 copy of the weight gradient is needed. On CUDA every logits chunk lives
  in a buffer whose rows are padded to a multiple of 64 columns, so the GEMMs see aligned
  leading dimensions whatever V is (V = 50257 otherwise falls back to slow kernels).

:func:`lm_loss` keeps the full-logits loss for callers that already have logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import muse.complex as C
from muse._checks import check_float_tensor, check_int, check_same_device, check_tensor, check_type

IGNORE_INDEX = -100
IMPLS = ("auto", "torch-native", "chunked")
#: The chunked path's working set: 1/8 of what the full logits (fp16 + fp32 copy) would take,
#: at least CHUNK_BUDGET_MIN_BYTES and at most CHUNK_BUDGET_MAX_BYTES.
CHUNK_BUDGET_FRACTION = 8
CHUNK_BUDGET_MIN_BYTES = 64 * 2**20
CHUNK_BUDGET_MAX_BYTES = 1024 * 2**20
_ROW_ALIGN = 64  # CUDA logits buffers: row length rounded up to this many columns


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


def _check_reduction(reduction: object) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def has_native() -> bool:
    """True when this torch has ``F.linear_cross_entropy`` with chunking options (torch >= 2.13)."""
    return hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions")


def loss_path(dtype: torch.dtype, impl: str = "auto") -> str:
    """The implementation :func:`linear_cross_entropy` runs for hidden states of ``dtype``.

    ``"auto"`` picks ``"torch-native"`` where it exists and the inputs are fp32 or fp64,
    else ``"chunked"``; asking for ``"torch-native"`` on a torch without it is a ValueError.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch-native" and not has_native():
        raise ValueError(f"impl='torch-native' needs torch.nn.functional.linear_cross_entropy "
                         f"(torch >= 2.13); this is torch {torch.__version__}")
    if impl != "auto":
        return impl
    return "torch-native" if has_native() and dtype in (torch.float32, torch.float64) else "chunked"


def chunk_budget(vocab_size: int, n_tokens: int) -> int:
    """Bytes the chunked path may use for one chunk: 1/8 of the full logits' 6 bytes per entry, clamped."""
    full = 6 * vocab_size * max(n_tokens, 1)
    return min(max(full // CHUNK_BUDGET_FRACTION, CHUNK_BUDGET_MIN_BYTES), CHUNK_BUDGET_MAX_BYTES)


def auto_chunk_size(vocab_size: int, n_tokens: int, dtype: torch.dtype = torch.float32,
                    budget_bytes: int | None = None) -> int:
    """Tokens per forward chunk: one chunk's logits (storage dtype + fp32) fit ``budget_bytes``.

    ``budget_bytes`` None: :func:`chunk_budget`. A multiple of 8 (tensor-core friendly) when at
    least 8, and never more than ``n_tokens``.
    """
    budget = chunk_budget(vocab_size, n_tokens) if budget_bytes is None else budget_bytes
    per_token = vocab_size * (4 + (2 if torch.finfo(dtype).bits == 16 else 0))
    chunk = max(1, budget // per_token)
    if chunk >= 8:
        chunk -= chunk % 8
    return max(1, min(chunk, n_tokens))


def auto_vocab_chunk_size(vocab_size: int, n_tokens: int, dtype: torch.dtype = torch.float32,
                          budget_bytes: int | None = None) -> int:
    """Vocabulary rows per backward chunk: logits, fp32 softmax gradient and its GEMM copy fit the budget.

    A multiple of 128 when at least 128, never more than ``vocab_size``.
    """
    budget = chunk_budget(vocab_size, n_tokens) if budget_bytes is None else budget_bytes
    per_row = max(n_tokens, 1) * (4 + (4 if torch.finfo(dtype).bits == 16 else 0))
    chunk = max(1, budget // per_row)
    if chunk >= 128:
        chunk -= chunk % 128
    return max(1, min(chunk, vocab_size))


_MM_OUT_DTYPE: bool | None = None  # whether torch.mm(..., out_dtype=) works here (CUDA, torch >= 2.8)


def _mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` accumulated in fp32 and returned in fp32 (fp64 for fp64): fp16 operands stay fp16
    on CUDA (``out_dtype``), elsewhere they are upcast first."""
    global _MM_OUT_DTYPE
    if a.dtype == torch.float16 and a.is_cuda:
        if _MM_OUT_DTYPE is not False:
            try:
                out = torch.mm(a, b, out_dtype=torch.float32)
                _MM_OUT_DTYPE = True
                return out
            except (TypeError, RuntimeError):
                _MM_OUT_DTYPE = False
        return torch.mm(a.float(), b.float())
    return torch.mm(a, b)


def _buffer(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised (rows, cols) view; on CUDA its row stride is padded to _ROW_ALIGN columns."""
    if device.type != "cuda":
        return torch.empty(rows, cols, dtype=dtype, device=device)
    padded = -(-cols // _ROW_ALIGN) * _ROW_ALIGN
    return torch.empty(rows, padded, dtype=dtype, device=device)[:, :cols]


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum (or mean) over scored tokens of the cross-entropies of ``hidden @ weight.T + bias``.

    forward: token chunks; keeps the per-token log-sum-exp. backward: vocabulary chunks;
    recomputes the logits slice, dlogits = softmax - onehot (unscaled, in fp32, rounded once to
    the GEMM dtype), then d(weight slice) = dlogitsᵀ hidden and d(bias slice) in one fp32
    reduction over all tokens each, d(hidden) summed over slices in fp32; every gradient is
    multiplied by the incoming gradient (and 1/count for a mean) in fp32 and rounded once.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, chunk_size, vocab_chunk_size,
                scale_by_count, need):
        n, v = hidden.shape[0], weight.shape[0]
        gd = C.gemm_dtype(hidden.dtype, hidden.device)
        acc = C.compute_dtype(hidden.dtype)  # fp32 (fp64 for fp64 inputs)
        w = weight.to(gd)
        b = None if bias is None else bias.to(gd)
        scored = targets != ignore_index
        safe_targets = torch.where(scored, targets, 0)
        count = scored.sum()
        lse = torch.empty(n, dtype=acc, device=hidden.device)
        z_target = torch.empty(n, dtype=acc, device=hidden.device)
        if n:
            zbuf = _buffer(min(chunk_size, n), v, gd, hidden.device)
        with C.fp32_accumulation(hidden.device):
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                z = zbuf[: stop - start]
                h = hidden[start:stop].to(gd)
                if b is None:
                    torch.mm(h, w.t(), out=z)
                else:
                    torch.addmm(b, h, w.t(), out=z)
                z = z.to(hidden.dtype).to(acc)  # one rounding to the storage dtype: the logits lm_head gives
                lse[start:stop] = torch.logsumexp(z, 1)
                z_target[start:stop] = z.gather(1, safe_targets[start:stop, None]).squeeze(1)
                del z
        if n:
            del zbuf
        total = torch.where(scored, lse - z_target, 0.0).sum()
        ctx.save_for_backward(hidden, weight, bias, safe_targets, scored, lse)
        ctx.setup = (vocab_chunk_size, need, count if scale_by_count else None)
        return total / count if scale_by_count else total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, scored, lse = ctx.saved_tensors
        vocab_chunk, (need_h, need_w, need_b), count = ctx.setup
        n, v = hidden.shape[0], weight.shape[0]
        gd = C.gemm_dtype(hidden.dtype, hidden.device)
        acc = C.compute_dtype(hidden.dtype)
        scale = grad_out.to(acc)
        if count is not None:
            scale = scale / count.clamp(min=1)  # no scored token: zero gradients, like F.cross_entropy
        h, w = hidden.to(gd), weight.to(gd)
        b = None if bias is None else bias.to(gd)
        keep = scored.to(acc)[:, None]
        rows = torch.arange(n, device=hidden.device)
        d_hidden = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
        alloc = torch.zeros if n == 0 else torch.empty  # every row is written below when n > 0
        d_weight = alloc(weight.shape, dtype=weight.dtype, device=weight.device) if need_w else None
        d_bias = alloc(v, dtype=bias.dtype, device=bias.device) if need_b else None
        if n == 0:
            return _grads(d_hidden, hidden.dtype, d_weight, d_bias, scale)
        width = min(vocab_chunk, v)
        zbuf = _buffer(n, width, gd, hidden.device)
        gbuf = _buffer(n, width, acc, hidden.device)
        g16buf = _buffer(n, width, gd, hidden.device) if gd != acc else None
        with C.fp32_accumulation(hidden.device):
            for v0 in range(0, v, vocab_chunk):
                v1 = min(v0 + vocab_chunk, v)
                z = zbuf[:, : v1 - v0]
                if b is None:
                    torch.mm(h, w[v0:v1].t(), out=z)
                else:
                    torch.addmm(b[v0:v1], h, w[v0:v1].t(), out=z)
                g = gbuf[:, : v1 - v0]
                g.copy_(z.to(hidden.dtype))  # the same rounded logits as forward
                g.sub_(lse[:, None]).exp_()  # softmax from the saved log-sum-exp
                inside = (targets >= v0) & (targets < v1)
                col = torch.where(inside, targets - v0, 0)
                g.index_put_((rows, col), -inside.to(acc), accumulate=True)  # p - onehot(target)
                g.mul_(keep)  # ignored tokens have no gradient
                if need_b:
                    d_bias[v0:v1] = g.sum(0).mul_(scale)
                if g16buf is not None:
                    g = g16buf[:, : v1 - v0].copy_(g)
                if need_w:
                    d_weight[v0:v1] = _mm_fp32(g.t(), h).mul_(scale)
                if need_h:
                    d_hidden.add_(_mm_fp32(g, w[v0:v1]))
        return _grads(d_hidden, hidden.dtype, d_weight, d_bias, scale)


def _grads(d_hidden, hidden_dtype, d_weight, d_bias, scale):
    if d_hidden is not None:
        d_hidden = d_hidden.mul_(scale).to(hidden_dtype)
    return d_hidden, d_weight, d_bias, None, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: torch.Tensor | None = None, reduction: str = "mean",
                         ignore_index: int = IGNORE_INDEX, chunk_size: int | None = None,
                         impl: str = "auto", vocab_chunk_size: int | None = None) -> torch.Tensor:
    """``cross_entropy(hidden @ weight.T + bias, targets)`` in fp32 (fp64 for fp64 inputs), no full logits.

    ``hidden`` (..., d) and ``targets`` (...) with the same leading shape; ``weight`` (V, d),
    ``bias`` (V,) or None, all of one floating dtype on one device. Targets equal to
    ``ignore_index`` are not scored; ``"mean"`` averages over the scored tokens (NaN when
    none is), ``"sum"`` adds them. ``chunk_size`` is tokens per forward chunk and
    ``vocab_chunk_size`` vocabulary rows per backward chunk of the chunked path (None: from
    :func:`chunk_budget`; torch-native uses ``chunk_size`` only). ``impl``: ``"auto"``, ``"torch-native"`` or ``"chunked"``
    (see :func:`loss_path`). Gradients come back in each input's dtype.
    """
    check_float_tensor("hidden", hidden)
    check_float_tensor("weight", weight)
    check_tensor("targets", targets)
    if bias is not None:
        check_float_tensor("bias", bias)
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
    _check_reduction(reduction)
    check_int("ignore_index", ignore_index)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, min_value=1)
    if vocab_chunk_size is not None:
        check_int("vocab_chunk_size", vocab_chunk_size, min_value=1)
    path = loss_path(hidden.dtype, impl)
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    if chunk_size is None:
        chunk_size = auto_chunk_size(weight.shape[0], max(h.shape[0], 1), hidden.dtype)
    if path == "torch-native":  # our chunk size: its own CPU heuristic picked 1-row chunks (docs/training.md)
        options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_size, chunking_method=None)
        with torch.autocast(hidden.device.type, enabled=False):
            loss = F.linear_cross_entropy(h, weight, t, linear_bias=bias, reduction=reduction,
                                          ignore_index=ignore_index, options=options)
        return loss if loss.dtype == torch.float64 else loss.float()
    grad = torch.is_grad_enabled()
    need = (grad and hidden.requires_grad, grad and weight.requires_grad,
            grad and bias is not None and bias.requires_grad)
    if vocab_chunk_size is None:
        vocab_chunk_size = auto_vocab_chunk_size(weight.shape[0], max(h.shape[0], 1), hidden.dtype)
    return _ChunkedLinearCrossEntropy.apply(h, weight, bias, t, ignore_index, chunk_size, vocab_chunk_size,
                                            reduction == "mean", need)


def model_loss(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor,
               reduction: str = "mean", impl: str = "auto", chunk_size: int | None = None) -> torch.Tensor:
    """The LM loss of ``model`` on ``input_ids``: ``model(ids, return_hidden=True)`` + its ``lm_head``.

    ``model`` may be wrapped in DistributedDataParallel (its forward runs through the
    wrapper, the head is read from ``model.module``).
    """
    check_type("model", model, torch.nn.Module, "an nn.Module")
    core = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    head = getattr(core, "lm_head", None)
    if not isinstance(head, torch.nn.Module) or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise TypeError(f"model must have an lm_head module with a .weight; {type(core).__name__} has none")
    hidden = model(input_ids, return_hidden=True)
    return linear_cross_entropy(hidden, head.weight, targets, getattr(head, "bias", None), reduction,
                                chunk_size=chunk_size, impl=impl)


__all__ = [
    "CHUNK_BUDGET_FRACTION", "CHUNK_BUDGET_MAX_BYTES", "CHUNK_BUDGET_MIN_BYTES", "IGNORE_INDEX", "IMPLS",
    "auto_chunk_size", "auto_vocab_chunk_size", "chunk_budget", "has_native", "linear_cross_entropy", "lm_loss",
    "loss_path", "model_loss",
]

"""The language-model loss: from the head's input, without materialising (tokens, vocab) logits.

:func:`linear_cross_entropy` computes ``cross_entropy(hidden @ weight.T + bias, targets)``
with one of two implementations chosen at run time (:func:`loss_path` names it):

- ``"torch-native"``: ``torch.nn.functional.linear_cross_entropy`` with
  ``LinearCrossEntropyOptions`` (torch >= 2.13), used for fp32/fp64 inputs. For fp16
  inputs it returns an fp16 loss and computes the gradients in fp16 inside the forward,
  before a loss scale can reach them, so small gradients flush to zero (docs/training.md).
- ``"chunked"``: :class:`_ChunkedLinearCrossEntropy`, a custom autograd function over
  token chunks: per chunk the logits (rounded to the storage dtype once, exactly as
  ``lm_head`` rounds them), an fp32 log-sum-exp, the softmax gradient, and the
  gradients of hidden, weight and bias accumulated in fp32 — no tensor larger than one
  chunk's logits is alive. The gradients are computed in the forward (no second pass over
  the head in backward) and scaled by the incoming gradient in fp32 in backward, so loss
  scaling protects them as it does the full-logits path.

:func:`lm_loss` keeps the full-logits loss for callers that already have logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import muse.complex as C
from muse._checks import check_float_tensor, check_int, check_same_device, check_tensor, check_type

IGNORE_INDEX = -100
IMPLS = ("auto", "torch-native", "chunked")
CHUNK_BUDGET_BYTES = 64 * 2**20  # the chunked path's working set per chunk (logits + softmax grad)


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


def auto_chunk_size(vocab_size: int, n_tokens: int, dtype: torch.dtype = torch.float32,
                    budget_bytes: int = CHUNK_BUDGET_BYTES) -> int:
    """Tokens per chunk so that one chunk's fp32 logits (+ their fp16 copy for 16-bit ``dtype``) fit the budget.

    A multiple of 8 (tensor-core friendly) when at least 8, and never more than ``n_tokens``.
    """
    per_token = vocab_size * (4 + (2 if torch.finfo(dtype).bits == 16 else 0))
    chunk = max(1, budget_bytes // per_token)
    if chunk >= 8:
        chunk -= chunk % 8
    return max(1, min(chunk, n_tokens))


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum of per-token cross-entropies of ``hidden @ weight.T + bias`` and its gradients, chunk by chunk.

    forward returns the sum (or mean) over scored tokens; the gradients of the sum w.r.t. hidden
    (N, d), weight (V, d) and bias (V,) are accumulated in fp32 buffers during the forward
    and multiplied by the incoming gradient (and 1/count for a mean) in backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, chunk_size, scale_by_count, need):
        n, v = hidden.shape[0], weight.shape[0]
        need_h, need_w, need_b = need
        gd = C.gemm_dtype(hidden.dtype, hidden.device)
        acc = C.compute_dtype(hidden.dtype)  # fp32 (fp64 for fp64 inputs)
        w = weight.to(gd)
        b = None if bias is None else bias.to(gd)
        scored = targets != ignore_index
        count = scored.sum()
        d_hidden = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
        d_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        d_bias = torch.zeros(v, dtype=acc, device=weight.device) if need_b else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        with C.fp32_accumulation(hidden.device):
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                h = hidden[start:stop].to(gd)  # (C, d)
                z = torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())  # (C, V)
                z = z.to(hidden.dtype)  # one rounding to the storage dtype: the logits lm_head gives
                z = z.to(acc)
                keep = scored[start:stop]
                t = torch.where(keep, targets[start:stop], 0)
                z_target = z.gather(1, t[:, None]).squeeze(1)  # (C,)
                z_max = z.amax(1, keepdim=True)
                z.sub_(z_max).exp_()  # exp(z - max), in place
                z_sum = z.sum(1, keepdim=True)
                lse = z_max.squeeze(1) + z_sum.squeeze(1).log()
                total += torch.where(keep, lse - z_target, 0.0).sum()
                if not (need_h or need_w or need_b):
                    del z  # before the next chunk's logits are allocated
                    continue
                z.div_(z_sum)  # softmax p
                z[torch.arange(stop - start, device=z.device), t] -= keep.to(acc)  # p - onehot(target)
                z.mul_(keep[:, None])  # ignored tokens have no gradient
                if need_b:
                    d_bias += z.sum(0)
                g = z.to(gd)  # (C, V): the same tensor when gd is fp32
                del z
                if need_h:
                    d_hidden[start:stop] = torch.mm(g, w)
                if need_w and gd == acc:
                    d_weight.addmm_(g.t(), h)
                elif need_w:
                    d_weight.add_(torch.mm(g.t(), h))  # fp16 GEMM (fp32 inside), summed in fp32
                del g
        ctx.grads = (d_hidden, d_weight, d_bias)
        ctx.count = count if scale_by_count else None
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total / count if scale_by_count else total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy (chunked): backward was already run through this loss; "
                               "its gradients are computed in forward and consumed once")
        scale = grad_out.to(C.compute_dtype(ctx.dtypes[0]))
        if ctx.count is not None:
            scale = scale / ctx.count.clamp(min=1)  # no scored token: zero gradients, like F.cross_entropy
        grads = []
        for g, dtype in zip(ctx.grads, ctx.dtypes, strict=True):
            grads.append(None if g is None else g.mul_(scale).to(dtype))
        ctx.grads = None
        return grads[0], grads[1], grads[2], None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: torch.Tensor | None = None, reduction: str = "mean",
                         ignore_index: int = IGNORE_INDEX, chunk_size: int | None = None,
                         impl: str = "auto") -> torch.Tensor:
    """``cross_entropy(hidden @ weight.T + bias, targets)`` in fp32 (fp64 for fp64 inputs), no full logits.

    ``hidden`` (..., d) and ``targets`` (...) with the same leading shape; ``weight`` (V, d),
    ``bias`` (V,) or None, all of one floating dtype on one device. Targets equal to
    ``ignore_index`` are not scored; ``"mean"`` averages over the scored tokens (NaN when
    none is), ``"sum"`` adds them. ``chunk_size`` is tokens per chunk (None: from V and
    :data:`CHUNK_BUDGET_BYTES`). ``impl``: ``"auto"``, ``"torch-native"`` or ``"chunked"``
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
    return _ChunkedLinearCrossEntropy.apply(h, weight, bias, t, ignore_index, chunk_size,
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
    "CHUNK_BUDGET_BYTES", "IGNORE_INDEX", "IMPLS", "auto_chunk_size", "has_native", "linear_cross_entropy",
    "lm_loss", "loss_path", "model_loss",
]

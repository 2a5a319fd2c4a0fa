"""Held-out loss and perplexity over a token array, with the trainer's loss function."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from muse._checks import check_int, check_type
from muse.data import batched, eval_windows
from muse.data.batches import as_token_array
from muse.data.units import text_scores
from muse.train.loss import model_loss


@torch.no_grad()
def evaluate(model: nn.Module, tokens, seq_len: int, batch_size: int, stride: int | None = None,
             max_tokens: int | None = None, *, rank: int = 0, world_size: int = 1,
             token_bytes: np.ndarray | None = None, word_tokens: int | None = None) -> dict:
    """``{loss, ppl, tokens_scored}`` of ``model`` on ``tokens`` (1-D ids), in eval mode, with
    the tokenizer-independent ``bytes_scored``, ``bits_per_byte``, ``word_tokens`` and ``word_ppl``
    of :func:`muse.data.units.text_scores` (None where not given).

    Every token but the first is scored once through :func:`muse.data.eval_windows`
    (non-overlapping windows of ``seq_len``, or sliding ones with ``stride``); ``max_tokens``
    keeps only the first ``max_tokens`` targets, so periodic evals see the same subset each
    time. Every batch is (batch_size, seq_len), the last padded with ignored targets, so a compiled
    ``model`` sees one shape. Loss is the fp32 cross-entropy of :func:`muse.train.loss.model_loss` (no full-logits
    tensor), summed in float64 and divided by the count. With
    ``world_size > 1`` (torch.distributed initialised) each rank scores every
    ``world_size``-th batch and the sums are all-reduced. The model's training mode is restored.
    ``token_bytes`` ((vocab,) UTF-8 bytes per id) gives bits per byte of any scored prefix;
    ``word_tokens`` (the word-level token count of the whole text) gives word-level perplexity
    only when every target is scored.
    """
    check_type("model", model, nn.Module, "an nn.Module")
    check_int("seq_len", seq_len, min_value=1)
    check_int("batch_size", batch_size, min_value=1)
    check_int("world_size", world_size, min_value=1)
    check_int("rank", rank, min_value=0)
    if rank >= world_size:
        raise ValueError(f"rank must be < world_size={world_size}, got {rank}")
    max_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    if isinstance(max_len, int) and seq_len > max_len:
        raise ValueError(f"seq_len ({seq_len}) exceeds the model's max_seq_len ({max_len})")
    full = array = as_token_array("tokens", tokens, 2)
    if max_tokens is not None:
        check_int("max_tokens", max_tokens, min_value=1)
        array = array[: max_tokens + 1]
    bytes_scored = _bytes_scored(token_bytes, array)
    if word_tokens is not None:
        check_int("word_tokens", word_tokens, min_value=1)
        if array.shape[0] < full.shape[0]:
            word_tokens = None  # a prefix: its word-level count is not known
    device = next(model.parameters()).device
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, tokens scored)
    was_training = model.training
    model.eval()
    try:
        # one shape for every batch (the tail padded with ignored targets): a compiled model never recompiles
        windows = eval_windows(array, seq_len, stride)
        for i, (inputs, targets, n_scored) in enumerate(batched(windows, batch_size, width=seq_len)):
            if i % world_size != rank:
                continue
            total[0] += model_loss(model, inputs.to(device, non_blocking=True),
                                   targets.to(device, non_blocking=True), reduction="sum").double()
            total[1] += n_scored
    finally:
        model.train(was_training)
    if world_size > 1:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    loss_sum, count = total.tolist()
    loss = loss_sum / count
    ppl = math.inf if loss > 700 else math.exp(loss)  # NaN stays NaN
    return {"loss": loss, "ppl": ppl, "tokens_scored": int(count),
            **text_scores(loss_sum, bytes_scored=bytes_scored, word_tokens=word_tokens)}


def _bytes_scored(token_bytes: np.ndarray | None, array: np.ndarray) -> int | None:
    """UTF-8 bytes of every target of ``array`` (all ids but the first), or None."""
    if token_bytes is None:
        return None
    check_type("token_bytes", token_bytes, np.ndarray, "a numpy array of byte counts per token id")
    if token_bytes.ndim != 1 or token_bytes.dtype.kind not in "iu":
        raise ValueError(f"token_bytes must be a 1-D integer array, got {token_bytes.dtype} "
                         f"with shape {token_bytes.shape}")
    if int(array.max()) >= token_bytes.shape[0]:
        raise ValueError(f"token_bytes covers ids < {token_bytes.shape[0]}, but tokens hold id {int(array.max())}")
    return int(token_bytes[array[1:]].sum())

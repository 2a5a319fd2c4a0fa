"""The one language-model loss used by training, evaluation and benchmarks.

Logits may be fp16 (Stage 1) or fp32 (Phase 2); they are upcast to fp32 inside, so
the softmax and the log-sum-exp never run in half precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from muse._checks import check_tensor

IGNORE_INDEX = -100


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
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
    )

"""Learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math

from muse._checks import check_float, check_int


def check_schedule(lr: float, min_lr: float, warmup: int, total_steps: int) -> None:
    """Validate schedule arguments with errors that name the argument."""
    check_float("lr", lr, min_value=0.0, min_inclusive=False)
    check_float("min_lr", min_lr, min_value=0.0)
    if min_lr > lr:
        raise ValueError(f"min_lr ({min_lr}) must not exceed lr ({lr})")
    check_int("total_steps", total_steps, min_value=1)
    check_int("warmup", warmup, min_value=0)
    if warmup > total_steps:
        raise ValueError(f"warmup ({warmup} steps) must not exceed the number of steps ({total_steps})")


def lr_at(step: int, *, lr: float, min_lr: float, warmup: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Steps 0 .. warmup-1 rise linearly to ``lr`` (step k gets lr*(k+1)/warmup, so the
    first update is not a no-op); the remaining steps follow half a cosine from ``lr``
    at step ``warmup`` towards ``min_lr``, which it would reach at step ``total_steps``.
    """
    check_schedule(lr, min_lr, warmup, total_steps)
    check_int("step", step, min_value=0)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)

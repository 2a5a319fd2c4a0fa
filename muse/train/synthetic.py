"""Synthetic token data and tiny configs: for tests, smoke runs and examples without WikiText."""

from __future__ import annotations

import numpy as np

from muse._checks import check_int
from muse.train.config import TrainConfig
from muse.train.data import RunData


def repeated_sequence(vocab_size: int, period: int, n_tokens: int, seed: int = 0) -> np.ndarray:
    """A random length-``period`` sequence of ids < ``vocab_size`` tiled to ``n_tokens`` (uint16).

    Next-token prediction on it is learnable even by a model that sees one position at a time,
    so a working training loop must drive the loss well below ln(vocab_size).
    """
    check_int("vocab_size", vocab_size, min_value=2)
    check_int("period", period, min_value=2)
    check_int("n_tokens", n_tokens, min_value=2)
    base = np.random.default_rng(seed).permutation(vocab_size)[:period] if period <= vocab_size else \
        np.random.default_rng(seed).integers(0, vocab_size, period)
    return np.resize(base.astype(np.uint16), n_tokens)


def synthetic_data(vocab_size: int = 64, period: int = 48, n_train: int = 8192, n_eval: int = 2048,
                   seed: int = 0) -> RunData:
    """Train and eval arrays cut from one repeated sequence, recorded as split ``synthetic``."""
    tokens = repeated_sequence(vocab_size, period, n_train + n_eval, seed)
    return RunData(tokens[:n_train], tokens[n_train:], "synthetic", "synthetic", "synthetic", "synthetic")


def tiny_config(out: str, **overrides) -> TrainConfig:
    """A Stage 1 model small enough to train in seconds on one CPU core (vocab 64, d 16)."""
    base = dict(
        model="stage1", preset="tiny",
        model_overrides=dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.1),
        seq_len=32, batch_size=4, lr=1e-2, min_lr=1e-3, warmup=2, max_steps=20, eval_every=0,
        eval_tokens=256, final_eval_tokens=512, log_every=1, device="cpu", progress=False, out=out,
    )
    base.update(overrides)
    return TrainConfig(**base)

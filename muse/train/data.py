"""Token arrays for a run: WikiText-2 through :mod:`muse.data`, or pre-tokenised ``.npy`` files.

Whatever the source, the run records which split trained the model; training on the
validation split always carries a warning string into the logs and results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from muse.train.config import TrainConfig

VALID_TRAIN_WARNING = (
    "WARNING: this model was trained on the WikiText-2 VALIDATION split (train_split='valid'), "
    "not on the train split; its numbers are not comparable with models trained on train."
)


@dataclass(frozen=True)
class RunData:
    """Training and evaluation tokens (1-D integer arrays) and where they came from.

    ``eval_token_bytes`` and ``eval_word_tokens`` (from a WikiText split, None for a ``.npy``)
    give the evaluations bits per byte and word-level perplexity (:mod:`muse.data.units`)."""

    train: np.ndarray
    eval: np.ndarray
    train_split: str
    eval_split: str
    train_source: str
    eval_source: str
    warnings: tuple[str, ...] = ()
    eval_token_bytes: np.ndarray | None = None
    eval_word_tokens: int | None = None

    @property
    def train_split_warning(self) -> str | None:
        return " ".join(self.warnings) if self.warnings else None


def load_run_data(cfg: TrainConfig) -> RunData:
    """Resolve the train split (falling back to valid only as muse.data allows) and load both splits."""
    from muse.data import load_token_file, load_tokens, resolve_train_split

    notes: list[str] = []
    kwargs = dict(data_dir=cfg.data_dir, tokenizer_dir=cfg.tokenizer_dir, cache_dir=cfg.cache_dir,
                  allow_hub=not cfg.offline)
    if cfg.tokens_npy is not None:
        train_split, train, train_source = cfg.train_split, load_token_file(cfg.tokens_npy), cfg.tokens_npy
    else:
        train_split, fallback_warning = resolve_train_split(cfg.train_split, cfg.data_dir,
                                                            allow_hub=not cfg.offline)
        if fallback_warning:
            notes.append(fallback_warning)
        split = load_tokens(train_split, **kwargs)
        train, train_source = split.tokens, split.source
    token_bytes = word_tokens = None
    if cfg.eval_tokens_npy is not None:
        evals, eval_source = load_token_file(cfg.eval_tokens_npy), cfg.eval_tokens_npy
    else:
        split = load_tokens(cfg.eval_split, **kwargs)
        evals, eval_source = split.tokens, split.source
        token_bytes, word_tokens = split.token_bytes, split.word_tokens
    return RunData(train, evals, train_split, cfg.eval_split, str(train_source), str(eval_source),
                   tuple(notes) + tuple(split_warnings(train_split, cfg.eval_split)),
                   eval_token_bytes=token_bytes, eval_word_tokens=word_tokens)


def split_warnings(train_split: str, eval_split: str) -> list[str]:
    """Warnings that must travel with every result of a run trained/evaluated on these splits."""
    out = []
    if train_split == "valid":
        out.append(VALID_TRAIN_WARNING)
    if train_split == eval_split:
        out.append(f"WARNING: the eval split ({eval_split!r}) is the training split; eval loss is not held out.")
    return out

"""Tokenizer-independent units of scored text: UTF-8 bytes and WikiText's word-level tokens.

A token perplexity depends on the tokenizer. Bits per byte (the summed NLL in bits over the UTF-8
bytes the scored tokens encode) and word-level perplexity (exp of the summed NLL over the split's
word-level token count) do not, so they compare models across tokenizers and with word-level
results such as AWD-LSTM's 65.8 on WikiText-2 test (docs/data.md, "Units").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from muse._checks import check_int, check_type


def token_byte_lengths(tokenizer) -> np.ndarray:
    """(vocab_size,) int64: the UTF-8 bytes each id of a byte-level BPE tokenizer encodes.

    A byte-level vocabulary spells every byte as one character, so an ordinary token's length is
    its byte count; an added token (``<|endoftext|>``) is its own UTF-8 text."""
    from muse.data.tokenizer import GPT2Tokenizer

    check_type("tokenizer", tokenizer, GPT2Tokenizer, "a GPT2Tokenizer")
    backend = tokenizer.backend
    added = {tok.content for tok in backend.get_added_tokens_decoder().values()}
    out = np.empty(tokenizer.vocab_size, dtype=np.int64)
    for i in range(out.size):
        piece = backend.id_to_token(i)
        out[i] = len(piece.encode("utf-8")) if piece in added else len(piece)
    return out


def word_level_tokens(rows: Sequence[str]) -> int:
    """WikiText's word-level token count of a split: its whitespace-separated words plus one
    end-of-line token per row (the ``<eos>`` of word-level models; test 245,569, valid 217,646)."""
    check_type("rows", rows, (list, tuple), "a list or tuple of str")
    return sum(len(row.split()) for row in rows) + len(rows)


def text_scores(loss_sum: float, *, bytes_scored: int | None = None, word_tokens: int | None = None) -> dict:
    """``bits_per_byte`` and ``word_ppl`` of a summed NLL (nats), None where a count is missing."""
    bpb = ppl = None
    if bytes_scored is not None:
        check_int("bytes_scored", bytes_scored, min_value=1)
        bpb = loss_sum / (bytes_scored * math.log(2))
    if word_tokens is not None:
        check_int("word_tokens", word_tokens, min_value=1)
        per_word = loss_sum / word_tokens
        ppl = math.inf if per_word > 700 else math.exp(per_word)  # NaN stays NaN
    return {"bytes_scored": bytes_scored, "bits_per_byte": bpb, "word_tokens": word_tokens, "word_ppl": ppl}


__all__ = ["text_scores", "token_byte_lengths", "word_level_tokens"]

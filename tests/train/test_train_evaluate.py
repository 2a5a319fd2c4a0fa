"""evaluate(): coverage of every token, batching invariance, bounds, mode restore."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from muse.models import build_model
from muse.train import evaluate, lm_loss
from muse.train.synthetic import repeated_sequence

TOKENS = repeated_sequence(64, 48, 300, seed=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("stage1", "tiny", vocab_size=64, d_model=16, n_layers=1, max_seq_len=32)


def test_scores_every_token_once_and_matches_a_manual_loop(model):
    res = evaluate(model, TOKENS, seq_len=32, batch_size=3)
    assert res["tokens_scored"] == len(TOKENS) - 1
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(TOKENS) - 1, 32):
            chunk = torch.from_numpy(TOKENS[start:start + 33].astype("int64"))
            total += lm_loss(model(chunk[None, :-1]), chunk[None, 1:], reduction="sum").item()
    assert res["loss"] == pytest.approx(total / (len(TOKENS) - 1), rel=1e-6)
    assert res["ppl"] == pytest.approx(math.exp(res["loss"]))


def test_batch_size_does_not_change_the_result(model):
    a = evaluate(model, TOKENS, 32, batch_size=1)
    b = evaluate(model, TOKENS, 32, batch_size=8)
    assert a["tokens_scored"] == b["tokens_scored"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_a_compiled_model_sees_one_batch_shape(model, monkeypatch):
    """Every batch evaluate() runs is (batch_size, seq_len), the tail too: a compiled model never recompiles for
    the last, shorter batch (11-20 s a seed-size model on an H100); the score is the unpadded one."""
    shapes = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, ids, *a, **k: shapes.append(tuple(ids.shape))
                        or forward(self, ids, *a, **k))
    res = evaluate(model, TOKENS, 32, batch_size=3, stride=24)
    assert res["tokens_scored"] == len(TOKENS) - 1 and set(shapes) == {(3, 32)} and len(shapes) > 1
    monkeypatch.undo()
    want = evaluate(model, TOKENS, 32, batch_size=1, stride=24)
    assert res["loss"] == pytest.approx(want["loss"], rel=1e-6)


def test_max_tokens_and_stride(model):
    assert evaluate(model, TOKENS, 32, 4, max_tokens=50)["tokens_scored"] == 50
    assert evaluate(model, TOKENS, 32, 4, stride=8)["tokens_scored"] == len(TOKENS) - 1


def test_restores_training_mode_and_rejects_bad_args(model):
    model.train()
    evaluate(model, TOKENS, 32, 2, max_tokens=40)
    assert model.training
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, TOKENS, 32, 0)
    with pytest.raises(ValueError, match="max_tokens"):
        evaluate(model, TOKENS, 32, 1, max_tokens=0)
    with pytest.raises(TypeError, match="model"):
        evaluate("model", TOKENS, 32, 1)


def test_bits_per_byte_and_word_level_ppl(model):
    token_bytes = np.arange(1, 65, dtype=np.int64)  # id i encodes i + 1 bytes
    res = evaluate(model, TOKENS, 32, 4, token_bytes=token_bytes, word_tokens=500)
    loss_sum = res["loss"] * res["tokens_scored"]
    assert res["bytes_scored"] == int((TOKENS[1:].astype(np.int64) + 1).sum())
    assert res["bits_per_byte"] == pytest.approx(loss_sum / (res["bytes_scored"] * math.log(2)), rel=1e-12)
    assert res["word_tokens"] == 500 and res["word_ppl"] == pytest.approx(math.exp(loss_sum / 500), rel=1e-12)
    part = evaluate(model, TOKENS, 32, 4, max_tokens=50, token_bytes=token_bytes, word_tokens=500)
    assert part["bytes_scored"] == int((TOKENS[1:51].astype(np.int64) + 1).sum())
    assert part["word_tokens"] is None and part["word_ppl"] is None  # a prefix's word count is unknown
    plain = evaluate(model, TOKENS, 32, 4)
    assert plain["loss"] == res["loss"]
    assert all(plain[k] is None for k in ("bytes_scored", "bits_per_byte", "word_tokens", "word_ppl"))


@pytest.mark.parametrize(("kwargs", "exc", "needle"), [
    (dict(token_bytes=[1] * 64), TypeError, "token_bytes"),
    (dict(token_bytes=np.ones(64)), ValueError, "token_bytes"),
    (dict(token_bytes=np.ones(10, dtype=np.int64)), ValueError, "token_bytes covers ids < 10"),
    (dict(word_tokens=0), ValueError, "word_tokens"),
    (dict(word_tokens=2.5), TypeError, "word_tokens"),
])
def test_bad_units_are_named(model, kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        evaluate(model, TOKENS, 32, 4, **kwargs)

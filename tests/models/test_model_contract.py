"""The model contract every registered model keeps (the loss relies on it):

``model(ids)`` -> logits (B, S, V); ``model(ids, return_hidden=True)`` -> the real (B, S, d)
tensor the head consumes; ``model.lm_head`` has ``.weight`` (V, d) and ``.bias`` (V,) or None.
"""

from __future__ import annotations

import pytest
import torch

from muse.models import MODELS, build_model

pytestmark = pytest.mark.usefixtures("_one_thread")

VOCAB = 97


def _model(name: str):
    torch.manual_seed(0)
    return build_model(name, "tiny", vocab_size=VOCAB, dropout=0.0).eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hidden_is_what_the_head_consumes(name):
    model = _model(name)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    logits = model(ids)
    hidden = model(ids, return_hidden=True)
    d = model.config.d_model
    assert isinstance(hidden, torch.Tensor) and hidden.dtype.is_floating_point and not hidden.is_complex()
    assert hidden.shape == (2, 9, d) and logits.shape == (2, 9, VOCAB)
    head = model.lm_head
    assert head.weight.shape == (VOCAB, d)
    assert head.bias is None or head.bias.shape == (VOCAB,)
    assert torch.equal(head(hidden), logits), "lm_head(hidden) must be exactly the logits"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hidden_diagnostics_and_counters(name):
    model = _model(name)
    ids = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(2))
    hidden, diag = model(ids, return_hidden=True, return_diagnostics=True)
    assert hidden.shape == (1, 5, model.config.d_model)
    assert list(diag) == ["embedding", *(f"layer_{i}" for i in range(model.config.n_layers)), "final_norm"]
    _, diag = model(ids, return_diagnostics=True)
    assert list(diag)[-1] == "output" and diag["output"]["nonfinite"] == 0
    stats = model.get_statistics()
    assert stats["forward_count"] == 2 and stats["nonfinite_count"] == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_nonfinite_head_input_is_counted_under_return_hidden(name):
    model = _model(name)
    with torch.no_grad():
        model.final_norm.bias.fill_(float("nan"))
    ids = torch.zeros(1, 3, dtype=torch.long)
    hidden = model(ids, return_hidden=True)
    assert torch.isnan(hidden).all()
    stats = model.get_statistics()
    assert stats["nonfinite_by_stage"]["logits"] == 1 and stats["nonfinite_count"] == 1
    assert stats["nonfinite_by_stage"]["embedding"] == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_untied_heads_run_over_padded_rows_without_grad(name):
    """Every untied head is a PaddedLinear: inference reads the logits as a view of 64-aligned rows
    (the GEMM kernel an unaligned vocabulary loses), with the values of the forward with gradient."""
    from muse.nn import PaddedLinear

    model = _model(name)
    if not isinstance(model.lm_head, PaddedLinear):
        pytest.skip(f"{name}'s head is tied to its token table")
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        padded = model(ids)
    plain = model(ids)
    assert padded.stride()[-2] == 128 and plain.is_contiguous()  # VOCAB 97 -> 128 rows
    torch.testing.assert_close(padded, plain.detach(), rtol=2**-10, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_positions_argument(name):
    """Explicit positions 0..S-1 (shared or per row) give the default logits; others change them; bad ones raise."""
    model = _model(name)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(2))
    base = model(ids)
    assert torch.equal(model(ids, torch.arange(16)), base)
    assert torch.equal(model(ids, torch.arange(16).expand(2, 16)), base)
    assert not torch.equal(model(ids, torch.arange(16) + 1), base)
    with pytest.raises(ValueError, match="positions must have shape"):
        model(ids, torch.arange(15))
    with pytest.raises(ValueError, match="positions must be in"):
        model(ids, torch.arange(16) + model.max_seq_len - 8)
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        model(ids, torch.arange(16.0))



@pytest.mark.parametrize("copy_path", [False, True], ids=["plain", "copy-path"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_trainable_parameter_gets_a_gradient(name, copy_path):
    """The loss reaches every trainable parameter (the copy path included; Stage 1's with its mix blocks), so
    gradient accumulation into zero gradients the optimizer owns (muse.train.optim.FullPrecisionOptimizer.zero_grad)
    steps no parameter that eager accumulation would have left alone."""
    from muse.train.loss import model_loss

    preset, kw = "tiny", {}
    if copy_path:
        preset, kw = ("mix-copy-tiny", {}) if name == "stage1" else ("tiny", {"pointer_dim": 8, "pointer_mode": "sentinel"})
    torch.manual_seed(0)
    model = build_model(name, preset, vocab_size=VOCAB, dropout=0.0, **kw)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    model_loss(model, ids[:, :-1], ids[:, 1:]).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing

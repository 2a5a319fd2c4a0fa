"""Phase 2's incremental decoding (``Phase2Model.step`` with :class:`Phase2State`): the logits of one
full forward, whatever the split of the sequence into calls; a state of fixed size; bad input refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from muse.models import build_model
from muse.models.base import ContextCache, LanguageModel
from muse.models.phase2 import Phase2State

pytestmark = pytest.mark.usefixtures("_one_thread")

VOCAB = 97
SEQ = 40
CASES = [
    ("tiny", {}),
    ("original-tiny", {}),
    ("tiny", dict(mixers=())),
    ("tiny", dict(hebbian_chunk_size=8, bk_coupling=0.3, bk_norm=True, hebbian_shared_decay=True)),
]
IDS = [f"{preset}-{i}" for i, (preset, _) in enumerate(CASES)]


def _model(preset: str, kw: dict, double: bool = True):
    """Eval mode, float64 by default; the mixers' output weights x 20 so that their branches
    (N(0, 0.01) at init) move the logits well above rounding."""
    torch.manual_seed(0)
    model = build_model("phase2", preset, vocab_size=VOCAB, **kw).eval()
    with torch.no_grad():
        for block in model.blocks:
            for mixer in block.mixers:
                mixer.out.weight.mul_(20.0)
    return model.double() if double else model


def _ids(batch: int = 2, seq: int = SEQ) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))


def _tensors(state: Phase2State) -> list[torch.Tensor]:
    return [t for layer in state.layers for t in layer]


@pytest.mark.parametrize(("preset", "kw"), CASES, ids=IDS)
def test_step_equals_the_full_forward_for_any_split(preset, kw):
    model, ids = _model(preset, kw), _ids()
    with torch.no_grad():
        full = model(ids)  # (B, S, V) float64
    tol = 1e-12 * full.abs().max().item()  # float64; measured <= 6e-15 relative (CPU)
    prompt, state = model.step(ids[:, :7])  # prefill, then one token per call
    parts = [prompt]
    for t in range(7, SEQ):
        logits, state = model.step(ids[:, t:t + 1], state)
        parts.append(logits)
    assert state.length == SEQ and state.batch_size == 2
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= tol
    one, _ = model.step(ids)  # everything in one call
    assert (one - full).abs().max().item() <= tol
    first, mid = model.step(ids[:, :3])  # a long continuation: several Hebbian chunks after a state
    rest, _ = model.step(ids[:, 3:], mid)
    assert (torch.cat([first, rest], dim=1) - full).abs().max().item() <= tol


@pytest.mark.parametrize(("preset", "kw"), CASES[:2], ids=IDS[:2])
def test_the_state_carries_the_context(preset, kw):
    """Zeroing the carried state at the same position changes the next logits: the state is used."""
    model, ids = _model(preset, kw), _ids()
    _, state = model.step(ids[:, :20])
    blank = dataclasses.replace(state, layers=[[torch.zeros_like(t) for t in layer] for layer in state.layers])
    kept, _ = model.step(ids[:, 20:21], state)
    lost, _ = model.step(ids[:, 20:21], blank)
    assert (kept - lost).abs().max().item() > 1e-3 * kept.abs().max().item()


def test_float32_step_matches_the_forward():
    model, ids = _model("tiny", {}, double=False), _ids()
    with torch.no_grad():
        full = model(ids)
    logits, state = model.step(ids[:, :1])
    parts = [logits]
    for t in range(1, SEQ):
        logits, state = model.step(ids[:, t:t + 1], state)
        parts.append(logits)
    # one-token recursions vs the log-depth / chunked scans: measured 6.0e-7 of max|logit| (CPU)
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-5 * full.abs().max().item()
    assert all(t.dtype in (torch.complex64, torch.float32) for t in _tensors(state))


@pytest.mark.parametrize(("preset", "kw"), CASES, ids=IDS)
def test_state_size_is_fixed_and_the_input_state_is_left_unchanged(preset, kw):
    model, ids = _model(preset, kw), _ids()
    c, h, dh = model.config.bk_channels, model.config.n_heads, model.config.d_head
    expected = {"bk": ((2, c), torch.complex128), "hebbian": ((2, h, dh, dh), torch.float64)}
    _, short = model.step(ids[:, :2])
    _, long = model.step(ids[:, 2:], short)
    for state in (short, long):
        assert len(state.layers) == model.config.n_layers
        for layer in state.layers:
            assert [(tuple(t.shape), t.dtype) for t in layer] == [expected[m] for m in model.config.mixers]
    before = [t.clone() for t in _tensors(short)]
    model.step(ids[:, 2:3], short)
    assert short.length == 2 and all(torch.equal(a, b) for a, b in zip(before, _tensors(short), strict=True))


def test_step_refuses_bad_input():
    model = _model("tiny", {}, double=False)
    _, state = model.step(_ids(2, 4))
    with pytest.raises(TypeError, match="Phase2State"):
        model.step(_ids(2, 1), ContextCache(_ids(2, 4)))
    with pytest.raises(ValueError, match="batch size"):
        model.step(_ids(1, 1), state)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.step(torch.zeros(2, model.max_seq_len - 3, dtype=torch.long), state)
    with pytest.raises(ValueError, match="layers"):
        model.step(_ids(2, 1), dataclasses.replace(state, layers=state.layers[:1]))
    with pytest.raises(ValueError, match="initial_state"):
        bad = [[t[..., :1] if t.dim() > 2 else t for t in layer] for layer in state.layers]
        model.step(_ids(2, 1), dataclasses.replace(state, layers=bad))
    with pytest.raises(ValueError, match="at least one token"):
        model.step(torch.zeros(2, 0, dtype=torch.long), state)


def test_the_context_fallback_still_matches_phase2_step():
    """:meth:`LanguageModel.step_hidden` (re-runs the forward; no model uses it now) gives the same logits."""
    model, ids = _model("tiny", {}), _ids()
    h, cache = LanguageModel.step_hidden(model, ids[:, :5])
    h2, cache = LanguageModel.step_hidden(model, ids[:, 5:9], cache)
    logits, logits2 = model.lm_head(h), model.lm_head(h2)
    fast, state = model.step(ids[:, :5])
    fast2, _ = model.step(ids[:, 5:9], state)
    assert isinstance(cache, ContextCache) and cache.length == 9
    assert (torch.cat([logits, logits2], 1) - torch.cat([fast, fast2], 1)).abs().max().item() <= 1e-12


def test_mixers_forward_with_state_refuses_an_empty_or_flat_input():
    model = _model("tiny", {}, double=False)
    bk, hebbian = model.blocks[0].mixers
    with pytest.raises(ValueError, match="x must have shape"):
        bk.forward_with_state(torch.zeros(1, 0, model.config.d_model))
    with pytest.raises(ValueError, match="x must have shape"):
        hebbian.forward_with_state(torch.zeros(3, model.config.d_model))
    assert bk(torch.zeros(1, 0, model.config.d_model)).shape == (1, 0, model.config.d_model)  # forward allows S = 0

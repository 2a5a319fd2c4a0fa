"""Causality of every registered language model: logits at positions <= t never see tokens after t.

Parametrised over ``muse.models.MODELS``, so each model added to the registry is
checked without touching this file, and over the variants in ``VARIANTS``.  Each model is
built at its "tiny" preset (a variant at its own preset) in eval mode (no dropout), in
float64 where ``.double()`` is supported.

The check is exact (``torch.equal``): on CPU the same shapes run the same kernels
with the same reduction order, and a causal model combines later positions only
through exact zeros (masked weights), which add nothing; any leak, however small,
fails.  The second half makes sure the test can fail: changing the token AT t must
change the logits at t.
"""

from __future__ import annotations

import pytest
import torch

from muse.models import MODELS, build_model

SEQ = 40
CUTS = [0, 1, SEQ // 2, SEQ - 2]
# Variants beyond a model's "tiny" preset: id -> (model, preset, config overrides).
VARIANTS = {"stage1-mix-tied": ("stage1", "mix-tiny", {"tie_head": True}),
            "stage1-retention": ("stage1", "mix-tiny", {"mixer": "retention"}),
            "stage1-hybrid": ("stage1", "mix-tiny", {"mixer": "hybrid", "n_heads": 2}),
            # a complex lambda under the per-token decay: the state turns by a token-dependent angle
            "stage1-mix-rotation": ("stage1", "mix-tiny", {"lambda_kind": "complex"}),
            # the learned copy path (muse.nn.PointerMixture) on every model, and on the seed's block
            "stage1-mix-pointer": ("stage1", "mix-tiny", {"pointer_dim": 8}),
            "stage1-seed-pointer": ("stage1", "tiny", {"pointer_dim": 8}),
            "phase2-pointer": ("phase2", "tiny", {"pointer_dim": 8}),
            "gpt-pointer": ("gpt", "tiny", {"pointer_dim": 8}),
            "stage1-mix-sentinel": ("stage1", "mix-tiny", {"pointer_dim": 8, "pointer_mode": "sentinel"}),
            # the complex head over both planes, with the real token table and with the copy path reading both
            "stage1-mix-complex-head": ("stage1", "mix-tiny", {"head": "complex", "token_table": "real"}),
            "stage1-seed-complex-head": ("stage1", "tiny", {"head": "complex"}),
            "stage1-mix-complex-head-sentinel": ("stage1", "mix-tiny", {"head": "complex", "pointer_dim": 8,
                                                                        "pointer_mode": "sentinel"})}


pytestmark = pytest.mark.usefixtures("_one_thread")


def _model(name: str):
    """The tiny preset (or the variant ``name`` of VARIANTS) in eval mode, float64 if the model
    supports ``.double()``, else its own dtype."""
    model_name, preset, overrides = VARIANTS.get(name, (name, "tiny", {}))
    torch.manual_seed(0)
    model = build_model(model_name, preset, **overrides).eval()
    probe = torch.zeros(1, 2, dtype=torch.long)
    try:
        model.double()
        with torch.no_grad():
            model(probe)
    except (RuntimeError, TypeError, NotImplementedError):
        torch.manual_seed(0)
        model = build_model(model_name, preset, **overrides).eval()
    return model


@pytest.fixture(scope="module", params=sorted(MODELS) + sorted(VARIANTS))
def model(request):
    return _model(request.param)


def _fresh_tokens(ids: torch.Tensor, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """Random ids that differ from ``ids`` at every position."""
    shift = torch.randint(1, vocab, ids.shape, generator=gen)
    return (ids + shift) % vocab


@pytest.mark.parametrize("t", CUTS)
def test_future_tokens_do_not_change_past_logits(model, t):
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(100 + t)
    ids = torch.randint(0, vocab, (2, SEQ), generator=gen)
    with torch.no_grad():
        base = model(ids)
        future = ids.clone()
        future[:, t + 1 :] = _fresh_tokens(ids[:, t + 1 :], vocab, gen)
        after = model(future)
        assert torch.equal(base[:, : t + 1], after[:, : t + 1]), (
            f"logits at positions <= {t} changed when only tokens after {t} changed; "
            f"max |diff| = {(base[:, : t + 1] - after[:, : t + 1]).abs().max().item():.3e}"
        )
        assert not torch.equal(base[:, t + 1 :], after[:, t + 1 :]), "later logits ignored their own tokens"

        present = future.clone()
        present[:, t] = _fresh_tokens(future[:, t], vocab, gen)
        changed = model(present)
        assert torch.equal(after[:, :t], changed[:, :t]), f"logits before {t} saw the token at {t}"
        for b in range(ids.shape[0]):
            assert not torch.equal(after[b, t], changed[b, t]), f"sample {b}: logits at {t} ignore the token at {t}"


def test_every_registered_model_is_covered():
    assert {"stage1", "phase2", "gpt"} <= set(MODELS)

"""scripts/cache_probe.py: the cache's probabilities are causal and what its definition says."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from muse.data.batches import IGNORE_INDEX
from muse.models.registry import build_model

_SPEC = importlib.util.spec_from_file_location("cache_probe", Path(__file__).parents[1] / "scripts" / "cache_probe.py")
probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(probe)


def _window(seed: int, n: int = 12, vocab: int = 7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, n + 1), generator=g)
    return ids[:, :-1], ids[:, 1:].clone()


def test_cache_terms_are_causal():
    """Changing the last input and target leaves every earlier position's terms unchanged."""
    torch.manual_seed(0)
    model = build_model("stage1", "mix-tiny").eval()
    inputs, targets = _window(1)
    lp, caches = probe.window_terms(model, inputs, targets)
    inputs2, targets2 = inputs.clone(), targets.clone()
    inputs2[0, -1] = (inputs2[0, -1] + 1) % 7
    targets2[0, -1] = (targets2[0, -1] + 3) % 7
    lp2, caches2 = probe.window_terms(model, inputs2, targets2)
    assert torch.equal(lp[:-1], lp2[:-1])
    for c, c2 in zip(caches, caches2, strict=True):
        assert torch.equal(c[:-1], c2[:-1])


def test_cache_probability_matches_its_definition():
    """p_cache(target_t) = sum over j < t whose next token is target_t of softmax_j(theta cos(h_t, h_j));
    position 0 has none; ignored targets are dropped."""
    torch.manual_seed(0)
    model = build_model("phase2", "tiny").eval()
    inputs, targets = _window(2)
    targets[0, :3] = IGNORE_INDEX
    lp, caches = probe.window_terms(model, inputs, targets)
    assert lp.shape == (9,) and all(c.shape == (9,) for c in caches)
    h = torch.nn.functional.normalize(model(inputs, return_hidden=True).float()[0], dim=-1)
    nxt = torch.cat([inputs[0, 1:], targets[0, -1:]])
    k = probe.THETAS.index(10.0)
    for t in range(3, 12):
        w = torch.tensor([math.exp(10.0 * float(h[t] @ h[j])) for j in range(t)], dtype=torch.float64)
        want = float(sum(w[j] for j in range(t) if nxt[j] == targets[0, t]) / w.sum())
        assert abs(float(caches[k][t - 3]) - want) < 1e-5
    assert all(((c >= 0) & (c <= 1 + 1e-6)).all() for c in caches)

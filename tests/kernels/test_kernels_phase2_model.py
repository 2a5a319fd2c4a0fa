"""Phase 2 with both scan kernels on (BK-Core resolvent, Hebbian): the PyTorch scans' logits and gradients,
the same incremental decoding, still causal (CPU: Triton's interpreter).

These are wiring checks: the scans' own bounds are in test_kernels_bk_resolvent.py and
test_kernels_hebbian_scan.py.  Tolerance 1e-4 of the largest entry: both runs share every other fp32
op, and the scans differ by at most ~1e-5 of their magnitudes at these sizes (those bounds).
Measured (CPU interpreter, torch 2.13): gradients 2.1e-6, split decoding 3.4e-7, logits 5.8e-7 of the
largest entry.
"""

from __future__ import annotations

import pytest
import torch

from muse import kernels
from muse.models import build_model

VOCAB = 97
SEQ = 80  # several Hebbian kernel chunks (16 positions each)

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)


@pytest.fixture
def launches(monkeypatch):
    if not torch.cuda.is_available() and not kernels.interpreting():
        pytest.skip("Triton kernels on CPU need TRITON_INTERPRET=1 before triton is imported")
    monkeypatch.setenv(kernels.ENV, "1")
    from muse.kernels import _triton

    counts: dict[str, int] = {}
    for name in ("bk_green_forward", "bk_green_backward", "hebbian_forward", "hebbian_backward"):
        fn = getattr(_triton, name)

        def counted(*args, _fn=fn, _name=name):
            counts[_name] = counts.get(_name, 0) + 1
            return _fn(*args)

        monkeypatch.setattr(_triton, name, counted)
    return counts


def _model():
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model("phase2", "tiny", vocab_size=VOCAB, device=device).eval()
    with torch.no_grad():  # the mixers' branches well above rounding (N(0, 0.01) output weights at init)
        for block in model.blocks:
            for mixer in block.mixers:
                mixer.out.weight.mul_(20.0)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1)).to(device)
    return model, ids


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())


def test_phase2_logits_and_gradients_with_kernels(launches):
    model, ids = _model()
    runs = []
    for env in ("1", "0"):
        with kernels.environment(MUSE_KERNELS=env):
            model.zero_grad(set_to_none=True)
            logits = model(ids)
            logits.float().logsumexp(-1).mean().backward()
            runs.append([logits.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None])
    n = model.config.n_layers
    assert launches == {"bk_green_forward": n, "bk_green_backward": n, "hebbian_forward": n, "hebbian_backward": n}
    assert len(runs[0]) == len(runs[1])
    for a, b in zip(*runs, strict=True):
        assert _close(a, b), float((a - b).abs().max() / b.abs().max())


def test_phase2_incremental_decoding_with_kernels(launches):
    """step() carries the BK G and the Hebbian W between calls (the kernels' initial_state and final state)."""
    model, ids = _model()
    with torch.no_grad():
        full = model(ids)
        first, state = model.step(ids[:, :30])
        rest, state = model.step(ids[:, 30:], state)
        with kernels.environment(MUSE_KERNELS="0"):
            ref = model(ids)
    assert launches["bk_green_forward"] >= 3 * model.config.n_layers
    assert _close(torch.cat([first, rest], dim=1), full) and _close(full, ref)


def test_phase2_with_kernels_is_causal(launches):
    """Changing token s changes no logit before s (the kernels walk the sequence forward only)."""
    model, ids = _model()
    s = 50
    other = ids.clone()
    other[:, s] = (ids[:, s] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids), model(other)
    assert torch.equal(a[:, :s], b[:, :s])
    assert not torch.equal(a[:, s:], b[:, s:])

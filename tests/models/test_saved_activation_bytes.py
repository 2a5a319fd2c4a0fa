"""What the backward keeps: the dropout mask as bool, no float64 decay powers, no fp32 copies of the
recurrence's element-wise inputs (the memory criterion depends on it; values are unchanged)."""

from __future__ import annotations

import torch

import muse.complex as C
from muse.models import build_model


def _saved(fn):
    """(dtype, shape) of every tensor autograd saves while ``fn`` runs (parameters excluded)."""
    out = []

    def pack(t):
        out.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return out


def test_dropout_saves_a_bool_mask():
    z = C.ComplexTensor(torch.randn(2, 4, 64, dtype=torch.float16, requires_grad=True))
    assert _saved(lambda: C.dropout(z, 0.3, True)) == [(torch.bool, (4, 64))]  # shared: one per entry
    assert _saved(lambda: C.dropout(z, 0.3, True, mode="independent")) == [(torch.bool, (2, 4, 64))]


def test_dropout_backward_uses_the_same_factor():
    torch.manual_seed(0)
    planes = torch.randn(2, 8, 32, dtype=torch.float16, requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    y = C.dropout(C.ComplexTensor(planes), 0.25, True, generator=gen, mode="independent")
    g = torch.randn_like(planes)
    y.planes.backward(g)
    keep = torch.empty(2, 8, 32).bernoulli_(0.75, generator=torch.Generator().manual_seed(3))
    factor = keep / (1.0 - 0.25)
    assert torch.equal(y.planes, (planes.detach().float() * factor).half())
    assert torch.equal(planes.grad, (g.float() * factor).half())


def test_recurrent_stage1_keeps_no_float64_and_no_full_size_fp32_copies():
    torch.manual_seed(0)
    model = build_model("stage1", "mix-tiny", vocab_size=64).train()
    ids = torch.randint(0, 64, (2, 96))
    saved = _saved(lambda: model(ids, return_hidden=True))
    assert not [s for s in saved if s[0] == torch.float64]
    d, n = model.config.d_model, model.blocks[0].mixer.d_state
    big_fp32 = [s for s in saved if s[0] == torch.float32 and s[1][-2:] in ((96, d), (96, n)) and len(s[1]) >= 3]
    assert not big_fp32, big_fp32

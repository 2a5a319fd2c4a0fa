"""The planar embedding's backward: one weight-sized gradient, the same values as indexing's."""

from __future__ import annotations

import pytest
import torch

import muse.complex as C
from benchmarks.memory import LiveTensorBytes


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_embedding_backward_keeps_one_weight_sized_gradient(dtype):
    vocab, d = 4096, 64
    weight = torch.randn(2, vocab, d, dtype=dtype).requires_grad_()
    ids = torch.randint(0, vocab, (2, 64), generator=torch.Generator().manual_seed(0))
    grad = torch.randn(2, 2, 64, d, dtype=dtype)
    with LiveTensorBytes() as tracker:
        tracker.track([weight, ids, grad])
        before = tracker.current
        C.embedding(ids, C.ComplexTensor(weight)).planes.backward(grad)
    w_bytes = weight.numel() * weight.element_size()
    # the gradient (one weight size) and small temporaries (the rows, 1/32 of it, and the ids);
    # indexing's backward (zeros, then an out-of-place index_put) held two weight-sized tensors at once
    assert w_bytes <= tracker.peak - before < 1.25 * w_bytes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_embedding_gradient_equals_indexing_gradient(dtype):
    vocab, d = 50, 8
    weight = torch.randn(2, vocab, d, dtype=dtype, requires_grad=True)
    ids = torch.tensor([[0, 3, 3, 49], [7, 7, 7, 0]])  # repeated ids accumulate
    grad = torch.randn(2, 2, 4, d, dtype=dtype)
    C.embedding(ids, C.ComplexTensor(weight)).planes.backward(grad)
    ref = weight.detach().clone().requires_grad_()
    ref[:, ids].backward(grad)
    torch.testing.assert_close(weight.grad, ref.grad, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)

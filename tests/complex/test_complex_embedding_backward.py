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


def test_fp16_embedding_gradient_is_the_correctly_rounded_sum():
    """Each row's gradient is the sum of its lookups' gradients in fp32, rounded once to fp16: with few enough
    terms (fp32 exact here), the correctly rounded float64 sum; no fp16 accumulation."""
    vocab, d = 40, 16
    weight = torch.randn(2, vocab, d).half().requires_grad_()
    ids = torch.randint(0, vocab, (4, 300), generator=torch.Generator().manual_seed(1))  # ~30 repeats an id
    grad = torch.randn(2, 4, 300, d, generator=torch.Generator().manual_seed(2)).half()
    C.embedding(ids, C.ComplexTensor(weight)).planes.backward(grad)
    rows = torch.stack((ids, ids + vocab)).reshape(-1)
    exact = torch.zeros(2 * vocab, d, dtype=torch.float64).index_add_(0, rows, grad.double().reshape(-1, d))
    assert torch.equal(weight.grad, exact.half().reshape(2, vocab, d))


def test_embedding_gradient_of_unused_rows_is_zero_and_empty_ids_work():
    weight = torch.randn(2, 10, 4, dtype=torch.float64, requires_grad=True)
    C.embedding(torch.tensor([[2, 2, 7]]), C.ComplexTensor(weight)).planes.sum().backward()
    used = torch.zeros(10, dtype=torch.bool)
    used[[2, 7]] = True
    assert not weight.grad[:, ~used].any() and torch.equal(weight.grad[:, 2], torch.full((2, 4), 2.0, dtype=torch.float64))
    weight.grad = None
    out = C.embedding(torch.zeros(0, 3, dtype=torch.long), C.ComplexTensor(weight))
    out.planes.sum().backward()
    assert out.shape == (0, 3, 4) and not weight.grad.any()


def test_embedding_double_backward():
    weight = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[0, 5, 5, 2]])
    torch.autograd.gradgradcheck(lambda w: C.embedding(ids, C.ComplexTensor(w)).planes, (weight,))


def test_embedding_backward_compiles_fullgraph():
    weight = torch.randn(2, 30, 8, requires_grad=True)
    ids = torch.randint(0, 30, (3, 20), generator=torch.Generator().manual_seed(3))

    def step(w):
        return C.embedding(ids, C.ComplexTensor(w)).planes.pow(2).sum()

    torch.compile(step, fullgraph=True, backend="aot_eager")(weight).backward()
    compiled = weight.grad.clone()
    weight.grad = None
    step(weight).backward()
    torch.testing.assert_close(compiled, weight.grad)


def test_embedding_gradient_keeps_an_infinite_sum_infinite():
    """A repeated id whose fp16 sum overflows gets inf (not NaN from inf * 0 or inf - inf)."""
    weight = torch.zeros(2, 4, 2, dtype=torch.float16, requires_grad=True)
    grad = torch.full((2, 1, 3, 2), 40000.0, dtype=torch.float16)
    C.embedding(torch.tensor([[1, 1, 1]]), C.ComplexTensor(weight)).planes.backward(grad)
    assert torch.isinf(weight.grad[:, 1]).all() and not weight.grad[:, [0, 2, 3]].any()

"""The chunked loss under autocast: its GEMMs run in the autocast dtype, in forward and backward."""

from __future__ import annotations

import pytest
import torch
from _helpers import cuda_test

from muse.train.loss import linear_cross_entropy, loss_path


def _inputs(n=48, d=16, v=300, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g)
    w = 0.5 * torch.randn(v, d, generator=g)
    b = 0.1 * torch.randn(v, generator=g)
    t = torch.randint(0, v, (n,), generator=g)
    t[:3] = -100
    return (*(x.to(device).requires_grad_() for x in (h, w, b)), t.to(device))


def _reference(h, w, b, t):
    """float64 loss and gradients of the bf16-rounded inputs, the logits rounded to bf16 (the GEMM's
    output dtype under autocast, as lm_head's), the dlogits rounded to bf16 for the GEMMs."""
    r = [x.detach().bfloat16().double() for x in (h, w, b)]
    x = r[0] @ r[1].T + r[2]
    x16 = x.bfloat16().double()
    keep = t != -100
    p = torch.softmax(x16, 1)
    g = p.clone()
    g[keep.nonzero()[:, 0], t[keep]] -= 1
    g[~keep] = 0
    loss = (torch.logsumexp(x16, 1) - x.gather(1, t.clamp(min=0)[:, None])[:, 0])[keep].mean()
    gb = g.bfloat16().double() / keep.sum()
    return loss, gb @ r[1], gb.T @ r[0], gb.sum(0)


def test_chunked_loss_under_autocast_uses_the_autocast_dtype(device="cpu"):
    h, w, b, t = _inputs(device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, t, bias=b, impl="chunked", chunk_size=128)
    loss.backward()
    assert loss.dtype == torch.float32 and h.grad.dtype == torch.float32
    want = _reference(*(x.cpu() for x in (h, w, b, t)))
    torch.testing.assert_close(loss.double().cpu(), want[0], rtol=1e-5, atol=1e-6)
    for got, ref in zip((h.grad, w.grad, b.grad), want[1:], strict=True):
        torch.testing.assert_close(got.double().cpu(), ref, rtol=1e-4, atol=1e-6)
    # without autocast the same inputs give the fp32 result, which the bf16 reference does not match
    h2, w2, b2, t2 = _inputs(device=device)
    fp32 = linear_cross_entropy(h2, w2, t2, bias=b2, impl="chunked", chunk_size=128)
    assert not torch.allclose(fp32.double().cpu(), want[0], rtol=1e-5, atol=1e-6)


@cuda_test
def test_chunked_loss_under_autocast_on_cuda():
    test_chunked_loss_under_autocast_uses_the_autocast_dtype("cuda")


def test_chunked_loss_under_autocast_compiles_fullgraph():
    h, w, b, t = _inputs()
    fn = torch.compile(lambda h, w, b, t: linear_cross_entropy(h, w, t, bias=b, impl="chunked", chunk_size=128),
                       backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(h, w, b, t)
        want = linear_cross_entropy(h, w, t, bias=b, impl="chunked", chunk_size=128)
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float16])
def test_autocast_leaves_16_bit_storage_alone(dtype):
    h, w, b, t = (x.detach().to(dtype) if x.is_floating_point() else x for x in _inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w, t, bias=b, impl="chunked", chunk_size=128)
    want = linear_cross_entropy(h, w, t, bias=b, impl="chunked", chunk_size=128)
    assert torch.equal(got, want)


def test_auto_picks_the_chunked_path_under_autocast():
    assert loss_path(torch.float32, autocast=True) == "chunked"
    assert loss_path(torch.float16, autocast=True) == "chunked"
    h, w, b, t = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = linear_cross_entropy(h, w, t, bias=b)
        chunked = linear_cross_entropy(h, w, t, bias=b, impl="chunked")
    assert torch.equal(auto, chunked)


def test_chunk_bodies_run_eager_under_the_memory_tracker():
    """torch >= 2.13 raises for a fullgraph-compiled function called under a dispatch mode."""
    from benchmarks.memory import LiveTensorBytes
    from muse.train import loss as loss_mod

    with LiveTensorBytes():
        assert loss_mod._fused(loss_mod._lse_step) is loss_mod._lse_step
    assert loss_mod._fused(loss_mod._lse_step) is not loss_mod._lse_step

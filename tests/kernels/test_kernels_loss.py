"""Triton kernels of the loss's chunk bodies (lse_rows, softmax_grad) against the PyTorch bodies of
muse.train.loss (CPU: Triton's interpreter).  Every case counts the launches, so a silent fallback
to PyTorch cannot pass.  The bounds are checked by verification/test_loss.py (impl ``triton``)."""

from __future__ import annotations

import pytest
import torch

import muse.train.loss as L
from muse import kernels
from tests.kernels._launches import DEVICES, count_launches

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)


@pytest.fixture
def launches(monkeypatch, kernel_device):
    return count_launches(monkeypatch, kernel_device, ("lse_rows", "softmax_grad"))


def _logits(n: int, width: int, dtype: torch.dtype, device: str, seed: int = 0, pad: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = (4 * torch.randn(n, width, generator=g)).to(dtype)
    if pad:
        z[:, width - pad:] = -torch.inf  # the padded tail of the last vocabulary chunk on CUDA
    return z.to(device)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("n,width", [(1, 1), (37, 61), (5, 4100)])  # 4100 > one 4096-wide tile
def test_lse_rows_matches_the_pytorch_step_over_chunks(launches, kernel_device, dtype, n, width):
    """Three chunks (the last with -inf padding) through the online log-sum-exp: the kernel's
    running max is exact and its sum within a few fp32 roundings of PyTorch's."""
    chunks = [_logits(n, width, dtype, kernel_device, seed=s, pad=width // 3 if s == 2 else 0) for s in range(3)]
    ref_max = torch.full((n,), -torch.inf, device=kernel_device)
    ref_sum = torch.zeros(n, device=kernel_device)
    got_max, got_sum = ref_max.clone(), ref_sum.clone()
    for z in chunks:
        ref_max, ref_sum = L._lse_step(z, ref_max, ref_sum)
        kernels.lse_rows(z, got_max, got_sum)
    assert launches == {"lse_rows": 3}
    assert torch.equal(got_max, ref_max)
    torch.testing.assert_close(got_sum, ref_sum, rtol=width * 2.0**-22, atol=0)
    want = torch.logsumexp(torch.cat(chunks, 1).double(), 1)
    torch.testing.assert_close((got_max + got_sum.log()).double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("dtype,gemm_dtype", [(torch.float16, torch.float16), (torch.float16, torch.float32),
                                              (torch.float32, torch.float32)])
@pytest.mark.parametrize("smoothing", [(1.0, 0.0), (0.9, 0.1 / 50257)])
def test_softmax_grad_matches_the_pytorch_body(launches, kernel_device, dtype, gemm_dtype, smoothing):
    """softmax - onehot, zero for unscored rows, -1 only where the target lies in this chunk (the
    vocabulary rows offset..offset + width); written over the logits when they already have the
    GEMM dtype (no second chunk-sized tensor). With label smoothing: softmax - (1 - eps) onehot - eps / V."""
    n, width, offset = 37, 300, 600
    z = _logits(n, width, dtype, kernel_device)
    lse = torch.logsumexp(z.float(), 1) + 0.5  # any saved lse: this chunk is one of several
    targets = torch.randint(offset - 200, offset + width + 200, (n,)).to(kernel_device)
    keep = (torch.rand(n) > 0.3).float().to(kernel_device)
    col = torch.where((targets >= offset) & (targets < offset + width), targets - offset, -1)
    assert 0 < int((col >= 0).sum()) < n
    want = L._dlogits(z.clone(), lse, col, keep, gemm_dtype, smoothing)
    got = kernels.softmax_grad(z, lse, targets, keep, gemm_dtype, offset=offset, on_target=smoothing[0],
                               uniform=smoothing[1])
    assert launches == {"softmax_grad": 1}
    assert got.dtype == gemm_dtype and (got.data_ptr() == z.data_ptr()) == (dtype == gemm_dtype)
    ulp = 2.0**-10 if gemm_dtype == torch.float16 else 2.0**-23
    torch.testing.assert_close(got.float(), want.float(), rtol=ulp, atol=2.0**-24)
    assert torch.all(got[keep == 0] == 0)


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("path", ["chunked", "chunked-tokens"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_the_loss_runs_its_chunk_bodies_as_kernels(launches, kernel_device, path, dtype, label_smoothing):
    """linear_cross_entropy with kernels on launches them for every chunk and agrees with the
    PyTorch bodies: the same loss and gradients up to the order of fp32 sums (also label-smoothed)."""
    g = torch.Generator().manual_seed(1)
    n, d, v, chunk = 33, 16, 200, 48
    h = torch.randn(n, d, generator=g).to(dtype).to(kernel_device)
    w = (0.3 * torch.randn(v, d, generator=g)).to(dtype).to(kernel_device)
    b = torch.randn(v, generator=g).to(dtype).to(kernel_device)
    t = torch.randint(0, v, (n,), generator=g)
    t[::4] = L.IGNORE_INDEX
    t = t.to(kernel_device)
    out = {}
    for on in ("0", "1"):
        with kernels.environment(MUSE_KERNELS=on):
            leaves = [x.clone().requires_grad_() for x in (h, w, b)]
            loss = L.linear_cross_entropy(*leaves[:2], t, leaves[2], chunk_size=chunk, impl=path,
                                          label_smoothing=label_smoothing)
            loss.backward()
            out[on] = [loss.detach()] + [x.grad for x in leaves]
    chunks = -(-(v if path == "chunked" else n) // chunk)
    if path == "chunked" and kernel_device == "cuda":
        chunks = -(-v // 128)  # CUDA rounds vocabulary chunks up to 128 rows
    assert launches == {"lse_rows": chunks, "softmax_grad": chunks}
    tol = 2.0**-10 if dtype == torch.float16 else 1e-5
    for a, k in zip(out["0"], out["1"], strict=True):
        torch.testing.assert_close(k.float(), a.float(), rtol=tol, atol=tol * float(a.abs().max()))


@pytest.mark.parametrize("kernel_device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_kept_logits_are_read_not_written_over(launches, kernel_device, dtype):
    """keep_logits with the kernels: softmax_grad writes a new tensor (in_place=False leaves z as it was), and
    the loss and gradients equal the recomputing path's bit for bit; the same launches."""
    z = _logits(8, 40, dtype, kernel_device)
    before = z.clone()
    lse = torch.logsumexp(z.float(), 1)
    t = torch.arange(8, device=kernel_device)
    g = kernels.softmax_grad(z, lse, t, torch.ones(8, device=kernel_device), dtype, in_place=False)
    assert torch.equal(z, before) and g.data_ptr() != z.data_ptr()
    gen = torch.Generator().manual_seed(5)
    n, d, v = 33, 16, 300
    h, w, b = (x.to(dtype).to(kernel_device) for x in (torch.randn(n, d, generator=gen),
                                                         0.3 * torch.randn(v, d, generator=gen), torch.randn(v, generator=gen)))
    t = torch.randint(0, v, (n,), generator=gen).to(kernel_device)
    out = {}
    for keep in (False, True):
        launches.clear()
        leaves = [x.clone().requires_grad_() for x in (h, w, b)]
        loss = L.linear_cross_entropy(*leaves[:2], t, leaves[2], chunk_size=128, impl="chunked", keep_logits=keep)
        loss.backward()
        out[keep] = ([loss.detach()] + [x.grad for x in leaves], dict(launches))
    assert out[True][1] == out[False][1] == {"lse_rows": 3, "softmax_grad": 3}
    for a, k in zip(out[False][0], out[True][0], strict=True):
        assert torch.equal(a, k)


def test_the_chunk_bodies_follow_the_kernel_switch(monkeypatch):
    """_chunk_body: the Triton kernel where kernels are on (never for fp64), else the PyTorch body."""
    monkeypatch.setattr(kernels, "enabled", lambda *t, **kw: True)
    x32, x64 = torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.float64)
    assert L._chunk_body(x32, x32, L._lse_step, L._lse_step_kernel) is L._lse_step_kernel
    assert L._chunk_body(x64, x64, L._lse_step, L._lse_step_kernel) is L._lse_step
    monkeypatch.setattr(kernels, "enabled", lambda *t, **kw: False)
    assert L._chunk_body(x32, x32, L._lse_step, L._lse_step_kernel) is L._lse_step


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_compiled_loss_runs_the_kernels_inside_its_custom_ops(launches, kernel_device):
    """Under torch.compile the chunk loops are opaque custom ops whose bodies run at call time: the
    kernels launch there, the chunk width is the in-place one (what the kernels will hold), and the
    loss and gradients equal eager code's."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(2)
    n, d, v = 24, 16, 300
    h = torch.randn(n, d, generator=g).half().to(kernel_device)
    w = (0.3 * torch.randn(v, d, generator=g)).half().to(kernel_device)
    t = torch.randint(0, v, (n,), generator=g).to(kernel_device)
    budget = 16 * (n * 2 + 4 * (d + 8))  # 16 vocabulary rows in place (2 with 8 bytes an entry)

    def run(fn):
        leaf = h.clone().requires_grad_()
        wl = w.clone().requires_grad_()
        loss = fn(leaf, wl)
        loss.backward()
        return loss.detach(), leaf.grad, wl.grad

    def loss_fn(hh, ww):
        return L.linear_cross_entropy(hh, ww, t, impl="chunked")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(L, "chunk_budget", lambda vocab, tokens: budget)
        mp.setattr(L, "CHUNK_BUDGET_MIN_BYTES", 0)
        eager = run(loss_fn)
        eager_launches = dict(launches)
        launches.clear()
        compiled = run(torch.compile(loss_fn, fullgraph=True))
    rows = 128 if kernel_device == "cuda" else 16
    assert eager_launches == launches == {"lse_rows": -(-v // rows), "softmax_grad": -(-v // rows)}
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)

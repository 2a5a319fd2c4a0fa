"""Shared helpers for the foundation tests (muse.complex, muse.nn, muse.init, Stage 1).

Every helper raises AssertionError with a message that says what differed and where.
"""

from __future__ import annotations

import pytest
import torch

from muse.complex import ComplexTensor

HAS_CUDA = torch.cuda.is_available()

#: Mark a test as needing CUDA; skipped, with the reason, on machines without a GPU.
requires_cuda = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


def cuda_test(fn):
    """Decorator form of :data:`requires_cuda`."""
    for mark in reversed(requires_cuda):
        fn = mark(fn)
    return fn


def ct(re, im=None, dtype=torch.float16, device=None) -> ComplexTensor:
    """A ComplexTensor from real/imag values (lists, numbers or tensors); imag defaults to 0."""
    re = torch.as_tensor(re, dtype=torch.float64, device=device)
    im = torch.zeros_like(re) if im is None else torch.as_tensor(im, dtype=torch.float64, device=device)
    return ComplexTensor(torch.stack(torch.broadcast_tensors(re, im)).to(dtype))


def native(z: ComplexTensor) -> torch.Tensor:
    """The exact complex128 value of a ComplexTensor."""
    return torch.complex(z.real.double(), z.imag.double())


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns of a floating tensor (distinguishes -0 from +0 and NaN payloads)."""
    view = {torch.float16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}[t.dtype]
    return t.contiguous().view(view)


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, what: str = "tensors") -> None:
    """Same dtype, shape and bit pattern everywhere."""
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    diff = bits(a) != bits(b)
    if diff.any():
        idx = diff.nonzero()[0].tolist()
        raise AssertionError(
            f"{what} differ bitwise at {int(diff.sum())} of {diff.numel()} positions; first at "
            f"{idx}: {a[tuple(idx)].item()!r} vs {b[tuple(idx)].item()!r}"
        )


def assert_ct_bitwise(a: ComplexTensor, b: ComplexTensor, what: str = "ComplexTensors") -> None:
    assert isinstance(a, ComplexTensor) and isinstance(b, ComplexTensor), f"{what}: not ComplexTensors"
    assert_bitwise_equal(a.planes, b.planes, what)


def fp16_ulp(x: torch.Tensor) -> torch.Tensor:
    """Spacing of float16 at |x| (float64): 2**(e-10) for normals, 2**-24 for subnormals."""
    a = x.double().abs().clamp(min=2.0**-14)
    return torch.exp2(torch.floor(torch.log2(a)) - 10)


def assert_within_ulps(got: torch.Tensor, want: torch.Tensor, n: float = 1, what: str = "result") -> None:
    """|got - want| <= n fp16 ulps of max(|got|, |want|), elementwise (non-finite values must match)."""
    g, w = got.double().cpu(), want.double().cpu()
    assert g.shape == w.shape, f"{what}: shape {tuple(g.shape)} != {tuple(w.shape)}"
    finite = torch.isfinite(g) & torch.isfinite(w)
    same_special = (g == w) | (torch.isnan(g) & torch.isnan(w))
    assert (finite | same_special).all(), f"{what}: non-finite values differ"
    ulps = (g - w).abs() / fp16_ulp(torch.maximum(g.abs(), w.abs()))
    ulps = torch.where(finite, ulps, torch.zeros_like(ulps))
    worst = ulps.max().item() if ulps.numel() else 0.0
    assert worst <= n, f"{what}: {worst:.2f} fp16 ulps apart (allowed {n}) at {int((ulps > n).sum())} positions"


def assert_complex_close(
    z: ComplexTensor, ref: torch.Tensor, *, rtol: float = 2e-3, atol: float = 1e-3, what: str = "result"
) -> None:
    """Each part of ``z`` within ``atol + rtol * |ref part|`` of the complex reference ``ref``."""
    assert isinstance(z, ComplexTensor), f"{what}: expected a ComplexTensor, got {type(z).__name__}"
    ref = ref.to(torch.complex128)
    assert tuple(z.shape) == tuple(ref.shape), f"{what}: shape {tuple(z.shape)} != reference {tuple(ref.shape)}"
    for name, got, want in (("real", z.real.double(), ref.real), ("imag", z.imag.double(), ref.imag)):
        err = (got - want).abs()
        tol = atol + rtol * want.abs()
        bad = ~(err <= tol)
        if bad.any():
            idx = tuple(bad.nonzero()[0].tolist())
            raise AssertionError(
                f"{what}: {name} part off at {int(bad.sum())} positions; first at {idx}: "
                f"got {got[idx].item()!r}, want {want[idx].item()!r} (max err {err.max().item():.3g})"
            )


def assert_close(got: torch.Tensor, want: torch.Tensor, *, rtol: float = 2e-3, atol: float = 1e-3,
                 what: str = "result") -> None:
    """Real tensors within ``atol + rtol * |want|`` (compared in float64)."""
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    g, w = got.double(), want.double()
    err = (g - w).abs()
    bad = ~(err <= atol + rtol * w.abs())
    if bad.any():
        idx = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: off at {int(bad.sum())} of {bad.numel()} positions; first at {idx}: got "
            f"{g[idx].item()!r}, want {w[idx].item()!r} (max err {err.max().item():.3g})"
        )


def planar_grad_vs_native(planar_fn, native_fn, *inputs: torch.Tensor, rtol=1e-10, atol=1e-12):
    """Compare gradients of a real loss computed on planes vs. on native complex128 tensors.

    ``inputs`` are complex128 leaves' values.  ``planar_fn`` receives ComplexTensors with
    float64 planes; ``native_fn`` the complex128 tensors; both return a real scalar loss.
    Asserts the two losses agree and that, for each input, ``planes.grad`` (as
    dL/dRe + i dL/dIm) equals the native complex128 ``.grad`` (PyTorch's convention).
    """
    zs = [ComplexTensor(torch.stack((x.real, x.imag)).clone()).requires_grad_() for x in inputs]
    ns = [x.clone().requires_grad_() for x in inputs]
    lp = planar_fn(*zs)
    ln = native_fn(*ns)
    assert lp.dtype == torch.float64, f"planar loss must be float64, got {lp.dtype}"
    torch.testing.assert_close(lp, ln.real if ln.is_complex() else ln, rtol=1e-10, atol=1e-12,
                               msg=lambda m: f"losses differ: {m}")
    lp.backward()
    ln.backward()
    for k, (z, n) in enumerate(zip(zs, ns, strict=True)):
        assert z.grad is not None, f"input {k}: no planar gradient"
        got = native(z.grad)
        torch.testing.assert_close(got, n.grad, rtol=rtol, atol=atol,
                                   msg=lambda m, k=k: f"input {k}: planar grad != complex128 grad: {m}")
    return zs, ns


def assert_fused_loss_matches_full(model, ids: torch.Tensor, targets: torch.Tensor) -> None:
    """The fused chunked loss and its gradients against cross-entropy over the model's full logits: fp32 planes
    to 1e-5; fp16 planes to 2e-3 in the loss and 5e-3 in each gradient's norm (the full path rounds the logits to
    fp16, the fused one keeps them in fp32).  Leaves the full path's gradients in ``p.grad``."""
    import torch.nn.functional as F

    from muse.train.loss import model_loss

    half = model.config.dtype == torch.float16
    fused = model_loss(model, ids, targets, impl="chunked")
    fused.backward()
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    full = F.cross_entropy(model(ids).float().flatten(0, 1), targets.flatten())
    full.backward()
    assert abs(fused.item() - full.item()) < (2e-3 if half else 1e-5) * full.item(), (fused.item(), full.item())
    for n, p in model.named_parameters():
        if p.requires_grad:
            g, ref = fused_grads[n].double(), p.grad.double()
            assert (g - ref).norm() <= (5e-3 if half else 1e-5) * ref.norm() + 1e-8, n

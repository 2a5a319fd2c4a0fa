"""Phase 2 recurrences (muse.scan): fast parallel forms against the sequential references.

Tolerances (errors measured on CPU, 2026-11-26, in brackets):
* float64, fast vs reference: 1e-12, relative to the bound 1 / Im z for G and to
  max |reference| for everything else [<= 2e-14].
* float32 fast vs the float64 reference: G within 1e-4 / Im z and no worse than
  4x the float32 sequential loop plus 2e-6 / Im z [<= 4e-5 / Im z at Im z = 1e-3 with
  no dissipation, the worst case; ~6e-7 at Im z = 1]; gradients and Hebbian outputs
  within 2e-5 of max |reference| [<= 2e-6].
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from muse.scan import (
    bk_diagonal,
    bk_green_scan,
    bk_green_sequential,
    hebbian_parallel,
    hebbian_sequential,
    segment_sum,
)

# Regression tolerances, not derived bounds: each is ~5-50x the worst error measured (docstring).
F64_TOL = 1e-12  # regression tolerance (measured <= 2e-14)
F32_G_TOL = 1e-4  # regression tolerance, times 1 / Im z (measured <= 4e-5)
F32_TOL = 2e-5  # regression tolerance, times max |reference| (measured <= 2e-6)


pytestmark = pytest.mark.usefixtures("_one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _potential(shape, v_scale: float, gamma_scale: float, seed: int = 0, dtype=torch.float64):
    g = _gen(seed)
    v = torch.randn(*shape, generator=g, dtype=torch.float64) * v_scale
    gamma = torch.rand(*shape, generator=g, dtype=torch.float64) * gamma_scale
    return v.to(dtype), gamma.to(dtype)


def _normwise(got: torch.Tensor, want: torch.Tensor, scale: float) -> float:
    """max |got - want| / scale (scale floored at the smallest normal, so all-zero references work)."""
    if not want.numel():
        return 0.0
    return float((got.to(want.dtype) - want).abs().max()) / max(scale, torch.finfo(torch.float64).tiny)


# ---------------------------------------------------------------- BK-Core resolvent

SHIFTS = [1j, 0.5 + 0.1j, -1.0 + 2.0j, 0.01j, 3.0 + 1e-3j]
LENGTHS = [1, 2, 3, 7, 64, 1024]


@pytest.mark.parametrize("z", SHIFTS)
@pytest.mark.parametrize("gamma_scale", [0.0, 1.0, 1e3])
def test_bk_scan_matches_sequential_float64(z, gamma_scale):
    for n in LENGTHS:
        v, gamma = _potential((3, 2, n), 2.0, gamma_scale, seed=n)
        a = bk_diagonal(v, gamma)
        err = _normwise(bk_green_scan(a, z), bk_green_sequential(a, z), 1.0 / z.imag)
        assert err <= F64_TOL, f"S={n}: |scan - sequential| * Im z = {err:.2e} > {F64_TOL}"


@pytest.mark.parametrize("z", SHIFTS)
@pytest.mark.parametrize("gamma_scale", [0.0, 1.0, 1e3])
def test_bk_scan_float32_tolerance(z, gamma_scale):
    n = 1024
    v, gamma = _potential((4, n), 2.0, gamma_scale, seed=1)
    ref = bk_green_sequential(bk_diagonal(v, gamma), z)
    a32 = bk_diagonal(v.float(), gamma.float())
    bound = 1.0 / z.imag
    err = _normwise(bk_green_scan(a32, z), ref, bound)
    err_loop = _normwise(bk_green_sequential(a32, z), ref, bound)
    assert bk_green_scan(a32, z).dtype == torch.complex64
    assert err <= F32_G_TOL, f"float32 scan error {err:.2e} (x 1/Im z) > {F32_G_TOL}"
    assert err <= 4 * err_loop + 2e-6, f"float32 scan {err:.2e} worse than 4x the loop ({err_loop:.2e})"


def test_bk_green_is_last_diagonal_entry_of_leading_block_inverse():
    """G_i = [(H_[1..i] - z)^{-1}]_{ii}, H tridiagonal with diagonal a and off-diagonals -1."""
    n, z = 12, 0.3 + 0.7j
    v, gamma = _potential((n,), 1.5, 0.5, seed=3)
    a = bk_diagonal(v, gamma)
    h = torch.diag(a) - torch.diag(torch.ones(n - 1, dtype=a.dtype), 1) - torch.diag(torch.ones(n - 1, dtype=a.dtype), -1)
    want = torch.stack([torch.linalg.inv(h[:i, :i] - z * torch.eye(i, dtype=a.dtype))[i - 1, i - 1]
                        for i in range(1, n + 1)])
    got = bk_green_scan(a, z)
    assert torch.allclose(got, want, rtol=0, atol=1e-13), (got - want).abs().max()  # regression tolerance


def _bk_grads(fn, v, gamma, z, w):
    v = v.clone().requires_grad_()
    gamma = gamma.clone().requires_grad_()
    g = fn(bk_diagonal(v, gamma), z)
    (g.real * w[0] + g.imag * w[1]).sum().backward()
    return v.grad, gamma.grad


@pytest.mark.parametrize("z", [1j, 0.5 + 0.1j, 0.01j])
@pytest.mark.parametrize("n", [1, 5, 1024])
def test_bk_scan_gradients(z, n):
    v, gamma = _potential((3, n), 2.0, 1.0, seed=n)
    w = torch.randn(2, 3, n, generator=_gen(7), dtype=torch.float64)
    ref = _bk_grads(bk_green_sequential, v, gamma, z, w)
    fast = _bk_grads(bk_green_scan, v, gamma, z, w)
    fast32 = _bk_grads(bk_green_scan, v.float(), gamma.float(), z, w.float())
    for name, r, f, f32 in zip(("potential", "gamma"), ref, fast, fast32, strict=True):
        scale = float(r.abs().max())
        assert _normwise(f, r, scale) <= F64_TOL, f"{name}: float64 gradient differs"
        assert _normwise(f32, r, scale) <= F32_TOL, f"{name}: float32 gradient error {_normwise(f32, r, scale):.2e}"


def test_bk_scan_gradcheck():
    v, gamma = _potential((2, 9), 1.0, 0.5, seed=11)
    v.requires_grad_()
    gamma.requires_grad_()

    def fn(v, gamma):
        g = bk_green_scan(bk_diagonal(v, gamma), 0.2 + 0.6j)
        return g.real, g.imag

    assert torch.autograd.gradcheck(fn, (v, gamma))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 80),
    v_scale=st.floats(1e-3, 1e4),
    gamma_scale=st.floats(0.0, 1e3),
    z_re=st.floats(-5.0, 5.0),
    z_im=st.floats(1e-3, 10.0),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_bk_green_bound(n, v_scale, gamma_scale, z_re, z_im, seed, dtype):
    """|G_i| <= 1 / Im z and Im G_i > 0 for any potential with Gamma >= 0 (proof in scans.py)."""
    v, gamma = _potential((2, n), v_scale, gamma_scale, seed=seed, dtype=dtype)
    z = complex(z_re, z_im)
    g = bk_green_scan(bk_diagonal(v, gamma), z)
    slack = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.isfinite(g).all()
    assert float(g.abs().max()) <= (1.0 / z_im) * (1 + slack), f"max |G| = {float(g.abs().max())}"
    assert float(g.imag.min()) >= 0.0


def test_bk_scan_no_overflow_for_huge_potentials():
    """theta_i grows like |a - z|^i (1e6^1024 here); renormalised partial products stay finite."""
    v, gamma = _potential((2, 1024), 1e6, 1e6, seed=5)
    ref = bk_green_sequential(bk_diagonal(v, gamma), 1j)
    g32 = bk_green_scan(bk_diagonal(v.float(), gamma.float()), 1j)
    assert torch.isfinite(g32).all()
    rel = float(((g32.to(ref.dtype) - ref).abs() / ref.abs()).max())
    assert rel <= 1e-5, rel


def test_empty_sequences():
    a = torch.ones(2, 0, dtype=torch.complex64)
    assert bk_green_scan(a, 1j).shape == (2, 0) and bk_green_sequential(a, 1j).shape == (2, 0)
    q = torch.ones(2, 0, 3)
    assert hebbian_parallel(q, q, q, torch.ones(2, 0), 1.0, 4).shape == (2, 0, 3)
    assert hebbian_sequential(q, q, q, torch.ones(2, 0)).shape == (2, 0, 3)


def test_backward_through_an_empty_hebbian_sequence():
    """The empty output stays on v's graph: a loss over it backpropagates (zeros) instead of raising."""
    v = torch.ones(2, 0, 3, requires_grad=True)
    hebbian_parallel(torch.ones(2, 0, 4), torch.ones(2, 0, 4), v, torch.ones(2, 0), 1.0, 4).sum().backward()
    assert v.grad is not None and v.grad.shape == (2, 0, 3)


def test_bk_scan_is_causal():
    v, gamma = _potential((2, 100), 2.0, 1.0, seed=2)
    a = bk_diagonal(v, gamma).to(torch.complex64)
    b = a.clone()
    b[..., 40:] = b[..., 40:] * 3.0 - 1.0j
    assert torch.equal(bk_green_scan(a, 1j)[..., :40], bk_green_scan(b, 1j)[..., :40])


@pytest.mark.parametrize("z", [0.0, 1.0, 1.0 - 0.5j, complex(0.0, -0.0)])
def test_bk_rejects_shift_off_upper_half_plane(z):
    a = torch.ones(4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="Im z > 0"):
        bk_green_scan(a, z)
    with pytest.raises(ValueError, match="Im z > 0"):
        bk_green_sequential(a, z)


def test_bk_rejects_bad_arguments():
    with pytest.raises(TypeError, match="a must have dtype complex"):
        bk_green_scan(torch.ones(4), 1j)
    with pytest.raises(TypeError, match="z must be a complex number"):
        bk_green_scan(torch.ones(4, dtype=torch.complex64), "1j")
    with pytest.raises(TypeError, match="z must be a complex number"):
        bk_green_scan(torch.ones(4, dtype=torch.complex64), True)
    with pytest.raises(ValueError, match="z must be finite"):
        bk_green_scan(torch.ones(4, dtype=torch.complex64), complex(math.inf, 1.0))
    with pytest.raises(ValueError, match="last .sequence. dimension"):
        bk_green_scan(torch.ones((), dtype=torch.complex64), 1j)
    with pytest.raises(ValueError, match="same shape"):
        bk_diagonal(torch.ones(3), torch.ones(4))
    with pytest.raises(TypeError, match="gamma must have dtype"):
        bk_diagonal(torch.ones(3), torch.ones(3, dtype=torch.long))


# ---------------------------------------------------------------- Hebbian memory

def _hebbian_inputs(shape_lead, n, d_k, d_v, decay_scale, seed=0, dtype=torch.float64):
    g = _gen(seed)
    q = torch.randn(*shape_lead, n, d_k, generator=g, dtype=torch.float64) / math.sqrt(d_k)
    k = torch.randn(*shape_lead, n, d_k, generator=g, dtype=torch.float64)
    v = torch.randn(*shape_lead, n, d_v, generator=g, dtype=torch.float64)
    log_decay = -torch.rand(*shape_lead, n, generator=g, dtype=torch.float64) * decay_scale
    return tuple(t.to(dtype) for t in (q, k, v, log_decay))


CHUNKS = [None, 1, 7, 64]


@pytest.mark.parametrize("decay_scale", [0.0, 1e-2, 1.0, 1e4])
@pytest.mark.parametrize("n", [1, 5, 64, 1024])
def test_hebbian_parallel_matches_sequential(n, decay_scale):
    q, k, v, ld = _hebbian_inputs((2, 3), n, 8, 5, decay_scale, seed=n)
    ref = hebbian_sequential(q, k, v, ld, 0.7)
    scale = float(ref.abs().max())
    for chunk in CHUNKS:
        if n == 1024 and chunk == 1:
            continue  # 1024 one-token chunks: a needless 1024 x 1024 chunk-level matrix
        got = hebbian_parallel(q, k, v, ld, 0.7, chunk)
        assert got.shape == ref.shape
        assert _normwise(got, ref, scale) <= F64_TOL, f"chunk={chunk}: {_normwise(got, ref, scale):.2e}"
        got32 = hebbian_parallel(*(t.float() for t in (q, k, v, ld)), 0.7, chunk)
        assert got32.dtype == torch.float32
        assert _normwise(got32, ref, scale) <= F32_TOL, f"chunk={chunk}: float32 {_normwise(got32, ref, scale):.2e}"


def _hebbian_grads(fn, inputs, w):
    inputs = [t.clone().requires_grad_() for t in inputs]
    (fn(*inputs) * w.to(inputs[0].dtype)).sum().backward()
    return [t.grad for t in inputs]


@pytest.mark.parametrize("decay_scale", [1e-2, 1.0, 1e4])
@pytest.mark.parametrize("n,chunk", [(6, None), (64, 16), (1024, 128), (1024, None)])
def test_hebbian_gradients(n, chunk, decay_scale):
    inputs = _hebbian_inputs((2, 2), n, 8, 8, decay_scale, seed=3)
    w = torch.randn(2, 2, n, 8, generator=_gen(4), dtype=torch.float64)
    ref = _hebbian_grads(lambda *t: hebbian_sequential(*t, 0.5), inputs, w)
    fast = _hebbian_grads(lambda *t: hebbian_parallel(*t, 0.5, chunk), inputs, w)
    fast32 = _hebbian_grads(lambda *t: hebbian_parallel(*t, 0.5, chunk), [t.float() for t in inputs], w)
    for name, r, f, f32 in zip(("q", "k", "v", "log_decay"), ref, fast, fast32, strict=True):
        scale = float(r.abs().max())
        assert torch.isfinite(f32).all(), f"{name}: non-finite float32 gradient"
        assert _normwise(f, r, scale) <= F64_TOL, f"{name}: float64 gradient {_normwise(f, r, scale):.2e}"
        assert _normwise(f32, r, scale) <= F32_TOL, f"{name}: float32 gradient {_normwise(f32, r, scale):.2e}"


def test_hebbian_extreme_decay_is_finite():
    """Decays of -1e30 per step: cumulative sums reach -inf in float32; weights are 0, never NaN."""
    q, k, v, ld = _hebbian_inputs((1, 2), 300, 4, 4, 1.0, seed=9, dtype=torch.float32)
    ld = torch.full_like(ld, -1e30).requires_grad_()
    for chunk in (None, 64):
        y = hebbian_parallel(q, k, v, ld, 1.0, chunk)
        # Every step forgets everything: y_t = eta (q_t . k_t) v_t.
        want = (q * k).sum(-1, keepdim=True) * v
        assert torch.allclose(y, want, rtol=1e-6, atol=1e-6)  # regression tolerance (float32)
        (grad,) = torch.autograd.grad(y.sum(), ld)
        assert torch.isfinite(grad).all()


def test_hebbian_is_causal():
    q, k, v, ld = _hebbian_inputs((2,), 100, 4, 4, 0.1, seed=1, dtype=torch.float32)
    q2, k2, v2, ld2 = (t.clone() for t in (q, k, v, ld))
    for t in (q2, k2, v2):
        t[..., 37:, :] = 5.0
    ld2[..., 37:] = -3.0
    for chunk in (None, 16, 37):
        a = hebbian_parallel(q, k, v, ld, 1.0, chunk)[..., :37, :]
        b = hebbian_parallel(q2, k2, v2, ld2, 1.0, chunk)[..., :37, :]
        assert torch.equal(a, b), f"chunk={chunk}"


def test_segment_sum():
    x = torch.arange(1.0, 6.0, dtype=torch.float64)
    s = segment_sum(x)
    for t in range(5):
        for u in range(5):
            want = x[u + 1 : t + 1].sum().item() if u <= t else -math.inf
            assert s[t, u].item() == want, (t, u)


def test_hebbian_rejects_bad_arguments():
    q, k, v, ld = _hebbian_inputs((2,), 6, 4, 3, 1.0, dtype=torch.float32)
    with pytest.raises(ValueError, match="q and k"):
        hebbian_parallel(q, k[..., :3], v, ld)
    with pytest.raises(ValueError, match="v must have shape"):
        hebbian_parallel(q, k, v[..., :5, :], ld)
    with pytest.raises(ValueError, match="log_decay must have shape"):
        hebbian_parallel(q, k, v, ld[..., :5])
    with pytest.raises(TypeError, match="share one dtype"):
        hebbian_parallel(q, k, v.double(), ld)
    with pytest.raises(TypeError, match="q must have dtype"):
        hebbian_parallel(q.long(), k, v, ld)
    with pytest.raises(ValueError, match="eta must be finite"):
        hebbian_sequential(q, k, v, ld, eta=math.nan)
    with pytest.raises(TypeError, match="eta must be a real number"):
        hebbian_parallel(q, k, v, ld, eta="1")
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        hebbian_parallel(q, k, v, ld, 1.0, 0)
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        hebbian_parallel(q, k, v, ld, 1.0, 2.5)

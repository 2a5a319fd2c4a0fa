"""The BK-Core resolvent kernels with their prefetch ring (muse.kernels._triton) give bit for bit the
outputs of the one-step-ahead kernels they replaced, kept below as the reference: the arithmetic of a
step is the same operations in the same order, only the loads move earlier.

Sequence lengths around both ring depths (shorter, equal, one more, not a multiple), lane counts that
are not a multiple of the block, with and without the initial state, a strided input.  Bits are
compared through an int32 view, so -0 and +0 differ.  CPU: Triton's interpreter; CUDA: the compiled
kernels, where this also checks that no fma spans two steps of the unrolled ring (each step is its own
branch; see muse/kernels/_triton.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from muse import kernels

CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda,
                                                  pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")])]

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)
if not CUDA and not kernels.interpreting():
    pytest.skip("Triton kernels on CPU need TRITON_INTERPRET=1 before triton is imported", allow_module_level=True)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from muse.kernels import _triton  # noqa: E402

REF_BLOCK = 32


@triton.jit
def _ref_forward_kernel(a_ptr, g0_ptr, g_ptr, n_lanes, n_steps, stride_lane, stride_step, z_re, z_im,
                        HAS_G0: tl.constexpr, BLOCK: tl.constexpr):
    """The forward before the ring: one step's input loaded ahead."""
    lanes = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = lanes < n_lanes
    if HAS_G0:
        g_re = tl.load(g0_ptr + 2 * lanes, mask=mask, other=0.0)
        g_im = tl.load(g0_ptr + 2 * lanes + 1, mask=mask, other=0.0)
    else:
        g_re = tl.zeros((BLOCK,), dtype=tl.float32)
        g_im = tl.zeros((BLOCK,), dtype=tl.float32)
    a_p = a_ptr + lanes * stride_lane
    g_p = g_ptr + lanes * (2 * n_steps)
    a_re = tl.load(a_p, mask=mask, other=0.0)
    a_im = tl.load(a_p + 1, mask=mask, other=0.0)
    i = 0
    while i < n_steps:
        a_p += stride_step
        more = mask & (i + 1 < n_steps)
        next_re = tl.load(a_p, mask=more, other=0.0)
        next_im = tl.load(a_p + 1, mask=more, other=0.0)
        g_re, g_im = _triton._reciprocal((a_re - z_re) - g_re, (a_im - z_im) - g_im)
        tl.store(g_p, g_re, mask=mask)
        tl.store(g_p + 1, g_im, mask=mask)
        g_p += 2
        a_re = next_re
        a_im = next_im
        i += 1


@triton.jit
def _ref_backward_kernel(g_ptr, dg_ptr, da_ptr, dg0_ptr, n_lanes, n_steps, BLOCK: tl.constexpr):
    """The backward before the ring: one step's inputs loaded ahead."""
    lanes = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = lanes < n_lanes
    off = lanes * (2 * n_steps) + 2 * (n_steps - 1)
    c_re = tl.zeros((BLOCK,), dtype=tl.float32)
    c_im = tl.zeros((BLOCK,), dtype=tl.float32)
    more = mask & (n_steps > 0)
    g_re = tl.load(g_ptr + off, mask=more, other=0.0)
    g_im = tl.load(g_ptr + off + 1, mask=more, other=0.0)
    d_re = tl.load(dg_ptr + off, mask=more, other=0.0)
    d_im = tl.load(dg_ptr + off + 1, mask=more, other=0.0)
    i = 0
    while i < n_steps:
        more = mask & (i + 1 < n_steps)
        next_g_re = tl.load(g_ptr + off - 2, mask=more, other=0.0)
        next_g_im = tl.load(g_ptr + off - 1, mask=more, other=0.0)
        next_d_re = tl.load(dg_ptr + off - 2, mask=more, other=0.0)
        next_d_im = tl.load(dg_ptr + off - 1, mask=more, other=0.0)
        l_re = d_re + c_re
        l_im = d_im + c_im
        s_re = g_re * g_re - g_im * g_im
        s_im = -2.0 * g_re * g_im
        c_re = l_re * s_re - l_im * s_im
        c_im = l_re * s_im + l_im * s_re
        tl.store(da_ptr + off, -c_re, mask=mask)
        tl.store(da_ptr + off + 1, -c_im, mask=mask)
        off -= 2
        g_re = next_g_re
        g_im = next_g_im
        d_re = next_d_re
        d_im = next_d_im
        i += 1
    tl.store(dg0_ptr + 2 * lanes, c_re, mask=mask)
    tl.store(dg0_ptr + 2 * lanes + 1, c_im, mask=mask)


def _ref_forward(a, z_re, z_im, g0):
    n_lanes, n_steps = math.prod(a.shape[:-1]), a.shape[-1]
    ar = torch.view_as_real(a.reshape(n_lanes, n_steps))
    g = torch.empty((n_lanes, n_steps, 2), dtype=torch.float32, device=a.device)
    g0r = None if g0 is None else torch.view_as_real(g0.reshape(-1)).contiguous()
    _ref_forward_kernel[(triton.cdiv(n_lanes, REF_BLOCK),)](
        ar, ar if g0r is None else g0r, g, n_lanes, n_steps, ar.stride(0), ar.stride(1), z_re, z_im,
        HAS_G0=g0r is not None, BLOCK=REF_BLOCK, num_warps=1)
    return torch.view_as_complex(g).reshape(a.shape)


def _ref_backward(g, grad):
    n_lanes, n_steps = math.prod(g.shape[:-1]), g.shape[-1]
    gr = torch.view_as_real(g.reshape(n_lanes, n_steps).contiguous())
    dg = torch.view_as_real(grad.reshape(n_lanes, n_steps).contiguous())
    da = torch.empty_like(gr)
    dg0 = torch.zeros((n_lanes, 2), dtype=torch.float32, device=g.device)
    _ref_backward_kernel[(triton.cdiv(n_lanes, REF_BLOCK),)](gr, dg, da, dg0, n_lanes, n_steps,
                                                             BLOCK=REF_BLOCK, num_warps=1)
    return torch.view_as_complex(da).reshape(g.shape), torch.view_as_complex(dg0).reshape(g.shape[:-1])


@pytest.fixture
def kernel_device(request):
    """The parametrized device; CPU tensors need the interpreter (off when a GPU is present)."""
    if request.param == "cpu" and not kernels.interpreting():
        pytest.skip("Triton kernels on CPU need TRITON_INTERPRET=1 before triton is imported")
    return request.param


def _bits(x):
    return torch.view_as_real(x).contiguous().view(torch.int32)


def _inputs(n_lanes, n_steps, seed, device):
    """A dissipative diagonal a (Im a <= 0, exact zeros of both signs included), G_0 and a gradient."""
    g = torch.Generator().manual_seed(seed)
    a = torch.complex(1.5 * torch.randn(n_lanes, n_steps, generator=g) + 2.0,
                      -torch.nn.functional.softplus(torch.randn(n_lanes, n_steps, generator=g)))
    a.real[:, ::7] = 0.0
    a.real[:, 3::7] = -0.0
    g0 = torch.complex(*(0.4 * torch.randn(2, n_lanes, generator=g)))
    grad = torch.complex(*torch.randn(2, n_lanes, n_steps, generator=g))
    grad.imag[:, ::5] = -0.0
    return a.to(device), g0.to(device), grad.to(device)


def test_ring_depths_and_blocks_are_what_the_cases_cover():
    """The lengths below straddle both depths; the lane counts give blocks of 4, 16 and 32 here."""
    assert (_triton.BK_FWD_DEPTH, _triton.BK_BWD_DEPTH) == (16, 48)
    if kernels.interpreting():
        cpu = torch.device("cpu")
        assert [_triton._bk_block(n, cpu) for n in (1, 5, 37, 130)] == [4, 4, 16, 32]


@pytest.mark.parametrize("kernel_device", DEVICES, indirect=True)
@pytest.mark.parametrize("n_steps", [1, 3, 16, 17, 37, 48, 49, 100])
@pytest.mark.parametrize("n_lanes", [5, 37])
@pytest.mark.parametrize("with_g0", [False, True], ids=["G0=0", "G0"])
def test_bk_ring_kernels_bit_identical(kernel_device, n_steps, n_lanes, with_g0):
    a, g0, grad = _inputs(n_lanes, n_steps, seed=n_steps * 100 + n_lanes, device=kernel_device)
    g0 = g0 if with_g0 else None
    g_ref = _ref_forward(a, 0.3, 0.7, g0)
    g_new = _triton.bk_green_forward(a, 0.3, 0.7, g0)
    assert torch.equal(_bits(g_new), _bits(g_ref))
    da_ref, dg0_ref = _ref_backward(g_ref, grad)
    da_new, dg0_new = _triton.bk_green_backward(g_ref, grad)
    assert torch.equal(_bits(da_new), _bits(da_ref))
    assert torch.equal(_bits(dg0_new), _bits(dg0_ref))


@pytest.mark.parametrize("kernel_device", DEVICES, indirect=True)
def test_bk_ring_kernels_bit_identical_strided_and_full_blocks(kernel_device):
    """130 lanes (blocks of 32 under the interpreter, the last partial) read from a transposed view, as
    BKCore's diagonal is at batch 1: lanes adjacent in memory, steps strided."""
    a, g0, grad = _inputs(130, 37, seed=3, device=kernel_device)
    a = a.t().contiguous().t()  # (130, 37), strides (1, 130)
    assert a.stride() == (1, 130)
    g_ref = _ref_forward(a, 0.0, 1.0, g0)
    assert torch.equal(_bits(_triton.bk_green_forward(a, 0.0, 1.0, g0)), _bits(g_ref))
    ref, new = _ref_backward(g_ref, grad), _triton.bk_green_backward(g_ref, grad)
    assert torch.equal(_bits(new[0]), _bits(ref[0])) and torch.equal(_bits(new[1]), _bits(ref[1]))

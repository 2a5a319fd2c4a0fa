"""benchmarks.memory.LiveTensorBytes counts the tensors MUSE's kernel wrappers allocate inside custom ops
(muse.kernels.scratch): the Hebbian backward's per-tile partial sums, the BK wrappers' ``.contiguous()``
copies.  Expected bytes come from the shapes; on CPU the kernels run in Triton's interpreter."""

from __future__ import annotations

import gc
import math

import pytest
import torch

from benchmarks.memory import LiveTensorBytes
from muse import kernels
from muse.kernels.scratch import add_listener, listener_count, remove_listener, scratch

F32 = 4


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors)


@torch.library.custom_op("muse_tracker_test::scratchy", mutates_args=())
def _scratchy(x: torch.Tensor) -> torch.Tensor:
    """An opaque op like the kernel wrappers: one notified temporary (freed inside), one notified
    output, and the input's ``.contiguous()`` (a copy only when x is not contiguous)."""
    xc = scratch(x.contiguous(), x)
    tmp = scratch(torch.empty(3 * xc.numel(), dtype=torch.float32))
    out = scratch(torch.empty(xc.numel(), dtype=torch.float32))
    tmp[: xc.numel()].copy_(xc.reshape(-1))
    out.copy_(tmp[: xc.numel()])
    return out


@_scratchy.register_fake
def _(x):
    return x.new_empty(x.numel(), dtype=torch.float32)


# ------------------------------------------------------------------ the mechanism (no Triton needed)

def test_tracker_counts_scratch_of_a_custom_op_until_freed_and_its_output_once():
    x = torch.randn(64, 32)  # contiguous: its .contiguous() is x itself, not a copy
    with LiveTensorBytes() as mem:
        mem.track([x])
        before = mem.current
        out = _scratchy(x)
    n = x.numel() * F32
    assert mem.peak == before + 3 * n + n  # the temporary and the output, both alive inside the op
    assert mem.current == before + n  # the temporary is freed; the returned output is counted once
    assert out.untyped_storage().nbytes() == n


def test_tracker_counts_a_contiguous_copy_but_not_a_view_of_an_untracked_input():
    x = torch.randn(64, 32)  # made before the tracker and not tracked: never counted
    xt = x.t()  # a view made before too (inside the tracker, a view op's output counts its storage)
    with LiveTensorBytes() as mem:
        _scratchy(x)  # x is contiguous: the wrapper uses it as is
        contiguous_peak = mem.peak
        mem.reset_peak()
        _scratchy(xt)  # not contiguous: the wrapper's copy is counted while it lives
        transposed_peak = mem.peak
    n = x.numel() * F32
    assert contiguous_peak == 3 * n + n  # temporary + output
    assert transposed_peak == n + 3 * n + n  # copy + temporary + output
    assert mem.current == 0  # the outputs were dropped


def test_tracker_joins_the_listeners_only_while_entered():
    base = listener_count()
    mem = LiveTensorBytes()
    assert listener_count() == base
    with mem:
        assert listener_count() == base + 1
        with LiveTensorBytes() as inner:  # nested trackers both count
            assert listener_count() == base + 2
            t = scratch(torch.empty(100, dtype=torch.float32))
        assert inner.peak == 100 * F32 and mem.peak == 100 * F32
        del t
    assert listener_count() == base
    failing = LiveTensorBytes()
    with pytest.raises(RuntimeError, match="boom"), failing:
        raise RuntimeError("boom")
    assert listener_count() == base  # left on an exception too
    scratch(torch.empty(1000, dtype=torch.float32))  # after the with blocks: no tracker hears of it
    assert mem.peak == 100 * F32 and failing.peak == 0 and mem.current == 0


def test_scratch_calls_listeners_only_while_registered():
    seen: list[torch.Tensor] = []
    t = torch.zeros(5)
    assert scratch(t) is t and not seen
    add_listener(seen.append)
    try:
        assert scratch(t) is t and seen == [t]
        assert scratch(t.view(5), t) is not None and len(seen) == 1  # shares t's storage: not a copy
    finally:
        remove_listener(seen.append)
    scratch(t)
    assert len(seen) == 1


def test_scratch_listener_registry_rejects_bad_arguments():
    with pytest.raises(TypeError, match="listener must be callable"):
        add_listener(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not registered"):
        remove_listener(print)


def test_scratch_does_not_look_at_the_tensor_when_no_tracker_is_active():
    """No tracker entered: the registry is empty and scratch returns the tensor untouched."""

    class NoStorage(torch.Tensor):
        def untyped_storage(self):
            raise AssertionError("scratch inspected a tensor with no listener registered")

    assert listener_count() == 0
    t = torch.zeros(3).as_subclass(NoStorage)
    assert scratch(t, t) is t


# ------------------------------------------------------------------ the kernel wrappers

@pytest.fixture
def interpreter():
    if not kernels.HAS_TRITON:
        pytest.skip("triton is not installed (pip install -e '.[triton]')")
    if not kernels.interpreting():  # the tests below pass CPU tensors to the wrappers
        pytest.skip("these tests run the kernel wrappers on CPU tensors: TRITON_INTERPRET=1 before triton is imported")
    from muse.kernels import _triton

    return _triton


def test_tracker_peak_over_hebbian_backward_includes_the_tile_partials(interpreter):
    lead, s, d_k, d_v = (2, 3), 24, 16, 48
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn((*lead, s, d_k), generator=g) for _ in range(2))
    v, dy = (torch.randn((*lead, s, d_v), generator=g) for _ in range(2))
    ld = -0.1 * torch.rand((*lead, s), generator=g)
    bv = min(interpreter.HEBB_TILE_V, 1 << (d_v - 1).bit_length())
    tiles = math.ceil(d_v / bv)
    assert tiles > 1
    with LiveTensorBytes() as mem:
        mem.track([q, k, v, ld, dy])
        before = mem.current
        dq, dk, dv, dw0 = kernels.hebbian_bwd(q, k, v, ld, 0.7, None, dy, None)
    n = math.prod(lead)
    partials = 2 * tiles * n * s * d_k * F32  # dq and dk, one (n, S, d_k) fp32 partial per value tile
    outputs = _bytes(dq, dk, dv, dw0)
    assert outputs == (2 * n * s * d_k + n * s * d_v + n * d_k * d_v) * F32
    assert mem.peak == before + partials + outputs  # the sums of dq, dk are made while both partials live
    gc.collect()  # Triton's interpreter holds kernel arguments in a reference cycle
    assert mem.current == before + outputs  # the partials are freed


def _backward_peak(lead, s, d_k, d_v):
    """Peak live bytes during the backward of hebbian_parallel (kernel on) above what was live before it."""
    from muse.scan import hebbian_parallel

    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn((*lead, s, d_k), generator=g).requires_grad_(True) for _ in range(2))
    v = torch.randn((*lead, s, d_v), generator=g).requires_grad_(True)
    ld = (-0.1 * torch.rand((*lead, s), generator=g)).requires_grad_(True)
    with LiveTensorBytes() as mem:
        mem.track([q, k, v, ld])
        loss = hebbian_parallel(q, k, v, ld, 1.0, 16).square().sum()
        mem.reset_peak()
        before = mem.current
        loss.backward()
    return mem.peak - before


def test_tracker_peak_over_hebbian_through_autograd_includes_the_tile_partials(interpreter, monkeypatch):
    """The real path: hebbian_parallel with the kernel on, its backward custom op run by autograd. With
    the wrappers' notifications silenced the tracker's peak is lower by exactly the partial sums."""
    monkeypatch.setenv(kernels.ENV, "1")
    lead, s, d_k, d_v = (2, 2), 32, 16, 64
    seen = _backward_peak(lead, s, d_k, d_v)
    monkeypatch.setattr(interpreter, "scratch", lambda t, *sources: t)
    blind = _backward_peak(lead, s, d_k, d_v)
    tiles = math.ceil(d_v / interpreter.HEBB_TILE_V)
    assert seen - blind == 2 * tiles * math.prod(lead) * s * d_k * F32


def test_tracker_peak_over_bk_backward_includes_the_contiguous_copy(interpreter):
    n_lanes, s = 6, 40
    g = torch.Generator().manual_seed(2)
    green = torch.complex(torch.randn(n_lanes, s, generator=g), torch.randn(n_lanes, s, generator=g))
    grad = torch.complex(torch.randn(s, n_lanes, generator=g), torch.randn(s, n_lanes, generator=g)).t()
    assert green.is_contiguous() and not grad.is_contiguous()
    with LiveTensorBytes() as mem:
        mem.track([green, grad])
        before = mem.current
        da, dg0 = kernels.bk_green_bwd(green, grad)
    lanes = n_lanes * s * 8  # complex64
    assert _bytes(da, dg0) == lanes + n_lanes * 8
    assert mem.peak == before + lanes + _bytes(da, dg0)  # grad's contiguous copy lives during the op
    gc.collect()  # Triton's interpreter holds kernel arguments in a reference cycle
    assert mem.current == before + _bytes(da, dg0)
    assert listener_count() == 0


def test_tracker_peak_over_bk_forward_includes_the_reshape_copies(interpreter):
    g = torch.Generator().manual_seed(3)
    base = torch.complex(torch.randn(3, 2, 12, generator=g), torch.randn(3, 2, 12, generator=g))
    g0_base = torch.complex(torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g))
    a, g0 = base.transpose(0, 1), g0_base.t()  # (2, 3, S), (2, 3): flattening the lanes copies both
    with LiveTensorBytes() as mem:
        mem.track([a, g0])
        before = mem.current
        out = kernels.bk_green_fwd(a, 0.1, 1.0, g0)
    assert _bytes(out) == a.numel() * 8
    assert mem.peak == before + 2 * _bytes(out) + g0.numel() * 8  # a's and g0's copies, then G
    gc.collect()  # Triton's interpreter holds kernel arguments in a reference cycle
    assert mem.current == before + _bytes(out)


def test_tracker_peak_over_layer_norm_backward_includes_the_partial_rows(interpreter):
    rows, d = 70, 24
    g = torch.Generator().manual_seed(4)
    planes = torch.randn(2, rows, d, generator=g).half()
    weight = torch.randn(2, d, generator=g).half()
    grad = torch.randn(2, d, rows, generator=g).half().transpose(1, 2)  # not contiguous: copied
    n_rows_tile, _, _ = interpreter._tile(d, "layer_norm_bwd")
    progs = interpreter._programs(planes.device, math.ceil(rows / n_rows_tile), "layer_norm_bwd")
    with LiveTensorBytes() as mem:
        mem.track([planes, weight, grad])
        before = mem.current
        dx, sums = kernels.layer_norm_bwd(planes, weight, grad, 1e-5, torch.float32)
    assert _bytes(dx, sums) == 2 * rows * d * 2 + 2 * d * F32
    # grad's copy and the per-program partial rows live with the outputs
    assert mem.peak == before + 2 * rows * d * 2 + progs * 2 * d * F32 + _bytes(dx, sums)
    gc.collect()  # Triton's interpreter holds kernel arguments in a reference cycle
    assert mem.current == before + _bytes(dx, sums)

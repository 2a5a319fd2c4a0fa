"""The kernels' eager fast path: a ``muse.kernels`` op calls its Triton wrapper directly only where its
custom op adds nothing (grad mode off, no tracing, dispatch mode or functorch transform), and gives the
same bits either way."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from muse import kernels
from muse.kernels import ops
from tests.kernels._launches import DEVICES, count_launches

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)


class _Watch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_direct_only_where_nothing_watches():
    with torch.no_grad():
        assert ops._direct()
        with _Watch():
            assert not ops._direct()
        assert not torch.func.vmap(lambda x: x + float(ops._direct()))(torch.zeros(2)).any()
    assert not ops._direct()  # grad mode: the custom op (its autograd error stays as it was)


def _custom_op_events(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("muse::"))


@pytest.mark.parametrize("kernel_device", DEVICES)
def test_direct_call_gives_the_custom_ops_bits(monkeypatch, kernel_device):
    launches = count_launches(monkeypatch, kernel_device, ("complex_mm", "layer_norm_forward"))
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2, 24, 40, generator=g).half().to(kernel_device) for _ in range(2))
    bias = torch.randn(2, 24, generator=g).half().to(kernel_device)
    w, wb = torch.ones(40, dtype=torch.float16, device=kernel_device), bias[0, :1].expand(40).contiguous()

    def calls():
        return (kernels.complex_mm(a, b.transpose(1, 2), bias, False, True),
                kernels.layer_norm_fwd(a, w, wb, 1e-5))

    with torch.no_grad():
        direct = calls()
        assert _custom_op_events(calls) == 0
        with _Watch():
            watched = calls()
    through_op = calls()  # grad mode on (no input needs grad): the custom op
    assert _custom_op_events(calls) == 2
    for x, y, z in zip(direct, watched, through_op, strict=True):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert launches == {"complex_mm": 5, "layer_norm_forward": 5}

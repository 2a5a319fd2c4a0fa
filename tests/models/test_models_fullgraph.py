"""Stage 1 and Phase 2 trace with torch.compile(fullgraph=True): no graph break anywhere.

Backend aot_eager traces forward and backward (dynamo + AOTAutograd) without inductor's code
generation, which takes minutes on a CPU; the graph-break check is the same.  Phase 2 uses the
dynamo-only ``eager`` backend: under aot_eager on torch 2.13 CPU its backward graph views a
non-contiguous softplus_backward result (a stride mismatch inside PyTorch's replay of the graph).
"""

from __future__ import annotations

import time

import pytest
import torch

from muse.models import build_model


@pytest.mark.parametrize(("name", "preset", "extra", "backend"), [
    ("stage1", "tiny", {}, "aot_eager"),
    ("stage1", "mix-tiny", {"tie_head": True, "d_ffn": 32}, "aot_eager"),  # the head tied to the token table
    ("stage1", "mix-tiny", {"mixer": "hybrid", "n_heads": 2}, "aot_eager"),  # recurrence and retention
    ("phase2", "tiny", {}, "eager"),
    ("stage1", "mix-tiny", {"pointer_dim": 8, "d_ffn": 32}, "aot_eager"),  # the copy path's log-probabilities
    ("stage1", "mix-tiny", {"lambda_kind": "complex", "d_ffn": 32}, "aot_eager"),  # the per-token rotation
    # the head over both planes, the real token table
    ("stage1", "mix-tiny", {"head": "complex", "token_table": "real", "d_ffn": 32}, "aot_eager"),
])
def test_model_compiles_fullgraph_and_matches_eager(name, preset, extra, backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(name, preset, vocab_size=97, d_model=16, n_layers=1, max_seq_len=16, dropout=0.0, **extra)
    ids = torch.randint(0, 97, (2, 12))
    eager = model(ids)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    t0 = time.perf_counter()
    out = compiled(ids)
    out.float().square().mean().backward()
    seconds = time.perf_counter() - t0
    assert torch.equal(out.detach(), eager.detach()), (out - eager).abs().max()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    stats = model.get_statistics()
    assert stats["forward_count"] == 2 and stats["nonfinite_count"] == 0
    print(f"{name}: fullgraph compile + first fwd/bwd {seconds:.1f}s ({backend}, CPU)")


def test_compiled_model_refuses_out_of_range_ids_without_a_host_sync():
    """Inside the graph the range check is a device assert: it raises (CPU) instead of a ValueError."""
    torch._dynamo.reset()
    model = build_model("stage1", "tiny", vocab_size=97, d_model=16, n_layers=1, max_seq_len=16)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    ids = torch.randint(0, 97, (1, 8))
    compiled(ids)
    for bad in (97, -1):
        ids[0, 3] = bad
        with pytest.raises(RuntimeError, match="token id outside"):
            compiled(ids)
    with pytest.raises(ValueError, match="out of range|negative"):
        model(ids)  # eager keeps the ValueError naming the id


def test_the_range_check_survives_the_min_cut_partitioner_under_a_memory_budget():
    """Under a partitioner memory budget below 1 the min-cut partitioner sizes every forward node; torch 2.11
    failed on a bare ``_assert_async`` there (CUDA, 2026-12-07), so the check is an op that returns a tensor.
    The forward and backward partition, the loss matches eager, and the assert still fires."""
    from muse.models.compile import set_memory_budget

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model("stage1", "mix-tiny", vocab_size=97, d_model=16, n_layers=1, max_seq_len=16, dropout=0.0)
    ids = torch.randint(0, 97, (2, 12))
    previous = set_memory_budget(0.1)
    try:
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager_decomp_partition")
        out = compiled(ids)
        out.float().square().mean().backward()
        torch.testing.assert_close(out.detach(), model(ids).detach(), rtol=1e-3, atol=1e-3)
        ids[1, 5] = 97
        with pytest.raises(RuntimeError, match="token id outside"):
            compiled(ids)
    finally:
        set_memory_budget(previous)
        torch._dynamo.reset()


def test_the_device_range_assert_is_a_well_formed_op():
    """``muse::assert_in_range`` passes torch's op checks (schema, fake tensor, autograd registration) and
    returns a copy of its input."""
    from muse._checks import assert_in_range

    t = torch.tensor([0, 3, 4])
    torch.library.opcheck(torch.ops.muse.assert_in_range.default, (t, 0, 5, "t outside [0, 5)"))
    out = assert_in_range(t, 0, 5, "t outside [0, 5)")
    assert torch.equal(out, t) and out.data_ptr() != t.data_ptr()
    with pytest.raises(RuntimeError, match=r"t outside \[0, 4\)"):
        assert_in_range(t, 0, 4, "t outside [0, 4)")


def test_compile_model_checks_its_arguments():
    from muse.models.compile import GRAPH_MODES, compile_model

    model = build_model("stage1", "tiny")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        compile_model("stage1")
    with pytest.raises(ValueError, match="backend must be one of"):
        compile_model(model, backend="tvm")
    with pytest.raises(ValueError, match="compile mode must be one of"):
        compile_model(model, mode="max-autotune-no-cudagraphs")
    for mode in GRAPH_MODES:
        with pytest.raises(ValueError, match="needs backend='inductor'"):
            compile_model(model, backend="aot_eager", mode=mode)
    compile_model(model, backend="aot_eager", mode="default")  # torch's default mode, any backend


def test_cuda_graphs_are_the_compiled_default_of_one_cuda_process_only():
    """resolve_compile_mode: CUDA graphs where one process compiles with inductor on CUDA; the default mode
    under DDP, on the CPU or with another backend; an explicit mode as given (DDP's too); nothing for an eager
    run."""
    from muse.models.compile import resolve_compile_mode

    assert resolve_compile_mode(None, compiled=True, device="cuda") == "reduce-overhead"
    assert resolve_compile_mode(None, compiled=True, device="cuda:1") == "reduce-overhead"
    assert resolve_compile_mode(None, compiled=True, device="cuda", distributed=True) == "default"
    assert resolve_compile_mode("reduce-overhead", compiled=True, device="cuda", distributed=True) == "reduce-overhead"
    assert resolve_compile_mode(None, compiled=True, device="cuda", backend="aot_eager") == "default"
    assert resolve_compile_mode(None, compiled=True, device="cpu") == "default"
    assert resolve_compile_mode("default", compiled=True, device="cuda") == "default"
    assert resolve_compile_mode("max-autotune", compiled=True, device="cuda") == "max-autotune"
    assert resolve_compile_mode(None, compiled=False, device="cuda") is None
    with pytest.raises(ValueError, match="compile mode must be one of"):
        resolve_compile_mode("fast", compiled=True, device="cuda")

"""The compiled training step's peak memory: the allocator measure it uses, and the report's informational rows."""

from __future__ import annotations

import datetime

import pytest
import torch

from benchmarks import measure
from benchmarks.memory import allocator_peak_bytes
from benchmarks.stage1 import Stage1BenchConfig, _compiled_memory, build_report, write_report
from muse.models import build_model
from muse.train.loss import model_loss

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", ["stage1", "phase2"])
def test_the_allocator_measure_agrees_with_the_live_tensor_tracker_on_an_eager_step(name):
    torch.manual_seed(0)
    model = build_model(name, "tiny")
    tracked = measure.peak_memory(model, 2, 32, CPU, 0, "fused", "fused")
    inputs, targets = measure._random_batch(model.config.vocab_size, 2, 32, CPU, torch.Generator().manual_seed(0))
    before = measure._storage_bytes([*model.parameters(), *model.buffers(), inputs, targets])
    impl = tracked["loss_path"]
    above = allocator_peak_bytes(lambda: model_loss(model, inputs, targets, impl=impl).backward())
    assert before == tracked["before_bytes"]
    assert abs(before + above - tracked["peak_bytes"]) <= 0.01 * tracked["peak_bytes"]


def test_compiled_peak_memory_measures_the_compiled_step_on_cpu():
    torch.manual_seed(0)
    model = build_model("stage1", "tiny")
    res = measure.compiled_peak_memory(model, 2, 32, CPU, 0, backend="aot_eager")
    assert res["compiled"] is True and res["measure"] == measure.CPU_ALLOCATOR_MEASURE
    assert res["loss_path"] == "chunked" and res["before_bytes"] > 0
    assert res["peak_bytes"] > res["before_bytes"] + sum(p.numel() * p.element_size() for p in model.parameters()) // 2
    assert all(p.grad is None for p in model.parameters())  # the measure leaves no gradients behind
    with pytest.raises(ValueError, match="batch"):
        measure.compiled_peak_memory(model, 0, 32, CPU)


def test_a_failing_compiled_measure_becomes_an_error_row(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(measure, "compiled_peak_memory", boom)
    assert _compiled_memory(None, 2, 32, CPU, 0) == {"error": "RuntimeError: no compiler here"}
    before = torch._functorch.config.activation_memory_budget
    assert _compiled_memory(None, 2, 32, CPU, 0, 0.1) == {"error": "RuntimeError: no compiler here"}
    assert torch._functorch.config.activation_memory_budget == before  # the budget comes back after a failure


def _run(ppl: float, compiled: bool) -> dict:
    return {"eval_ppl": ppl, "eval_loss": 1.0, "eval_tokens_scored": 100, "tokens_trained": 1000, "steps": 4,
            "skipped_steps": 0, "train_tokens_per_s": 123.0, "parameters": 10, "train_split": "valid",
            "train_split_warning": None, "results_file": "x", "compiled": compiled,
            "compile_s": 3.0 if compiled else None}


def _report(tmp_path, compiled: bool, stage1_compiled_memory: dict | None) -> str:
    mem = {"peak_bytes": 100 * 2**20, "measure": "live tensor bytes", "loss_path": "chunked"}
    per_model = {n: {"memory": dict(mem), "train_throughput": {"tokens_per_second": 1.0, "compiled": False}}
                 for n in ("phase2", "stage1")}
    per_model["stage1"]["memory"]["peak_bytes"] = 50 * 2**20
    per_model["stage1"]["trials"] = {"trials": 2, "nonfinite_trials": 0, "nonfinite_rate": 0.0,
                                     "grad_norm_min": 1e-3, "grad_norm_max": 1.0, "grad_offenders": []}
    per_model["stage1"]["layout"] = {"complex_activations": 3, "non_planar": []}
    if compiled:
        per_model["phase2"]["memory_compiled"] = {"peak_bytes": 80 * 2**20, "measure": "M"}
        per_model["stage1"]["memory_compiled"] = stage1_compiled_memory
    runs = {"phase2": _run(40.0, compiled), "stage1": _run(30.0, compiled)}
    data = {"train_split": "valid", "eval_split": "test", "train_tokens": 1000, "eval_tokens": 100, "warnings": []}
    stamp = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    write_report(build_report(Stage1BenchConfig(), stamp, "test", {"device": "cpu"}, data, 50.0, runs, per_model,
                              "cpu"), tmp_path)
    return (tmp_path / "report.md").read_text()


def test_the_report_gives_the_compiled_steps_memory_beside_the_judged_eager_one(tmp_path):
    md = _report(tmp_path, True, {"peak_bytes": 60 * 2**20, "measure": "M"})
    assert "| peak memory fwd+loss+bwd, the compiled training step (informational) | 80.0 MiB | 60.0 MiB |" in md
    assert ("VRAM vs Phase 2 on the compiled training step (informational; the criterion judges the eager step): "
            "60.0 MiB / 80.0 MiB = 0.750 (M)") in md
    assert "| VRAM vs Phase 2 | pass | 50.0 MiB / 100.0 MiB = 0.500" in md  # the verdict stays the eager step's
    md = _report(tmp_path, True, {"error": "RuntimeError: boom"})
    assert "| 80.0 MiB | failed: RuntimeError: boom |" in md and "on the compiled training step" not in md
    md = _report(tmp_path, False, None)
    assert "| not measured (trained eager) | not measured (trained eager) |" in md

"""Issue 10 item 4: the PPL criterion cannot pass on a broken baseline or a broken measurement."""

from __future__ import annotations

import pytest

from benchmarks import criteria as crit
from benchmarks.stage1 import Stage1BenchConfig, _eval_targets, judge

TARGETS = 1000


def _run(ppl: float, scored: int = TARGETS, **extra) -> dict:
    return {"eval_ppl": ppl, "eval_tokens_scored": scored, "tokens_trained": 4096, **extra}


_DEFAULT = object()


def _fair(s1=_DEFAULT, p2=_DEFAULT, nomix=_DEFAULT, train="valid", ev="test", targets=TARGETS):
    s1 = _run(300.0) if s1 is _DEFAULT else s1
    p2 = _run(310.0) if p2 is _DEFAULT else p2
    nomix = _run(320.0) if nomix is _DEFAULT else nomix
    return crit.perplexity_fair(s1, p2, nomix, train, ev, targets)


def test_fair_perplexity_passes_and_fails_on_the_ratio_when_everything_holds():
    ok = _fair()
    assert ok.status == crit.PASS and "beats its mixer-free variant (320.00)" in ok.value
    assert _fair(s1=_run(330.0)).status == crit.FAIL  # 330 / 310 = 1.065 > 1.03


def test_fair_perplexity_not_measured_when_phase2_mixers_hurt():
    c = _fair(p2=_run(310.0), nomix=_run(305.0))
    assert c.status == crit.NOT_MEASURED and "does not beat its mixer-free variant" in c.value
    assert _fair(nomix=None).status == crit.NOT_MEASURED
    assert "failed" in _fair(nomix={"error": "RuntimeError: boom"}).value


def test_fair_perplexity_not_measured_on_the_eval_split_or_partial_scoring():
    assert _fair(train="test", ev="test").status == crit.NOT_MEASURED
    assert _fair(s1=_run(300.0, scored=TARGETS - 1)).status == crit.NOT_MEASURED
    assert _fair(targets=None).status == crit.NOT_MEASURED


def test_fair_perplexity_fails_on_a_failed_run_or_non_finite_ppl():
    c = _fair(s1={"error": "ValueError: diverged"})
    assert c.status == crit.FAIL and "Stage 1 run failed: ValueError: diverged" in c.value
    assert _fair(p2=_run(float("nan"))).status == crit.FAIL


def test_trained_fails_with_the_reason():
    assert crit.trained("Stage 1", {"error": "RuntimeError: x"}, 500.0).status == crit.FAIL
    assert crit.trained("Stage 1", _run(float("inf")), 500.0).status == crit.FAIL
    assert crit.trained("Stage 1", _run(400.0), 500.0).status == crit.PASS


def _memory(peak: int, shape=(2, 1024)) -> dict:
    return {"memory": {"peak_bytes": peak, "measure": "live tensor bytes", "loss_path": "chunked"},
            "memory_shape": list(shape), "trials": None, "layout": None}


@pytest.mark.parametrize(("shape", "status"), [((2, 1024), crit.PASS), ((2, 128), crit.NOT_MEASURED)])
def test_seed_preset_memory_is_judged_at_the_seed_shape_only(shape, status):
    per_model = {"stage1": _memory(40, shape), "phase2": _memory(100, shape)}
    cs = {c.name: c for c in judge({}, per_model, None, "cpu", data={}, preset="seed")}
    assert cs["VRAM vs Phase 2"].status == status
    tiny = {c.name: c for c in judge({}, per_model, None, "cpu", data={}, preset="tiny")}
    assert tiny["VRAM vs Phase 2"].status == crit.PASS  # other presets: any shape


def test_eval_targets_and_config_validation():
    assert _eval_targets(1001, None) == 1000 and _eval_targets(1001, 256) == 256
    assert Stage1BenchConfig(references=["gpt"]).run_names() == ("phase2", "stage1", "gpt")
    with pytest.raises(ValueError, match="references: unknown run"):
        Stage1BenchConfig(references=("bert",))
    with pytest.raises(TypeError, match="references must be a list"):
        Stage1BenchConfig(references="gpt")
    with pytest.raises(ValueError, match="eval_stride"):
        Stage1BenchConfig(eval_stride=0)
    with pytest.raises(ValueError, match="compile_memory_budget must be <= 1.0, got 1.5"):
        Stage1BenchConfig(compile=True, compile_memory_budget=1.5)
    with pytest.raises(ValueError, match=r"compile_memory_budget=0.5 needs compiled training; compile is False"):
        Stage1BenchConfig(compile=False, compile_memory_budget=0.5)
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        Stage1BenchConfig(compile_mode="fast")
    with pytest.raises(ValueError, match=r"compile_mode='reduce-overhead' needs compiled training; compile is False"):
        Stage1BenchConfig(compile=False, compile_mode="reduce-overhead")


def test_the_memory_budget_needs_compiled_training_before_anything_trains(tmp_path):
    """On the CPU training is eager by default: the budget is refused before any run starts."""
    from benchmarks.stage1 import run_stage1_benchmark

    with pytest.raises(ValueError, match="compile_memory_budget=0.5 needs compiled training; compile is off here"):
        run_stage1_benchmark(Stage1BenchConfig(device="cpu", compile_memory_budget=0.5, out=str(tmp_path / "b")))
    assert not (tmp_path / "b" / "stage1").exists()
    with pytest.raises(ValueError, match="compile_mode='default' needs compiled training; compile is off here"):
        run_stage1_benchmark(Stage1BenchConfig(device="cpu", compile_mode="default", out=str(tmp_path / "c")))
    assert not (tmp_path / "c" / "stage1").exists()
    with pytest.raises(ValueError, match="compile_mode='reduce-overhead' replays CUDA graphs: it needs a CUDA device"):
        run_stage1_benchmark(Stage1BenchConfig(device="cpu", compile=True, compile_mode="reduce-overhead",
                                               out=str(tmp_path / "d")))
    assert not (tmp_path / "d" / "stage1").exists()


def test_the_recipe_line_names_the_memory_budget():
    from benchmarks.stage1 import _recipe_line

    cfg = dict(max_steps=4, batch_size=2, lr=1e-3, min_lr=1e-4, warmup=1, weight_decay=0.1, seed=0)
    assert "activation memory budget" not in _recipe_line(cfg)
    assert _recipe_line({**cfg, "compile_memory_budget": 0.1}).endswith(
        ", compiled under activation memory budget 0.1 (`--compile-memory-budget`)")
    assert "Muon" not in _recipe_line({**cfg, "optimizer": "adamw"})
    assert ", Muon on the hidden linear weights (`--optimizer muon`, step RMS 2 per unit lr)" in \
        _recipe_line({**cfg, "optimizer": "muon", "muon_rms": 2.0})


def test_gradient_norm_row_names_its_offenders_and_their_values():
    """An exactly zero gradient (a copy path with nothing to copy) and a non-finite one are told apart."""
    from benchmarks.criteria import gradient_norms

    row = gradient_norms({"grad_norm_min": 0.0, "grad_norm_max": 7.2,
                          "grad_offenders": {"pointer.log_theta": [[1, 0.0], [2, 0.0]], "w": [[4, None]]}})
    assert row.status == "fail"
    assert "2 parameter(s) outside: pointer.log_theta (0 in trial 1), w (non-finite in trial 4)" in row.value
    assert gradient_norms({"grad_norm_min": 0.1, "grad_norm_max": 7.2, "grad_offenders": {}}).status == "pass"

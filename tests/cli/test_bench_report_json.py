"""The Stage 1 benchmark report stays valid JSON when a measurement is NaN: null plus a status."""

from __future__ import annotations

import datetime
import json
import math

from benchmarks.stage1 import Stage1BenchConfig, build_report, write_report


def _run(ppl: float) -> dict:
    return {"eval_ppl": ppl, "eval_loss": math.log(ppl) if math.isfinite(ppl) else ppl,
            "eval_tokens_scored": 100, "tokens_trained": 1000, "steps": 4, "skipped_steps": 0,
            "train_tokens_per_s": 123.0, "parameters": 10, "train_split": "valid",
            "train_split_warning": None, "results_file": "x"}


def _measurements(tokens_per_s: float) -> dict:
    tp = {"tokens_per_second": tokens_per_s}
    return {"memory": None, "train_throughput": tp, "inference_throughput": tp}


def test_nan_measurement_gives_null_and_a_status(tmp_path):
    per_model = {"phase2": _measurements(1000.0), "stage1": _measurements(math.nan)}
    per_model["stage1"]["trials"] = {"trials": 2, "nonfinite_trials": 0, "nonfinite_rate": 0.0,
                                     "grad_norm_min": math.nan, "grad_norm_max": math.nan,
                                     "grad_offenders": ["lm_head.weight"]}
    per_model["stage1"]["layout"] = {"complex_activations": 3, "non_planar": []}
    runs = {"phase2": _run(40.0), "stage1": _run(math.nan)}
    stamp = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    data = {"train_split": "valid", "eval_split": "test", "train_tokens": 1000, "eval_tokens": 100,
            "warnings": []}
    report = build_report(Stage1BenchConfig(), stamp, "test", {"device": "cpu"}, data, 50.0, runs,
                          per_model, "cpu")
    written = write_report(report, tmp_path)

    def reject(token):
        raise AssertionError(f"report.json holds the invalid JSON token {token}")

    loaded = json.loads((tmp_path / "report.json").read_text(), parse_constant=reject)
    assert loaded == written
    assert loaded["runs"]["stage1"]["eval_ppl"] is None
    assert loaded["measurements"]["stage1"]["train_throughput"]["tokens_per_second"] is None
    assert "runs.stage1.eval_ppl" in loaded["nonfinite_values"]
    assert "measurements.stage1.trials.grad_norm_min" in loaded["nonfinite_values"]
    status = {c["name"]: c["status"] for c in loaded["criteria"]}
    assert status["Stage 1 trained"] == "fail"  # a non-finite PPL is a failure with its reason
    assert status["perplexity vs Phase 2"] == "fail"
    assert status["gradient norms"] == "fail"
    assert loaded["all_pass"] is False
    md = (tmp_path / "report.md").read_text()
    assert "Non-finite measurements (written as null): runs.stage1.eval_ppl" in md


def test_the_report_says_which_runs_trained_compiled_and_how_the_throughputs_ran(tmp_path):
    per_model = {name: _measurements(1000.0) for name in ("phase2", "stage1")}
    for m in per_model.values():
        m["train_throughput"]["compiled"] = m["inference_throughput"]["compiled"] = False
    per_model["stage1"]["trials"] = {"trials": 2, "nonfinite_trials": 0, "nonfinite_rate": 0.0,
                                     "grad_norm_min": 1e-3, "grad_norm_max": 1.0, "grad_offenders": []}
    per_model["stage1"]["layout"] = {"complex_activations": 3, "non_planar": []}
    runs = {"phase2": {**_run(40.0), "compiled": True, "compile_s": 31.25, "steady_tokens_per_s": 250000.0},
            "stage1": {**_run(30.0), "compiled": False, "compile_s": None}}
    stamp = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    data = {"train_split": "valid", "eval_split": "test", "train_tokens": 1000, "eval_tokens": 100,
            "warnings": []}
    report = build_report(Stage1BenchConfig(), stamp, "test", {"device": "cpu"}, data, 50.0, runs,
                          per_model, "cpu")
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| trained compiled (compile s) | yes (31.2 s) | no |" in md  # Phase 2, then Stage 1
    assert "| train tok/s during training, steady step | 250,000 | n/a |" in md  # compile time kept out of it
    assert "| train tok/s, fused loss (eager) |" in md and "| inference tok/s (eager) |" in md
    per_model["stage1"]["inference_throughput"]["compiled"] = True
    write_report(build_report(Stage1BenchConfig(), stamp, "test", {"device": "cpu"}, data, 50.0, runs,
                              per_model, "cpu"), tmp_path)
    assert "| inference tok/s (eager and compiled) |" in (tmp_path / "report.md").read_text()
    runs["phase2"]["compile_recompute"] = ["branches"]  # MUSE_RECOMPUTE_CHAIN_IN_COMPILE=1 changes its step memory
    write_report(build_report(Stage1BenchConfig(), stamp, "test", {"device": "cpu"}, data, 50.0, runs,
                              per_model, "cpu"), tmp_path)
    assert "| trained compiled (compile s) | yes (31.2 s, recomputes branches) | no |" in (tmp_path / "report.md").read_text()
    runs["phase2"]["compile_mode"] = "reduce-overhead"  # the CUDA default of a compiled run in one process
    write_report(build_report(Stage1BenchConfig(), stamp, "test", {"device": "cpu"}, data, 50.0, runs,
                              per_model, "cpu"), tmp_path)
    assert ("| trained compiled (compile s) | yes (31.2 s, CUDA graphs, recomputes branches) | no |"
            in (tmp_path / "report.md").read_text())


def test_a_report_written_before_any_run_trained_says_so_and_judges_nothing(tmp_path):
    stamp = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    data = {"train_split": "valid", "eval_split": "test", "train_tokens": 1000, "eval_tokens": 100, "warnings": []}
    report = build_report(Stage1BenchConfig(), stamp, "test", {"device": "cpu"}, data, 50.0, {}, {}, "cpu",
                          pending="training phase2")
    written = write_report(report, tmp_path)
    assert written["complete"] is False and written["pending"] == "training phase2"
    assert written["all_pass"] is False and len(written["not_measured"]) == len(written["criteria"])
    md = (tmp_path / "report.md").read_text()
    assert "**Incomplete: written before training phase2.**" in md
    assert "| model (preset) |" not in md  # no per-model table without a run

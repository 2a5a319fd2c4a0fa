"""--compile/--no-compile on every command that runs a model, and `muse bench speed` on tiny sizes.

The speed test checks that a report is produced with every row accounted for (measured,
not_measured with a reason, or failed with the error); it asserts no timing.
"""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.speed import SpeedConfig, gemm_flops_per_token, run_speed_benchmark
from muse.cli import build_parser
from muse.smoke import run_smoke


@pytest.mark.parametrize("argv", [
    ["train"], ["eval", "ck.safetensors"], ["bench", "stage1"], ["bench", "speed"], ["smoke"],
])
def test_compile_flag_defaults_to_auto_and_parses_both_ways(argv):
    parser = build_parser()
    assert parser.parse_args(argv).compile is None  # auto: on for CUDA, off for CPU
    assert parser.parse_args([*argv, "--compile"]).compile is True
    assert parser.parse_args([*argv, "--no-compile"]).compile is False


def test_smoke_compiled_reports_compile_time_apart():
    res = run_smoke("stage1", "tiny", "cpu", batch_size=1, seq_len=8, compile=True, compile_backend="aot_eager")
    assert res.passed, [c for c in res.checks if not c.passed]
    m = res.measurements
    assert m["compiled"] is True and m["compile_seconds"] > 0 and m["forward_seconds"] > 0
    assert run_smoke("stage1", "tiny", "cpu", batch_size=1, seq_len=8).measurements["compiled"] is False


def test_speed_benchmark_writes_a_report_on_cpu(tmp_path):
    cfg = SpeedConfig(preset="tiny", batch_size=2, seq_len=8, device="cpu",
                      model_overrides={"vocab_size": 64, "d_model": 16, "n_layers": 1},
                      models=("stage1", "complex64", "gpt"), variants=("eager", "kernels", "compiled"),
                      compile_backend="eager", cpu_repeats=1, copy_mib=4, gemm_size=64, out=str(tmp_path))
    report = run_speed_benchmark(cfg, command="test")
    data = json.loads((tmp_path / "report.json").read_text())
    md = (tmp_path / "report.md").read_text()
    assert data["ceilings"]["copy_GBps"] > 0 and data["ceilings"]["gemm_TFLOPs"] > 0
    ops = {(r["op"], r["variant"]): r for r in data["ops"]}
    assert ops[("layer_norm", "eager")]["status"] == "measured" and ops[("modrelu", "compiled")]["fwd_s"] > 0
    assert ops[("complex_linear", "eager")]["pct_of_real_gemm"] > 0
    assert ops[("complex_linear", "eager")]["pct_of_real_fwd_bwd"] > 0
    lin = ops[("complex_linear", "eager")]  # like for like: bias against bias, none against none
    assert lin["fwd_bwd_nobias_s"] > 0 and lin["real_fwd_bwd_bias_s"] > 0
    assert lin["pct_like_for_like_bias"] == 100 * lin["real_fwd_bwd_bias_s"] / lin["fwd_bwd_s"]
    assert lin["pct_like_for_like_nobias"] == 100 * lin["real_fwd_bwd_s"] / lin["fwd_bwd_nobias_s"]
    assert "like for like" in md
    # CPU tensors run kernels only under the interpreter, which test sessions start with MUSE_KERNELS=0
    assert ops[("complex_linear", "kernels")]["status"] == "not_measured"
    assert ops[("complex_linear", "compiled")]["fwd_s"] > 0  # the compiled op has its own row
    rows = {(r["model"], r["variant"]): r for r in data["models"]}
    assert len(rows) == 9
    for key in [("stage1", "eager"), ("stage1", "compiled"), ("complex64", "eager")]:
        assert rows[key]["status"] == "measured" and rows[key]["train_tok_s"] > 0, rows[key]
    assert rows[("stage1", "compiled")]["compile_s"] is not None and rows[("stage1", "eager")]["compile_s"] is None
    for r in data["models"]:
        assert r["status"] in ("measured", "not_measured", "failed")
        assert r["status"] == "measured" or r["reason"]
    assert "| stage1 | eager |" in md and report["out"] == str(tmp_path)
    best = max(r["train_tok_s"] for r in data["models"] if r["model"] == "stage1" and r["status"] == "measured")
    assert data["versus_gpt"]["stage1"]["fwd_bwd"]["stage1_tok_s"] == best
    assert data["versus_gpt"]["stage1"]["fwd_bwd"]["ratio"] > 0 and "stage1 / gpt, each at its fastest" in md
    # no half-weights row for the GPT here: the report says its reference ran only under autocast
    assert data["gpt_half_weights_measured"] is False and "only under autocast over fp32 weights" in md


def test_complex64_twin_counts_the_same_gemm_flops_as_stage1():
    from benchmarks.speed import build

    cfg = SpeedConfig(preset="tiny", model_overrides={"vocab_size": 64, "d_model": 16, "n_layers": 2})
    s1, twin = build("stage1", cfg, "cpu"), build("complex64", cfg, "cpu")
    # per layer one real 2d x 2d GEMM (8 d^2), plus the d x V head (2 d V)
    assert gemm_flops_per_token(s1) == gemm_flops_per_token(twin) == 2 * 8 * 16 * 16 + 2 * 16 * 64


def test_speed_only_options_are_refused_by_bench_stage1(capsys):
    from muse.cli import main

    assert main(["bench", "stage1", "--amp", "bf16", "--variants", "eager"]) == 2
    err = capsys.readouterr().err
    assert "--variants, --amp: options of `muse bench speed`" in err


def test_stage1_only_options_are_refused_by_bench_speed(capsys):
    from muse.cli import main

    assert main(["bench", "speed", "--phase2-arg", "zeta_scale=1.0", "--weight-decay", "0"]) == 2
    err = capsys.readouterr().err
    assert "--phase2-arg, --weight-decay: options of `muse bench stage1`" in err
    assert main(["bench", "speed", "--keep-logits"]) == 2  # speed has its +keep-logits variant instead
    assert "--keep-logits: options of `muse bench stage1`" in capsys.readouterr().err
    assert main(["bench", "speed", "--compile-memory-budget", "0.5"]) == 2
    assert "--compile-memory-budget: options of `muse bench stage1`" in capsys.readouterr().err


def test_speed_config_checks_amp_and_knows_the_kernels_cudagraphs_variant():
    with pytest.raises(ValueError, match="amp must be one of"):
        SpeedConfig(amp="fp8")
    assert SpeedConfig(amp="bf16", variants=("compiled+kernels+cudagraphs",)).amp == "bf16"


def test_the_traced_loss_variant_runs_and_sets_only_its_switch(tmp_path, monkeypatch):
    from benchmarks.speed import _impl_env

    monkeypatch.setenv("MUSE_LOSS_OPAQUE", "1")
    cfg = SpeedConfig(preset="tiny", batch_size=1, seq_len=8, device="cpu", models=("stage1",),
                      model_overrides={"vocab_size": 64, "d_model": 16, "n_layers": 1},
                      variants=("compiled", "compiled+traced-loss"), compile_backend="eager", cpu_repeats=1,
                      copy_mib=4, gemm_size=64, out=str(tmp_path))
    rows = run_speed_benchmark(cfg, command="test")["models"]
    assert [r["status"] for r in rows] == ["measured", "measured"]
    with _impl_env("compiled+kernels+cudagraphs+traced-loss"):  # what the loss reads while it is traced
        assert os.environ["MUSE_LOSS_OPAQUE"] == "0" and os.environ["MUSE_KERNELS"] == "1"
    with _impl_env("compiled+cudagraphs"):
        assert "MUSE_LOSS_OPAQUE" not in os.environ and os.environ["MUSE_KERNELS"] == "0"
    assert os.environ["MUSE_LOSS_OPAQUE"] == "1"


def test_cudagraph_variants_are_not_measured_on_cpu(tmp_path):
    cfg = SpeedConfig(preset="tiny", batch_size=1, seq_len=8, device="cpu", models=("phase2",),
                      model_overrides={"vocab_size": 64, "d_model": 16, "n_layers": 1},
                      variants=("compiled+cudagraphs", "compiled+kernels+cudagraphs", "compiled+kernels+autotune"),
                      amp="bf16", compile_backend="eager", cpu_repeats=1, copy_mib=4, gemm_size=64, out=str(tmp_path))
    rows = run_speed_benchmark(cfg, command="test")["models"]
    assert [r["status"] for r in rows] == ["not_measured"] * 3
    assert [r["reason"].split()[1] for r in rows] == ["'reduce-overhead'", "'reduce-overhead'", "'max-autotune'"]
    assert all(r["autocast"] is None for r in rows)  # autocast is CUDA-only


def test_half_weights_runs_the_gpt_from_16_bit_weights(tmp_path, monkeypatch):
    """The GPT (fp32 weights, bf16 autocast) run from a bf16 copy, inference and fwd+bwd through the 16-bit chunked
    loss, and the model the other variants time stays fp32; Stage 1 (16-bit weights already) is not measured
    under it, with the reason."""
    import benchmarks.speed as speed

    real = speed.kernels

    class KernelsOn:  # the benchmark's kernels check passes; the library's own (the loss's) still says CPU: no Triton
        def __getattr__(self, name):
            return (lambda *a, **k: True) if name == "enabled" else getattr(real, name)

    monkeypatch.setattr(speed, "_compile_mode", lambda variant: None)  # CUDA graphs and the kernels' check aside,
    monkeypatch.setattr(speed, "kernels", KernelsOn())  # so that it runs on the CPU
    cfg = SpeedConfig(preset="tiny", batch_size=1, seq_len=8, device="cpu", models=("stage1", "gpt"),
                      model_overrides={"vocab_size": 64, "d_model": 16, "n_layers": 1},
                      variants=("compiled+kernels+cudagraphs+half-weights", "compiled",
                                "compiled+kernels+cudagraphs+keep-logits+half-weights"), compile_backend="eager",
                      cpu_repeats=1, copy_mib=4, gemm_size=64, out=str(tmp_path))
    report = run_speed_benchmark(cfg, command="test")
    rows = {(r["model"], r["variant"]): r for r in report["models"]}
    s1 = rows[("stage1", "compiled+kernels+cudagraphs+half-weights")]
    assert s1["status"] == "not_measured" and "already what it computes in" in s1["reason"]
    half = rows[("gpt", "compiled+kernels+cudagraphs+half-weights")]
    assert half["status"] == "measured", half.get("reason")
    assert half["weights"] == "bfloat16" and half["autocast"] is None
    assert half["infer_tok_s"] > 0 and half["train_tok_s"] > 0 and half["train_pct_gemm"] > 0
    assert half["loss_path"] == "chunked" and rows[("gpt", "compiled")]["loss_path"] != "chunked"
    kept = rows[("gpt", "compiled+kernels+cudagraphs+keep-logits+half-weights")]
    assert kept["status"] == "measured" and kept["weights"] == "bfloat16" and kept["train_tok_s"] > 0
    assert rows[("gpt", "compiled")]["train_tok_s"] > 0  # timed after the half copy: the model itself stayed fp32
    assert report["versus_gpt"]["stage1"]["fwd_bwd"]["gpt_variant"] in ("compiled", "compiled+kernels+cudagraphs+half-weights")
    md = (tmp_path / "report.md").read_text()
    assert "half-weights (bfloat16 weights) |" in md and "only under autocast" not in md
    assert report["gpt_half_weights_measured"] is True


def test_each_variant_names_its_compile_mode():
    from benchmarks.speed import _compile_mode

    assert [_compile_mode(v) for v in ("compiled", "compiled+kernels+cudagraphs+traced-loss", "compiled+kernels+autotune")] \
        == [None, "reduce-overhead", "max-autotune"]


def test_a_tied_head_counts_the_head_gemm():
    from benchmarks.speed import build

    sizes = {"vocab_size": 64, "d_model": 16, "n_layers": 2}
    tied = build("stage1", SpeedConfig(preset="mix-tiny", model_overrides={**sizes, "tie_head": True}), "cpu")
    untied = build("stage1", SpeedConfig(preset="mix-tiny", model_overrides=sizes), "cpu")
    assert gemm_flops_per_token(tied) == gemm_flops_per_token(untied) > 2 * 16 * 64


def test_the_cli_lists_every_speed_variant():
    from benchmarks.speed import MODEL_ROWS as ROWS
    from benchmarks.speed import VARIANTS as ALL
    from muse.cli.bench import MODEL_ROWS, MORE_VARIANTS, VARIANTS

    assert sorted(VARIANTS + MORE_VARIANTS) == sorted(ALL) and MODEL_ROWS == ROWS


def test_versus_takes_each_model_at_its_fastest_measured_row():
    from benchmarks.speed import versus

    def row(model, variant, infer, train, status="measured"):
        return {"model": model, "variant": variant, "infer_tok_s": infer, "train_tok_s": train, "status": status}

    rows = [row("stage1", "a", 500.0, 100.0), row("stage1", "b", 400.0, 120.0),
            row("gpt", "a", 250.0, 60.0), row("gpt", "traced", 240.0, 80.0),
            row("gpt", "broken", 1e9, 1e9, status="failed")]
    vs = versus(rows, "stage1", "gpt")
    assert vs["inference"]["ratio"] == 2.0 and vs["inference"]["stage1_variant"] == "a"
    assert vs["fwd_bwd"]["ratio"] == 1.5 and (vs["fwd_bwd"]["stage1_variant"], vs["fwd_bwd"]["gpt_variant"]) == ("b", "traced")
    assert versus(rows, "phase2", "gpt")["inference"]["ratio"] is None


def test_no_ops_runs_the_models_only(tmp_path, capsys):
    from muse.cli import main

    out = tmp_path / "speed"
    assert main(["bench", "speed", "--preset", "tiny", "--device", "cpu", "--batch-size", "1", "--seq-len", "8",
                 "--vocab-size", "64", "--d-model", "16", "--n-layers", "1", "--models", "stage1",
                 "--variants", "eager", "--cpu-repeats", "1", "--no-ops", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["ops"] == [] and data["models"][0]["status"] == "measured"
    assert "Not run (`--no-ops`)." in (out / "report.md").read_text()
    with pytest.raises(TypeError, match="ops"):
        SpeedConfig(ops="no")
    assert main(["bench", "stage1", "--no-ops"]) == 2
    assert "--no-ops: options of `muse bench speed`" in capsys.readouterr().err


def test_stage1_arg_reaches_only_the_stage1_row(tmp_path):
    """`muse bench speed --stage1-arg K=V` builds Stage 1 with that field (recorded in the report's config); the other
    rows keep the preset; an unknown field is refused by name."""
    from benchmarks.speed import build
    from muse.cli import main

    cfg = SpeedConfig(preset="mix-tiny", model_overrides={"vocab_size": 64}, stage1_overrides={"lambda_kind": "complex"})
    assert build("stage1", cfg, "cpu").config.lambda_kind == "complex"
    tiny = SpeedConfig(preset="tiny", model_overrides={"vocab_size": 64}, stage1_overrides={"lambda_kind": "real"})
    assert build("gpt", tiny, "cpu").config.vocab_size == 64  # the GPT has no lambda_kind: not passed to it
    out = tmp_path / "speed"
    assert main(["bench", "speed", "--preset", "mix-tiny", "--device", "cpu", "--batch-size", "1", "--seq-len", "8",
                 "--vocab-size", "64", "--models", "stage1", "--variants", "eager", "--cpu-repeats", "1", "--no-ops",
                 "--stage1-arg", "lambda_kind=complex", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["config"]["stage1_overrides"] == {"lambda_kind": "complex"}
    assert data["models"][0]["status"] == "measured"
    with pytest.raises((TypeError, ValueError), match="no_such_field"):
        build("stage1", SpeedConfig(preset="tiny", stage1_overrides={"no_such_field": 1}), "cpu")


def test_fused_rows_time_the_fusion_against_its_separate_ops():
    from benchmarks.speed import fused_rows

    rows = fused_rows(rows=8, d=4, device="cpu", variants=("eager",))
    assert [(r["op"], r["status"]) for r in rows] == [("add_layer_norm", "measured")]
    assert all(r["fused_s"] > 0 and r["separate_s"] > 0 for r in rows)

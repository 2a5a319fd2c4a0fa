"""``muse smoke`` and the Stage 1 criteria logic: what passes must have been measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import muse.complex as C
from benchmarks import criteria as crit
from benchmarks.measure import planar_layout, stability_trials, unigram_perplexity
from muse.cli import main
from muse.models import build_model
from muse.smoke import run_smoke


def test_smoke_tiny_cpu_passes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "smoke.json"
    rc = main(["smoke", "--preset", "tiny", "--device", "cpu", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = json.loads(out.read_text())
    assert data["passed"] is True
    names = [c["name"] for c in data["checks"]]
    assert "forward finite" in names and any(n.startswith("gradient norms") for n in names)
    assert "getrusage" in data["measurements"]["memory_kind"]  # says what was measured on CPU
    assert "Overall: PASS" in text


def test_smoke_fails_when_a_threshold_is_not_met():
    res = run_smoke("stage1", "tiny", "cpu", batch_size=1, seq_len=8, max_memory_gb=1e-6)
    assert not res.passed  # the memory threshold cannot hold, so the run must FAIL
    assert [c.name for c in res.checks if not c.passed] == ["peak memory < 1e-06 GB"]


def test_smoke_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seq_len"):
        run_smoke("stage1", "tiny", "cpu", seq_len=10_000)
    with pytest.raises(ValueError, match="batch_size"):
        run_smoke("stage1", "tiny", "cpu", batch_size=0)


def _trials(offenders=None, rate=0.0):
    return {"trials": 100, "nonfinite_trials": int(rate * 100), "nonfinite_rate": rate,
            "grad_norm_min": 1e-3, "grad_norm_max": 1.0, "grad_offenders": offenders or {}}


def test_all_pass_requires_every_criterion_measured():
    good = [crit.perplexity(30.0, 30.5), crit.vram(1, 4, "live tensor bytes"), crit.nan_rate(_trials()),
            crit.gradient_norms(_trials()), crit.planar({"complex_activations": 5, "non_planar": []})]
    assert crit.summarize(good)["all_pass"] is True
    summary = crit.summarize(good + [crit.vram(None, 4, "live tensor bytes")])
    assert summary["all_pass"] is False and summary["not_measured"] == ["VRAM vs Phase 2"]
    assert crit.summarize([])["all_pass"] is False


def test_seed_report_situation_cannot_pass():
    """No Phase 2 run and an untrained model at PPL 54,431: the seed printed all_pass: true."""
    unigram = 1979.4
    untrained = {"eval_ppl": 54430.93, "tokens_trained": 0}
    cs = [crit.trained("Stage 1", untrained, unigram), crit.trained("Phase 2", None, unigram),
          crit.perplexity(54430.93, None), crit.vram(1_370_000_000, None, "live tensor bytes")]
    summary = crit.summarize(cs)
    assert summary["all_pass"] is False
    assert summary["failed"] == ["Stage 1 trained"]
    assert set(summary["not_measured"]) == {"Phase 2 trained", "perplexity vs Phase 2", "VRAM vs Phase 2"}


@pytest.mark.parametrize(("s1", "p2", "status"), [(30.9, 30.0, crit.PASS), (31.0, 30.0, crit.FAIL),
                                                   (float("nan"), 30.0, crit.NOT_MEASURED)])
def test_perplexity_threshold(s1, p2, status):
    assert crit.perplexity(s1, p2).status == status


def test_vram_threshold():
    assert crit.vram(52, 100, "live tensor bytes").status == crit.PASS
    assert crit.vram(53, 100, "torch.cuda.max_memory_allocated").status == crit.FAIL
    assert "(live tensor bytes)" in crit.vram(52, 100, "live tensor bytes").value
    assert crit.vram(52, 100, None).status == crit.NOT_MEASURED


def test_nan_and_gradient_criteria_fail_on_offenders():
    assert crit.nan_rate(_trials(rate=0.01)).status == crit.FAIL
    assert crit.gradient_norms(_trials(offenders={"w": [(0, 2e3)]})).status == crit.FAIL
    assert crit.planar({"complex_activations": 3, "non_planar": ["X"]}).status == crit.FAIL
    assert crit.planar({"complex_activations": 0, "non_planar": []}).status == crit.NOT_MEASURED


def test_unigram_perplexity_matches_hand_computation():
    train = np.array([0, 0, 1])
    ev = np.array([2, 0, 1])  # scored: 0 and 1
    p0, p1 = (2 + 1) / (3 + 3), (1 + 1) / (3 + 3)
    assert unigram_perplexity(train, ev, 3) == pytest.approx(np.exp(-(np.log(p0) + np.log(p1)) / 2))


def test_measurements_on_tiny_stage1():
    import torch

    model = build_model("stage1", "tiny")
    t = stability_trials(model, 3, 1, 16, torch.device("cpu"))
    assert t["nonfinite_trials"] == 0 and not t["grad_offenders"]
    layout = planar_layout(model, 1, 16, torch.device("cpu"))
    assert layout["complex_activations"] > 0 and layout["non_planar"] == []
    phase2 = build_model("phase2", "tiny")
    assert planar_layout(phase2, 1, 16, torch.device("cpu"))["complex_activations"] == 0


def test_bench_end_to_end_on_cpu(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train, test = tmp_path / "train.npy", tmp_path / "test.npy"
    np.save(train, rng.integers(0, 50257, 20_000, dtype=np.uint16))
    np.save(test, rng.integers(0, 50257, 4_000, dtype=np.uint16))
    out = tmp_path / "bench"
    rc = main(["bench", "stage1", "--preset", "tiny", "--device", "cpu", "--max-steps", "2", "--batch-size", "2",
               "--seq-len", "32", "--warmup", "1", "--tokens-npy", str(train), "--eval-tokens-npy", str(test),
               "--final-eval-tokens", "256", "--trials", "2", "--throughput-steps", "1", "--memory-seq", "32",
               "--phase2-arg", "zeta_scale=0.5", "--weight-decay", "0.3", "--out", str(out), "--require-pass"])
    assert rc == 1  # 2 steps cannot beat the unigram model
    report = json.loads((out / "report.json").read_text())
    assert report["all_pass"] is False
    assert "VRAM vs Phase 2" not in report["not_measured"]  # live tensor bytes on CPU
    vram = next(c for c in report["criteria"] if c["name"] == "VRAM vs Phase 2")
    assert "(live tensor bytes)" in vram["value"] and "chunked" in vram["note"]
    for name in ("stage1", "phase2"):
        mem, full = report["measurements"][name]["memory"], report["measurements"][name]["memory_full_logits"]
        assert mem["measure"] == "live tensor bytes" and mem["cuda_peak_bytes"] is None
        assert mem["before_bytes"] < mem["peak_bytes"] < full["peak_bytes"]
    assert report["runs"]["phase2"]["tokens_trained"] == report["runs"]["stage1"]["tokens_trained"] == 128
    md = (out / "report.md").read_text()
    assert md.startswith("# Stage 1 criteria report")
    assert "| config overrides | zeta_scale=0.5 | none |" in md  # Phase 2 and Stage 1 columns, in that order
    assert "| trained compiled (compile s) | no | no |" in md and "| inference tok/s (eager) |" in md
    assert "| peak memory fwd+loss+bwd, fused loss, eager (live tensor bytes) |" in md
    assert report["runs"]["stage1"]["compiled"] is False and report["runs"]["stage1"]["compile_s"] is None
    # the shared recipe is in the header even where the command line leaves a setting at its default
    assert "- training, every run: 2 steps, batch 2, lr 0.001 -> 0.0001 (warmup 1), weight decay 0.3, seed 1337" in md
    assert report["runs"]["phase2"]["overrides"] == {"zeta_scale": 0.5} and report["runs"]["stage1"]["overrides"] == {}
    assert report["config"]["weight_decay"] == 0.3
    assert json.loads((out / "phase2" / "results.json").read_text())["train_config"]["weight_decay"] == 0.3
    assert (out / "stage1" / "results.json").exists() and (out / "phase2" / "loss.png").exists()
    assert report["complete"] is True and report["pending"] is None and "Incomplete" not in md


class _Stopped(BaseException):
    """Stands for a run killed mid-way (a time limit's SIGTERM): nothing in the runner may catch it."""


def test_a_stopped_bench_leaves_a_report_of_what_it_measured(tmp_path, monkeypatch):
    import benchmarks.stage1 as bench

    rng = np.random.default_rng(1)
    train, test = tmp_path / "train.npy", tmp_path / "test.npy"
    np.save(train, rng.integers(0, 50257, 20_000, dtype=np.uint16))
    np.save(test, rng.integers(0, 50257, 4_000, dtype=np.uint16))

    def stop(*args, **kwargs):
        raise _Stopped

    monkeypatch.setattr(bench.measure, "stability_trials", stop)
    out = tmp_path / "bench"
    with pytest.raises(_Stopped):
        main(["bench", "stage1", "--preset", "tiny", "--device", "cpu", "--max-steps", "2", "--batch-size", "2",
              "--seq-len", "32", "--warmup", "1", "--tokens-npy", str(train), "--eval-tokens-npy", str(test),
              "--final-eval-tokens", "256", "--trials", "2", "--throughput-steps", "1", "--memory-seq", "32",
              "--references", "none", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and report["pending"] == "measuring stage1"
    assert report["all_pass"] is False
    assert {"NaN/Inf rate", "gradient norms", "planar layout", "VRAM vs Phase 2"} <= set(report["not_measured"])
    assert report["runs"]["stage1"]["eval_ppl"] > 0 and report["runs"]["phase2"]["eval_ppl"] > 0
    assert report["measurements"]["phase2"]["memory"]["peak_bytes"] > 0  # measured before the stop
    assert "stage1" not in report["measurements"]
    md = (out / "report.md").read_text()
    assert "**Incomplete: written before measuring stage1.**" in md and "**all_pass: false**" in md


def test_each_partial_report_names_the_step_it_precedes(tmp_path, monkeypatch):
    import benchmarks.stage1 as bench

    seen = []
    real = bench.write_report

    def record(report, out):
        seen.append((report["pending"], sorted(report["runs"]), sorted(report["measurements"])))
        return real(report, out)

    monkeypatch.setattr(bench, "write_report", record)
    rng = np.random.default_rng(2)
    train, test = tmp_path / "train.npy", tmp_path / "test.npy"
    np.save(train, rng.integers(0, 50257, 20_000, dtype=np.uint16))
    np.save(test, rng.integers(0, 50257, 4_000, dtype=np.uint16))
    main(["bench", "stage1", "--preset", "tiny", "--device", "cpu", "--max-steps", "1", "--batch-size", "2",
          "--seq-len", "32", "--warmup", "1", "--tokens-npy", str(train), "--eval-tokens-npy", str(test),
          "--final-eval-tokens", "128", "--trials", "1", "--throughput-steps", "1", "--memory-seq", "32",
          "--references", "none", "--out", str(tmp_path / "bench")])
    assert seen == [("training phase2", [], []), ("training stage1", ["phase2"], []),
                    ("measuring phase2", ["phase2", "stage1"], []),
                    ("measuring stage1", ["phase2", "stage1"], ["phase2"]),
                    (None, ["phase2", "stage1"], ["phase2", "stage1"])]


def test_cli_reports_bad_input_in_one_line(capsys, monkeypatch):
    monkeypatch.delenv("MUSE_DEBUG", raising=False)
    assert main(["smoke", "--preset", "tiny", "--device", "cpu", "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("muse smoke: error: batch_size must be >= 1") and "Traceback" not in err
    monkeypatch.setenv("MUSE_DEBUG", "1")
    with pytest.raises(ValueError, match="batch_size"):
        main(["smoke", "--preset", "tiny", "--device", "cpu", "--batch-size", "0"])


def test_item28_planar_check_sees_tensors_saved_for_backward():
    """Issue 13 item 28: a module whose outputs are planar but which keeps a native (interleaved)
    complex tensor for backward fails the planar criterion; the real models pass."""

    class Interleaving(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones((), dtype=torch.complex64))

        def forward(self, z):
            return C.from_complex(C.to_complex(z) * self.w, dtype=z.dtype)

    model = build_model("stage1", "tiny", vocab_size=50, max_seq_len=16)
    model.blocks[0].activation = torch.nn.Sequential(model.blocks[0].activation, Interleaving())
    layout = planar_layout(model, 1, 16, torch.device("cpu"))
    assert layout["non_planar"] == [] and layout["saved_interleaved"], layout
    assert crit.planar(layout).status == crit.FAIL
    clean = planar_layout(build_model("stage1", "tiny", vocab_size=50, max_seq_len=16), 1, 16, torch.device("cpu"))
    assert clean["saved_tensors"] > 0 and clean["saved_interleaved"] == [] and crit.planar(clean).status == crit.PASS


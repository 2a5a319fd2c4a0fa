"""The training loop on tiny models: learning, bitwise resume, failure modes, records."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from muse.models import MODELS, build_model
from muse.train import TrainingError, train
from muse.train.synthetic import synthetic_data, tiny_config

DATA = synthetic_data()


def _train_losses(out) -> list[float]:
    return [r["loss"] for r in _records(out) if r["type"] == "train"]


def _records(out) -> list[dict]:
    return [json.loads(line) for line in open(out / "log.jsonl")]


def test_tiny_stage1_learns_a_repeated_sequence(tmp_path):
    res = train(tiny_config(str(tmp_path), max_steps=40, lr=2e-2), DATA)
    losses = _train_losses(tmp_path)
    assert len(losses) == 40
    assert losses[0] > 3.9  # ~ ln 64 at init
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses
    assert res["final_eval"]["loss"] < 0.6 * losses[0]
    assert res["skipped_steps"] == 0 and res["status"] == "completed"


@pytest.mark.skipif("phase2" not in MODELS, reason="muse.models.phase2 is not registered yet")
def test_tiny_phase2_learns_a_repeated_sequence(tmp_path):
    overrides = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32)
    res = train(tiny_config(str(tmp_path), model="phase2", model_overrides=overrides, max_steps=40, lr=1e-2), DATA)
    losses = _train_losses(tmp_path)
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses
    assert res["status"] == "completed" and res["skipped_steps"] == 0


_SMALL = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.1)


@pytest.mark.parametrize("model", [{}, {"model": "phase2", "model_overrides": _SMALL},
                                   {"model": "gpt", "model_overrides": _SMALL | {"n_heads": 2}}],
                         ids=["stage1", "phase2", "gpt"])
def test_resume_reproduces_the_uninterrupted_loss_curve_bitwise(tmp_path, model):
    """8 steps straight vs 4 steps, stop, resume, 4 more: equal losses and weights (dropout 0.1), for every model:
    the criteria compare Stage 1 with Phase 2 and the GPT, so their runs must be as reproducible as Stage 1's."""
    kw = dict(max_steps=8, eval_every=3, eval_tokens=128, final_eval_tokens=256, grad_accum=2, **model)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config(str(straight), **kw), DATA)
    first = train(tiny_config(str(split), stop_after=4, **kw), DATA)
    assert first["status"] == "stopped" and first["steps"] == 4
    resumed = train(tiny_config(str(split), resume=str(split / "last.safetensors"), **kw), DATA)
    assert resumed["resumed_from"] and resumed["steps"] == 8
    a, b = _train_losses(straight), _train_losses(split)
    assert len(a) == len(b) == 8
    assert a == b  # bitwise: floats from the same fp32 values
    ta, tb = load_file(straight / "last.safetensors"), load_file(split / "last.safetensors")
    assert [k for k in ta if not k.startswith("rng.")] == [k for k in tb if not k.startswith("rng.")]
    for key in ta:
        if key.startswith(("model.", "master.", "optim.")):
            assert torch.equal(ta[key], tb[key]), key
    assert resumed["final_eval"] == pytest.approx(train_final(straight))


def train_final(out) -> dict:
    return json.loads((out / "results.json").read_text())["final_eval"]


def test_too_many_skipped_steps_fail_loudly(tmp_path):
    # 2**24 * dL/dlogits (~1/128 per token) overflows fp16 at once, so every early step is skipped.
    cfg = tiny_config(str(tmp_path), init_scale=2.0**24, skip_grace=0, max_skip_fraction=0.05)
    with pytest.raises(TrainingError, match="skipped"):
        train(cfg, DATA)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "skipped" in res["error"] and res["skipped_steps"] >= 1


def test_skipped_steps_are_counted_and_logged(tmp_path):
    res = train(tiny_config(str(tmp_path), init_scale=2.0**24, max_steps=12), DATA)
    records = [r for r in _records(tmp_path) if r["type"] == "train"]
    assert res["skipped_steps"] >= 1 and records[-1]["skipped_steps"] == res["skipped_steps"]
    assert records[0]["loss_scale"] == 2.0**24 and records[-1]["loss_scale"] < 2.0**24
    assert records[0]["grad_norm"] is None  # a skipped step has no gradient norm


def test_nonfinite_eval_loss_fails_loudly(tmp_path, monkeypatch):
    import muse.train.trainer as trainer

    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: {"loss": math.nan, "ppl": math.nan, "tokens_scored": 1})
    with pytest.raises(TrainingError, match="eval loss"):
        train(tiny_config(str(tmp_path), max_steps=4), DATA)


def test_grad_accum_matches_a_bigger_batch(tmp_path):
    """batch 4 x accum 2 sees the same blocks as batch 8 x accum 1; losses agree to rounding."""
    kw = dict(max_steps=6, model_overrides=dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.0))
    train(tiny_config(str(tmp_path / "a"), batch_size=8, **kw), DATA)
    train(tiny_config(str(tmp_path / "b"), batch_size=4, grad_accum=2, **kw), DATA)
    a, b = _train_losses(tmp_path / "a"), _train_losses(tmp_path / "b")
    assert a[0] == pytest.approx(b[0], rel=1e-6)
    assert a == pytest.approx(b, rel=1e-3)


def test_records_and_results(tmp_path):
    res = train(tiny_config(str(tmp_path), max_steps=6, eval_every=3, log_every=2), DATA)
    assert {p.name for p in tmp_path.iterdir()} >= {"log.jsonl", "loss.png", "results.json", "last.safetensors"}
    records = _records(tmp_path)
    train_rec = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train_rec] == [2, 4, 6]
    assert set(train_rec[0]) >= {"step", "tokens", "loss", "lr", "loss_scale", "skipped_steps", "grad_norm",
                                 "tok_per_s", "elapsed_s"}
    evals = [r for r in records if r["type"] == "eval"]
    assert [(r["step"], r["final"]) for r in evals] == [(3, False), (6, True)]
    assert evals[0]["tokens_scored"] == 256 and evals[1]["tokens_scored"] == 512
    assert train_rec[-1]["tokens"] == 6 * 4 * 32
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["final_eval"] == res["final_eval"]
    for key in ("environment", "model", "train_split", "eval_split", "tokens_seen", "skipped_steps",
                "wall_time_s", "peak_memory"):
        assert key in on_disk
    model = build_model("stage1", "tiny", **tiny_config(str(tmp_path)).model_overrides)
    assert on_disk["model"]["parameters"] == model.num_parameters()
    assert "RSS" in on_disk["peak_memory"]["kind"]
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fresh_run_refuses_to_overwrite_a_previous_run(tmp_path):
    train(tiny_config(str(tmp_path), max_steps=2), DATA)
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny_config(str(tmp_path), max_steps=2), DATA)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(warmup=50), ValueError, "warmup"),
    (dict(model="nope"), ValueError, "unknown model"),
    (dict(seq_len=64), ValueError, "max_seq_len"),
    (dict(amp="bf16"), ValueError, "amp"),
    (dict(model_overrides=dict(vocab_size=16, d_model=16, n_layers=1, max_seq_len=32)), ValueError, "vocab_size"),
])
def test_bad_run_settings(tmp_path, kw, exc, match):
    with pytest.raises(exc, match=match):
        train(tiny_config(str(tmp_path), **kw), DATA)



@pytest.mark.parametrize("eps, exc", [(-0.1, ValueError), (1.0, ValueError), ("0.1", TypeError)])
def test_label_smoothing_is_checked(tmp_path, eps, exc):
    with pytest.raises(exc, match="label_smoothing"):
        tiny_config(str(tmp_path), max_steps=2, label_smoothing=eps)


def test_label_smoothing_of_a_model_with_a_copy_path_fails_before_training(tmp_path):
    overrides = dict(tiny_config(str(tmp_path)).model_overrides, pointer_dim=8)
    with pytest.raises(ValueError, match="label_smoothing .* copy path"):
        train(tiny_config(str(tmp_path), preset="mix-tiny", model_overrides=overrides, label_smoothing=0.1), DATA)


def test_label_smoothing_trains_on_the_smoothed_loss_and_a_resume_must_keep_it(tmp_path):
    """The first logged training loss is the smoothed cross-entropy of the first batch (the same initial
    weights with and without smoothing: at most eps ln V above the plain one); a resume with another
    setting is refused (a trajectory field)."""
    losses = {}
    for eps in (0.0, 0.3):
        out = tmp_path / f"eps{eps}"
        train(tiny_config(str(out), max_steps=4, stop_after=2, label_smoothing=eps), DATA)
        losses[eps] = _train_losses(out)
    assert losses[0.3][0] != pytest.approx(losses[0.0][0], rel=1e-4)
    assert losses[0.3][0] < losses[0.0][0] + 0.3 * math.log(64)
    with pytest.raises(ValueError, match="label_smoothing"):
        train(tiny_config(str(tmp_path / "eps0.3"), max_steps=4, label_smoothing=0.0,
                          resume=str(tmp_path / "eps0.3" / "last.safetensors")), DATA)

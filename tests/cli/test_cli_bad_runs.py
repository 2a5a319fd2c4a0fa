"""Issue 13: bad runs and bad command lines end in ONE ``muse <cmd>: error:`` line and the right
exit status (docs/errors.md), never a traceback, a masked error, a wrong message or silence.

Each test names the issue item it covers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from muse.cli import main
from muse.train import trainer as trainer_mod
from muse.train.synthetic import repeated_sequence


@pytest.fixture
def npy(tmp_path):
    """A tiny Stage 1 run on synthetic .npy tokens (seconds on CPU)."""
    train, evals = tmp_path / "train.npy", tmp_path / "eval.npy"
    np.save(train, repeated_sequence(64, 48, 4096).astype(np.uint16))
    np.save(evals, repeated_sequence(64, 48, 1024).astype(np.uint16))
    return ["train", "--vocab-size", "64", "--d-model", "16", "--n-layers", "1", "--seq-len", "32",
            "--batch-size", "4", "--max-steps", "3", "--warmup", "1", "--device", "cpu", "--no-progress",
            "--eval-every", "0", "--tokens-npy", str(train), "--eval-tokens-npy", str(evals),
            "--out", str(tmp_path / "out")]


def _err_line(capsys, cmd: str) -> str:
    """The captured stderr must be exactly one ``muse <cmd>: error:`` line (no traceback)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"muse {cmd}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _edit_checkpoint(path, tensors=None, meta=None):
    """Rewrite a checkpoint with some tensors or metadata fields changed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        old_meta = dict(fh.metadata())
    data = load_file(str(path))
    for k, v in (tensors or {}).items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v(data[k]) if callable(v) else v
    save_file(data, str(path), metadata={**old_meta, **(meta or {})})


@pytest.fixture
def checkpoint(npy, tmp_path):
    assert main([*npy, "--stop-after", "2"]) == 0
    return tmp_path / "out" / "last.safetensors"


# ----------------------------------------------------------------------------- item 1
def test_item1_plot_skips_null_losses(tmp_path):
    from muse.train.runlog import plot_loss_curve

    records = [{"type": "train", "step": 1, "tokens": 10, "loss": 5.0},
               {"type": "train", "step": 2, "tokens": 20, "loss": None},  # NaN is logged as null
               {"type": "eval", "step": 2, "tokens": 20, "loss": None}]
    assert plot_loss_curve(records, tmp_path / "loss.png").is_file()


def test_item1_a_failing_plot_never_masks_the_error(npy, tmp_path, capsys, monkeypatch):
    def broken_plot(*_a, **_k):
        raise RuntimeError("matplotlib exploded")

    def diverge(self, *_a, **_k):
        raise trainer_mod.TrainingError("eval loss is nan at step 3: the model diverged")

    monkeypatch.setattr(trainer_mod, "plot_loss_curve", broken_plot)
    monkeypatch.setattr(trainer_mod.Trainer, "run_eval", diverge)
    assert main(npy) == 1
    line = _err_line(capsys, "train")
    assert "diverged" in line
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["status"] == "failed" and "diverged" in res["error"]


def test_item1_resume_refuses_a_nan_master_weight(npy, checkpoint, capsys):
    _edit_checkpoint(checkpoint, {"master.lm_head.weight": lambda t: t.fill_(float("nan"))})
    assert main([*npy, "--resume", str(checkpoint)]) == 2
    line = _err_line(capsys, "train")
    assert "NaN/inf" in line and "master.lm_head.weight" in line and str(checkpoint) in line


# ----------------------------------------------------------------------------- item 4
def test_item4_resume_with_other_training_tokens_is_refused(npy, checkpoint, tmp_path, capsys):
    other = tmp_path / "other.npy"
    np.save(other, repeated_sequence(64, 48, 4096, seed=7).astype(np.uint16))  # same length
    args = [a if not a.endswith("train.npy") else str(other) for a in npy]
    assert main([*args, "--resume", str(checkpoint)]) == 2
    assert "training tokens differ" in _err_line(capsys, "train")
    assert main([*npy, "--resume", str(checkpoint)]) == 0  # the same data resumes


# ----------------------------------------------------------------------------- item 7
def test_item7_eval_of_a_nan_checkpoint_is_an_error_with_valid_json(checkpoint, tmp_path, capsys):
    _edit_checkpoint(checkpoint, {"model.lm_head.weight": lambda t: t.fill_(float("nan"))})
    out = tmp_path / "eval.json"
    code = main(["eval", str(checkpoint), "--tokens-npy", str(tmp_path / "eval.npy"), "--device", "cpu",
                 "--json", str(out)])
    assert code == 1
    assert "non-finite" in _err_line(capsys, "eval")
    res = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert res["loss"] is None and res["status"] == "non_finite_loss"


# ----------------------------------------------------------------------------- item 10
@pytest.mark.parametrize("edit, needle", [
    (dict(tensors={"model.lm_head.bias": None}), "missing model.lm_head.bias"),
    (dict(tensors={"model.lm_head.bias": torch.zeros(3, dtype=torch.float16)}), "model.lm_head.bias has shape (3,)"),
    (dict(meta={"model_config": json.dumps({"vocab_size": 64, "colour": 1})}), "model_config"),
    (dict(meta={"model_config": json.dumps({"vocab_size": 65, "d_model": 16, "n_layers": 1})}), "lm_head"),
    (dict(meta={"counters": "{not json"}), "'counters' is not valid JSON"),
    (dict(meta={"model_name": "stage9"}), "model_name 'stage9'"),
])
def test_item10_eval_of_an_edited_checkpoint_names_file_and_field(checkpoint, tmp_path, capsys, edit, needle):
    _edit_checkpoint(checkpoint, **edit)
    assert main(["eval", str(checkpoint), "--tokens-npy", str(tmp_path / "eval.npy"), "--device", "cpu"]) == 2
    line = _err_line(capsys, "eval")
    assert needle in line and str(checkpoint) in line, line
    assert "Error(s) in loading state_dict" not in line


# ----------------------------------------------------------------------------- items 11, 12
def test_item11_train_out_is_checked_before_building_anything(npy, tmp_path, capsys, monkeypatch):
    existing = tmp_path / "a-file"
    existing.write_text("x")
    monkeypatch.setattr(trainer_mod, "seed_everything", lambda *_: pytest.fail("went on to build the model"))
    args = [a if a != str(tmp_path / "out") else str(existing) for a in npy]
    assert main(args) == 2
    assert "exists and is not a directory" in _err_line(capsys, "train")
    assert main([*args[:-1], str(existing / "sub")]) == 2
    assert "is a file" in _err_line(capsys, "train")


def test_item12_json_into_a_directory_fails_before_the_work(checkpoint, tmp_path, capsys, monkeypatch):
    import muse.smoke

    monkeypatch.setattr(muse.smoke, "run_smoke", lambda *a, **k: pytest.fail("smoke ran"))
    assert main(["smoke", "--preset", "tiny", "--device", "cpu", "--json", str(tmp_path)]) == 2
    assert "is a directory" in _err_line(capsys, "smoke")
    import muse.train.checkpoint as ck

    monkeypatch.setattr(ck, "model_from_checkpoint", lambda *a, **k: pytest.fail("eval ran"))
    assert main(["eval", str(checkpoint), "--device", "cpu", "--json", str(tmp_path)]) == 2
    assert "is a directory" in _err_line(capsys, "eval")


# ----------------------------------------------------------------------------- item 13
@pytest.mark.parametrize("bad_device", ["tpu", "cuda:abc", "cpu:3"])
def test_item13_smoke_bad_device_is_one_line(bad_device, capsys):
    assert main(["smoke", "--preset", "tiny", "--device", bad_device]) == 2
    assert "device must be auto, cpu, cuda or cuda:N" in _err_line(capsys, "smoke")


# ----------------------------------------------------------------------------- item 14
def test_item14_ctrl_c_says_interrupted_exits_130_and_keeps_the_checkpoint(npy, tmp_path, capsys, monkeypatch):
    real_step, calls = trainer_mod.Trainer.train_step, []

    def step(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", step)
    try:
        code = main([*npy, "--ckpt-every", "1"])
    except KeyboardInterrupt:
        code = "KeyboardInterrupt escaped"
    assert code == 130
    assert "interrupted" in _err_line(capsys, "train")
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"
    from muse.train.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.safetensors").counters["step"] == 2


# ----------------------------------------------------------------------------- item 16
def test_item16_eval_seq_len_beyond_the_model_names_the_flag(checkpoint, tmp_path, capsys):
    code = main(["eval", str(checkpoint), "--tokens-npy", str(tmp_path / "eval.npy"), "--device", "cpu",
                 "--seq-len", "4096"])
    assert code == 2
    assert "--seq-len 4096 must be in [1, 128]" in _err_line(capsys, "eval")


# ----------------------------------------------------------------------------- item 17
def test_item17_garbage_tokens_npy_gives_no_pickle_advice(npy, tmp_path, capsys):
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not numpy at all" * 10)
    args = [a if not a.endswith("train.npy") else str(garbage) for a in npy]
    assert main(args) == 2
    line = _err_line(capsys, "train")
    assert "not a .npy file" in line and "pickle" not in line


# ----------------------------------------------------------------------------- item 19
def test_item19_bench_with_bad_settings_creates_nothing(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "stage1", "--tokens", "-1", "--device", "cpu", "--out", str(out)]) == 2
    assert "tokens must be >= 1" in _err_line(capsys, "bench")
    assert not out.exists()


# ----------------------------------------------------------------------------- item 20
def test_item20_save_best_without_periodic_evals_is_refused(npy, capsys):
    assert main([*npy, "--save-best"]) == 2  # npy has --eval-every 0
    assert "save_best" in _err_line(capsys, "train")


# ----------------------------------------------------------------------------- item 21
def test_item21_stale_temp_files_of_a_killed_writer_are_removed(npy, checkpoint):
    stale = checkpoint.parent / ".last.safetensors.k9abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = checkpoint.parent / "notes.tmp"
    other.write_text("not ours")
    assert main([*npy, "--resume", str(checkpoint)]) == 0
    assert not stale.exists() and other.exists()


# ----------------------------------------------------------------------------- item 22 (CLI)
def test_item22_huge_zeta_scale_is_refused_before_training(npy, capsys):
    assert main([*npy, "--model-arg", "zeta_scale=100000"]) == 2
    line = _err_line(capsys, "train")
    assert "zeta_scale" in line and "overflow" in line


# ----------------------------------------------------------------------------- item 24 (CLI)
def test_item24_init_scale_must_be_a_power_of_two(npy, capsys):
    assert main([*npy, "--init-scale", "1000"]) == 2
    assert "init_scale must be a power of two" in _err_line(capsys, "train")
    assert math.frexp(2.0**-3)[0] == 0.5 and main([*npy, "--init-scale", "0.125"]) == 0


# ----------------------------------------------------------------------------- label smoothing
def test_label_smoothing_out_of_range_or_with_a_copy_path_is_refused_before_anything(npy, tmp_path, capsys):
    assert main([*npy, "--label-smoothing", "1"]) == 2
    assert "label_smoothing must be < 1.0, got 1.0" in _err_line(capsys, "train")
    assert main([*npy, "--preset", "mix-tiny", "--model-arg", "pointer_dim=8", "--label-smoothing", "0.1"]) == 2
    assert "label_smoothing (--label-smoothing) must be 0 for a model with a copy path" in _err_line(capsys, "train")
    out = tmp_path / "bench"
    argv = ["bench", "stage1", "--stage1-preset", "mix-copy-tiny", "--label-smoothing", "0.1", "--device", "cpu",
            "--out", str(out)]
    assert main(argv) == 2
    assert "must be 0 for a model with a copy path" in _err_line(capsys, "bench")
    assert not out.exists()


# ----------------------------------------------------------------------------- Muon
def test_muon_step_size_must_be_positive_and_the_speed_bench_refuses_the_optimizer(npy, tmp_path, capsys):
    assert main([*npy, "--optimizer", "muon", "--muon-rms", "0"]) == 2
    assert "muon_rms must be > 0.0, got 0.0" in _err_line(capsys, "train")
    out = tmp_path / "bench"
    assert main(["bench", "stage1", "--optimizer", "muon", "--muon-rms", "-1", "--device", "cpu", "--out", str(out)]) == 2
    assert "muon_rms must be > 0.0" in _err_line(capsys, "bench")
    assert not out.exists()
    assert main(["bench", "speed", "--optimizer", "muon", "--device", "cpu", "--out", str(out)]) == 2
    assert "--optimizer: options of `muse bench stage1`" in _err_line(capsys, "bench")
    assert main([*npy, "--optimizer", "muon"]) == 0


# ----------------------------------------------------------------------------- unknown flags
@pytest.mark.parametrize("argv, cmd, hint", [
    (["train", "--steps", "30"], "train", "did you mean --max-steps?"),
    (["data", "prepare", "--splt", "valid"], "data prepare", "did you mean --split?"),
    (["smoke", "--devce", "cpu"], "smoke", "did you mean --device?"),
    (["eval", "x.safetensors", "--frobnicate"], "eval", None),
])
def test_unknown_flag_names_the_subcommand_and_the_nearest_option(argv, cmd, hint, capsys):
    """An unknown flag is reported by the subcommand that got it (not as ``muse: error``), with its
    ``--help`` and, for a misspelt option, the nearest one."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    line = _err_line(capsys, cmd)
    assert f"unrecognized arguments: {' '.join(argv[-2 if hint else -1:])}" in line
    assert line.endswith(f"(see muse {cmd} --help)")
    assert (hint in line) if hint else "did you mean" not in line

"""``muse train`` end to end on WikiText-2, and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from muse.cli import main
from muse.data import shared_data_dir
from muse.train.synthetic import repeated_sequence

HAVE_WIKITEXT = all((shared_data_dir() / p).is_file() for p in (
    "wikitext-2-raw/wiki.valid.raw", "wikitext-2-raw/wiki.test.raw", "gpt2-tokenizer/tokenizer.json"))


@pytest.mark.skipif(not HAVE_WIKITEXT, reason="shared/data WikiText-2 files are not present")
def test_cli_end_to_end_on_wikitext_valid_split(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--max-steps", "5", "--train-split", "valid",
                 "--batch-size", "2", "--warmup", "2", "--eval-every", "0", "--final-eval-tokens", "512",
                 "--no-progress", "--offline", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "batch_size = 2" in printed and "| final eval loss |" in printed  # config and table
    assert "| final eval bits per byte | " in printed and "| final eval word-level PPL (whole split) | - |" in printed
    assert {p.name for p in out.iterdir()} >= {"results.json", "log.jsonl", "loss.png", "last.safetensors"}
    res = json.loads((out / "results.json").read_text())
    assert res["train_split"] == "valid" and "VALIDATION" in res["train_split_warning"]
    assert res["eval_split"] == "test" and res["data"]["eval_tokens_available"] == 287644
    assert res["model"]["parameters"] == 9725201 and res["steps"] == 5
    final = res["final_eval"]
    assert final["tokens_scored"] == 512 and np.isfinite(final["loss"])
    # a prefix of the text: bits per byte of its bytes, no word-level count
    assert final["bytes_scored"] > 512 and final["word_ppl"] is None and final["word_tokens"] is None
    assert final["bits_per_byte"] == pytest.approx(final["loss"] * 512 / (final["bytes_scored"] * np.log(2)))
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["step"] for r in records if r["type"] == "train"] == [5]
    assert main(["eval", str(out / "last.safetensors"), "--split", "test", "--max-tokens", "512", "--device", "cpu",
                 "--offline", "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "eval.json")]) == 0
    standalone = json.loads((tmp_path / "eval.json").read_text())
    assert standalone["bytes_scored"] == final["bytes_scored"]
    assert standalone["bits_per_byte"] == pytest.approx(final["bits_per_byte"], rel=1e-6)  # other batches


@pytest.fixture
def npy(tmp_path):
    train, evals = tmp_path / "train.npy", tmp_path / "eval.npy"
    np.save(train, repeated_sequence(64, 48, 4096))
    np.save(evals, repeated_sequence(64, 48, 1024))
    return ["train", "--vocab-size", "64", "--d-model", "16", "--n-layers", "1", "--seq-len", "32",
            "--batch-size", "4", "--max-steps", "3", "--warmup", "1", "--device", "cpu", "--no-progress",
            "--tokens-npy", str(train), "--eval-tokens-npy", str(evals), "--out", str(tmp_path / "out")]


def test_cli_runs_on_npy_tokens_and_resumes(npy, tmp_path, capsys):
    assert main([*npy, "--stop-after", "2"]) == 0
    last = tmp_path / "out" / "last.safetensors"
    assert json.loads((tmp_path / "out" / "results.json").read_text())["status"] == "stopped"
    assert main([*npy, "--resume", str(last)]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["status"] == "completed" and res["steps"] == 3 and res["resumed_from"] == str(last)
    evals = npy[npy.index("--eval-tokens-npy") + 1]
    assert main(["eval", str(last), "--tokens-npy", evals, "--device", "cpu", "--batch-size", "4",
                 "--json", str(tmp_path / "eval.json")]) == 0
    standalone = json.loads((tmp_path / "eval.json").read_text())
    assert standalone["loss"] == res["final_eval"]["loss"]  # same windows, same weights, same loss
    assert standalone["tokens_scored"] == res["final_eval"]["tokens_scored"] == 1023
    assert standalone["step"] == 3 and standalone["train_split"] == "train"
    assert standalone["bits_per_byte"] is None and standalone["word_ppl"] is None  # ids carry no text


@pytest.mark.parametrize("extra, match", [
    (["--lr", "-1"], "lr must be > 0"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--warmup", "10"], "warmup"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--resume", "/nonexistent/last.safetensors"], "no such checkpoint"),
    (["--amp", "bf16"], "amp"),
    (["--model-arg", "dropout"], "KEY=VALUE"),
    (["--model-arg", "colour=1"], "unknown config field"),
    (["--dropout", "1.5"], "dropout"),
    (["--min-lr", "1"], "min_lr"),
    (["--eval-every", "-1"], "eval_every"),
    (["--compile-memory-budget", "0.5"], "compile_memory_budget=0.5 needs a compiled run"),
    (["--compile-mode", "default"], "compile_mode='default' (--compile-mode) needs a compiled run"),
    (["--compile", "--compile-mode", "reduce-overhead"], "replays CUDA graphs: it needs a CUDA device, got cpu"),
    (["--compile", "--compile-memory-budget", "2"], "compile_memory_budget must be <= 1.0, got 2.0"),
    (["--dist-backend", "nccl"], "backend='nccl' needs CUDA tensors"),
])
def test_cli_bad_input_gives_a_clear_error(npy, extra, match, capsys):
    assert main([*npy, *extra]) == 2
    err = capsys.readouterr().err
    assert "muse train: error:" in err and match in err, err


def test_eval_cli_errors(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope.safetensors"), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_missing_token_file(npy, tmp_path, capsys):
    args = [a if not a.endswith("train.npy") else str(tmp_path / "missing.npy") for a in npy]
    assert main(args) == 2
    assert "missing.npy" in capsys.readouterr().err


def test_cli_tokens_and_max_steps_are_exclusive(npy):
    with pytest.raises(SystemExit) as exc:
        main([*npy, "--tokens", "1000"])
    assert exc.value.code == 2

"""WikiText-2 loading, checksums, the GPT-2 tokenizer, the token cache and the ``muse data`` CLI.

Needs ``<repo>/../shared/data`` (CI always has it): tests that read it fail, not skip, without it.
The hub is never contacted: its entry points are monkeypatched.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import muse.data.sources as sources
from muse.cli import data as cli_data
from muse.data import (
    DataNotFoundError,
    cache_key,
    check_split,
    file_sha256,
    hub_unavailable_reason,
    load_split_text,
    load_token_file,
    load_tokenizer,
    load_tokens,
    resolve_cache_dir,
    resolve_data_dir,
    resolve_tokenizer_dir,
    resolve_train_split,
    rows_from_raw,
    save_token_file,
    shared_data_dir,
    verify_sha256,
)
from muse.data.units import token_byte_lengths, word_level_tokens

TEST_TOKENS, VALID_TOKENS = 287_644, 251_048
ENV_VARS = ("MUSE_DATA_DIR", "MUSE_TOKENIZER_DIR", "MUSE_CACHE_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _shared() -> Path:
    root = shared_data_dir()
    needed = [root / "wikitext-2-raw" / "wiki.test.raw", root / "gpt2-tokenizer" / "tokenizer.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.fail(f"shared data missing (expected beside the repo at {root}): {missing}")
    return root


@pytest.fixture(scope="module")
def shared() -> Path:
    return _shared()


@pytest.fixture(autouse=True)
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MUSE_*/HF_* overrides from the caller's shell, and a hub that is never reachable."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sources, "_probe_hub", lambda timeout=3.0: "no network in tests")


@pytest.fixture(scope="module")
def tokenizer(shared: Path):
    return load_tokenizer(shared / "gpt2-tokenizer", allow_hub=False)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def test_split(shared: Path, tokenizer, cache_dir: Path):
    return load_tokens("test", data_dir=shared / "wikitext-2-raw", cache_dir=cache_dir,
                       allow_hub=False, tokenizer=tokenizer)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _write_listed(path: Path, text: str) -> Path:
    """Write a stand-in ``wiki.*.raw`` and list it in a SHA256SUMS beside it: a file with an
    upstream name that differs from upstream is used only when listed."""
    _write(path, text)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    with open(path.parent / "SHA256SUMS", "a", encoding="utf-8") as fh:
        fh.write(f"{digest}  {path.name}\n")
    return path


def _use_hub(monkeypatch: pytest.MonkeyPatch, rows_by_split: dict[str, list[str]]) -> list[tuple]:
    """Make the hub reachable and ``datasets.load_dataset`` serve ``rows_by_split`` (skipped where the
    ``datasets`` dependency is not installed, as on the GPU machine; CI installs it)."""
    datasets = pytest.importorskip("datasets")

    calls: list[tuple] = []

    def fake_load_dataset(*args, split):
        calls.append((*args, split))
        return {"text": rows_by_split[split]}

    monkeypatch.setattr(sources, "_probe_hub", lambda timeout=3.0: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


# --- text convention and pinned counts ---------------------------------------------------------


def test_test_split_pinned_counts(test_split) -> None:
    assert test_split.n_tokens == TEST_TOKENS
    assert (test_split.n_rows, test_split.n_chars) == (4358, 1_294_336)
    assert test_split.sha256_status.startswith("verified")


def test_valid_split_pinned_counts(shared: Path, tokenizer, cache_dir: Path) -> None:
    ts = load_tokens("valid", data_dir=shared / "wikitext-2-raw", cache_dir=cache_dir,
                     allow_hub=False, tokenizer=tokenizer)
    assert (ts.n_tokens, ts.n_rows, ts.n_chars) == (VALID_TOKENS, 3760, 1_149_668)


def test_units_of_the_splits(shared: Path, tokenizer, test_split, cache_dir: Path, tmp_path: Path) -> None:
    """Token bytes add up to the text's UTF-8 bytes, and the word-level counts are WikiText's own."""
    valid = load_tokens("valid", data_dir=shared / "wikitext-2-raw", cache_dir=cache_dir,
                        allow_hub=False, tokenizer=tokenizer)
    for ts, n_bytes, words in ((test_split, 1_296_370, 245_569), (valid, 1_151_766, 217_646)):
        text = load_split_text(ts.split, shared / "wikitext-2-raw", allow_hub=False).text
        assert len(text.encode("utf-8")) == n_bytes
        assert int(ts.token_bytes[np.asarray(ts.tokens)].sum()) == n_bytes
        assert ts.word_tokens == words
    table = token_byte_lengths(tokenizer)
    assert table.shape == (50257,) and table[50256] == len("<|endoftext|>") and table.min() >= 1
    ids = tokenizer.encode("naïve café — 東京 😀")  # multi-byte characters split across tokens
    assert int(table[ids].sum()) == len("naïve café — 東京 😀".encode())
    for name in ("vocab.json", "merges.txt"):
        os.symlink(shared / "gpt2-tokenizer" / name, tmp_path / name)
    np.testing.assert_array_equal(token_byte_lengths(load_tokenizer(tmp_path, allow_hub=False)), table)
    with pytest.raises(TypeError, match="tokenizer"):
        token_byte_lengths("gpt2")


def test_word_level_tokens_small() -> None:
    assert word_level_tokens(["", " = A = \n", "", " x y \n"]) == 5 + 4
    assert word_level_tokens([]) == 0
    with pytest.raises(TypeError, match="rows"):
        word_level_tokens("a b")


def test_rows_follow_hf_loader(shared: Path) -> None:
    text = load_split_text("test", shared / "wikitext-2-raw", allow_hub=False)
    assert text.rows[0] == "" and text.rows[1] == " = Robert Boulter = \n"
    assert all(row == "" or row.strip() for row in text.rows)
    assert text.text == "\n\n".join(text.rows)
    assert text.text.startswith("\n\n = Robert Boulter = \n\n\n")


def test_rows_from_raw_small() -> None:
    assert rows_from_raw(" \nabc\n\t \n x") == ["", "abc\n", "", " x"]
    assert rows_from_raw("a\r\nb\r\n") == ["a\n", "b\n"]
    assert rows_from_raw("") == []
    with pytest.raises(TypeError, match="raw"):
        rows_from_raw(b"abc")


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split must be one of train, valid, test"):
        load_split_text("validation", allow_hub=False)
    with pytest.raises(TypeError, match="split"):
        check_split(3)


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_formats_give_identical_ids(shared: Path, tokenizer, test_split, tmp_path: Path) -> None:
    for name in ("vocab.json", "merges.txt"):
        os.symlink(shared / "gpt2-tokenizer" / name, tmp_path / name)
    bpe = load_tokenizer(tmp_path, allow_hub=False)
    assert "vocab.json" in bpe.source and tokenizer.source.endswith("tokenizer.json")
    assert bpe.vocab_size == tokenizer.vocab_size == 50257
    assert bpe.backend.token_to_id("<|endoftext|>") == 50256
    assert bpe.fingerprint != tokenizer.fingerprint
    text = load_split_text("test", shared / "wikitext-2-raw", allow_hub=False).text
    np.testing.assert_array_equal(bpe.encode(text), np.asarray(test_split.tokens))
    assert bpe.decode(bpe.encode(" = Robert Boulter = \n")) == " = Robert Boulter = \n"


def test_tokenizer_fingerprint_is_file_sha(shared: Path, tokenizer) -> None:
    assert tokenizer.fingerprint == file_sha256(shared / "gpt2-tokenizer" / "tokenizer.json")
    assert tokenizer.sha256_status.startswith("verified")


def test_chunked_encode_equals_whole_text(shared: Path, tokenizer, test_split) -> None:
    text = load_split_text("test", shared / "wikitext-2-raw", allow_hub=False).text
    whole = tokenizer.backend.encode(text, add_special_tokens=False).ids
    np.testing.assert_array_equal(np.asarray(test_split.tokens), whole)
    prefix = text[:200_000]
    expected = tokenizer.backend.encode(prefix, add_special_tokens=False).ids
    assert tokenizer.encode(prefix, chunk_chars=97).tolist() == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=[" ", "\n", "\t", "a", "Z", "=", "'", "s", "1", ".", "é", "\u3000"], max_size=80),
       st.integers(1, 12))
def test_chunked_encode_equals_whole_random(tokenizer, text: str, chunk_chars: int) -> None:
    whole = tokenizer.backend.encode(text, add_special_tokens=False).ids
    assert tokenizer.encode(text, chunk_chars=chunk_chars).tolist() == whole


def test_tokenizer_resolution_and_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tokenizer) -> None:
    import muse.data.tokenizer as tok_mod

    monkeypatch.setattr(tok_mod, "shared_data_dir", lambda: tmp_path / "none")
    assert resolve_tokenizer_dir() is None
    with pytest.raises(DataNotFoundError, match="--tokenizer-dir.*MUSE_TOKENIZER_DIR"):
        load_tokenizer(allow_hub=False)
    monkeypatch.setattr(sources, "_probe_hub", lambda timeout=3.0: None)
    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", staticmethod(lambda name: tokenizer.backend))
    hub = load_tokenizer()
    assert hub.source == "hub:gpt2" and len(hub.fingerprint) == 64
    monkeypatch.setenv("MUSE_TOKENIZER_DIR", str(tmp_path))
    assert resolve_tokenizer_dir() == tmp_path
    with pytest.raises(DataNotFoundError, match="neither tokenizer.json nor vocab.json"):
        load_tokenizer()


# --- sha256 checks -----------------------------------------------------------------------------


def test_sha256_mismatch_names_file_and_hashes(tmp_path: Path) -> None:
    raw = _write(tmp_path / "wikitext-2-raw" / "wiki.test.raw", " \n = T = \n")
    actual = hashlib.sha256(raw.read_bytes()).hexdigest()
    _write(tmp_path / "SHA256SUMS", f"{'0' * 64}  wikitext-2-raw/wiki.test.raw\n")
    with pytest.raises(ValueError, match="sha256 mismatch") as err:
        load_split_text("test", tmp_path, allow_hub=False)
    assert str(raw) in str(err.value) and "0" * 64 in str(err.value) and actual in str(err.value)
    _write(tmp_path / "SHA256SUMS", f"{actual}  wikitext-2-raw/wiki.test.raw\n")
    text = load_split_text("test", tmp_path, allow_hub=False)
    assert text.sha256 == actual and text.sha256_status.startswith("verified")
    assert text.rows == ("", " = T = \n")


def test_sha256_without_entry_or_list(tmp_path: Path) -> None:
    """A known upstream name without a SHA256SUMS entry must match upstream (issue 13 item 2)."""
    _write(tmp_path / "wiki.test.raw", "x\n")
    with pytest.raises(ValueError, match="expected the upstream wiki.test.raw .*truncated or modified"):
        load_split_text("test", tmp_path, allow_hub=False)
    _write(tmp_path / "SHA256SUMS", f"{'1' * 64}  other.raw\n")
    with pytest.raises(ValueError, match="expected the upstream wiki.test.raw"):
        load_split_text("test", tmp_path, allow_hub=False)
    _write(tmp_path / "notes.raw", "x\n")
    assert verify_sha256(tmp_path / "notes.raw", {"wiki.test.raw": "0" * 64})[1].startswith("not checked")


def test_hash_is_cached_per_path_size_mtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _write(tmp_path / "f.raw", "abc\n")
    calls = []
    real = hashlib.sha256

    class Counting:
        @staticmethod
        def sha256(*args):
            calls.append(1)
            return real(*args)

    monkeypatch.setattr(sources, "hashlib", Counting)
    first = file_sha256(path)
    assert file_sha256(path) == first and len(calls) == 1
    path.write_text("abcd\n", encoding="utf-8")
    assert file_sha256(path) == real(b"abcd\n").hexdigest() and len(calls) == 2


# --- missing data, resolution order and the hub -----------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split_message_gives_both_ways(tmp_path: Path, split: str) -> None:
    _write(tmp_path / "wiki.valid.raw", "x\n")
    with pytest.raises(DataNotFoundError) as err:
        load_split_text(split, tmp_path, allow_hub=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert f"wiki.{split}.raw" in msg and "--data-dir" in msg and "MUSE_DATA_DIR" in msg
    assert "go online" in msg and "hub" in msg
    assert ("--train-split valid" in msg) == (split == "train")


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_env_blocks_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str) -> None:
    calls = _use_hub(monkeypatch, {"train": ["x\n"]})
    monkeypatch.setenv(var, "1")
    assert var in hub_unavailable_reason(True)
    with pytest.raises(DataNotFoundError, match=var):
        load_split_text("train", tmp_path)
    assert calls == []


def test_hub_reason_checks_type() -> None:
    with pytest.raises(TypeError, match="allow_hub"):
        hub_unavailable_reason("yes")


def test_data_dir_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write_listed(a / "wiki.test.raw", "from a\n")
    _write_listed(b / "wiki.test.raw", "from b\n")
    assert resolve_data_dir() == shared / "wikitext-2-raw"
    assert resolve_data_dir(shared) == shared / "wikitext-2-raw"
    monkeypatch.setenv("MUSE_DATA_DIR", str(b))
    assert load_split_text("test", a, allow_hub=False).rows == ("from a\n",)
    assert load_split_text("test", allow_hub=False).rows == ("from b\n",)
    monkeypatch.setenv("MUSE_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataNotFoundError, match="typo.*MUSE_DATA_DIR"):
        load_split_text("test", allow_hub=False)
    monkeypatch.delenv("MUSE_DATA_DIR")
    import muse.data.wikitext as wikitext

    monkeypatch.setattr(wikitext, "shared_data_dir", lambda: tmp_path / "none")
    assert resolve_data_dir() is None
    with pytest.raises(DataNotFoundError, match="no local data directory"):
        load_split_text("test", allow_hub=False)


def test_hub_gives_same_text_and_tokens(monkeypatch, tmp_path, shared, tokenizer, test_split) -> None:
    local = {s: load_split_text(s, shared / "wikitext-2-raw", allow_hub=False) for s in ("test", "valid")}
    calls = _use_hub(monkeypatch, {"validation": list(local["valid"].rows), "test": list(local["test"].rows)})
    empty = tmp_path / "empty"
    empty.mkdir()
    hub = load_split_text("valid", empty)
    assert calls == [("wikitext", "wikitext-2-raw-v1", "validation")]
    assert hub.from_hub and hub.text == local["valid"].text
    assert hub.sha256 == hashlib.sha256(hub.text.encode()).hexdigest()
    ts = load_tokens("test", data_dir=empty, cache_dir=tmp_path / "c", tokenizer=tokenizer)
    assert ts.source.startswith("hub:") and ts.cache_path != test_split.cache_path
    np.testing.assert_array_equal(ts.tokens, test_split.tokens)


def test_hub_failure_is_data_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _use_hub(monkeypatch, {})
    with pytest.raises(DataNotFoundError, match="hub load failed.*--train-split valid"):
        load_split_text("train", tmp_path)


def test_hub_without_the_datasets_package_is_data_not_found(monkeypatch, tmp_path: Path) -> None:
    """A reachable hub but no ``datasets`` package: DataNotFoundError naming the failed import, not an
    ImportError from inside the loader."""
    monkeypatch.setattr(sources, "_probe_hub", lambda timeout=3.0: None)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataNotFoundError, match="hub load failed: import of datasets halted"):
        load_split_text("train", tmp_path)


def test_resolve_train_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared: Path) -> None:
    assert resolve_train_split("valid", allow_hub=False) == ("valid", None)
    with pytest.warns(UserWarning, match="VALIDATION split"):
        split, warning = resolve_train_split("train", allow_hub=False)
    assert split == "valid" and "train_split='valid'" in warning
    with pytest.raises(DataNotFoundError, match="--train-split valid"):
        resolve_train_split("train", allow_hub=False, fallback=False)
    _write(tmp_path / "wiki.train.raw", "t\n")
    assert resolve_train_split("train", tmp_path, allow_hub=False) == ("train", None)
    monkeypatch.setattr(sources, "_probe_hub", lambda timeout=3.0: None)
    assert resolve_train_split("train", shared) == ("train", None)
    with pytest.raises(ValueError, match="split"):
        resolve_train_split("dev")


# --- token cache -------------------------------------------------------------------------------


def test_cache_is_reused_read_only_and_atomic(shared, tokenizer, cache_dir, test_split) -> None:
    again = load_tokens("test", data_dir=shared / "wikitext-2-raw", cache_dir=cache_dir,
                        allow_hub=False, tokenizer=tokenizer)
    assert again.cache_hit and again.cache_path == test_split.cache_path
    assert isinstance(again.tokens, np.memmap) and not again.tokens.flags.writeable
    assert again.tokens.dtype == np.uint16 and again.tokens.max() < 50257
    assert again.cache_path.is_relative_to(cache_dir) and again.cache_path.with_suffix(".json").is_file()
    assert not [p for p in again.cache_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_cache_key_and_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache_key("a", "b") != cache_key("a", "c") != cache_key("b", "c")
    assert resolve_cache_dir(tmp_path) == tmp_path
    monkeypatch.setenv("MUSE_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("MUSE_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_cache_dir() == tmp_path / ".cache" / "muse"


def test_corrupt_cache_is_rebuilt(shared, tokenizer, tmp_path) -> None:
    source = (shared / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    raw = _write_listed(tmp_path / "d" / "wiki.test.raw", source[:5000])
    first = load_tokens("test", data_dir=raw.parent, cache_dir=tmp_path / "c", tokenizer=tokenizer, allow_hub=False)
    first.cache_path.write_bytes(b"garbage")
    again = load_tokens("test", data_dir=raw.parent, cache_dir=tmp_path / "c", tokenizer=tokenizer, allow_hub=False)
    assert not again.cache_hit and again.n_tokens == first.n_tokens > 0


def test_token_file_validation(tmp_path: Path) -> None:
    save_token_file(np.array([1, 2, 65535]), tmp_path / "ok.npy")
    assert load_token_file(tmp_path / "ok.npy").tolist() == [1, 2, 65535]
    with pytest.raises(ValueError, match="65535"):
        save_token_file(np.array([65536]), tmp_path / "big.npy")
    with pytest.raises(TypeError, match="tokens"):
        save_token_file([1, 2], tmp_path / "list.npy")
    np.save(tmp_path / "i32.npy", np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError, match="uint16"):
        load_token_file(tmp_path / "i32.npy")


# --- CLI ---------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="muse")
    cli_data.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prepare_and_export(shared, cache_dir, test_split, tmp_path, capsys) -> None:
    dirs = ["--data-dir", str(shared / "wikitext-2-raw"), "--tokenizer-dir", str(shared / "gpt2-tokenizer"),
            "--cache-dir", str(cache_dir), "--offline"]
    assert _cli(["data", "prepare", "--split", "test", *dirs]) == 0
    out = capsys.readouterr().out
    assert "287,644" in out and "verified" in out and str(test_split.cache_path) in out
    assert _cli(["data", "export", "--split", "test", "--out", str(tmp_path / "t.npy"), *dirs]) == 0
    exported = np.load(tmp_path / "t.npy")
    assert exported.dtype == np.uint16 and np.array_equal(exported, test_split.tokens)


def test_cli_errors(shared, tmp_path, capsys) -> None:
    assert _cli(["data", "prepare", "--split", "test", "--data-dir", str(tmp_path / "nope"), "--offline"]) == 2
    assert "nope" in capsys.readouterr().err
    assert _cli(["data", "prepare", "--split", "train", "--data-dir", str(shared), "--offline",
                 "--cache-dir", str(tmp_path)]) == 2
    assert "--train-split valid" in capsys.readouterr().err


def test_cli_is_discovered() -> None:
    from muse.cli import build_parser

    args = build_parser().parse_args(["data", "export", "--split", "test", "--out", "x.npy"])
    assert args.func is cli_data.run and args.offline is False

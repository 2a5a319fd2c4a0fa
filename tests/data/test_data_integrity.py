"""Issue 13, data items: truncated, edited or misplaced data files are refused with an error
that names the file; nothing is silently reused or read."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from muse.data import (
    DataNotFoundError,
    load_split_text,
    load_token_file,
    load_tokenizer,
    load_tokens,
    shared_data_dir,
    tokens_sha256,
)

SHARED = shared_data_dir()
pytestmark = pytest.mark.skipif(not (SHARED / "wikitext-2-raw" / "wiki.test.raw").is_file(),
                                reason="shared/data WikiText-2 files are not present")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for var in ("MUSE_DATA_DIR", "MUSE_TOKENIZER_DIR", "MUSE_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _copy(tmp_path: Path, name: str, nbytes: int | None = None) -> Path:
    src = SHARED / "wikitext-2-raw" / name
    dst = tmp_path / "data" / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:nbytes])
    return dst


@pytest.mark.parametrize("nbytes", [600_000, 0])
def test_item2_truncated_or_empty_split_without_sums_is_refused(tmp_path, nbytes):
    path = _copy(tmp_path, "wiki.test.raw", nbytes)
    with pytest.raises(ValueError, match="expected the upstream wiki.test.raw") as err:
        load_split_text("test", path.parent, allow_hub=False)
    assert str(path) in str(err.value) and "SHA256SUMS" in str(err.value)


def test_item2_an_intact_copy_without_sums_matches_upstream(tmp_path):
    path = _copy(tmp_path, "wiki.test.raw")
    assert "matches the upstream" in load_split_text("test", path.parent, allow_hub=False).sha256_status


def test_item3_an_edited_cache_file_is_rebuilt_not_reused(tmp_path):
    kw = dict(data_dir=SHARED / "wikitext-2-raw", cache_dir=tmp_path / "cache", allow_hub=False,
              tokenizer_dir=SHARED / "gpt2-tokenizer")
    first = load_tokens("test", **kw)
    good = tokens_sha256(np.asarray(first.tokens))
    edited = np.load(first.cache_path).copy()
    edited[100:200] = 0
    np.save(first.cache_path, edited)  # same size and shape, different content
    again = load_tokens("test", **kw)
    assert not again.cache_hit and tokens_sha256(np.asarray(again.tokens)) == good
    assert load_tokens("test", **kw).cache_hit  # the rebuilt file is reused


def test_item3_a_cache_file_without_its_record_is_rebuilt(tmp_path):
    kw = dict(data_dir=SHARED / "wikitext-2-raw", cache_dir=tmp_path / "cache", allow_hub=False,
              tokenizer_dir=SHARED / "gpt2-tokenizer")
    first = load_tokens("test", **kw)
    first.cache_path.with_suffix(".json").unlink()
    assert not load_tokens("test", **kw).cache_hit


def test_item9_truncated_tokenizer_json_names_the_file(tmp_path):
    src = (SHARED / "gpt2-tokenizer" / "tokenizer.json").read_bytes()
    (tmp_path / "tokenizer.json").write_bytes(src[: len(src) // 2])
    with pytest.raises(ValueError, match="tokenizer.json is not a readable tokenizer file") as err:
        load_tokenizer(tmp_path, allow_hub=False)
    assert str(tmp_path) in str(err.value) and "EOF" in str(err.value)


def test_item9_truncated_merges_names_the_files(tmp_path):
    shutil.copy(SHARED / "gpt2-tokenizer" / "vocab.json", tmp_path / "vocab.json")
    merges = (SHARED / "gpt2-tokenizer" / "merges.txt").read_text(encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges[:1000] + "\nbroken", encoding="utf-8")
    with pytest.raises(ValueError, match="merges.txt is not a readable tokenizer file"):
        load_tokenizer(tmp_path, allow_hub=False)


def test_item15_a_file_as_data_dir_and_a_directory_as_split(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(DataNotFoundError, match="is a file, not a directory"):
        load_split_text("test", afile, allow_hub=False)
    (tmp_path / "d" / "wiki.test.raw").mkdir(parents=True)
    with pytest.raises(ValueError, match="wiki.test.raw exists but is not a regular file"):
        load_split_text("test", tmp_path / "d", allow_hub=False)


def test_item17_token_file_errors_give_no_pickle_advice(tmp_path):
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x80\x04garbage that looks like a pickle")
    with pytest.raises(ValueError, match="not a .npy file") as err:
        load_token_file(garbage)
    assert "allow_pickle" not in str(err.value)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects") as err:
        load_token_file(objects)
    assert "allow_pickle" not in str(err.value)
    with pytest.raises(ValueError, match="is a directory"):
        load_token_file(tmp_path)


def test_tokens_sha256_ignores_the_storage_dtype():
    ids = np.arange(1000) % 50257
    assert tokens_sha256(ids.astype(np.uint16)) == tokens_sha256(ids) != tokens_sha256(ids[::-1].copy())
    assert hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest() == tokens_sha256(ids)

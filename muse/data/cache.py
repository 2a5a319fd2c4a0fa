"""Token arrays of whole splits, cached on disk as uint16 ``.npy`` and returned as read-only memmaps.

Cache file: ``<cache_dir>/tokens/wikitext-2-raw-v1/<split>-<key>.npy`` with a ``.json`` beside it
describing it. ``key`` hashes the text sha256 (the ``.raw`` file's, or the joined hub text's),
the tokenizer fingerprint and ``CONVENTION``; any change to one of them gives a new file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from muse._checks import check_type
from muse._io import atomic_path, write_json
from muse.data.sources import PathLike, file_sha256, resolve_cache_dir
from muse.data.tokenizer import GPT2Tokenizer, load_tokenizer
from muse.data.units import token_byte_lengths, word_level_tokens
from muse.data.wikitext import load_split_text

CONVENTION = "wikitext-2-raw-v1/hf-rows-joined-nn/v1"
CACHE_SUBDIR = Path("tokens") / "wikitext-2-raw-v1"


@dataclass(frozen=True)
class TokenSplit:
    """A tokenised split and its provenance; ``tokens`` is a read-only uint16 memmap.

    ``token_bytes`` (the tokenizer's UTF-8 bytes per id) and ``word_tokens`` (the split's
    word-level token count) turn a summed NLL into bits per byte and word-level perplexity
    (:mod:`muse.data.units`)."""

    split: str
    tokens: np.ndarray
    cache_path: Path
    cache_hit: bool
    source: str
    sha256: str
    sha256_status: str
    n_rows: int
    n_chars: int
    tokenizer_source: str
    tokenizer_fingerprint: str
    tokenizer_status: str
    word_tokens: int
    token_bytes: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])


def cache_key(text_sha256: str, tokenizer_fingerprint: str) -> str:
    """Hex key of (convention, text hash, tokenizer fingerprint)."""
    raw = f"{CONVENTION}\n{text_sha256}\n{tokenizer_fingerprint}\n".encode()
    return hashlib.sha256(raw).hexdigest()


def save_token_file(tokens: np.ndarray, path: PathLike) -> Path:
    """Write ``tokens`` as a plain uint16 ``.npy`` atomically (temp file + ``os.replace``)."""
    check_type("tokens", tokens, np.ndarray, "a numpy array")
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise ValueError(f"tokens must be a 1-D integer array, got {tokens.dtype} with shape {tokens.shape}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(np.uint16).max):
        raise ValueError("tokens must lie in [0, 65535] to be stored as uint16")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, tokens.astype(np.uint16, copy=False))
    return Path(path)


def tokens_sha256(tokens: np.ndarray) -> str:
    """Hex sha256 of a 1-D integer array's ids as little-endian int64: the same ids give the same
    hash whatever their storage dtype (uint16 file, int64 array)."""
    check_type("tokens", tokens, np.ndarray, "a numpy array")
    if tokens.dtype.kind not in "iu":
        raise ValueError(f"tokens must be an integer array, got {tokens.dtype}")
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<i8").tobytes()).hexdigest()


def load_token_file(path: PathLike) -> np.ndarray:
    """A uint16 ``.npy`` of token ids as a read-only memmap; ValueError if it is anything else."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a .npy file")
    with open(path, "rb") as fh:  # a missing file raises FileNotFoundError naming it
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError(f"{path} is not a .npy file (no NUMPY header); token files are written by "
                         "numpy.save or `muse data export`")
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = "it holds Python objects" if "allow_pickle" in str(exc) else str(exc)
        raise ValueError(f"{path} is not a readable uint16 token .npy file: {reason}") from None
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        raise ValueError(f"{path} must hold a 1-D uint16 array, got {tokens.dtype} with shape {tokens.shape}")
    return tokens


def load_tokens(
    split: str,
    *,
    data_dir: PathLike | None = None,
    tokenizer_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    allow_hub: bool = True,
    tokenizer: GPT2Tokenizer | None = None,
) -> TokenSplit:
    """Tokens of one split: read from the cache, or tokenised and cached on the first call.

    ``tokenizer`` (already loaded) overrides ``tokenizer_dir``. Missing data raises
    DataNotFoundError; a checksum mismatch raises ValueError.
    """
    text = load_split_text(split, data_dir, allow_hub=allow_hub)
    if tokenizer is None:
        tokenizer = load_tokenizer(tokenizer_dir, allow_hub=allow_hub)
    check_type("tokenizer", tokenizer, GPT2Tokenizer, "a GPT2Tokenizer")
    key = cache_key(text.sha256, tokenizer.fingerprint)
    path = resolve_cache_dir(cache_dir) / CACHE_SUBDIR / f"{split}-{key[:24]}.npy"
    tokens, hit = None, path.is_file()
    if hit:
        try:
            tokens = load_token_file(path)
            hit = _cache_intact(path)
        except ValueError:
            hit = False
        if not hit:
            tokens = None
    if tokens is None:
        save_token_file(tokenizer.encode(text.text), path)
        tokens = load_token_file(path)
    result = TokenSplit(
        split=split, tokens=tokens, cache_path=path, cache_hit=hit, source=text.source,
        sha256=text.sha256, sha256_status=text.sha256_status, n_rows=len(text.rows),
        n_chars=len(text.text), tokenizer_source=tokenizer.source,
        tokenizer_fingerprint=tokenizer.fingerprint, tokenizer_status=tokenizer.sha256_status,
        word_tokens=word_level_tokens(text.rows), token_bytes=token_byte_lengths(tokenizer),
    )
    if not hit:
        skip = ("tokens", "cache_hit", "token_bytes")
        meta = {f.name: getattr(result, f.name) for f in fields(result) if f.name not in skip}
        write_json(path.with_suffix(".json"), {**meta, "cache_path": str(path), "key": key,
                                                "convention": CONVENTION, "n_tokens": result.n_tokens,
                                                "npy_sha256": file_sha256(path)})
    return result


def _cache_intact(path: Path) -> bool:
    """True iff the cache file's sha256 equals the one recorded beside it when it was written
    (an edited, truncated or foreign ``.npy`` is rebuilt, never reused)."""
    try:
        recorded = json.loads(path.with_suffix(".json").read_text(encoding="utf-8")).get("npy_sha256")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded is not None and recorded == file_sha256(path)

"""The GPT-2 byte-level BPE tokenizer (``tokenizers``), from local files or the hub.

``tokenizer.json`` is preferred; ``vocab.json`` + ``merges.txt`` give identical ids. The
fingerprint (sha256 of the file contents) is the tokenizer part of the token-cache key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from muse._checks import check_int, check_type
from muse.data.sources import (
    ENV_TOKENIZER_DIR,
    DataNotFoundError,
    PathLike,
    hub_unavailable_reason,
    resolve_dir,
    shared_data_dir,
    verify_sha256,
)

VOCAB_SIZE = 50257
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
HUB_TOKENIZER = "gpt2"
CHUNK_CHARS = 1 << 16
# A cut before " X" that follows "\n" (X printable ASCII) cannot change GPT-2 pre-tokenisation:
# the whitespace run ends at the "\n" ("\s+(?!\S)") and " X" starts the next pre-token.
_SAFE_CUT = re.compile(r"(?<=\n) (?=[!-~])")


@dataclass(frozen=True)
class GPT2Tokenizer:
    """A loaded GPT-2 tokenizer with its source and content fingerprint."""

    backend: tokenizers.Tokenizer
    source: str
    fingerprint: str
    sha256_status: str

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, chunk_chars: int = CHUNK_CHARS) -> np.ndarray:
        """Token ids (uint32) of ``text`` with no special tokens added.

        Long texts are cut at points where GPT-2 pre-tokenisation cannot change and encoded in
        parallel with ``encode_batch``; the result equals encoding the whole text at once.
        """
        check_type("text", text, str, "a str")
        check_int("chunk_chars", chunk_chars, min_value=1)
        pieces = _split_safely(text, chunk_chars) if self._splittable() else [text]
        encodings = self.backend.encode_batch(pieces, add_special_tokens=False)
        arrays = [np.asarray(e.ids, dtype=np.uint32) for e in encodings]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)

    def decode(self, ids: object) -> str:
        return self.backend.decode([int(i) for i in np.asarray(ids).ravel()], skip_special_tokens=False)

    def _splittable(self) -> bool:
        pre = self.backend.pre_tokenizer
        return (
            self.backend.normalizer is None
            and isinstance(pre, pre_tokenizers.ByteLevel)
            and pre.use_regex
            and not pre.add_prefix_space
        )


def _split_safely(text: str, chunk_chars: int) -> list[str]:
    """Cut ``text`` into pieces of about ``chunk_chars`` at ``_SAFE_CUT`` points only."""
    cuts = []
    match = _SAFE_CUT.search(text, chunk_chars)
    while match is not None:
        cuts.append(match.start())
        match = _SAFE_CUT.search(text, match.start() + chunk_chars)
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def resolve_tokenizer_dir(tokenizer_dir: PathLike | None = None) -> Path | None:
    """``tokenizer_dir`` > ``$MUSE_TOKENIZER_DIR`` > ``<repo>/../shared/data/gpt2-tokenizer`` > None."""
    path, _ = resolve_dir(tokenizer_dir, ENV_TOKENIZER_DIR, shared_data_dir() / "gpt2-tokenizer")
    return path


def _check_gpt2(backend: tokenizers.Tokenizer, source: str) -> None:
    size = backend.get_vocab_size(with_added_tokens=True)
    eot = backend.token_to_id(EOT_TOKEN)
    if size != VOCAB_SIZE or eot != EOT_ID:
        raise ValueError(
            f"tokenizer from {source} is not GPT-2: vocab size {size} (expected {VOCAB_SIZE}), "
            f"{EOT_TOKEN} id {eot} (expected {EOT_ID})"
        )


def _parse(load, source: str):
    """Run a ``tokenizers`` loader; its errors (plain ``Exception``) become a ValueError naming the file."""
    try:
        return load()
    except Exception as exc:  # the Rust bindings raise bare Exception for malformed files
        raise ValueError(f"{source} is not a readable tokenizer file (truncated or corrupt?): {exc}") from None


def _from_files(directory: Path) -> GPT2Tokenizer:
    json_path = directory / "tokenizer.json"
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if json_path.is_file():
        fingerprint, status = verify_sha256(json_path)
        backend = _parse(lambda: tokenizers.Tokenizer.from_file(str(json_path)), str(json_path))
        return GPT2Tokenizer(backend, str(json_path), fingerprint, status)
    if vocab.is_file() and merges.is_file():
        (hv, sv), (hm, sm) = verify_sha256(vocab), verify_sha256(merges)
        bpe = _parse(lambda: models.BPE.from_file(str(vocab), str(merges)), f"{vocab} + {merges.name}")
        backend = tokenizers.Tokenizer(bpe)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens([EOT_TOKEN])
        fingerprint = hashlib.sha256(f"vocab.json:{hv}\nmerges.txt:{hm}\n".encode()).hexdigest()
        status = sv if sv == sm else f"vocab.json: {sv}; merges.txt: {sm}"
        return GPT2Tokenizer(backend, f"{vocab} + {merges.name}", fingerprint, status)
    raise DataNotFoundError(
        f"{directory} holds neither tokenizer.json nor vocab.json + merges.txt; pass "
        f"--tokenizer-dir / set {ENV_TOKENIZER_DIR} to a directory with the GPT-2 tokenizer files"
    )


def load_tokenizer(tokenizer_dir: PathLike | None = None, *, allow_hub: bool = True) -> GPT2Tokenizer:
    """The GPT-2 tokenizer from the resolved directory, else ``Tokenizer.from_pretrained("gpt2")``.

    Raises DataNotFoundError when neither is available, ValueError for a non-GPT-2 tokenizer or a
    SHA256SUMS mismatch.
    """
    directory = resolve_tokenizer_dir(tokenizer_dir)
    if directory is not None:
        tok = _from_files(directory)
    else:
        reason = hub_unavailable_reason(allow_hub)
        if reason is not None:
            raise DataNotFoundError(
                f"the GPT-2 tokenizer is not available: no local tokenizer directory, and the hub "
                f"cannot be used ({reason}). Either pass --tokenizer-dir / set {ENV_TOKENIZER_DIR} "
                "to a directory with tokenizer.json (or vocab.json + merges.txt), or go online."
            )
        try:
            backend = tokenizers.Tokenizer.from_pretrained(HUB_TOKENIZER)
        except Exception as exc:
            raise DataNotFoundError(f"loading tokenizer {HUB_TOKENIZER!r} from the hub failed: {exc}") from exc
        fingerprint = hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()
        tok = GPT2Tokenizer(backend, f"hub:{HUB_TOKENIZER}", fingerprint, "not checked (hub)")
    _check_gpt2(tok.backend, tok.source)
    return tok

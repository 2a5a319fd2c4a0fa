"""WikiText-2 raw (``wikitext-2-raw-v1``) text, from a directory of ``wiki.<split>.raw`` or the hub.

One text convention everywhere, the Hugging Face perplexity guide's: the split's rows joined
with ``"\\n\\n"``. A row is one line of the ``.raw`` file with its trailing ``"\\n"``, except that a
whitespace-only line becomes ``""`` (what the Hugging Face ``wikitext`` loader yields), so local
files and the hub give the same string.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

from muse._checks import check_type
from muse.data.sources import (
    ENV_DATA_DIR,
    DataNotFoundError,
    PathLike,
    hub_unavailable_reason,
    resolve_dir,
    shared_data_dir,
    verify_sha256,
)

SPLITS = ("train", "valid", "test")
HUB_DATASET = ("wikitext", "wikitext-2-raw-v1")
HUB_SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
JOIN = "\n\n"
# Upstream sha256 of the members of wikitext-2-raw-v1.zip (see shared/data/README.md).
UPSTREAM_SHA256 = {
    "wiki.train.raw": "6707892fa3788b5ab9ed78ab5ff37d9fe825f6011a2ad4fcd6a6d467f0e7da57",
    "wiki.valid.raw": "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7",
    "wiki.test.raw": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
}


@dataclass(frozen=True)
class SplitText:
    """One split's rows and joined text, with where they came from and how they were checked.

    ``sha256`` is the ``.raw`` file's hash for directory data and the hash of the joined text
    (UTF-8) for hub data; it is the text part of the token-cache key either way.
    """

    split: str
    rows: tuple[str, ...]
    text: str
    source: str
    sha256: str
    sha256_status: str

    @property
    def from_hub(self) -> bool:
        return self.source.startswith("hub:")


def check_split(split: object) -> str:
    """A split name: ``train``, ``valid`` or ``test``."""
    check_type("split", split, str, "a str")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def rows_from_raw(raw: str) -> list[str]:
    """Rows as the Hugging Face ``wikitext`` loader yields them from a ``.raw`` file's text."""
    check_type("raw", raw, str, "a str")
    lines = raw.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    last = lines.pop()
    rows = [line + "\n" for line in lines] + ([last] if last else [])
    return [row if row.strip() else "" for row in rows]


def resolve_data_dir(data_dir: PathLike | None = None) -> Path | None:
    """``data_dir`` > ``$MUSE_DATA_DIR`` > ``<repo>/../shared/data/wikitext-2-raw`` > None (hub).

    A directory without ``wiki.*.raw`` but with a ``wikitext-2-raw`` subdirectory (such as
    ``shared/data``) resolves to that subdirectory.
    """
    path, _ = resolve_dir(data_dir, ENV_DATA_DIR, shared_data_dir() / "wikitext-2-raw")
    if path is not None and not any(path.glob("wiki.*.raw")) and (path / "wikitext-2-raw").is_dir():
        path = path / "wikitext-2-raw"
    return path


def missing_message(split: str, directory: Path | None, reason: str) -> str:
    """The DataNotFoundError text: both ways to provide the split, plus the train fallback."""
    where = f"{directory}/wiki.{split}.raw does not exist" if directory else "no local data directory"
    msg = (
        f"WikiText-2 split {split!r} is not available: {where}, and the Hugging Face hub "
        f"cannot be used ({reason}). Either pass --data-dir / set {ENV_DATA_DIR} to a directory "
        f"holding wiki.{split}.raw, or go online (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, "
        f"do not pass --offline) so that it is loaded from the hub."
    )
    if split == "train":
        msg += " To train on the validation split instead, pass --train-split valid."
    return msg


def _load_file(split: str, path: Path) -> SplitText:
    sha, status = verify_sha256(path, UPSTREAM_SHA256)
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not valid UTF-8: {exc}") from exc
    rows = tuple(rows_from_raw(raw))
    return SplitText(split, rows, JOIN.join(rows), str(path), sha, status)


def _load_hub(split: str, directory: Path | None) -> SplitText:
    try:
        import datasets

        data = datasets.load_dataset(*HUB_DATASET, split=HUB_SPLIT_NAMES[split])
        rows = tuple(data["text"])
    except Exception as exc:
        raise DataNotFoundError(missing_message(split, directory, f"hub load failed: {exc}")) from exc
    text = JOIN.join(rows)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    source = f"hub:{'/'.join(HUB_DATASET)}/{HUB_SPLIT_NAMES[split]}"
    return SplitText(split, rows, text, source, sha, "not checked (hub data; keyed by text sha256)")


def local_split_path(split: str, data_dir: PathLike | None = None) -> Path | None:
    """The ``wiki.<split>.raw`` that would be read for ``split``, or None if there is none."""
    directory = resolve_data_dir(data_dir)
    path = directory / f"wiki.{check_split(split)}.raw" if directory else None
    if path is not None and path.exists() and not path.is_file():
        raise ValueError(f"{path} exists but is not a regular file (a directory?); it must be the "
                         f"WikiText-2 {split} text")
    return path if path is not None and path.is_file() else None


def load_split_text(split: str, data_dir: PathLike | None = None, *, allow_hub: bool = True) -> SplitText:
    """Load one split: from the resolved directory if it holds the file, else from the hub.

    Raises DataNotFoundError when neither works, ValueError on a SHA256SUMS mismatch.
    """
    check_split(split)
    path = local_split_path(split, data_dir)
    if path is not None:
        return _load_file(split, path)
    directory = resolve_data_dir(data_dir)
    reason = hub_unavailable_reason(allow_hub)
    if reason is not None:
        raise DataNotFoundError(missing_message(split, directory, reason))
    return _load_hub(split, directory)


def resolve_train_split(
    requested: str,
    data_dir: PathLike | None = None,
    *,
    allow_hub: bool = True,
    fallback: bool = True,
) -> tuple[str, str | None]:
    """The split to train on and a warning (or None); record the returned split with every result.

    ``valid`` or ``test`` requested explicitly is used as is. ``train`` is used when it exists
    locally or the hub is usable; otherwise, with ``fallback``, ``valid`` is used and a loud
    warning is both emitted and returned; without ``fallback``, DataNotFoundError is raised.
    """
    check_split(requested)
    check_type("fallback", fallback, bool, "a bool")
    if requested != "train" or local_split_path("train", data_dir) is not None:
        return requested, None
    reason = hub_unavailable_reason(allow_hub)
    if reason is None:
        return "train", None
    directory = resolve_data_dir(data_dir)
    if not fallback:
        raise DataNotFoundError(missing_message("train", directory, reason))
    message = (
        f"WARNING: the WikiText-2 train split is not available ({reason}; "
        f"no wiki.train.raw in {directory or 'any local data directory'}). Training on the "
        "VALIDATION split instead; results must say train_split='valid'. Pass --train-split "
        "valid to choose this explicitly, or provide wiki.train.raw / go online to use train."
    )
    warnings.warn(message, UserWarning, stacklevel=2)
    return "valid", message

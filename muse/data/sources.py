"""Where data comes from: directory resolution, SHA256SUMS checks, and whether the hub is usable.

Everything here is shared by the WikiText loader, the tokenizer loader and the token cache, so
that all three resolve paths, hash files and detect offline mode the same way.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from muse._checks import check_type

ENV_DATA_DIR = "MUSE_DATA_DIR"
ENV_TOKENIZER_DIR = "MUSE_TOKENIZER_DIR"
ENV_CACHE_DIR = "MUSE_CACHE_DIR"
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
SUMS_NAME = "SHA256SUMS"
PathLike = str | os.PathLike


class DataNotFoundError(FileNotFoundError):
    """Requested data (a WikiText split or the tokenizer) is neither on disk nor reachable.

    The only error raised for missing data; its message says how to provide the data locally
    and that the Hugging Face hub is the other way.
    """


def repo_root() -> Path:
    """The checkout holding this package (``<repo>/muse/data/sources.py``)."""
    return Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """``<repo>/../shared/data``: where CI and offline machines keep WikiText-2 and GPT-2 files."""
    return repo_root().parent / "shared" / "data"


def resolve_dir(explicit: PathLike | None, env_var: str, default: Path) -> tuple[Path | None, str]:
    """Pick a directory: ``explicit`` > ``$env_var`` > ``default`` if it exists > None (hub).

    Returns ``(directory, origin)``. An explicit or environment directory that does not exist
    raises DataNotFoundError instead of silently falling through, since it is almost always a typo.
    """
    if explicit is not None:
        check_type("directory", explicit, (str, os.PathLike), "a str or path")
        path, origin = Path(explicit).expanduser(), "argument"
    elif os.environ.get(env_var):
        path, origin = Path(os.environ[env_var]).expanduser(), f"${env_var}"
    elif default.is_dir():
        return default, "default"
    else:
        return None, "hub"
    if path.exists() and not path.is_dir():
        raise DataNotFoundError(f"{path} (from {origin}) is a file, not a directory")
    if not path.is_dir():
        raise DataNotFoundError(f"directory {path} (from {origin}) does not exist")
    return path, origin


def resolve_cache_dir(cache_dir: PathLike | None = None) -> Path:
    """Token cache root: ``cache_dir`` > ``$MUSE_CACHE_DIR`` > ``~/.cache/muse``."""
    if cache_dir is not None:
        check_type("cache_dir", cache_dir, (str, os.PathLike), "a str or path")
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    return Path.home() / ".cache" / "muse"


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, cached per (real path, size, mtime) so repeated loads skip rehashing."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(real, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _read_sums(sums: Path) -> dict[str, str]:
    """Parse ``sha256sum`` output: ``<hash>  <path>`` or ``<hash> *<path>``, paths relative to it."""
    entries: dict[str, str] = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or line.lstrip().startswith("#"):
            continue
        digest, name = parts
        entries[os.path.realpath(sums.parent / name.lstrip("*"))] = digest.lower()
    return entries


def verify_sha256(path: PathLike, known: dict[str, str] | None = None) -> tuple[str, str]:
    """Hash ``path`` and check it against a SHA256SUMS in its directory or the parent directory.

    Returns ``(sha256, status)`` where status says what it was checked against. ``known`` maps
    file names to upstream hashes: a file with such a name and no SHA256SUMS entry must match
    its upstream hash (a truncated ``wiki.test.raw`` is refused; a deliberately different file is
    used by listing it in a SHA256SUMS). Raises ValueError naming the file, the expected and the
    actual hash on a mismatch.
    """
    path = Path(path)
    actual = file_sha256(path)
    real = os.path.realpath(path)
    for directory in (path.parent, path.parent.parent):
        sums = directory / SUMS_NAME
        if not sums.is_file():
            continue
        expected = _read_sums(sums).get(real)
        if expected is None:
            continue
        if expected != actual:
            raise ValueError(
                f"sha256 mismatch for {path}: expected {expected} (from {sums}), got {actual}; "
                "the file is corrupt or not the one the checksum list describes"
            )
        return actual, f"verified ({sums})"
    upstream = (known or {}).get(path.name)
    if upstream == actual:
        return actual, f"no SHA256SUMS entry; matches the upstream {path.name}"
    if upstream is not None:
        raise ValueError(
            f"sha256 mismatch for {path}: expected the upstream {path.name} ({upstream}), got {actual} "
            f"({path.stat().st_size:,} bytes); the file is truncated or modified. To use a different "
            f"file on purpose, list it in a {SUMS_NAME} beside it (sha256sum {path.name} > {SUMS_NAME})"
        )
    return actual, "not checked (no SHA256SUMS entry)"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _probe_hub(timeout: float = 3.0) -> str | None:
    """None if a TCP connection to the hub (or the configured proxy) opens, else why not."""
    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(v)), None)
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    return _connect(host, port, timeout)


@functools.lru_cache(maxsize=8)
def _connect(host: str, port: int, timeout: float) -> str | None:
    """One probe per process and address: a reachable hub rarely becomes unreachable mid-run."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc})"
    return None


def hub_unavailable_reason(allow_hub: bool = True) -> str | None:
    """None when the Hugging Face hub may be used; otherwise a short reason (for error messages)."""
    check_type("allow_hub", allow_hub, bool, "a bool")
    if not allow_hub:
        return "disabled by allow_hub=False / --offline"
    for var in OFFLINE_ENV_VARS:
        if _truthy(os.environ.get(var)):
            return f"{var}={os.environ[var]} is set"
    return _probe_hub()

"""Atomic file writes (a reader sees either the old file or the complete new one, never a torn one)
and the one JSON writer, which refuses NaN/inf instead of writing invalid JSON."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write to it inside the ``with``.

    On success the temporary file is fsynced and moved onto ``path`` with ``os.replace``
    (atomic on POSIX), then the directory is fsynced. On any failure the temporary file is
    removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def nonfinite_to_none(data, where: str = "") -> tuple[object, list[str]]:
    """A copy of ``data`` (nested dicts/lists/tuples) with every NaN/inf float replaced by None,
    and the dotted paths of the replaced entries (e.g. ``runs.stage1.eval_ppl``)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None, [where or "<root>"]
    if isinstance(data, dict):
        out, paths = {}, []
        for key, value in data.items():
            out[key], sub = nonfinite_to_none(value, f"{where}.{key}" if where else str(key))
            paths += sub
        return out, paths
    if isinstance(data, (list, tuple)):
        out, paths = [], []
        for i, value in enumerate(data):
            item, sub = nonfinite_to_none(value, f"{where}[{i}]")
            out.append(item)
            paths += sub
        return out, paths
    return data, []


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2, sort_keys: bool = False,
               default=None) -> Path:
    """``data`` as JSON, written atomically. NaN/inf are refused with a ValueError that names where
    they are: a report turns them into null with :func:`nonfinite_to_none` and says why."""
    try:
        text = json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=False, default=default)
    except ValueError:
        _, paths = nonfinite_to_none(data)
        if not paths:
            raise
        raise ValueError(f"refusing to write non-finite values to {path} (at {', '.join(paths[:5])}); "
                         "valid JSON has no NaN/inf: replace them with null and record why") from None
    return atomic_write_text(path, text + "\n")


def write_report_json(path: str | os.PathLike, report: dict, **kwargs) -> dict:
    """Write a measurement report with :func:`write_json`: a NaN/inf measurement becomes null and its
    path is listed under ``"nonfinite_values"`` (the report's own status fields say what failed).
    Returns the report as written."""
    clean, paths = nonfinite_to_none(report)
    clean["nonfinite_values"] = paths
    write_json(path, clean, **kwargs)
    return clean
def check_output_dir(name: str, path: str | os.PathLike) -> Path:
    """ValueError unless ``path`` is (or can be created as) a writable directory; creates nothing.

    Called before any work, so a bad ``--out`` fails at once instead of after training.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {path} exists and is not a directory")
    _check_creatable(name, path)
    return path


def check_output_file(name: str, path: str | os.PathLike) -> Path:
    """ValueError unless ``path`` can be written as a file (not a directory, parent creatable)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {path} is a directory; give a file path")
    _check_creatable(name, path.parent)
    return path


def _check_creatable(name: str, directory: Path) -> None:
    """The nearest existing ancestor of ``directory`` must be a writable directory."""
    probe = directory.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{name} {directory}: {probe} is a file, so the directory cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {directory}: {probe} is not writable")


def remove_stale_temps(directory: str | os.PathLike, name: str) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files that :func:`atomic_path` left when its process was killed
    (``kill -9`` skips its cleanup); returns what was removed. Call only while no writer runs."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = sorted(directory.glob(f".{name}.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale

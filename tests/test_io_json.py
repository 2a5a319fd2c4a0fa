"""The one JSON writer (muse._io): valid JSON or a clear error, never ``NaN`` in a file."""

from __future__ import annotations

import json
import math

import pytest

from muse._io import nonfinite_to_none, write_json, write_report_json


def _strict_load(path):
    """json.loads that rejects the NaN/Infinity tokens Python's json would otherwise accept."""

    def reject(token):
        raise AssertionError(f"invalid JSON token {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_write_json_refuses_nonfinite_and_leaves_no_file(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(ValueError, match=r"non-finite values .* \(at a\.b\[1\]\)"):
        write_json(path, {"a": {"b": [1.0, math.nan]}})
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_write_json_keeps_an_old_file_when_refusing(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"x": 1})
    with pytest.raises(ValueError):
        write_json(path, {"x": math.inf})
    assert _strict_load(path) == {"x": 1}


def test_nonfinite_to_none_lists_every_path():
    data = {"a": math.nan, "b": [1.0, -math.inf, {"c": math.inf}], "d": (2.0,), "e": "nan"}
    clean, paths = nonfinite_to_none(data)
    assert clean == {"a": None, "b": [1.0, None, {"c": None}], "d": [2.0], "e": "nan"}
    assert paths == ["a", "b[1]", "b[2].c"]
    assert data["a"] != data["a"], "the input is not modified"


def test_report_with_a_nan_measurement_is_valid_json(tmp_path):
    path = tmp_path / "report.json"
    written = write_report_json(path, {"loss": math.nan, "status": "fail", "ok": 3})
    assert _strict_load(path) == written == {"loss": None, "status": "fail", "ok": 3,
                                               "nonfinite_values": ["loss"]}

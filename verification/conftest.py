"""Fixtures of the verification suite: the ``device`` parameter (cpu, plus cuda when present)."""

from __future__ import annotations

import pytest

from verification.plugin import selected_devices


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise every test that takes ``device`` over the selected devices; cuda cases are marked ``cuda``."""
    if "device" not in metafunc.fixturenames:
        return
    params = [pytest.param(d, id=d, marks=[pytest.mark.cuda] if d == "cuda" else [])
              for d in selected_devices(metafunc.config)]
    metafunc.parametrize("device", params)

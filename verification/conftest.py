"""Fixtures of the verification suite: the ``device`` parameter (cpu, plus cuda when present) and the
``impl`` parameter (eager, compiled, triton) of the ops that have more than one implementation."""

from __future__ import annotations

import os

import pytest

from verification.harness import IMPL_ENV, IMPLS, impl_unavailable
from verification.plugin import selected_devices


def selected_impls() -> list[str]:
    """Implementations for the ``impl`` parameter: $MUSE_VERIFY_IMPL (comma-separated), else all."""
    raw = os.environ.get(IMPL_ENV, "")
    chosen = [s.strip() for s in raw.split(",") if s.strip()] or list(IMPLS)
    unknown = sorted(set(chosen) - set(IMPLS))
    if unknown:
        raise pytest.UsageError(f"{IMPL_ENV} must list implementations from {IMPLS}, got {unknown}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``device`` over the selected devices (cuda cases marked ``cuda``) and ``impl``
    over the selected implementations."""
    if "device" in metafunc.fixturenames:
        params = [pytest.param(d, id=d, marks=[pytest.mark.cuda] if d == "cuda" else [])
                  for d in selected_devices(metafunc.config)]
        metafunc.parametrize("device", params)
    if "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", selected_impls())


@pytest.fixture(autouse=True)
def _skip_unavailable_impl(request: pytest.FixtureRequest) -> None:
    params = getattr(request.node, "callspec", None)
    params = {} if params is None else params.params
    if "impl" in params:
        reason = impl_unavailable(params.get("device", "cpu"), params["impl"])
        if reason:
            pytest.skip(reason)

"""Fixtures of the verification suite: the ``impl`` parameter (eager, compiled, triton) of the ops that
have more than one implementation (the ``device`` parameter comes from ``verification.plugin``)."""

from __future__ import annotations

import os

import pytest

from verification.harness import IMPL_ENV, IMPLS, impl_unavailable


def selected_impls() -> list[str]:
    """Implementations for the ``impl`` parameter: $MUSE_VERIFY_IMPL (comma-separated), else all."""
    raw = os.environ.get(IMPL_ENV, "")
    chosen = [s.strip() for s in raw.split(",") if s.strip()] or list(IMPLS)
    unknown = sorted(set(chosen) - set(IMPLS))
    if unknown:
        raise pytest.UsageError(f"{IMPL_ENV} must list implementations from {IMPLS}, got {unknown}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``impl`` over the selected implementations."""
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

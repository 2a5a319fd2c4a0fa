"""Fixtures shared by the tests in every subfolder (this directory is on sys.path, so ``_helpers`` imports)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def _one_thread():
    """One intra-op thread per test process: with pytest-xdist on 2 cores, more only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Fixtures for the plasticity tests (helpers live in plasticity_helpers.py)."""

from __future__ import annotations

import pytest
import torch
from plasticity_helpers import QmixNet, make_batch


@pytest.fixture
def model() -> QmixNet:
    torch.manual_seed(0)
    return QmixNet()


@pytest.fixture
def batch():
    return make_batch(0)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These nets are tiny: one thread is as fast and immune to CPU contention (OpenMP
    spin-waits make a 2-thread run on a busy 2-core machine many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

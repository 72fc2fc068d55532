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

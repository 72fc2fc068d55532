"""Shared helpers for the env tests.

The repo root goes on sys.path so `knife` imports when the package is not pip-installed
(a plain `pytest` run does not add the working directory).
"""

import sys
import warnings
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture
def strict_check_env():
    """gymnasium's check_env with every warning an error, except the infinite Box bounds
    that the team contract (knife/envs/base.py) declares on purpose."""

    def run(env):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", message=r".*Box observation space m\w+ value is")
            check_env(env, skip_render_check=True)

    return run

"""Every trial config shipped in tune_configs/ validates (SMACv2 ones: only where SMACv2 is)."""

from pathlib import Path

import pytest

from knife.platform.config import ConfigError, load_trial_config

ROOT = Path(__file__).resolve().parents[1] / "tune_configs"
# Sweep files (with a `base:` trial config) are checked by the sweep tests.
TRIAL_CONFIGS = sorted(p for p in ROOT.glob("*.yaml") if "\nbase:" not in p.read_text())


@pytest.mark.parametrize("path", TRIAL_CONFIGS, ids=lambda p: p.name)
def test_shipped_trial_config_validates(path):
    try:
        cfg = load_trial_config(path)
    except ConfigError as err:
        # Real StarCraft II lives in the GPU image; here the config must say how to get it.
        assert "smacv2" in path.name and "pip install git+" in str(err), err
        return
    assert cfg.steps > 0

"""Run a benchmark's measurement in a fresh Python process (nothing imported or cached
from an earlier side) and read back what it prints last, as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

# What a child script runs before it builds a trial: local Ray sized like these machines,
# and the two calls that turn a trial config file into an Algorithm.
BUILD_PRELUDE = """
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
from knife.platform.algorithm_factory import build_algorithm
from knife.platform.config import load_trial_config
"""


def run_child(script: str, *args: str, env: Mapping[str, str] | None = None) -> Any:
    """`python -c script args...`; its last line of stdout, parsed as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])

"""A team env that raises once, mid-episode: the failing trial of the sweep tests.

`flaky:<env>` builds <env> and makes the step after the first of an episode raise, once the
env has taken `fail_after` steps, and only if `flag_file` does not exist yet; the raise
creates that file (atomically), so across the retried trial's processes it fails once.

Sweep files import it with `plugins: [flaky_env]` (the folder must be on PYTHONPATH, which
local Ray workers inherit from the driver).
"""

from __future__ import annotations

import os
from typing import Any

from knife.envs import make, register
from knife.envs.base import TeamEnv

FAMILY = "flaky:"


class FlakyError(RuntimeError):
    """The injected failure."""


def _claim(flag_file: str) -> bool:
    """True exactly once per flag file, whichever process asks first."""
    try:
        fd = os.open(flag_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def make_flaky(suffix: str, /, flag_file: str, fail_after: int = 100, **config: Any) -> TeamEnv:
    env = make(suffix, **config)
    plain_reset, plain_step = env.reset, env.step
    counts = {"steps": 0, "t": 0}

    def reset(*args: Any, **kwargs: Any) -> Any:
        counts["t"] = 0
        return plain_reset(*args, **kwargs)

    def step(action: Any) -> Any:
        mid_episode = counts["t"] > 0
        if mid_episode and counts["steps"] >= fail_after and _claim(flag_file):
            raise FlakyError(f"injected failure at env step {counts['steps']} (mid-episode)")
        counts["steps"] += 1
        counts["t"] += 1
        return plain_step(action)

    env.reset, env.step = reset, step  # instance attributes shadow the class's methods
    return env


register(FAMILY, make_flaky, family=True, replace=True)  # idempotent on re-import

"""RLlib's seeding keeps torch's deterministic mode on without importing torch._inductor
(knife.policies.torch_threads), and KNIFE_KEEP_INDUCTOR_IMPORT=1 gives torch's own call."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SEED_LIKE_RLLIB = """
import sys, torch
import knife.policies.torch_threads
from ray.rllib.utils.torch_utils import set_torch_seed
assert "torch._inductor" not in sys.modules
set_torch_seed(3)
print(torch.are_deterministic_algorithms_enabled(), "torch._inductor.config" in sys.modules)
"""


@pytest.mark.parametrize("keep, inductor", [(None, False), ("1", True)])
def test_rllib_seeding_sets_deterministic_mode_and_imports_inductor_only_if_asked(keep, inductor):
    env = {k: v for k, v in os.environ.items() if k != "KNIFE_KEEP_INDUCTOR_IMPORT"}
    if keep is not None:
        env["KNIFE_KEEP_INDUCTOR_IMPORT"] = keep
    out = subprocess.run(
        [sys.executable, "-c", SEED_LIKE_RLLIB], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", str(inductor)]

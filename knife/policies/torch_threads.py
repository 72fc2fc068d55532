"""torch's per-process settings for the processes of one trial: intra-op threads, and
RLlib's determinism flag without the torch._inductor import.

RLlib seeds every process it builds (the driver's Learner, each EnvRunner) through
`set_torch_seed`, which calls `torch.use_deterministic_algorithms(True)`. Since torch 2.1
that call imports `torch._inductor.config` to set inductor's own `deterministic` flag: the
import costs ~2 s and ~50 MB per process here (docs/performance.md), for a compiler no
knife process uses. `install_determinism_without_inductor` (run when this module is
imported, before any RLlib component is built) makes the call set the same ATen flag
(`torch.are_deterministic_algorithms_enabled()`) and skip the import; once inductor is
loaded (someone compiles; the driver's Learner loads it anyway, through torch.optim's
dynamo guard), the call is torch's own again. The EnvRunner actors are the processes that
gain (they build no optimizer).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

_TORCH_USE_DETERMINISTIC = torch.use_deterministic_algorithms
KEEP_INDUCTOR_IMPORT = "KNIFE_KEEP_INDUCTOR_IMPORT"


def _use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> Any:
    if "torch._inductor.config" in sys.modules:  # inductor is in use: keep its flag in step
        return _TORCH_USE_DETERMINISTIC(mode, warn_only=warn_only)
    torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)
    return None


def install_determinism_without_inductor() -> None:
    """Route torch.use_deterministic_algorithms through `_use_deterministic_algorithms`."""
    torch.use_deterministic_algorithms = _use_deterministic_algorithms


# KNIFE_KEEP_INDUCTOR_IMPORT=1 leaves torch's own call (benchmarks/build_time.py measures both).
if os.environ.get(KEEP_INDUCTOR_IMPORT) != "1":
    install_determinism_without_inductor()


def set_torch_threads(n: int) -> None:
    """Use `n` intra-op threads in this process; 0 leaves torch's default.

    QMIX's tensors are small, so a second thread gains little, and on a machine whose cores
    are shared (an EnvRunner beside the Learner, other trials) it spins against the other
    process: pymarl and EPyMARL use one.
    """
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)

"""torch's intra-op threads for the processes of one trial."""

from __future__ import annotations

import torch


def set_torch_threads(n: int) -> None:
    """Use `n` intra-op threads in this process; 0 leaves torch's default.

    QMIX's tensors are small, so a second thread gains little, and on a machine whose cores
    are shared (an EnvRunner beside the Learner, other trials) it spins against the other
    process: pymarl and EPyMARL use one.
    """
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)

"""One complete team episode as collected by an EnvRunner."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    """Arrays of one episode of L joint actions (obs-like fields have L+1 entries)."""

    obs: np.ndarray  # [L+1, N, obs_dim]
    state: np.ndarray  # [L+1, state_dim]
    avail_actions: np.ndarray  # [L+1, N, A]
    actions: np.ndarray  # [L, N]
    rewards: np.ndarray  # [L]
    terminated: bool  # True if the env ended it; False if truncated by the time limit
    info: dict = field(default_factory=dict)  # final info (battle_won, episode_limit)
    agent_mask: np.ndarray | None = None  # [N] 1 = real agent, 0 = padding (None: all real)
    task_index: int = 0

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())

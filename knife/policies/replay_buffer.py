"""Whole-episode replay (DESIGN 5, 11).

RLlib's EpisodeReplayBuffer slices sequences at random timesteps and counts timesteps, not
episodes, so QMIX's "batch of B whole episodes from their first step" lives here:
preallocated padded arrays, a ring over episodes, uniform sampling.

Layout of one stored episode of length L (number of joint actions) in a slot of T_max+1
steps: obs/state/avail at steps 0..L (L+1 entries, the last one is the state reached by the
final action), actions/reward/terminated/filled at steps 0..L-1. Everything else is zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from knife.policies.episode import Episode


class EpisodeReplayBuffer:
    """A ring buffer of whole episodes, padded to `max_episode_len`."""

    def __init__(
        self,
        capacity: int,
        max_episode_len: int,
        n_agents: int,
        obs_dim: int,
        state_dim: int,
        n_actions: int,
    ) -> None:
        self.capacity = capacity
        self.max_episode_len = max_episode_len
        t1 = max_episode_len + 1
        self._data: dict[str, np.ndarray] = {
            "obs": np.zeros((capacity, t1, n_agents, obs_dim), np.float32),
            "state": np.zeros((capacity, t1, state_dim), np.float32),
            "avail_actions": np.zeros((capacity, t1, n_agents, n_actions), np.float32),
            # actions has T+1 entries so that "last action" inputs line up with obs steps.
            "actions": np.zeros((capacity, t1, n_agents), np.int64),
            "reward": np.zeros((capacity, max_episode_len), np.float32),
            "terminated": np.zeros((capacity, max_episode_len), np.float32),
            "filled": np.zeros((capacity, max_episode_len), np.float32),
            # Padded agents of a task sequence (1 = real): they never enter Q_tot.
            "agent_mask": np.zeros((capacity, n_agents), np.float32),
        }
        self._lengths = np.zeros(capacity, np.int64)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, episode: Episode) -> None:
        length = episode.length
        if length > self.max_episode_len:
            raise ValueError(
                f"episode of length {length} exceeds the buffer's max_episode_len "
                f"{self.max_episode_len}"
            )
        i = self._next
        d = self._data
        per_step = {
            "obs": episode.obs,
            "state": episode.state,
            "avail_actions": episode.avail_actions,
            "actions": episode.actions,
            "reward": episode.rewards,
            "filled": np.ones(length, np.float32),
        }
        for key, values in per_step.items():
            d[key][i, : len(values)] = values
            # Zero the tail: a shorter episode must not inherit the previous occupant's.
            d[key][i, len(values) :] = 0
        d["terminated"][i] = 0.0
        d["terminated"][i, length - 1] = float(episode.terminated)
        d["agent_mask"][i] = 1.0 if episode.agent_mask is None else episode.agent_mask
        self._lengths[i] = length
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def can_sample(self, batch_size: int) -> bool:
        return self._size >= batch_size

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """B episodes uniformly, trimmed to the longest one in the batch (less padding)."""
        return self._gather(rng.choice(self._size, size=batch_size, replace=False))

    def latest(self, n: int) -> dict[str, np.ndarray]:
        """The n episodes added last (fewer if it holds fewer), oldest first; no randomness,
        so reading them leaves every random stream where it was."""
        n = min(n, self._size)
        return self._gather((self._next - n + np.arange(n)) % self.capacity)

    def _gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        t = int(self._lengths[idx].max())
        out = {}
        for k, arr in self._data.items():
            if k == "agent_mask":
                out[k] = arr[idx]
                continue
            steps = t + 1 if arr.shape[1] == self.max_episode_len + 1 else t
            out[k] = arr[idx, :steps]
        return out

    def clear(self) -> None:
        """Forget every episode (a task switch with buffer_on_switch: flush)."""
        self._next = 0
        self._size = 0

    def state_dict(self) -> dict[str, Any]:
        n = self._size
        return {
            "data": {k: v[:n].copy() for k, v in self._data.items()},
            "lengths": self._lengths[:n].copy(),
            "next": self._next,
            "size": n,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["size"]
        for k, v in state["data"].items():
            self._data[k][:n] = v
        if "agent_mask" not in state["data"]:
            self._data["agent_mask"][:n] = 1.0
        self._lengths[:n] = state["lengths"]
        self._next = state["next"]
        self._size = n

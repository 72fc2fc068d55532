"""EpisodeReplayBuffer.latest: the episodes added last, in order, across the ring's wrap
(the measurements' input at a paired branch's first switch)."""

import numpy as np

from knife.policies.episode import Episode
from knife.policies.replay_buffer import EpisodeReplayBuffer


def _episode(reward: float, length: int) -> Episode:
    return Episode(
        obs=np.zeros((length + 1, 2, 3), np.float32),
        state=np.zeros((length + 1, 4), np.float32),
        avail_actions=np.ones((length + 1, 2, 5), np.float32),
        actions=np.zeros((length, 2), np.int64),
        rewards=np.full(length, reward, np.float32),
        terminated=True,
    )


def test_latest_returns_the_last_episodes_in_order_across_the_wrap():
    buffer = EpisodeReplayBuffer(3, 4, n_agents=2, obs_dim=3, state_dim=4, n_actions=5)
    for i, length in enumerate([1, 2, 3, 4, 2]):  # 5 episodes into 3 slots: 2, 3, 4 remain
        buffer.add(_episode(float(i), length))
    latest = buffer.latest(2)
    assert latest["reward"][:, 0].tolist() == [3.0, 4.0]  # oldest first
    assert latest["filled"].sum(axis=1).tolist() == [4.0, 2.0]
    assert latest["reward"].shape == (2, 4)  # trimmed to the longest of the two
    assert buffer.latest(10)["reward"][:, 0].tolist() == [2.0, 3.0, 4.0]  # all it holds

import itertools

import numpy as np
import pytest

from knife.envs import (
    MatrixGame,
    PaddedTeamEnv,
    StagHuntEnv,
    TeamEnv,
    TeamSpec,
    agent_mask,
    make,
    padded_spec,
)
from knife.envs.matrix import CLIMBING
from knife.envs.padding import check_fits

BIG = TeamSpec(n_agents=4, n_actions=5, obs_dim=3, state_dim=2, episode_limit=5)


def test_padded_spec_is_elementwise_max():
    a = TeamSpec(2, 3, 10, 4, 100, has_win=False)
    b = TeamSpec(5, 2, 7, 9, 50, has_win=True)
    assert padded_spec([a, b]) == TeamSpec(5, 3, 10, 9, 100, has_win=True)
    assert padded_spec([a]) == a
    assert padded_spec([a, a]).has_win is False
    with pytest.raises(ValueError, match="padded_spec: needs at least one TeamSpec"):
        padded_spec([])


def test_agent_mask_and_fit_errors():
    small = TeamSpec(2, 3, 1, 1, 1)
    assert agent_mask(small, BIG).tolist() == [True, True, False, False]
    assert agent_mask(small, small).tolist() == [True, True]
    with pytest.raises(ValueError, match="padding: n_actions 6 of the env exceeds 5"):
        check_fits(TeamSpec(2, 6, 1, 1, 1), BIG)
    with pytest.raises(ValueError, match="padding: episode_limit 9 of the env exceeds 5"):
        PaddedTeamEnv(_Recorder(TeamSpec(1, 1, 1, 1, 9)), BIG)


def test_sizes_and_masks():
    env = PaddedTeamEnv(make("matrix:climbing"), BIG)
    assert env.team == BIG and env.real == TeamSpec(2, 3, 1, 1, 1)
    assert env.agent_mask.tolist() == [True, True, False, False]
    assert env.action_space.nvec.tolist() == [5, 5, 5, 5]
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["obs"].tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert obs["state"].tolist() == [1, 0]
    assert obs["avail_actions"].tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],  # padded agents: only action 0
        [1, 0, 0, 0, 0],
    ]
    obs, _, _, _, _ = env.step(np.array([0, 0, 0, 0]))
    assert env.observation_space.contains(obs)
    assert env.get_env_info()["n_agents"] == 4


def test_smaller_matrix_game_pays_the_right_payoffs():
    env = PaddedTeamEnv(make("matrix:climbing"), BIG)
    for i, j in itertools.product(range(3), range(3)):
        env.reset()
        # Padded agents' actions (any in range) are ignored.
        _, reward, terminated, truncated, _ = env.step(np.array([i, j, 0, 4]))
        assert reward == CLIMBING[i][j] and terminated and not truncated


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        ([3, 0, 0, 0], "agent 0 chose action 3, which is a padded action"),
        ([0, 4, 0, 0], "agent 1 chose action 4, which is a padded action"),
        ([0, 2, 0, 0], "agent 1 chose action 2, which is unavailable"),
        ([0, 5, 0, 0], r"each action must be in \[0, 4\]"),
        ([0, -1, 0, 0], r"each action must be in \[0, 4\]"),
        ([0, 0, 0], r"expected an integer array of shape \(4,\)"),
        ([0.0, 0.0, 0.0, 0.0], r"expected an integer array of shape \(4,\)"),
    ],
)
def test_padded_and_unavailable_actions_are_refused(actions, match):
    # Agent 1 has 2 real actions: its action 2 is the inner game's own padding.
    env = PaddedTeamEnv(MatrixGame([[1, 2], [3, 4], [5, 6]]), BIG)
    env.reset()
    with pytest.raises(ValueError, match=match):
        env.step(np.array(actions))


class _Recorder(TeamEnv):
    """Records the joint actions it is stepped with; action 1 of agent 0 unavailable."""

    def __init__(self, spec: TeamSpec | None = None) -> None:
        self._set_team(spec or TeamSpec(2, 2, 2, 3, 3))
        self.seen: list[list[int]] = []
        self.t = 0

    def _obs(self):
        n, a = self.team.n_agents, self.team.n_actions
        avail = np.ones((n, a), np.float32)
        avail[0, a - 1] = 0.0
        return {
            "obs": np.full((n, self.team.obs_dim), 7.0, np.float32),
            "state": np.full(self.team.state_dim, 3.0, np.float32),
            "avail_actions": avail,
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"from": "inner"}

    def step(self, actions):
        self.seen.append(np.asarray(actions).tolist())
        self.t += 1
        trunc = self.t >= self.team.episode_limit
        return self._obs(), 1.0, False, trunc, {"episode_limit": trunc}


def test_padded_agents_are_ignored_and_episode_ends_with_inner_env():
    inner = _Recorder()
    env = PaddedTeamEnv(inner, TeamSpec(4, 3, 4, 5, 10))
    obs, info = env.reset(seed=1)
    assert info == {"from": "inner"}
    assert obs["obs"][:2].tolist() == [[7, 7, 0, 0]] * 2 and not obs["obs"][2:].any()
    assert obs["state"].tolist() == [3, 3, 3, 0, 0]
    assert obs["avail_actions"].tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="agent 0 chose action 1, which is unavailable"):
        env.step(np.array([1, 0, 0, 0]))
    ends = []
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(np.array([0, 1, 2, 1]))
        ends.append((terminated, truncated, info["episode_limit"]))
    assert inner.seen == [[0, 1]] * 3  # the inner env never sees the padded agents
    assert ends[-1] == (False, True, True) and ends[0] == (False, False, False)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(np.array([0, 0, 0, 0]))


def test_padded_stag_hunt_steps_through_an_episode():
    inner = StagHuntEnv(n_agents=3, n_stags=2, world_shape=[5, 5], view=3, episode_limit=20)
    spec = TeamSpec(8, 6, 102, 300, 200)
    env = PaddedTeamEnv(inner, spec)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    steps = 0
    while True:
        avail = obs["avail_actions"]
        obs, _, terminated, truncated, _ = env.step((rng.random(avail.shape) * avail).argmax(1))
        assert env.observation_space.contains(obs)
        assert not obs["obs"][3:].any() and (obs["avail_actions"][3:, 0] == 1).all()
        steps += 1
        if terminated or truncated:
            break
    assert steps <= 20

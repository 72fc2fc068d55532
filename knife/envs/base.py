"""The team env contract (DESIGN 4).

Every environment is one *team*: a gymnasium.Env whose observation is a Dict with
  obs           float32 [n_agents, obs_dim]
  state         float32 [state_dim]
  avail_actions float32 [n_agents, n_actions], entries 0.0 or 1.0
and whose action is MultiDiscrete([n_actions] * n_agents). The reward is the shared team
reward; `info` carries `episode_limit` (bool: the episode was cut by the time limit) and
`battle_won` where the env has a win condition. Time-limit ends are `truncated`, never
`terminated`, so learners bootstrap through them.

avail_actions is float32 rather than int8 so that it batches with the other observation
parts without casts; the values are exactly 0.0 and 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class TeamSpec:
    """Sizes of a team env; what a learner needs to build its networks."""

    n_agents: int
    n_actions: int
    obs_dim: int
    state_dim: int
    episode_limit: int
    has_win: bool = False


def team_spaces(spec: TeamSpec) -> tuple[gym.spaces.Dict, gym.spaces.MultiDiscrete]:
    """The observation and action spaces every team env with these sizes exposes."""
    obs_space = gym.spaces.Dict(
        {
            "obs": gym.spaces.Box(-np.inf, np.inf, (spec.n_agents, spec.obs_dim), np.float32),
            "state": gym.spaces.Box(-np.inf, np.inf, (spec.state_dim,), np.float32),
            "avail_actions": gym.spaces.Box(0.0, 1.0, (spec.n_agents, spec.n_actions), np.float32),
        }
    )
    act_space = gym.spaces.MultiDiscrete([spec.n_actions] * spec.n_agents)
    return obs_space, act_space


class TeamEnv(gym.Env):
    """Base class for team envs. Subclasses set `self.spec_team` and implement reset/step."""

    metadata: dict[str, Any] = {"render_modes": []}
    team: TeamSpec

    def _set_team(self, team: TeamSpec) -> None:
        self.team = team
        self.observation_space, self.action_space = team_spaces(team)

    @property
    def n_agents(self) -> int:
        return self.team.n_agents

    @property
    def n_actions(self) -> int:
        return self.team.n_actions

    def get_env_info(self) -> dict[str, int]:
        """pymarl-style sizes, for users coming from pymarl/EPyMARL."""
        t = self.team
        return {
            "n_agents": t.n_agents,
            "n_actions": t.n_actions,
            "obs_shape": t.obs_dim,
            "state_shape": t.state_dim,
            "episode_limit": t.episode_limit,
        }

"""Vector team envs: N envs of one task stepped as one (docs/design.md 4, "Vector envs").

A `VectorTeamEnv` holds N envs of the same task and speaks in arrays with a leading env axis:

* `reset(seeds, mask=None)` starts an episode on every env where the bool mask [N] is true
  (all by default; the first reset must be of all). `seeds[k]` seeds env k as
  `reset(seed=...)` seeds a single env; None continues env k's own random stream.
* `step(actions, active)` advances only the envs where the bool mask `active` [N] is true,
  with `actions` int [N, n_agents]. It returns obs (the contract's three arrays, [N, ...]),
  rewards float [N], terminated and truncated bool [N] and one info dict per env. Rows of
  inactive envs are unspecified and their random streams do not move, so env k's episode is
  the one a single env seeded like it plays with the same actions, however long the others'
  episodes are. Tests check this for every vectorized env. The returned arrays belong to the
  env and are overwritten by its next call: copy what you keep (the runner copies each row
  into its episode buffers).

Why a separate contract and not gymnasium's VectorEnv: gymnasium's vector envs auto-reset
finished envs (a finished env's next step starts a new episode), while the lockstep runner
wants whole episodes, one per env per round, with finished envs waiting. The
`active` mask says that directly and lets a jitted env step every env in one call.

`SerialVectorEnv(envs)` fits any team env (PettingZoo, SMACv2, plugins): a Python loop over
N instances. The built-in envs have natively vectorized ones (`registry.make_vector`): the
stag hunt and the matrix games in NumPy, SMAX as one jitted, vmapped JAX call.
`PaddedVectorEnv` is `PaddedTeamEnv` for a whole batch (task sequences).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from knife.envs.base import TeamEnv, TeamSpec, team_spaces
from knife.envs.padding import agent_mask, check_fits

Obs = dict[str, np.ndarray]
StepResult = tuple[Obs, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]


class VectorTeamEnv:
    """Base of the vector envs; subclasses set `team`, `num_envs` and the spaces."""

    team: TeamSpec
    num_envs: int
    name: str = "vector"
    # bool [n_agents] when padded (PaddedVectorEnv): the task's real agents.
    agent_mask: np.ndarray | None = None

    def _set_team(self, team: TeamSpec, num_envs: int) -> None:
        self.team, self.num_envs = team, int(num_envs)
        # One env's spaces: what the module is built for (gymnasium's single_* spaces).
        self.observation_space, self.action_space = team_spaces(team)

    def _buffers(self) -> Obs:
        t, n = self.team, self.num_envs
        return {
            "obs": np.zeros((n, t.n_agents, t.obs_dim), np.float32),
            "state": np.zeros((n, t.state_dim), np.float32),
            "avail_actions": np.zeros((n, t.n_agents, t.n_actions), np.float32),
        }

    def _check_reset(
        self, seeds: Sequence[int | None], mask: Any
    ) -> tuple[list[int | None], np.ndarray]:
        """(seeds, the indices of the envs to reset)."""
        seeds = list(seeds)
        if len(seeds) != self.num_envs:
            raise ValueError(f"seeds: need one per env ({self.num_envs}), got {len(seeds)}")
        mask = np.ones(self.num_envs, bool) if mask is None else np.asarray(mask, bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"mask: expected a bool array of shape ({self.num_envs},)")
        return seeds, np.flatnonzero(mask)

    def _check_step(self, actions: Any, active: Any) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.num_envs, self.team.n_agents)
        joint, active = np.asarray(actions), np.asarray(active, bool)
        if joint.shape != shape or joint.dtype.kind not in "iu":
            raise ValueError(
                f"actions: expected an integer array of shape {shape}, "
                f"got shape {joint.shape} dtype {joint.dtype}"
            )
        if active.shape != (self.num_envs,):
            raise ValueError(f"active: expected a bool array of shape ({self.num_envs},)")
        rows = joint[active]
        if rows.size and (rows.min() < 0 or rows.max() >= self.team.n_actions):
            raise ValueError(
                f"actions: each action must be in [0, {self.team.n_actions - 1}], "
                f"got {rows.tolist()}"
            )
        return joint.astype(np.int64), active

    def reset(
        self, seeds: Sequence[int | None], mask: Any = None
    ) -> tuple[Obs, list[dict[str, Any]]]:
        raise NotImplementedError

    def step(self, actions: Any, active: Any) -> StepResult:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SerialVectorEnv(VectorTeamEnv):
    """N team envs behind the vector contract, stepped one after another (any env)."""

    def __init__(self, envs: Sequence[Any]) -> None:
        if not envs:
            raise ValueError("num_envs_per_env_runner: need at least one env")
        self.envs = list(envs)
        self.name = f"serial({getattr(envs[0], 'name', type(envs[0]).__name__)})"
        self._set_team(envs[0].team, len(self.envs))
        self.agent_mask = getattr(envs[0], "agent_mask", None)
        self._obs = self._buffers()

    def _store(self, k: int, obs: Obs) -> None:
        for key, buf in self._obs.items():
            buf[k] = obs[key]

    def reset(
        self, seeds: Sequence[int | None], mask: Any = None
    ) -> tuple[Obs, list[dict[str, Any]]]:
        seeds, rows = self._check_reset(seeds, mask)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for k in rows:
            obs, infos[k] = self.envs[k].reset(seed=seeds[k])
            self._store(k, obs)
        return self._obs, infos

    def step(self, actions: Any, active: Any) -> StepResult:
        # Each env checks its own actions (as it does when stepped alone).
        active = np.asarray(active, bool)
        n = self.num_envs
        rewards = np.zeros(n, np.float32)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        for k in np.flatnonzero(active):
            obs, reward, terminated[k], truncated[k], infos[k] = self.envs[k].step(actions[k])
            rewards[k] = reward
            self._store(k, obs)
        return self._obs, rewards, terminated, truncated, infos

    def close(self) -> None:
        for env in self.envs:
            env.close()


class PaddedVectorEnv(VectorTeamEnv):
    """A vector env seen through a larger TeamSpec: `PaddedTeamEnv`'s rules (padding.py),
    row by row; a real agent stepped with a padded or unavailable action raises."""

    def __init__(self, env: VectorTeamEnv, spec: TeamSpec) -> None:
        check_fits(env.team, spec)
        self.env, self.real = env, env.team
        self.name = f"padded({env.name})"
        self._set_team(spec, env.num_envs)
        self.agent_mask = agent_mask(self.real, spec)
        self._n, self._a = self.real.n_agents, self.real.n_actions
        self._obs = self._buffers()
        self._obs["avail_actions"][:, self._n :, 0] = 1.0  # padded agents: only action 0
        self._real_avail = np.zeros((env.num_envs, self._n, self._a), np.float32)

    def _pad(self, obs: Obs, rows: np.ndarray | slice) -> Obs:
        r = self.real
        self._obs["obs"][rows, : self._n, : r.obs_dim] = obs["obs"][rows]
        self._obs["state"][rows, : r.state_dim] = obs["state"][rows]
        self._obs["avail_actions"][rows, : self._n, : self._a] = obs["avail_actions"][rows]
        self._real_avail[rows] = obs["avail_actions"][rows]
        return self._obs

    def reset(
        self, seeds: Sequence[int | None], mask: Any = None
    ) -> tuple[Obs, list[dict[str, Any]]]:
        _, rows = self._check_reset(seeds, mask)
        obs, infos = self.env.reset(seeds, mask)
        return self._pad(obs, rows), infos

    def step(self, actions: Any, active: Any) -> StepResult:
        joint, active = self._check_step(actions, active)
        real = joint[:, : self._n]
        rows = np.flatnonzero(active)
        padded = real[rows] >= self._a
        avail = np.take_along_axis(
            self._real_avail[rows], np.minimum(real[rows], self._a - 1)[..., None], axis=2
        )[..., 0]
        bad = padded | (avail == 0.0)
        if bad.any():
            row, i = (int(x[0]) for x in np.nonzero(bad))
            k, action = int(rows[row]), int(real[rows[row], i])
            kind = "a padded action" if padded[row, i] else "unavailable"
            raise ValueError(
                f"actions: env {k}, agent {i} chose action {action}, which is {kind} "
                f"(the env has {self._a} actions; available now: "
                f"{np.flatnonzero(self._real_avail[k, i]).tolist()}); padded and "
                f"unavailable actions must be masked"
            )
        obs, rewards, terminated, truncated, infos = self.env.step(real, active)
        return self._pad(obs, rows), rewards, terminated, truncated, infos

    def close(self) -> None:
        self.env.close()


def as_vector_env(envs: VectorTeamEnv | Sequence[TeamEnv]) -> VectorTeamEnv:
    """A vector env as is; a list of single envs as a SerialVectorEnv."""
    return envs if isinstance(envs, VectorTeamEnv) else SerialVectorEnv(envs)

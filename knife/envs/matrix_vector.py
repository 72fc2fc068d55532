"""N matrix games stepped as one, in NumPy (the vector contract of knife/envs/vector.py).

One-step games: the N joint actions index the payoff in one gather. The two-step game keeps
N states. A one-step game with `noise_features` draws each env's features from that env's
own generator, in the single env's order, so env k's episodes are the single env's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from knife.envs import matrix
from knife.envs.vector import Obs, StepResult, VectorTeamEnv


class MatrixGameVector(VectorTeamEnv):
    """`num_envs` copies of one one-step game (`matrix.MatrixGame`)."""

    def __init__(self, num_envs: int, game: matrix.MatrixGame) -> None:
        self.game = game
        self.name = game.name
        self._set_team(game.team, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._obs = self._buffers()
        self._obs["obs"][:, :, 0] = self._obs["state"][:, 0] = 1.0
        self._obs["avail_actions"][:] = game._avail

    def _draw_noise(self, rows: np.ndarray) -> None:
        if not self.game.noise_features:
            return
        for k in rows:
            rng = self._rngs[k]
            if rng is None:  # as gymnasium's Env: an unseeded env seeds from OS entropy
                rng = self._rngs[k] = seeding.np_random(None)[0]
            self._obs["state"][k, 1:] = rng.standard_normal(self.game.noise_features)
        self._obs["obs"][rows] = self._obs["state"][rows, None, :]

    def reset(
        self, seeds: Sequence[int | None], mask: Any = None
    ) -> tuple[Obs, list[dict[str, Any]]]:
        seeds, rows = self._check_reset(seeds, mask)
        for k in rows:
            if seeds[k] is not None:
                self._rngs[k] = seeding.np_random(seeds[k])[0]
        self._draw_noise(rows)
        return self._obs, [{} for _ in range(self.num_envs)]

    def step(self, actions: Any, active: Any) -> StepResult:
        joint, active = self._check_step(actions, active)
        joint = np.minimum(joint, self.game._last_real)  # padded actions: as MatrixGame
        rewards = self.game.payoff[tuple(joint.T)].astype(np.float32) * active
        self._draw_noise(np.flatnonzero(active))
        infos = [{"episode_limit": False} if on else {} for on in active]
        return self._obs, rewards, active.copy(), np.zeros(self.num_envs, bool), infos


class TwoStepGameVector(VectorTeamEnv):
    """`num_envs` copies of QMIX's two-step game (`matrix.TwoStepGame`)."""

    def __init__(self, num_envs: int) -> None:
        self.name = "matrix:two_step"
        self._set_team(matrix.TwoStepGame().team, num_envs)
        self._state = np.zeros(self.num_envs, np.int64)  # 0 = 1, 1 = 2A, 2 = 2B
        self._t = np.zeros(self.num_envs, np.int64)
        self._obs = self._buffers()
        self._obs["avail_actions"][:] = 1.0
        self._payoff_2b = np.asarray(matrix.TWO_STEP_2B, np.float32)

    def _observe(self) -> Obs:
        onehot = np.eye(3, dtype=np.float32)[self._state]
        self._obs["state"][:] = onehot
        self._obs["obs"][:] = onehot[:, None, :]
        return self._obs

    def reset(
        self, seeds: Sequence[int | None], mask: Any = None
    ) -> tuple[Obs, list[dict[str, Any]]]:
        _, rows = self._check_reset(seeds, mask)  # deterministic: seeds change nothing
        self._state[rows] = 0
        self._t[rows] = 0
        return self._observe(), [{} for _ in range(self.num_envs)]

    def step(self, actions: Any, active: Any) -> StepResult:
        joint, active = self._check_step(actions, active)
        first = active & (self._t == 0)
        second = active & (self._t == 1)
        rewards = (
            np.where(
                self._state == 1,
                np.float32(matrix.TWO_STEP_2A_REWARD),
                self._payoff_2b[joint[:, 0], joint[:, 1]],
            )
            * second
        )
        # After step 1 agent 0's action picks the second-stage game; the observation on
        # termination stays that of the state the last step was played in (as TwoStepGame).
        self._state = np.where(first, 1 + joint[:, 0], self._state)
        self._t += active
        infos = [{"episode_limit": False} if on else {} for on in active]
        return self._observe(), rewards.astype(np.float32), second, np.zeros_like(second), infos


def make_one_step_vector(game: str, num_envs: int, config: Mapping[str, Any]) -> MatrixGameVector:
    return MatrixGameVector(num_envs, matrix.make_one_step(game, config))


def make_two_step_vector(num_envs: int, config: Mapping[str, Any]) -> TwoStepGameVector:
    matrix.validate_two_step(config)
    return TwoStepGameVector(num_envs)

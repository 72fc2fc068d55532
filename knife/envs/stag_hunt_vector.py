"""N stag hunts stepped as one, in NumPy (the vector contract of knife/envs/vector.py).

The rules are stag_hunt.py's, applied to every env at once: the N grids are one flat array
(env k's cells at k * n_cells + cell), so a catch, a move or an observation of all N envs is
one gather or one bincount. Prey keep fixed slots with an `alive` mask instead of being
removed. The only per-env Python loop left draws each env's random numbers from its own
generator (the reset's layout, the prey moves), in the order the single env draws them, so
env k plays exactly the episode `StagHuntEnv` seeded like it plays with the same actions
(tests/envs/test_vector_envs.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from knife.envs import stag_hunt as sh
from knife.envs.vector import Obs, StepResult, VectorTeamEnv


class StagHuntVectorEnv(VectorTeamEnv):
    """`num_envs` stag hunts with one config; `StagHuntVectorEnv(8, n_agents=4)`."""

    def __init__(self, num_envs: int, **config: Any) -> None:
        # The single env validates the config and holds the grid geometry (flat offsets,
        # border, look-up tables); this class reads it rather than computing it twice.
        geo = self._geo = sh.StagHuntEnv(**config)
        self.cfg = cfg = geo.cfg
        self.name = sh.ENV_NAME
        self._set_team(geo.team, num_envs)
        n, c = self.num_envs, geo._n_cells
        self._base = np.arange(n, dtype=np.int64) * c  # env k's first flat cell
        self._kind = np.repeat(np.array([0, 1], np.int64), [cfg.n_stags, cfg.n_hares])
        self._need = geo._need_of_kind[self._kind]  # catchers each prey slot needs
        self._grid = np.tile(geo._blank, n)
        self._agents = np.zeros((n, cfg.n_agents), np.int64)
        self._prey = np.zeros((n, len(self._kind)), np.int64)
        self._alive = np.zeros((n, len(self._kind)), bool)
        self._captured = np.zeros((n, 2), np.int64)
        self._t = np.zeros(n, np.int64)
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._obs = self._buffers()
        self._obs["avail_actions"][:, :, sh.STAY] = 1.0  # stay is always available

    def reset(
        self, seeds: Sequence[int | None], mask: Any = None
    ) -> tuple[Obs, list[dict[str, Any]]]:
        cfg, geo = self.cfg, self._geo
        seeds, rows = self._check_reset(seeds, mask)
        n_total = cfg.n_agents + len(self._kind)
        for k in rows:
            if seeds[k] is not None or self._rngs[k] is None:
                self._rngs[k] = seeding.np_random(seeds[k])[0]  # as gymnasium's Env.reset
            cells = self._rngs[k].choice(geo.rows * geo.cols, n_total, replace=False)
            flat = geo._inside[cells]  # row-major grid cell -> flat index, as _flat()
            self._agents[k], self._prey[k] = flat[: cfg.n_agents], flat[cfg.n_agents :]
        self._alive[rows] = True
        self._captured[rows] = 0
        self._t[rows] = 0
        grid = self._grid.reshape(self.num_envs, -1)
        grid[rows] = geo._blank
        base = self._base[rows, None]
        self._grid[base + self._agents[rows]] = sh.AGENT
        self._grid[base + self._prey[rows]] = sh.STAG + self._kind
        return self._observe(), [{} for _ in range(self.num_envs)]

    def step(self, actions: Any, active: Any) -> StepResult:
        a, active = self._check_step(actions, active)
        a = np.where(active[:, None], a, sh.STAY)  # waiting envs: nobody moves or catches
        rewards = self._resolve_catches(a)
        self._move_agents(a)
        if self.cfg.prey_move_prob > 0.0:
            self._move_prey(active)
        self._t += active
        terminated = active & ~self._alive.any(axis=1)
        truncated = active & ~terminated & (self._t >= self.cfg.episode_limit)
        infos = [
            {
                "episode_limit": bool(truncated[k]),
                "stags_captured": int(self._captured[k, 0]),
                "hares_captured": int(self._captured[k, 1]),
            }
            if active[k]
            else {}
            for k in range(self.num_envs)
        ]
        return self._observe(), rewards.astype(np.float32), terminated, truncated, infos

    # ---------------------------------------------------------------- rules, all envs

    def _resolve_catches(self, a: np.ndarray) -> np.ndarray:
        catching = a == sh.CATCH  # [N, A]
        dist = np.abs(self._prey[:, :, None] - self._agents[:, None, :])  # [N, P, A]
        adj = ((dist == 1) | (dist == self._geo._wp)) & catching[:, None, :]
        adj &= self._alive[:, :, None]
        captured = adj.sum(axis=2) >= self._need  # [N, P]
        helped = (adj & captured[:, :, None]).any(axis=1).sum(axis=1)
        n_failed = catching.sum(axis=1) - helped
        kinds = np.stack([(captured & (self._kind == j)).sum(axis=1) for j in (0, 1)], axis=1)
        self._captured += kinds
        self._grid[(self._base[:, None] + self._prey)[captured]] = sh.EMPTY
        self._alive &= ~captured
        return kinds @ self._geo._reward_of_kind + self.cfg.punishment * n_failed

    def _claim(self, tgt: np.ndarray, go: np.ndarray) -> np.ndarray:
        """go, minus the movers whose target cell another mover of the same env wants."""
        claims = np.bincount(tgt[go], minlength=len(self._grid))
        return go & (claims[tgt] == 1)

    def _move_agents(self, a: np.ndarray) -> None:
        pos = self._base[:, None] + self._agents
        tgt = pos + self._geo._offs[np.minimum(a, sh.RIGHT)]
        go = self._claim(tgt, (a < sh.STAY) & (self._grid[tgt] == sh.EMPTY))
        self._grid[pos[go]] = sh.EMPTY
        self._grid[tgt[go]] = sh.AGENT
        self._agents[go] = (tgt - self._base[:, None])[go]

    def _move_prey(self, active: np.ndarray) -> None:
        u = np.zeros(self._prey.shape + (5,))
        for k in np.flatnonzero(active):
            m = int(self._alive[k].sum())
            if m:  # the single env draws nothing once every prey is caught
                u[k, self._alive[k]] = self._rngs[k].random((m, 5))
        pos = self._base[:, None] + self._prey
        nb = pos[:, :, None] + self._geo._offs  # [N, P, 4]
        free = self._grid[nb] == sh.EMPTY
        pick = np.argmax(u[:, :, 1:] * free, axis=2)[..., None]
        tgt = np.take_along_axis(nb, pick, axis=2)[..., 0]
        go = np.take_along_axis(free, pick, axis=2)[..., 0] & self._alive & active[:, None]
        if self.cfg.prey_move_prob < 1.0:
            go &= u[:, :, 0] < self.cfg.prey_move_prob
        go = self._claim(tgt, go)
        self._grid[pos[go]] = sh.EMPTY
        self._grid[tgt[go]] = (sh.STAG + np.broadcast_to(self._kind, go.shape))[go]
        self._prey[go] = (tgt - self._base[:, None])[go]

    # ---------------------------------------------------------------- views, all envs

    def _observe(self) -> Obs:
        geo, n = self._geo, self.num_envs
        agents = self._base[:, None] + self._agents  # [N, A]
        cells = self._grid[agents[:, :, None] + geo._view_offs]  # [N, A, view*view]
        obs = self._obs["obs"]
        view = obs[:, :, : geo._n_view].reshape(n, self.cfg.n_agents, len(sh.OBS_CHANNELS), -1)
        view[:] = sh._OBS_LUT[:, cells].transpose(1, 2, 0, 3)  # [C, N, A, V] -> [N, A, C, V]
        if self.cfg.obs_position:
            obs[:, :, geo._n_view :] = geo._pos_feat[self._agents]
        grid = self._grid.reshape(n, -1)
        self._obs["state"][:] = (
            sh._STATE_LUT[:, grid[:, geo._inside]].transpose(1, 0, 2).reshape(n, -1)
        )
        near = self._grid[agents[:, :, None] + geo._offs]  # [N, A, 4]
        avail = self._obs["avail_actions"]
        avail[:, :, : sh.STAY] = near == sh.EMPTY
        avail[:, :, sh.CATCH] = sh._IS_PREY[near].any(axis=2)
        return self._obs

    def close(self) -> None:
        self._geo.close()


def make_stag_hunt_vector(num_envs: int, config: dict[str, Any]) -> StagHuntVectorEnv:
    return StagHuntVectorEnv(num_envs, **config)

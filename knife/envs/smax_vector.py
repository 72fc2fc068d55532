"""N SMAX envs stepped as one jitted, vmapped JAX call (the vector contract, vector.py).

`SMAXVectorEnv("protoss_5_vs_5", 32)` holds the N envs' JAX states stacked on the device;
a step is one call of SMAXCore's vmapped step and one device_get of an [N, packed] array,
so the cost per env step falls with N instead of staying one Python call per env (measured
in benchmarks/update_and_sampling.py). Env k derives its key from its seed as `SMAXEnv`
does, and a waiting env's state and key do not move, so env k plays `SMAXEnv`'s episode
for that seed and those actions (tests/envs/test_vector_envs.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from knife.envs.smax import FAMILY, SMAXScenario, _load_core, parse_scenario
from knife.envs.vector import Obs, StepResult, VectorTeamEnv


class SMAXVectorEnv(VectorTeamEnv):
    """`num_envs` SMAX envs of one scenario config."""

    def __init__(self, scenario: str, num_envs: int, /, **config: Any) -> None:
        self.scenario: SMAXScenario = parse_scenario(scenario, config)
        self.name = FAMILY + scenario
        self.core = _load_core(self.scenario.core_key())
        self._set_team(self.scenario.team_spec(), num_envs)
        self._keys: Any = None
        self._states: Any = None
        self._t = np.zeros(self.num_envs, np.int64)

    def reset(
        self, seeds: Sequence[int | None], mask: Any = None
    ) -> tuple[Obs, list[dict[str, Any]]]:
        seeds, rows = self._check_reset(seeds, mask)
        if self._states is None and len(rows) < self.num_envs:
            raise ValueError(f"mask: {self.name}'s first reset must reset every env")
        host_keys = None if self._keys is None else np.array(self._keys)
        for k in rows:
            if seeds[k] is not None or host_keys is None:
                # SMAXEnv.reset: gymnasium seeds np_random from the seed, the key from it.
                rng = seeding.np_random(seeds[k])[0]
                key = np.asarray(self.core.make_key(int(rng.integers(2**31 - 1))))
                if host_keys is None:
                    host_keys = np.zeros((self.num_envs, *key.shape), key.dtype)
                host_keys[k] = key
        if self._states is None:
            self._keys, self._states, out = self.core.reset_many(host_keys)
        else:
            mask = np.zeros(self.num_envs, bool)
            mask[rows] = True
            self._keys, self._states, out = self.core.reset_rows(host_keys, self._states, mask)
        obs, state, avail, _, types = out
        self._t[rows] = 0
        n, names = self.team.n_agents, self.core.unit_type_names
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for k in rows:
            drawn = [names[t] for t in types[k].astype(int)]
            infos[k] = {"ally_unit_types": drawn[:n], "enemy_unit_types": drawn[n:]}
        return {"obs": obs, "state": state, "avail_actions": avail}, infos

    def step(self, actions: Any, active: Any) -> StepResult:
        if self._states is None:
            raise RuntimeError(f"{self.name}: step() before reset()")
        joint, active = self._check_step(actions, active)
        self._keys, self._states, out = self.core.step_rows(
            self._keys, self._states, joint.astype(np.int32), active
        )
        obs, state, avail, alive, reward, terminated, won = out
        self._t += active
        terminated = active & (terminated > 0)
        truncated = active & ~terminated & (self._t >= self.scenario.episode_limit)
        n = self.team.n_agents
        dead_allies = n - alive[:, :n].sum(axis=1)
        dead_enemies = alive.shape[1] - n - alive[:, n:].sum(axis=1)
        infos = [
            {
                "battle_won": bool(won[k]),
                "episode_limit": bool(truncated[k]),
                "dead_allies": int(dead_allies[k]),
                "dead_enemies": int(dead_enemies[k]),
            }
            if active[k]
            else {}
            for k in range(self.num_envs)
        ]
        obs_dict = {"obs": obs, "state": state, "avail_actions": avail}
        return obs_dict, reward.astype(np.float32), terminated, truncated, infos

    def close(self) -> None:
        self._keys = self._states = None


def make_smax_vector(scenario: str, num_envs: int, /, **config: Any) -> SMAXVectorEnv:
    return SMAXVectorEnv(scenario, num_envs, **config)

"""A test double of SMACv2's StarCraftCapabilityEnvWrapper (no StarCraft II needed).

It follows shared/reference/smacv2_env_info.md and nothing in knife: the same constructor
(`capability_config=..., map_name="10gen_<race>", **env_args`) and methods (reset, step ->
(reward, terminated, info), get_obs, get_state, get_avail_actions, get_env_info, get_stats,
close), the table's sizes, and SMACv2's action rules: 0 no-op (only, and always, for dead
units), 1 stop, 2-5 moves, 6 + j attack enemy j; stepping an unavailable action asserts as the
real game loop does. The battle is a toy: each attack kills its target with probability
`kill_prob`, each living enemy kills a random ally with probability `enemy_kill_prob`.

`FakeSMACv2(...)` is the factory an env is given (`_wrapper_factory`); it records every wrapper
it built and can inject faults into the first `faulty` wrappers:
  crash_on_step=k       the k-th step() call of a wrapper raises ConnectionError;
  crash_on_reset=True   reset() raises ConnectionError;
  restart_on_step=k     the k-th step() returns (0, True, {}) as SMACv2 does after it caught a
                        protocol error and restarted the game itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The reference table: scenario -> (n_agents, n_enemies, obs, state, n_actions).
REFERENCE_SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "protoss_5_vs_5": (5, 5, 92, 130, 11),
    "terran_5_vs_5": (5, 5, 82, 120, 11),
    "zerg_5_vs_5": (5, 5, 82, 120, 11),
    "protoss_10_vs_10": (10, 10, 182, 310, 16),
    "terran_10_vs_10": (10, 10, 162, 290, 16),
    "zerg_10_vs_10": (10, 10, 162, 290, 16),
    "protoss_10_vs_11": (10, 11, 191, 327, 17),
    "terran_10_vs_11": (10, 11, 170, 306, 17),
    "zerg_10_vs_11": (10, 11, 170, 306, 17),
    "protoss_20_vs_20": (20, 20, 362, 820, 26),
    "terran_20_vs_20": (20, 20, 322, 780, 26),
    "zerg_20_vs_20": (20, 20, 322, 780, 26),
    "protoss_20_vs_23": (20, 23, 389, 901, 29),
    "terran_20_vs_23": (20, 23, 346, 858, 29),
    "zerg_20_vs_23": (20, 23, 346, 858, 29),
}
REFERENCE_ENV_ARGS: dict[str, Any] = {
    "conic_fov": False,
    "use_unit_ranges": True,
    "min_attack_range": 2,
    "obs_own_pos": True,
    "obs_last_action": False,
    "state_last_action": True,
    "reward_only_positive": True,
    "reward_scale_rate": 20,
    "difficulty": "7",
}
REFERENCE_UNITS = {
    "protoss": ["stalker", "zealot", "colossus"],
    "terran": ["marine", "marauder", "medivac"],
    "zerg": ["zergling", "hydralisk", "baneling"],
}
REFERENCE_EXCEPTIONS = {"protoss": None, "terran": ["medivac"], "zerg": ["baneling"]}
EPISODE_LIMIT = 200


def reference_capability_config(race: str, n_units: int, n_enemies: int) -> dict[str, Any]:
    """The official capability config (as the reference file writes it) for one scenario."""
    team_gen: dict[str, Any] = {
        "dist_type": "weighted_teams",
        "unit_types": list(REFERENCE_UNITS[race]),
        "weights": [0.45, 0.45, 0.1],
        "observe": True,
    }
    if REFERENCE_EXCEPTIONS[race] is not None:
        team_gen["exception_unit_types"] = list(REFERENCE_EXCEPTIONS[race])
    return {
        "n_units": n_units,
        "n_enemies": n_enemies,
        "team_gen": team_gen,
        "start_positions": {
            "dist_type": "surrounded_and_reflect",
            "p": 0.5,
            "map_x": 32,
            "map_y": 32,
        },
    }


class FakeCapabilityWrapper:
    """One 'StarCraft II game'; built by FakeSMACv2."""

    def __init__(
        self,
        faults: dict[str, Any],
        options: dict[str, Any],
        capability_config: dict[str, Any],
        map_name: str,
        **env_args: Any,
    ) -> None:
        assert map_name.startswith("10gen_"), map_name
        self.race = map_name[len("10gen_") :]
        assert self.race in REFERENCE_UNITS, map_name
        self.received = {
            "capability_config": _plain(capability_config),
            "map_name": map_name,
            "env_args": dict(env_args),
        }
        # The real wrapper writes env_key/n_units/n_enemies into each distribution config.
        for key, sub in capability_config.items():
            if isinstance(sub, dict):
                sub.update(
                    env_key=key,
                    n_units=capability_config["n_units"],
                    n_enemies=capability_config["n_enemies"],
                )
        self.n_agents = int(capability_config["n_units"])
        self.n_enemies = int(capability_config["n_enemies"])
        self.scenario = f"{self.race}_{self.n_agents}_vs_{self.n_enemies}"
        if self.scenario in REFERENCE_SIZES:
            _, _, self.obs_size, self.state_size, self.n_actions = REFERENCE_SIZES[self.scenario]
        else:  # sizes outside the table: counted the way SMACv2 counts its features
            shield = self.race == "protoss"
            unit = 4 + 1 + shield + 3  # visible, distance, dx, dy, health, shield, types
            self.n_actions = 6 + max(self.n_agents, self.n_enemies)
            self.obs_size = 4 + unit * (self.n_agents - 1 + self.n_enemies) + 1 + shield + 3 + 2
            self.state_size = (
                self.n_agents * (4 + shield + 3)
                + self.n_enemies * (3 + shield + 3)
                + self.n_agents * self.n_actions
            )
        self.episode_limit = int(options.get("episode_limit", EPISODE_LIMIT))
        self.kill_prob = float(options.get("kill_prob", 0.35))
        self.enemy_kill_prob = float(options.get("enemy_kill_prob", 0.03))
        self.faults = faults
        self.rng = np.random.default_rng(env_args.get("seed"))
        self.closed = False
        self.resets = 0
        self.steps_called = 0
        self.battles_won = 0
        self.battles_game = 0
        self.ally_alive = np.ones(self.n_agents, bool)
        self.enemy_alive = np.ones(self.n_enemies, bool)
        self.t = 0

    # -- the reference API

    def get_env_info(self) -> dict[str, int]:
        return {
            "state_shape": self.state_size,
            "obs_shape": self.obs_size,
            "n_actions": self.n_actions,
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }

    def reset(self) -> tuple[list[np.ndarray], np.ndarray]:
        assert not self.closed, "reset() on a closed game"
        if self.faults.get("crash_on_reset"):
            raise ConnectionError("fake: StarCraft II did not answer (reset)")
        self.resets += 1
        self.ally_alive[:] = True
        self.enemy_alive[:] = True
        self.t = 0
        self._roll_ranges()
        return self.get_obs(), self.get_state()

    def step(self, actions: list[int]) -> tuple[float, bool, dict[str, Any]]:
        assert not self.closed, "step() on a closed game"
        self.steps_called += 1
        if self.faults.get("crash_on_step") == self.steps_called:
            raise ConnectionError("fake: StarCraft II connection lost")
        if self.faults.get("restart_on_step") == self.steps_called:
            return 0, True, {}
        assert len(actions) == self.n_agents
        avail = self.get_avail_actions()
        for i, a in enumerate(actions):
            assert avail[i][a] == 1, f"Agent {i} cannot perform action {a}"
        self.t += 1
        killed = 0
        for a in actions:
            j = a - 6
            if j >= 0 and self.enemy_alive[j] and self.rng.random() < self.kill_prob:
                self.enemy_alive[j] = False
                killed += 1
        for _ in range(int(self.enemy_alive.sum())):
            alive = np.flatnonzero(self.ally_alive)
            if len(alive) and self.rng.random() < self.enemy_kill_prob:
                self.ally_alive[self.rng.choice(alive)] = False
        reward = 20.0 * killed / self.n_enemies
        info: dict[str, Any] = {
            "battle_won": False,
            "dead_allies": int((~self.ally_alive).sum()),
            "dead_enemies": int((~self.enemy_alive).sum()),
        }
        terminated = False
        if not self.enemy_alive.any() or not self.ally_alive.any():
            terminated = True
            self.battles_game += 1
            if not self.enemy_alive.any() and self.ally_alive.any():
                info["battle_won"] = True
                self.battles_won += 1
        elif self.t >= self.episode_limit:
            terminated = True
            self.battles_game += 1
            info["episode_limit"] = True
        self._roll_ranges()
        return reward, terminated, info

    def get_obs(self) -> list[np.ndarray]:
        obs = self.rng.random((self.n_agents, self.obs_size), np.float32)
        obs[~self.ally_alive] = 0.0
        return list(obs)

    def get_state(self) -> np.ndarray:
        return self.rng.random(self.state_size, np.float32)

    def get_avail_actions(self) -> list[list[int]]:
        out = []
        for i in range(self.n_agents):
            row = [0] * self.n_actions
            if not self.ally_alive[i]:
                row[0] = 1
            else:
                row[1:6] = [1] * 5
                for j in range(self.n_enemies):
                    row[6 + j] = int(self.enemy_alive[j] and self.in_range[i, j])
            out.append(row)
        return out

    def get_stats(self) -> dict[str, Any]:
        return {"battles_won": self.battles_won, "battles_game": self.battles_game}

    def close(self) -> None:
        self.closed = True

    def _roll_ranges(self) -> None:
        self.in_range = self.rng.random((self.n_agents, self.n_enemies)) < 0.6


class FakeSMACv2:
    """Factory standing in for the StarCraftCapabilityEnvWrapper class."""

    def __init__(self, *, faulty: int = 0, **options: Any) -> None:
        fault_keys = ("crash_on_step", "crash_on_reset", "restart_on_step")
        self.faults = {k: options.pop(k) for k in fault_keys if k in options}
        self.faulty = faulty
        self.options = options
        self.built: list[FakeCapabilityWrapper] = []

    def __call__(self, **kwargs: Any) -> FakeCapabilityWrapper:
        faults = self.faults if len(self.built) < self.faulty else {}
        wrapper = FakeCapabilityWrapper(faults, self.options, **kwargs)
        self.built.append(wrapper)
        return wrapper


def _plain(value: Any) -> Any:
    """A deep copy of nested dicts/lists, so later mutation does not change the record."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value

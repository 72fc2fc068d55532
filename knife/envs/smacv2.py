"""`smacv2:<scenario>`: real SMACv2 (StarCraft II) as a team env.

Scenarios are `<race>_<N>_vs_<M>` with race protoss, terran or zerg and 1 <= N <= M; SMACv2
publishes results for 5_vs_5, 10_vs_10, 20_vs_20, 10_vs_11 and 20_vs_23 (`STANDARD_SCENARIOS`).
Each builds SMACv2's `StarCraftCapabilityEnvWrapper(capability_config=..., map_name=
"10gen_<race>", **env_args)` with the official capability config and env args
(`official_config`; shared/reference/smacv2_env_info.md): weighted teams over the race's
three unit types (0.45/0.45/0.1; terran medivacs and zerg banelings may not make up a whole
team), surrounded_and_reflect start positions (p = 0.5) on the 32x32 map, episode limit 200.

Install (smacv2 is imported only when an env is built): `pip install
git+https://github.com/oxwhirl/smacv2.git`, the StarCraft II 4.10 Linux binary at `$SC2PATH`
(default ~/StarCraftII) and SMACv2's maps in `$SC2PATH/Maps/SMAC_Maps`. The GPU Docker image
has all of it; `smax:<scenario>` is the offline stand-in (knife/envs/smax.py).

Config: `env_args` (mapping, merged over the official env args, e.g. {difficulty: "5"};
`capability_config` and `map_name` are the scenario's and cannot be overridden), `max_restarts`
(default 3, see below). Observation, state and masks come from get_obs(), get_state() and
get_avail_actions(); sizes from get_env_info() (`team_spec` computes them without smacv2).
The SMACv2 step returns (reward, terminated, info): a time-out (info['episode_limit'] true)
becomes `truncated`, any other end `terminated`; info carries `battle_won`, `episode_limit`,
`env_crashed` and SMACv2's `dead_allies`/`dead_enemies`. An action the mask rules out raises a
ValueError here (SMACv2 would assert inside the game loop).

StarCraft II crashes
--------------------
StarCraft II processes die now and then (lost websocket, hung game). A trial survives that:
* an exception from the wrapper's step() ends the episode as *lost*: step returns the last
  good observation, reward 0, terminated=False, truncated=True (so learners bootstrap instead
  of reading it as a defeat), info['env_crashed']=True and info['env_error'] the error; the
  broken wrapper is closed and the next reset() builds a new one (a fresh StarCraft II).
  SMACv2 itself catches protocol errors, restarts the game and returns (0, True, {}); that
  empty info is reported the same way (the wrapper is kept, it has already restarted);
* an exception from reset() closes the wrapper and retries with a new one, inside reset();
* failures are counted while they come in a row (an episode that ends normally clears the
  count); the failure after `max_restarts` consecutive ones raises a RuntimeError with the
  last error, so a broken installation fails the trial instead of looping.
`restarts` counts the game restarts after failures; each failure is logged as a warning.

Seeding: SMACv2 draws teams and positions from unseeded generators, so episodes do not repeat
under a seed. A seed given to reset() is passed to StarCraft II (env_args `seed`) when the game
is (re)started; one given before the first episode applies at once (the unlaunched wrapper is
rebuilt), later ones at the next restart. close() closes the game; a later reset() starts a new
one.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from knife.envs._smacv2_races import (
    EPISODE_LIMIT,
    EXCEPTION_UNIT_TYPES,
    MAP_SIZE,
    RACE_UNIT_TYPES,
    STANDARD_SCENARIOS,
    WEIGHTS,
    MissingDependencyError,
    RaceScenario,
    has_module,
    parse_race_scenario,
)
from knife.envs.base import TeamEnv, TeamSpec
from knife.envs.validation import check_actions, get_int

logger = logging.getLogger(__name__)

FAMILY = "smacv2:"
CONFIG_KEYS = ("env_args", "max_restarts")
_HIDDEN_KEYS = ("_wrapper_factory",)  # tests inject a stand-in wrapper class through this
_RESERVED_ENV_ARGS = ("capability_config", "map_name")
DEFAULT_MAX_RESTARTS = 3
OFFICIAL_ENV_ARGS: dict[str, Any] = {
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
INSTALL_HINT = (
    "install SMACv2 with `pip install git+https://github.com/oxwhirl/smacv2.git`, put the "
    "StarCraft II 4.10 Linux binary at $SC2PATH (default ~/StarCraftII) and SMACv2's maps "
    "(smacv2/env/starcraft2/maps/SMAC_Maps from its git repository) in "
    "$SC2PATH/Maps/SMAC_Maps, or run in the GPU Docker image, which has all of it; "
    "or use the offline stand-in smax:<scenario> (pip install 'knife-marl[smax]')"
)

WrapperFactory = Callable[..., Any]


def scenarios() -> list[str]:
    return list(STANDARD_SCENARIOS)


def parse_scenario(scenario: str) -> RaceScenario:
    race = parse_race_scenario(scenario)
    if race is None:
        raise ValueError(
            f"env: unknown smacv2 scenario {scenario!r}; available: {', '.join(scenarios())} "
            f"(or any <protoss|terran|zerg>_<N>_vs_<M> with N <= M)"
        )
    return race


def official_config(scenario: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(map_name, capability_config, env_args) of SMACv2's official config for `scenario`."""
    sc = parse_scenario(scenario)
    team_gen: dict[str, Any] = {
        "dist_type": "weighted_teams",
        "unit_types": list(RACE_UNIT_TYPES[sc.race]),
        "weights": list(WEIGHTS),
        "observe": True,
    }
    if EXCEPTION_UNIT_TYPES[sc.race]:  # the official protoss config has no such key
        team_gen["exception_unit_types"] = list(EXCEPTION_UNIT_TYPES[sc.race])
    capability = {
        "n_units": sc.n_units,
        "n_enemies": sc.n_enemies,
        "team_gen": team_gen,
        "start_positions": {
            "dist_type": "surrounded_and_reflect",
            "p": 0.5,
            "map_x": MAP_SIZE,
            "map_y": MAP_SIZE,
        },
    }
    return f"10gen_{sc.race}", capability, dict(OFFICIAL_ENV_ARGS)


def team_spec(scenario: str) -> TeamSpec:
    """Sizes of `smacv2:<scenario>` under the official env args, without smacv2.

    SMACv2's feature counts: obs = 4 move features + per other unit (ally or enemy) 8 + s
    features (visible/attackable, distance, dx, dy, health, [shield], 3 unit-type bits) + own
    6 + s (health, [shield], 3 type bits, x, y); state = per ally 7 + s (health, cooldown, x,
    y, [shield], 3 bits) + per enemy 6 + s + every ally's last action one-hot; s = 1 for
    protoss (shields). Attack actions: one per enemy, max(N, M) for terran medivacs (M here).
    """
    sc = parse_scenario(scenario)
    n, m = sc.n_units, sc.n_enemies
    s = 1 if sc.race == "protoss" else 0
    n_actions = 6 + max(n, m)
    return TeamSpec(
        n_agents=n,
        n_actions=n_actions,
        obs_dim=4 + (n - 1 + m) * (8 + s) + 6 + s,
        state_dim=n * (7 + s) + m * (6 + s) + n * n_actions,
        episode_limit=EPISODE_LIMIT,
        has_win=True,
    )


def _parse_config(scenario: str, config: Mapping[str, Any]) -> dict[str, Any]:
    for key in config:
        if key not in CONFIG_KEYS and key not in _HIDDEN_KEYS:
            raise ValueError(
                f"env_config: unknown key {key!r} for smacv2:{scenario}; allowed: "
                f"{', '.join(CONFIG_KEYS)}"
            )
    env_args = config.get("env_args") or {}
    if not isinstance(env_args, Mapping) or not all(isinstance(k, str) for k in env_args):
        raise ValueError(
            f"env_config.env_args: must be a mapping of SMACv2 env arguments, got {env_args!r}"
        )
    for key in _RESERVED_ENV_ARGS:
        if key in env_args:
            raise ValueError(
                f"env_config.env_args.{key}: set by the scenario name (smacv2:{scenario}); "
                f"remove it"
            )
    factory = config.get("_wrapper_factory")
    if factory is not None and not callable(factory):
        raise ValueError(f"env_config._wrapper_factory: must be callable, got {factory!r}")
    return {
        "env_args": {**OFFICIAL_ENV_ARGS, **env_args},
        "max_restarts": get_int(config, "max_restarts", DEFAULT_MAX_RESTARTS, min_value=0),
        "factory": factory,
    }


def _missing(scenario: str, err: BaseException | None = None) -> MissingDependencyError:
    detail = f" ({err})" if err is not None else ""
    return MissingDependencyError(
        f"env: smacv2:{scenario} needs SMACv2 and StarCraft II, and smacv2 is not installed"
        f"{detail}; {INSTALL_HINT}",
        name="smacv2",
    )


def _import_wrapper(scenario: str) -> WrapperFactory:
    try:
        module = importlib.import_module("smacv2.env.starcraft2.wrapper")
    except ImportError as err:
        raise _missing(scenario, err) from err
    return module.StarCraftCapabilityEnvWrapper


def validate_smacv2(scenario: str, config: Mapping[str, Any]) -> None:
    """Check a scenario and config without starting anything (registry validator)."""
    parse_scenario(scenario)
    cfg = _parse_config(scenario, config)
    if cfg["factory"] is None and not has_module("smacv2"):
        raise _missing(scenario)


class SMACv2Env(TeamEnv):
    """A SMACv2 scenario as a team env; `SMACv2Env("protoss_5_vs_5")`."""

    def __init__(self, scenario: str = "protoss_5_vs_5", /, **config: Any) -> None:
        self.race_scenario = parse_scenario(scenario)
        self.name = FAMILY + scenario
        cfg = _parse_config(scenario, config)
        self.max_restarts: int = cfg["max_restarts"]
        self._env_args: dict[str, Any] = cfg["env_args"]
        self._factory: WrapperFactory = cfg["factory"] or _import_wrapper(scenario)
        self.map_name, self._capability, _ = official_config(scenario)
        self._seed: int | None = None
        self._wrapper: Any = None
        self._started = False  # the current wrapper has begun an episode (game launched)
        self._failures = 0  # consecutive failures; a normal episode end clears it
        self.restarts = 0
        self._last: dict[str, np.ndarray] | None = None
        self._done = True
        # Building the wrapper does not launch StarCraft II; get_env_info() works without it.
        self._wrapper = self._build()
        info = self._wrapper.get_env_info()
        self._set_team(
            TeamSpec(
                n_agents=int(info["n_agents"]),
                n_actions=int(info["n_actions"]),
                obs_dim=int(info["obs_shape"]),
                state_dim=int(info["state_shape"]),
                episode_limit=int(info["episode_limit"]),
                has_win=True,
            )
        )

    # ------------------------------------------------------------------ wrapper life cycle

    def _build(self) -> Any:
        env_args = dict(self._env_args)
        if self._seed is not None:
            env_args["seed"] = self._seed
        # A fresh copy each time: SMACv2's wrapper writes into the config it is given.
        return self._factory(
            capability_config=copy.deepcopy(self._capability),
            map_name=self.map_name,
            **env_args,
        )

    def _close_wrapper(self) -> None:
        wrapper, self._wrapper = self._wrapper, None
        self._started = False
        if wrapper is not None:
            try:
                wrapper.close()
            except Exception:  # a crashed game may fail to close; it is gone either way
                logger.debug("%s: closing the wrapper failed", self.name, exc_info=True)

    def _failed(self, err: BaseException | None, during: str) -> None:
        """Count a failure; raise once more than max_restarts came in a row."""
        self._failures += 1
        what = repr(err) if err is not None else "SMACv2 restarted StarCraft II itself"
        if self._failures > self.max_restarts:
            self._close_wrapper()
            self._done = True
            raise RuntimeError(
                f"{self.name}: StarCraft II failed {self._failures} times in a row (last, "
                f"during {during}: {what}); giving up after max_restarts={self.max_restarts}. "
                f"Check the StarCraft II installation ($SC2PATH, the SMAC maps) and its logs."
            ) from err
        self.restarts += 1
        logger.warning(
            "%s: StarCraft II failed during %s (%s); restarting it (failure %d of at most %d "
            "in a row)",
            self.name,
            during,
            what,
            self._failures,
            self.max_restarts,
        )

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if options:
            raise ValueError(f"options: {self.name} takes no reset options, got {options!r}")
        if seed is not None:
            self._seed = int(seed)
            if not self._started:  # nothing launched yet: start the game with this seed
                self._close_wrapper()
        while True:
            if self._wrapper is None:
                self._wrapper = self._build()
            try:
                self._started = True
                self._wrapper.reset()
                break
            except Exception as err:  # any crash of the game; see the module docstring
                self._close_wrapper()
                self._failed(err, "reset")
        self._last = self._observe()
        self._done = False
        return self._copy_last(), {}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._done or self._last is None:
            raise RuntimeError(f"{self.name}: step() after the episode ended; call reset()")
        n = self.team.n_agents
        a = check_actions(actions, n, self.team.n_actions)
        avail = self._last["avail_actions"]
        bad = np.flatnonzero(avail[np.arange(n), a] == 0)
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"actions: agent {i} chose action {int(a[i])}, which is unavailable (available: "
                f"{np.flatnonzero(avail[i]).tolist()}); SMACv2 only takes masked actions"
            )
        try:
            reward, terminated, info = self._wrapper.step(a.tolist())
        except Exception as err:  # the game crashed mid-episode
            self._close_wrapper()
            return self._lost(err)
        if terminated and not info:
            # SMACv2 caught a protocol error, restarted the game and returned (0, True, {}).
            return self._lost(None)
        truncated = bool(terminated and info.get("episode_limit", False))
        terminated = bool(terminated) and not truncated
        self._done = terminated or truncated
        if self._done:
            self._failures = 0
        self._last = self._observe()
        out_info = {k: v for k, v in info.items() if k not in ("battle_won", "episode_limit")}
        out_info.update(
            battle_won=bool(info.get("battle_won", False)),
            episode_limit=truncated,
            env_crashed=False,
        )
        return self._copy_last(), float(reward), terminated, truncated, out_info

    def _lost(
        self, err: BaseException | None
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """End the episode as truncated after a crash (see the module docstring)."""
        self._done = True
        self._failed(err, "step")
        info = {
            "battle_won": False,
            "episode_limit": False,
            "env_crashed": True,
            "env_error": repr(err) if err is not None else "StarCraft II restarted by SMACv2",
        }
        return self._copy_last(), 0.0, False, True, info

    def _observe(self) -> dict[str, np.ndarray]:
        t, w = self.team, self._wrapper
        return {
            "obs": np.asarray(w.get_obs(), np.float32).reshape(t.n_agents, t.obs_dim),
            "state": np.asarray(w.get_state(), np.float32).reshape(t.state_dim),
            "avail_actions": np.asarray(w.get_avail_actions(), np.float32).reshape(
                t.n_agents, t.n_actions
            ),
        }

    def _copy_last(self) -> dict[str, np.ndarray]:
        assert self._last is not None
        return {k: v.copy() for k, v in self._last.items()}

    def get_stats(self) -> dict[str, Any]:
        """SMACv2's battle statistics of the running game ({} when none runs)."""
        return dict(self._wrapper.get_stats()) if self._wrapper is not None else {}

    def close(self) -> None:
        """Close the game (idempotent); a later reset() starts a new one."""
        self._close_wrapper()
        self._done = True


def make_smacv2(scenario: str, /, **config: Any) -> SMACv2Env:
    return SMACv2Env(scenario, **config)


def register_smacv2() -> None:
    """Add the `smacv2:` family to the env registry (idempotent)."""
    from knife.envs.registry import register

    register(FAMILY, make_smacv2, validator=validate_smacv2, members=scenarios, replace=True)

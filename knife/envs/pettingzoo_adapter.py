"""PettingZoo parallel envs as team envs: the `pettingzoo:<module>` family.

`pettingzoo:mpe2.simple_spread_v3` imports the module `mpe2.simple_spread_v3` (falling back
to `pettingzoo.<module>`, so `pettingzoo:butterfly.pistonball_v6` also works) and builds its
`parallel_env(**env_config)`, minus the adapter's own keys below, then exposes it as one team
(DESIGN 4):

* agents: the learning team, in the order the env lists them (`possible_agents`);
* obs: each agent's observation flattened and zero-padded to the largest team agent's size
  (a Dict observation {observation, action_mask} contributes its `observation` part);
* state: `env.state()`, required (QMIX's mixer is state-conditioned): an env without one is
  refused with an error;
* actions: Discrete action spaces only (continuous ones are refused; for MPE pass
  `continuous_actions: false`, the default). A team agent with fewer actions than the
  largest gets padded, unavailable actions; stepping one anyway plays its last real action
  (as matrix:custom does), so random samplers such as gymnasium's env checker still work;
* avail_actions: from the env's action masks (the Dict observation's `action_mask` or
  `info[agent]['action_mask']`) where it has them, else all ones. An agent that has left
  the env (terminated on its own) observes zeros, has only action 0 available and is not
  stepped;
* reward: the sum (default) or mean of the team agents' rewards, config `reward: sum|mean`;
* end: terminated when every team agent has terminated; truncated (info['episode_limit']
  True) when the env truncates, e.g. MPE at `max_cycles`, or at `episode_limit` steps;
* episode_limit: config `episode_limit`, else the env's `max_cycles` (MPE: config
  `max_cycles`, default 25); an env with neither needs `episode_limit` in its config.

Mixed envs (e.g. `mpe2.simple_tag_v3`: adversary_0..2 chase agent_0): config `team` picks
the learning team, an agent name or name prefix or a list of them (`team: adversary` = every
adversary_*); default every agent. The other agents follow config `others`:
* `random` (default): a uniformly random available action each step;
* `scripted`: a built-in chase/flee policy for MPE envs whose agents carry the `adversary`
  flag (simple_tag, simple_adversary, simple_push, simple_world_comm). An adversary moves
  towards the nearest good agent; a good agent moves directly away from the nearest
  adversary, and back towards the centre when it is within 0.1 of the area's edge at +-1
  (where simple_tag's out-of-bounds penalty starts). Each picks the one of MPE's 4 moves
  (left/right/down/up) that is best aligned with that direction.
The state still comes from `env.state()`, i.e. it covers the other agents too.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

from knife.envs.base import TeamEnv, TeamSpec
from knife.envs.registry import register
from knife.envs.validation import check_actions, get_int

FAMILY = "pettingzoo:"
ADAPTER_KEYS = ("team", "others", "reward", "episode_limit")
OTHERS = ("random", "scripted")
REWARDS = ("sum", "mean")
_MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# MPE discrete moves: 1 left (-x), 2 right (+x), 3 down (-y), 4 up (+y).
_MPE_MOVES = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
_MPE_EDGE = 0.9


def import_env_module(module: str) -> ModuleType:
    """The module behind `pettingzoo:<module>`, or a ValueError naming the env."""
    name = FAMILY + module
    if not _MODULE_PATH.match(module):
        raise ValueError(
            f"env: {name!r}: {module!r} is not a module path; expected e.g. "
            f"pettingzoo:mpe2.simple_spread_v3"
        )
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        try:
            mod = importlib.import_module("pettingzoo." + module)
        except ImportError:
            raise ValueError(
                f"env: {name!r}: cannot import module {module!r} ({err}); the part after "
                f"'pettingzoo:' is the import path of a module with parallel_env(), e.g. "
                f"pettingzoo:mpe2.simple_spread_v3"
            ) from err
    if not callable(getattr(mod, "parallel_env", None)):
        raise ValueError(
            f"env: {name!r}: module {mod.__name__!r} has no parallel_env(); only PettingZoo "
            f"parallel envs are supported"
        )
    return mod


def _team_entries(name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    entries = [value] if isinstance(value, str) else value
    if (
        not isinstance(entries, Sequence)
        or not entries
        or not all(isinstance(e, str) and e for e in entries)
    ):
        raise ValueError(
            f"env_config.team: must be an agent name or name prefix, or a non-empty list of "
            f"them, for {name}; got {value!r}"
        )
    return list(entries)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"env_config.{key}: unknown {value!r}; allowed: {', '.join(allowed)}")
    return value


def _n_discrete(name: str, agent: str, space: gym.Space) -> int:
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(
            f"env: {name}: agent {agent!r} has action space {space}; only Discrete action "
            f"spaces are supported (for MPE set continuous_actions: false)"
        )
    if int(space.start) != 0:
        raise ValueError(
            f"env: {name}: agent {agent!r} has Discrete actions starting at {space.start}; "
            f"only Discrete(n) starting at 0 is supported"
        )
    return int(space.n)


def _obs_layout(name: str, agent: str, space: gym.Space) -> int:
    """The flat obs size of one agent (of the 'observation' part of a Dict obs)."""
    if isinstance(space, gym.spaces.Dict) and "observation" in space.spaces:
        inner = space.spaces["observation"]
        if isinstance(inner, gym.spaces.Box):
            return int(np.prod(inner.shape))
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise ValueError(
        f"env: {name}: agent {agent!r} has observation space {space}; supported: a Box, or "
        f"a Dict with a Box 'observation' (and optionally 'action_mask')"
    )


class PettingZooTeamEnv(TeamEnv):
    """A PettingZoo parallel env as one team env; see the module docstring."""

    def __init__(self, module: str, /, **config: Any) -> None:
        self.name = name = FAMILY + module
        env_kwargs = {k: v for k, v in config.items() if k not in ADAPTER_KEYS}
        team_entries = _team_entries(name, config.get("team"))
        self.others_mode = _choice("others", config.get("others", "random"), OTHERS)
        self.reward_mode = _choice("reward", config.get("reward", "sum"), REWARDS)
        mod = import_env_module(module)
        try:
            self.pz = mod.parallel_env(**env_kwargs)
        except (TypeError, AssertionError, ValueError) as err:
            raise ValueError(f"env_config: {name} rejected the config {env_kwargs}: {err}") from err
        try:
            self._setup(name, config, team_entries)
        except Exception:
            self.pz.close()
            raise

    # ---------------------------------------------------------------- construction

    def _setup(self, name: str, config: Mapping[str, Any], entries: list[str] | None) -> None:
        pz = self.pz
        agents = list(pz.possible_agents)
        if entries is None:
            team = agents
        else:
            for e in entries:
                if not any(a == e or a.startswith(e) for a in agents):
                    raise ValueError(
                        f"env_config.team: {e!r} matches no agent of {name}; agents: "
                        f"{', '.join(agents)}"
                    )
            team = [a for a in agents if any(a == e or a.startswith(e) for e in entries)]
        self.team_agents = team
        self.other_agents = [a for a in agents if a not in team]

        n_acts = [_n_discrete(name, a, pz.action_space(a)) for a in agents]
        self._n_acts = dict(zip(agents, n_acts, strict=True))
        self._obs_sizes = [_obs_layout(name, a, pz.observation_space(a)) for a in team]
        self._dict_obs = [isinstance(pz.observation_space(a), gym.spaces.Dict) for a in team]

        episode_limit = self._episode_limit(name, config)
        # Probe state(): many parallel envs do not implement it; say so now, not mid-trial.
        pz.reset(seed=None)
        try:
            state = pz.state()
        except (NotImplementedError, AttributeError) as err:
            raise ValueError(
                f"env: {name} has no global state (its parallel env's state() is not "
                f"implemented: {err!r}); the QMIX mixer needs one, so only envs with state() "
                f"are supported"
            ) from err
        state_dim = int(np.asarray(state).size)

        n, n_actions = len(team), max(self._n_acts[a] for a in team)
        self._set_team(TeamSpec(n, n_actions, max(self._obs_sizes), state_dim, episode_limit))
        self._avail_full = np.zeros((n, n_actions), np.float32)
        for i, a in enumerate(team):
            self._avail_full[i, : self._n_acts[a]] = 1.0
        self._last_real = np.array([self._n_acts[a] - 1 for a in team], np.int64)
        self._other_n = np.array([self._n_acts[a] for a in self.other_agents], np.int64)
        self._scripted = (
            _MpeScripted(name, pz, self.other_agents)
            if self.others_mode == "scripted" and self.other_agents
            else None
        )
        self._actions = dict.fromkeys(agents, 0)  # reused every step
        self._n_all = len(agents)
        self._terminated: set[str] = set()
        self._infos: dict[str, Any] = {}
        self._last_obs: Mapping[str, Any] = {}
        self._t = 0
        self._done = True

    def _episode_limit(self, name: str, config: Mapping[str, Any]) -> int:
        if "episode_limit" in config:
            return get_int(config, "episode_limit", 0, min_value=1)
        cycles = getattr(self.pz.unwrapped, "max_cycles", None)
        if cycles is None:
            cycles = config.get("max_cycles")
        if isinstance(cycles, int) and not isinstance(cycles, bool) and cycles >= 1:
            return cycles
        raise ValueError(
            f"env_config.episode_limit: required for {name}, which has no max_cycles "
            f"(an integer >= 1: the adapter truncates episodes there)"
        )

    # ---------------------------------------------------------------- views

    def _observe(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        spec = self.team
        out = np.zeros((spec.n_agents, spec.obs_dim), np.float32)
        avail = self._avail_full.copy()
        for i, a in enumerate(self.team_agents):
            o = obs.get(a)
            if o is None:  # left the env: inactive until the episode ends
                avail[i] = 0.0
                avail[i, 0] = 1.0
                continue
            mask = None
            if self._dict_obs[i]:
                mask = o.get("action_mask")
                o = o["observation"]
            elif self._infos:
                mask = self._infos.get(a, {}).get("action_mask")
            out[i, : self._obs_sizes[i]] = np.ravel(o)
            if mask is not None:
                avail[i, : self._n_acts[a]] = np.asarray(mask, np.float32).ravel()
        state = np.asarray(self.pz.state(), np.float32).ravel()
        return {"obs": out, "state": state, "avail_actions": avail}

    # ---------------------------------------------------------------- reset / step

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        obs, infos = self.pz.reset(seed=seed, options=options)
        self._infos = infos or {}
        self._terminated.clear()
        self._t = 0
        self._done = False
        self._last_obs = obs
        return self._observe(obs), {}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError(f"{self.name}: step() after the episode ended; call reset()")
        joint = np.minimum(check_actions(actions, self.n_agents, self.n_actions), self._last_real)
        acts = self._actions
        for a, act in zip(self.team_agents, joint.tolist(), strict=True):
            acts[a] = act
        if self.other_agents:
            self._act_others(acts)
        live = self.pz.agents
        if len(live) != self._n_all:  # someone left: pass only the live agents' actions
            acts = {a: acts[a] for a in live}
        obs, rewards, terms, truncs, infos = self.pz.step(acts)
        self._infos = infos or {}
        self._last_obs = obs
        self._t += 1

        rs = [rewards.get(a, 0.0) for a in self.team_agents]
        reward = float(sum(rs)) if self.reward_mode == "sum" else float(np.mean(rs))
        self._terminated.update(a for a in self.team_agents if terms.get(a))
        terminated = len(self._terminated) == self.n_agents
        truncated = not terminated and (
            any(truncs.get(a, False) for a in self.team_agents)
            or not self.pz.agents
            or self._t >= self.team.episode_limit
        )
        self._done = terminated or truncated
        return self._observe(obs), reward, terminated, truncated, {"episode_limit": truncated}

    def _act_others(self, acts: dict[str, int]) -> None:
        if self._scripted is not None:
            for a, act in zip(self.other_agents, self._scripted.actions(), strict=True):
                acts[a] = act
            return
        picks = self.np_random.integers(0, self._other_n).tolist()
        for a, act in zip(self.other_agents, picks, strict=True):
            mask = self._mask_of_other(a)
            if mask is not None and not mask[act]:
                legal = np.flatnonzero(mask)
                act = int(self.np_random.choice(legal)) if len(legal) else 0
            acts[a] = act

    def _mask_of_other(self, agent: str) -> np.ndarray | None:
        o = self._last_obs.get(agent)
        if isinstance(o, Mapping) and "action_mask" in o:
            return np.asarray(o["action_mask"])
        mask = self._infos.get(agent, {}).get("action_mask") if self._infos else None
        return None if mask is None else np.asarray(mask)

    def close(self) -> None:
        self.pz.close()


class _MpeScripted:
    """The chase/flee policy for MPE's adversary/good agents (module docstring)."""

    def __init__(self, name: str, pz: Any, agents: list[str]) -> None:
        world = getattr(pz.unwrapped, "world", None)
        by_name = {getattr(a, "name", None): a for a in getattr(world, "agents", [])}
        if not agents or any(
            a not in by_name or not hasattr(by_name[a], "adversary") for a in agents
        ):
            raise ValueError(
                f"env_config.others: 'scripted' is built in only for MPE envs whose agents "
                f"are adversaries or good agents (mpe2.simple_tag_v3, simple_adversary_v3, "
                f"simple_push_v3, simple_world_comm_v3); use others: random for {name}"
            )
        self.me = [by_name[a] for a in agents]
        everyone = list(by_name.values())
        # Who each scripted agent reacts to: adversaries chase good agents, good agents flee.
        self.sign = np.array([1.0 if m.adversary else -1.0 for m in self.me])
        self.targets = [[o for o in everyone if o.adversary != m.adversary] for m in self.me]

    def actions(self) -> list[int]:
        out = []
        for m, sign, targets in zip(self.me, self.sign, self.targets, strict=True):
            pos = m.state.p_pos
            if not targets:
                out.append(0)
                continue
            rel = np.array([t.state.p_pos for t in targets]) - pos
            nearest = rel[np.argmin((rel**2).sum(axis=1))]
            direction = sign * nearest
            if sign < 0:  # fleeing: turn back inside near the edge
                edge = np.abs(pos) > _MPE_EDGE
                direction = np.where(edge, -pos, direction)
            out.append(1 + int(np.argmax(_MPE_MOVES @ direction)))
        return out


def make_pettingzoo(module: str, /, **config: Any) -> PettingZooTeamEnv:
    return PettingZooTeamEnv(module, **config)


register(FAMILY, make_pettingzoo, replace=True)

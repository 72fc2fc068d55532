"""Predator-prey stag hunt on a bounded grid, pure NumPy (DESIGN 9).

Rules
-----
* Grid `world_shape` = (rows, cols), default 10x10, bounded (no wrap-around). Every cell holds
  at most one entity: an agent, a stag or a hare. Coordinates are (row, col), row 0 on top.
* Actions (6 per agent): 0 up (row-1), 1 down (row+1), 2 left (col-1), 3 right (col+1),
  4 stay, 5 catch.
* One step resolves in this order:
  1. Catch, on the positions the agents observed: a prey is captured when at least
     `capture_agents` (stags, default 2) or `capture_agents_hare` (hares, default 1) agents
     in its 4-neighbourhood play catch. A catching agent helps every adjacent prey at once.
     Captured prey disappear. Reward: `reward_stag` (10) per stag, `reward_hare` (1) per hare.
     Every catching agent next to no captured prey has *failed* and adds `punishment` to the
     team reward. `punishment` is the (non-positive) reward per failed catch: 0 (default)
     means none, -0.5 means each failed catch costs 0.5.
  2. Agents that move, simultaneously: a move succeeds when the target cell was inside the grid
     and free (after captures) at the start of the move phase and no other agent moves to the
     same cell; otherwise the agent stays. Catching agents do not move.
  3. Prey: each living prey, with probability `prey_move_prob` (default 1.0), moves to a
     uniformly chosen free 4-neighbour (same simultaneous rule; stays if none is free).
* The episode terminates when every prey is captured; it is truncated (not terminated) after
  `episode_limit` steps (default 200), with info['episode_limit'] = True. info also carries
  the episode's running `stags_captured` and `hares_captured`.

Available actions: stay always; a move when its target cell is inside the grid and free now
(another agent may still take it this step, then the move fails); catch only when a living
prey is in the agent's 4-neighbourhood.

Observation of one agent (float32, length 4 * view * view [+ 2]): a `view` x `view` square
(odd, default 5) centred on the agent, channel-major, channels
  0 agents (the agent itself at the centre included), 1 stags, 2 hares,
  3 outside (1 where the cell lies beyond the grid edge),
each flattened row-major; then, when `obs_position` (default true), the agent's own
(row, col) divided by (rows-1, cols-1), i.e. in [0, 1].
State (float32, length 3 * rows * cols): channels agents, stags, hares of the whole grid,
channel-major, each row-major.

Tests and demos can place entities: `reset(options={"positions": {"agents": [[r, c], ...],
"stags": [...], "hares": [...]}})`; `agents` must list all n_agents, the prey lists may hold
any number (at least one prey overall) and default to empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from knife.envs.base import TeamEnv, TeamSpec
from knife.envs.validation import check_actions, check_keys, get_bool, get_float, get_int

UP, DOWN, LEFT, RIGHT, STAY, CATCH = range(6)
N_ACTIONS = 6
ACTION_NAMES = ("up", "down", "left", "right", "stay", "catch")
# Row/col offsets of actions 0..3; also the 4-neighbourhood used by catch and prey moves.
DIRS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], np.int64)
OBS_CHANNELS = ("agents", "stags", "hares", "outside")
STATE_CHANNELS = ("agents", "stags", "hares")
ENV_NAME = "stag_hunt"

CONFIG_KEYS = (
    "world_shape",
    "grid_size",
    "n_agents",
    "n_stags",
    "n_hares",
    "view",
    "episode_limit",
    "reward_stag",
    "reward_hare",
    "punishment",
    "capture_agents",
    "capture_agents_hare",
    "prey_move_prob",
    "obs_position",
)


@dataclass(frozen=True)
class StagHuntConfig:
    world_shape: tuple[int, int] = (10, 10)
    n_agents: int = 8
    n_stags: int = 8
    n_hares: int = 0
    view: int = 5
    episode_limit: int = 200
    reward_stag: float = 10.0
    reward_hare: float = 1.0
    punishment: float = 0.0
    capture_agents: int = 2
    capture_agents_hare: int = 1
    prey_move_prob: float = 1.0
    obs_position: bool = True

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None = None) -> StagHuntConfig:
        """Validated config; `grid_size` (int) is an alias of a square `world_shape`."""
        config = dict(config or {})
        check_keys(ENV_NAME, config, CONFIG_KEYS)
        if "world_shape" in config and "grid_size" in config:
            raise ValueError("env_config.grid_size: give either world_shape or grid_size, not both")
        if "grid_size" in config:
            side = get_int(config, "grid_size", 10, min_value=1)
            shape = (side, side)
        else:
            shape = _parse_shape(config.get("world_shape", cls.world_shape))
        d = cls()
        n_agents = get_int(config, "n_agents", d.n_agents, min_value=1)
        n_stags = get_int(config, "n_stags", d.n_stags, min_value=0)
        n_hares = get_int(config, "n_hares", d.n_hares, min_value=0)
        if n_stags + n_hares < 1:
            raise ValueError(
                f"env_config.n_stags: need at least one prey (n_stags + n_hares >= 1), "
                f"got n_stags={n_stags}, n_hares={n_hares}"
            )
        cells = shape[0] * shape[1]
        if n_agents + n_stags + n_hares > cells:
            raise ValueError(
                f"env_config.n_agents: n_agents + n_stags + n_hares = "
                f"{n_agents + n_stags + n_hares} exceeds the {cells} cells of world_shape "
                f"{list(shape)}; each entity needs its own cell"
            )
        view = get_int(config, "view", d.view, min_value=1)
        if view % 2 == 0:
            raise ValueError(f"env_config.view: must be an odd integer >= 1, got {view}")
        # More than 4 catchers can never be adjacent to one prey, nor more than n_agents.
        most = min(4, n_agents)
        capture = get_int(config, "capture_agents", d.capture_agents, min_value=1)
        if n_stags and capture > most:
            raise ValueError(
                f"env_config.capture_agents: must be an integer in [1, {most}] "
                f"(min(4, n_agents)), got {capture}"
            )
        capture_hare = get_int(config, "capture_agents_hare", d.capture_agents_hare, min_value=1)
        if n_hares and capture_hare > most:
            raise ValueError(
                f"env_config.capture_agents_hare: must be an integer in [1, {most}] "
                f"(min(4, n_agents)), got {capture_hare}"
            )
        return cls(
            world_shape=shape,
            n_agents=n_agents,
            n_stags=n_stags,
            n_hares=n_hares,
            view=view,
            episode_limit=get_int(config, "episode_limit", d.episode_limit, min_value=1),
            reward_stag=get_float(config, "reward_stag", d.reward_stag),
            reward_hare=get_float(config, "reward_hare", d.reward_hare),
            punishment=get_float(config, "punishment", d.punishment, max_value=0.0),
            capture_agents=capture,
            capture_agents_hare=capture_hare,
            prey_move_prob=get_float(
                config, "prey_move_prob", d.prey_move_prob, min_value=0.0, max_value=1.0
            ),
            obs_position=get_bool(config, "obs_position", d.obs_position),
        )


def _parse_shape(value: Any) -> tuple[int, int]:
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1:
        return (int(value), int(value))
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
        and min(value) >= 1
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(
        f"env_config.world_shape: must be [rows, cols] of integers >= 1 (or one integer for "
        f"a square), got {value!r}"
    )


def validate_config(config: Mapping[str, Any]) -> None:
    StagHuntConfig.from_dict(config)


# Cell codes of the internal flat grid; LUTs turn codes into observation channels.
EMPTY, STAG, HARE, AGENT, OUTSIDE = range(5)
_OBS_LUT = np.zeros((len(OBS_CHANNELS), 5), np.float32)  # [channel, code]
_OBS_LUT[0, AGENT] = _OBS_LUT[1, STAG] = _OBS_LUT[2, HARE] = _OBS_LUT[3, OUTSIDE] = 1.0
_STATE_LUT = np.ascontiguousarray(_OBS_LUT[:3])
_IS_PREY = np.zeros(5, bool)
_IS_PREY[[STAG, HARE]] = True


class StagHuntEnv(TeamEnv):
    """The stag hunt team env; construct with config keys, e.g. StagHuntEnv(n_agents=4).

    Internally the world is one flat int array of cell codes over the grid plus a border of
    OUTSIDE cells (width max(view // 2, 1)); entities are flat indices into it. Flat indices
    make every neighbourhood look-up a single gather, which is what keeps a step in the tens
    of microseconds.
    """

    def __init__(self, **config: Any) -> None:
        cfg = StagHuntConfig.from_dict(config)
        self.cfg = cfg
        self.name = ENV_NAME
        self.rows, self.cols = cfg.world_shape
        r = cfg.view // 2
        # Border of at least 1 so neighbour look-ups never leave the array (and never wrap:
        # a flat +-1 from an inside cell lands on the same row or on the border).
        p = self._p = max(r, 1)
        hp, wp = self.rows + 2 * p, self.cols + 2 * p
        self._wp = wp
        self._n_cells = hp * wp
        self._n_view = len(OBS_CHANNELS) * cfg.view * cfg.view
        obs_dim = self._n_view + (2 if cfg.obs_position else 0)
        state_dim = len(STATE_CHANNELS) * self.rows * self.cols
        self._set_team(TeamSpec(cfg.n_agents, N_ACTIONS, obs_dim, state_dim, cfg.episode_limit))

        rr, cc = np.divmod(np.arange(self._n_cells), wp)
        inside = (rr >= p) & (rr < p + self.rows) & (cc >= p) & (cc < p + self.cols)
        self._blank = np.where(inside, EMPTY, OUTSIDE).astype(np.int64)
        self._inside = np.flatnonzero(inside)  # row-major order of the real grid
        self._offs = DIRS[:, 0] * wp + DIRS[:, 1]  # flat offsets of up, down, left, right
        vr, vc = np.divmod(np.arange(cfg.view * cfg.view), cfg.view)
        self._view_offs = (vr - r) * wp + (vc - r)  # flat offsets of the view, row-major
        self._pos_feat = np.stack(
            [(rr - p) / max(self.rows - 1, 1), (cc - p) / max(self.cols - 1, 1)], axis=1
        ).astype(np.float32)
        self._reward_of_kind = np.array([cfg.reward_stag, cfg.reward_hare])
        self._need_of_kind = np.array([cfg.capture_agents, cfg.capture_agents_hare])

        self._grid = self._blank.copy()
        self._agents = np.zeros(cfg.n_agents, np.int64)
        self._prey = np.zeros(0, np.int64)
        self._kind = np.zeros(0, np.int64)  # 0 stag, 1 hare
        self._captured = np.zeros(2, np.int64)
        self._t = 0
        self._done = True

    # ---------------------------------------------------------------- reset / step

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        cfg = self.cfg
        options = options or {}
        for key in options:
            if key != "positions":
                raise ValueError(f"options: unknown key {key!r} for stag_hunt; allowed: positions")
        positions = options.get("positions")
        if positions is not None:
            agents, stags, hares = self._parse_positions(positions)
        else:
            n_total = cfg.n_agents + cfg.n_stags + cfg.n_hares
            cells = self.np_random.choice(self.rows * self.cols, n_total, replace=False)
            rc = np.stack(np.divmod(cells, self.cols), axis=1)
            agents = rc[: cfg.n_agents]
            stags = rc[cfg.n_agents : cfg.n_agents + cfg.n_stags]
            hares = rc[cfg.n_agents + cfg.n_stags :]
        self._agents = self._flat(agents)
        self._prey = np.concatenate([self._flat(stags), self._flat(hares)])
        self._kind = np.repeat(np.array([0, 1], np.int64), [len(stags), len(hares)])
        self._grid = self._blank.copy()
        self._grid[self._agents] = AGENT
        self._grid[self._prey] = STAG + self._kind
        self._t = 0
        self._done = False
        self._captured[:] = 0
        return self._observe(), {}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("stag_hunt: step() after the episode ended; call reset()")
        a = check_actions(actions, self.cfg.n_agents, N_ACTIONS)
        reward = self._resolve_catches(a)
        self._move_agents(a)
        if self.cfg.prey_move_prob > 0.0 and len(self._prey):
            self._move_prey()
        self._t += 1
        terminated = len(self._prey) == 0
        truncated = not terminated and self._t >= self.cfg.episode_limit
        self._done = terminated or truncated
        info = {
            "episode_limit": truncated,
            "stags_captured": int(self._captured[0]),
            "hares_captured": int(self._captured[1]),
        }
        return self._observe(), reward, terminated, truncated, info

    # ---------------------------------------------------------------- rules

    def _resolve_catches(self, a: np.ndarray) -> float:
        catchers = self._agents[a == CATCH]
        if len(catchers) == 0:
            return 0.0
        # adj[i, j]: catcher j is in prey i's 4-neighbourhood (flat distance 1 or one row).
        dist = np.abs(self._prey[:, None] - catchers[None, :])
        adj = (dist == 1) | (dist == self._wp)
        captured = adj.sum(axis=1) >= self._need_of_kind[self._kind]
        n_failed = len(catchers)
        reward = 0.0
        if captured.any():
            n_failed -= int(adj[captured].any(axis=0).sum())
            kinds = np.bincount(self._kind[captured], minlength=2)
            self._captured += kinds
            reward += float(kinds @ self._reward_of_kind)
            self._grid[self._prey[captured]] = EMPTY
            self._prey = self._prey[~captured]
            self._kind = self._kind[~captured]
        return reward + self.cfg.punishment * n_failed

    def _claim(self, tgt: np.ndarray, go: np.ndarray) -> np.ndarray:
        """go, minus the movers whose target cell another mover also wants."""
        claims = np.bincount(tgt[go], minlength=self._n_cells)
        return go & (claims[tgt] == 1)

    def _move_agents(self, a: np.ndarray) -> None:
        movers = np.flatnonzero(a < STAY)
        if len(movers) == 0:
            return
        pos = self._agents[movers]
        tgt = pos + self._offs[a[movers]]
        go = self._claim(tgt, self._grid[tgt] == EMPTY)
        self._grid[pos[go]] = EMPTY
        self._grid[tgt[go]] = AGENT
        self._agents[movers[go]] = tgt[go]

    def _move_prey(self) -> None:
        m = len(self._prey)
        u = self.np_random.random((m, 5))
        nb = self._prey[:, None] + self._offs  # [m, 4]
        free = self._grid[nb] == EMPTY
        # Uniform choice among free directions: the largest random key among free cells.
        pick = np.arange(0, 4 * m, 4) + np.argmax(u[:, 1:] * free, axis=1)
        tgt = nb.ravel()[pick]
        # free[pick] is False only when no neighbour is free (all keys 0): stay then.
        go = free.ravel()[pick]
        if self.cfg.prey_move_prob < 1.0:
            go &= u[:, 0] < self.cfg.prey_move_prob
        go = self._claim(tgt, go)
        self._grid[self._prey[go]] = EMPTY
        self._grid[tgt[go]] = STAG + self._kind[go]
        self._prey[go] = tgt[go]

    # ---------------------------------------------------------------- views

    def _observe(self) -> dict[str, np.ndarray]:
        n, ag, grid = self.cfg.n_agents, self._agents, self._grid
        obs = np.empty((n, self.team.obs_dim), np.float32)
        cells = grid[ag[:, None] + self._view_offs]  # [n, view*view] cell codes
        # _OBS_LUT[:, cells] is [C, n, view*view]; obs wants [n, C, view*view].
        obs[:, : self._n_view].reshape(n, len(OBS_CHANNELS), -1)[:] = _OBS_LUT[:, cells].transpose(
            1, 0, 2
        )
        if self.cfg.obs_position:
            obs[:, self._n_view :] = self._pos_feat[ag]
        state = _STATE_LUT[:, grid[self._inside]].reshape(-1)
        near = grid[ag[:, None] + self._offs]  # [n, 4] codes of the 4 neighbours
        avail = np.ones((n, N_ACTIONS), np.float32)
        avail[:, :4] = near == EMPTY
        avail[:, CATCH] = _IS_PREY[near].any(axis=1)
        return {"obs": obs, "state": state, "avail_actions": avail}

    # ---------------------------------------------------------------- helpers

    def _flat(self, rc: np.ndarray) -> np.ndarray:
        rc = np.asarray(rc, np.int64).reshape(-1, 2)
        return (rc[:, 0] + self._p) * self._wp + rc[:, 1] + self._p

    def _rc(self, flat: np.ndarray) -> np.ndarray:
        return np.stack(np.divmod(flat, self._wp), axis=1) - self._p

    def positions(self) -> dict[str, np.ndarray]:
        """Grid coordinates (row, col) of agents, living stags and living hares."""
        return {
            "agents": self._rc(self._agents),
            "stags": self._rc(self._prey[self._kind == 0]),
            "hares": self._rc(self._prey[self._kind == 1]),
        }

    def _parse_positions(
        self, positions: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        unknown = set(positions) - {"agents", "stags", "hares"}
        if unknown:
            raise ValueError(
                f"options.positions: unknown key {sorted(unknown)[0]!r}; "
                f"allowed: agents, stags, hares"
            )
        out = []
        for key in ("agents", "stags", "hares"):
            arr = np.asarray(positions.get(key, []), dtype=np.int64).reshape(-1, 2)
            inside = (arr >= 0).all(axis=1) & (arr[:, 0] < self.rows) & (arr[:, 1] < self.cols)
            if not inside.all():
                raise ValueError(
                    f"options.positions.{key}: cells must lie in the {self.rows}x{self.cols} "
                    f"grid, got {arr[~inside].tolist()}"
                )
            out.append(arr)
        agents, stags, hares = out
        if len(agents) != self.cfg.n_agents:
            raise ValueError(
                f"options.positions.agents: need {self.cfg.n_agents} cells, got {len(agents)}"
            )
        if len(stags) + len(hares) < 1:
            raise ValueError("options.positions: need at least one stag or hare")
        every = np.concatenate(out)
        if len(np.unique(every[:, 0] * self.cols + every[:, 1])) != len(every):
            raise ValueError("options.positions: two entities share a cell")
        return agents, stags, hares


def make_stag_hunt(config: Mapping[str, Any]) -> StagHuntEnv:
    return StagHuntEnv(**config)

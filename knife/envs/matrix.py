"""Cooperative matrix games: one-step games and the QMIX two-step game.

Payoffs (row = agent 0's action, column = agent 1's action; all agents get the same reward):

matrix:climbing      Claus & Boutilier (1998)        [[ 11, -30,  0],
                                                      [-30,   7,  0],
                                                      [  0,   6,  5]]
                     (the layout the project's issue fixes; the 1998 table is its transpose,
                     i.e. the same game with the two agents' roles swapped)
matrix:penalty       Claus & Boutilier (1998)        [[ k,  0, 10],
                                                      [ 0,  2,  0],
                                                      [10,  0,  k]]
                     config `k` (<= 0), default -100: the harshest setting of their k sweep
                     and the one most later papers (FMQ, lenient learners) use.
matrix:nonmonotonic  QTRAN's game (DESIGN 9)         [[  8, -12, -12],
                                                      [-12,   0,   0],
                                                      [-12,   0,   0]]
matrix:qplex_1       QPLEX (Wang et al. 2021) code's matrix_game_1: many optimal-looking
                     joint actions worth 10 and one slightly better corner
                                                     [[w,  0, 10],
                                                      [0, 10, 10],
                                                      [10, 10, 10]]   config `first_weight`
                                                                      w, default 10.4
matrix:qplex_2       QPLEX Table 1 (same payoffs as matrix:nonmonotonic)
matrix:qplex_3       QPLEX code's matrix_game_3: the non-monotonic game with two
                     sub-optimal equilibria worth 6
                                                     [[  8, -12, -12],
                                                      [-12,   6,   0],
                                                      [-12,   0,   6]]
matrix:custom        config `payoff`: an n-dimensional nested list/array; n = number of
                     agents, axis i's size = agent i's action count. Agents with fewer
                     actions than the largest axis get padded, unavailable actions.
matrix:two_step      QMIX paper (Rashid et al. 2018), 2 agents x 2 actions, 2 steps.
                     Step 1 pays 0; agent 0's action picks state 2A (action 0) or 2B
                     (action 1). In 2A every joint action pays 7; in 2B the payoff is
                     [[0, 1], [1, 8]]. Optimal return 8 (go to 2B, then both play 1).

Config `permute` (every one-step game) relabels each agent's actions so that a game's
optimum moves while its payoff values stay the same: `permute[i][a]` is the new label of
agent i's action a, i.e. payoff'[permute[0][a_0], permute[1][a_1], ...] = payoff[a_0, a_1, ...].
`matrix:climbing` with `permute: [[1, 2, 0], [0, 2, 1]]` pays 11 at (1, 0) instead of (0, 0).
This is the matrix analogue of the label permutations that plasticity studies use (permuted
MNIST, shuffled labels): the same difficulty, a different answer.

One-step games: episode length 1, terminated=True after the step, obs = 1.0 for every agent
(the state is always the same, so a constant feature is all there is), state = [1.0].
Config `noise_features: n` (every one-step game) appends n N(0, 1) features, drawn each
step, to the state and every agent's obs: uninformative (the payoff ignores them) but
non-degenerate, so the hypernetworks are not half dead by construction.
Two-step game: obs and state are the one-hot of the current state (1, 2A, 2B), so agents
can tell 2A from 2B; the observation returned on termination is that of the state the last
step was played in (it is never bootstrapped from).

A padded (unavailable) action that is stepped anyway is played as the agent's last real
action; learners mask it, so this only keeps random-sampling tools like gymnasium's
env checker working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from knife.envs.base import TeamEnv, TeamSpec
from knife.envs.validation import check_actions, check_keys, get_float, get_int

# Optional uninformative input: that many N(0, 1) features appended to obs and state. With
# the constant 1.0 alone, half of the hypernetworks' Linear(1, h) ReLUs are dead from
# initialization by construction; noise features make the input non-degenerate.
NOISE_FEATURES = "noise_features"
# Relabels each agent's actions (module docstring): moves the optimum, keeps the payoffs.
PERMUTE = "permute"
CLIMBING = ((11.0, -30.0, 0.0), (-30.0, 7.0, 0.0), (0.0, 6.0, 5.0))
NONMONOTONIC = ((8.0, -12.0, -12.0), (-12.0, 0.0, 0.0), (-12.0, 0.0, 0.0))
QPLEX_3 = ((8.0, -12.0, -12.0), (-12.0, 6.0, 0.0), (-12.0, 0.0, 6.0))
PENALTY_K_DEFAULT = -100.0
QPLEX_1_FIRST_WEIGHT = 10.4
TWO_STEP_2A_REWARD = 7.0
TWO_STEP_2B = ((0.0, 1.0), (1.0, 8.0))


def penalty_payoff(k: float = PENALTY_K_DEFAULT) -> np.ndarray:
    return np.array([[k, 0.0, 10.0], [0.0, 2.0, 0.0], [10.0, 0.0, k]])


def qplex_1_payoff(first_weight: float = QPLEX_1_FIRST_WEIGHT) -> np.ndarray:
    return np.array([[first_weight, 0.0, 10.0], [0.0, 10.0, 10.0], [10.0, 10.0, 10.0]])


def parse_payoff(payoff: Any) -> np.ndarray:
    """A payoff tensor as float64, or a ValueError naming `env_config.payoff`."""
    try:
        raw = np.asarray(payoff)
    except (TypeError, ValueError) as err:  # numpy refuses ragged nesting
        raise ValueError(
            "env_config.payoff: ragged nested list; every row along an axis must have the "
            "same length (one axis per agent, axis size = that agent's action count)"
        ) from err
    if raw.dtype.kind not in "biuf":
        raise ValueError(
            f"env_config.payoff: must contain only numbers (a nested list of floats), "
            f"got dtype {raw.dtype}"
        )
    if raw.ndim < 1:
        raise ValueError(
            "env_config.payoff: needs at least 1 agent, i.e. at least one axis; got a scalar"
        )
    for axis, size in enumerate(raw.shape):
        if size < 1:
            raise ValueError(
                f"env_config.payoff: agent {axis} has no actions (axis {axis} has size 0); "
                f"shape {raw.shape}, every axis needs >= 1 action"
            )
    arr = raw.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("env_config.payoff: all entries must be finite (no nan/inf)")
    return arr


def _named_payoff(env_name: str, config: Mapping[str, Any]) -> np.ndarray:
    """Validate `config` for a one-step game and return its payoff tensor before `permute`."""
    if env_name == "matrix:climbing":
        check_keys(env_name, config, [NOISE_FEATURES, PERMUTE])
        return np.array(CLIMBING)
    if env_name == "matrix:penalty":
        check_keys(env_name, config, [NOISE_FEATURES, "k", PERMUTE])
        return penalty_payoff(get_float(config, "k", PENALTY_K_DEFAULT, max_value=0.0))
    if env_name in ("matrix:nonmonotonic", "matrix:qplex_2"):
        check_keys(env_name, config, [NOISE_FEATURES, PERMUTE])
        return np.array(NONMONOTONIC)
    if env_name == "matrix:qplex_1":
        check_keys(env_name, config, [NOISE_FEATURES, "first_weight", PERMUTE])
        return qplex_1_payoff(get_float(config, "first_weight", QPLEX_1_FIRST_WEIGHT))
    if env_name == "matrix:qplex_3":
        check_keys(env_name, config, [NOISE_FEATURES, PERMUTE])
        return np.array(QPLEX_3)
    if env_name == "matrix:custom":
        check_keys(env_name, config, [NOISE_FEATURES, "payoff", PERMUTE])
        if "payoff" not in config:
            raise ValueError("env_config.payoff: required for matrix:custom (a nested list)")
        return parse_payoff(config["payoff"])
    raise ValueError(f"env: {env_name!r} is not a one-step matrix game")


def parse_permutation(value: Any, action_counts: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """`env_config.permute` as one tuple per agent, or a ValueError naming the field.

    Agent i's entry must list each of its actions 0..action_counts[i]-1 exactly once."""
    shape = ", ".join(f"a permutation of 0..{count - 1}" for count in action_counts)
    example = [list(range(1, count)) + [0] for count in action_counts]
    if not isinstance(value, list | tuple) or len(value) != len(action_counts):
        raise ValueError(
            f"env_config.{PERMUTE}: must be a list with one permutation per agent "
            f"({len(action_counts)} agents: {shape}; e.g. {example}), got {value!r}"
        )
    perms = []
    for i, (perm, count) in enumerate(zip(value, action_counts, strict=True)):
        ints = isinstance(perm, list | tuple) and all(
            isinstance(a, int | np.integer) and not isinstance(a, bool | np.bool_) for a in perm
        )
        if not ints or sorted(int(a) for a in perm) != list(range(count)):
            raise ValueError(
                f"env_config.{PERMUTE}[{i}]: must be a permutation of 0..{count - 1} (agent "
                f"{i}'s {count} actions, each listed once), got {perm!r}"
            )
        perms.append(tuple(int(a) for a in perm))
    return tuple(perms)


def permute_payoff(payoff: np.ndarray, permutation: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """The payoff with agent i's action a relabelled permutation[i][a] (module docstring)."""
    out = np.empty_like(payoff)
    out[np.ix_(*permutation)] = payoff
    return out


def permutation_label(permutation: Any) -> str:
    """A task-name suffix that spells the permutation: [[1, 2, 0], [2, 0, 1]] -> 'perm120_201'
    (actions joined with '-' where a game has more than 10)."""
    sep = "" if all(a < 10 for perm in permutation for a in perm) else "-"
    return "perm" + "_".join(sep.join(str(a) for a in perm) for perm in permutation)


def _one_step_payoff(env_name: str, config: Mapping[str, Any]) -> np.ndarray:
    """Validate `config` for a one-step game and return the payoff tensor the env plays."""
    payoff = _named_payoff(env_name, config)
    if config.get(PERMUTE) is None:
        return payoff
    return permute_payoff(payoff, parse_permutation(config[PERMUTE], payoff.shape))


ONE_STEP_GAMES = (
    "matrix:climbing",
    "matrix:penalty",
    "matrix:nonmonotonic",
    "matrix:qplex_1",
    "matrix:qplex_2",
    "matrix:qplex_3",
    "matrix:custom",
)


def validate_one_step(env_name: str, config: Mapping[str, Any]) -> None:
    _one_step_payoff(env_name, config)
    get_int(config, NOISE_FEATURES, 0, min_value=0, max_value=1024)


def make_one_step(env_name: str, config: Mapping[str, Any]) -> MatrixGame:
    noise = get_int(config, NOISE_FEATURES, 0, min_value=0, max_value=1024)
    return MatrixGame(_one_step_payoff(env_name, config), name=env_name, noise_features=noise)


class MatrixGame(TeamEnv):
    """A one-step cooperative game: reward = payoff[a_0, ..., a_{n-1}]."""

    def __init__(
        self, payoff: Any, name: str = "matrix:custom", *, noise_features: int = 0
    ) -> None:
        self.payoff = parse_payoff(payoff)
        self.name = name
        self.noise_features = int(noise_features)
        self.action_counts = tuple(int(s) for s in self.payoff.shape)
        n_agents, n_actions = len(self.action_counts), max(self.action_counts)
        dim = 1 + self.noise_features
        self._set_team(TeamSpec(n_agents, n_actions, obs_dim=dim, state_dim=dim, episode_limit=1))
        self._avail = np.zeros((n_agents, n_actions), np.float32)
        for i, count in enumerate(self.action_counts):
            self._avail[i, :count] = 1.0
        self._last_real = np.array(self.action_counts, np.int64) - 1
        self._done = True

    def _obs(self) -> dict[str, np.ndarray]:
        state = np.ones((1 + self.noise_features,), np.float32)
        if self.noise_features:  # drawn per step from the env's seeded RNG; payoff-free
            state[1:] = self.np_random.standard_normal(self.noise_features)
        return {
            "obs": np.broadcast_to(state, (self.n_agents, state.size)).copy(),
            "state": state,
            "avail_actions": self._avail.copy(),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._done = False
        return self._obs(), {}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError(f"{self.name}: step() after the episode ended; call reset()")
        joint = np.minimum(check_actions(actions, self.n_agents, self.n_actions), self._last_real)
        reward = float(self.payoff[tuple(joint)])
        self._done = True
        return self._obs(), reward, True, False, {"episode_limit": False}


class TwoStepGame(TeamEnv):
    """QMIX's two-step game (Rashid et al. 2018, section 6.1); states 0=1, 1=2A, 2=2B."""

    def __init__(self) -> None:
        self.name = "matrix:two_step"
        self._set_team(TeamSpec(n_agents=2, n_actions=2, obs_dim=3, state_dim=3, episode_limit=2))
        self._state = 0
        self._t = 0
        self._done = True

    def _obs(self) -> dict[str, np.ndarray]:
        onehot = np.zeros(3, np.float32)
        onehot[self._state] = 1.0
        return {
            "obs": np.tile(onehot, (2, 1)),
            "state": onehot,
            "avail_actions": np.ones((2, 2), np.float32),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._state, self._t, self._done = 0, 0, False
        return self._obs(), {}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError(f"{self.name}: step() after the episode ended; call reset()")
        a = check_actions(actions, 2, 2)
        self._t += 1
        if self._t == 1:
            # Only agent 0 matters here: it picks which second-stage game is played.
            self._state = 1 + int(a[0])
            return self._obs(), 0.0, False, False, {"episode_limit": False}
        reward = TWO_STEP_2A_REWARD if self._state == 1 else TWO_STEP_2B[a[0]][a[1]]
        self._done = True
        return self._obs(), float(reward), True, False, {"episode_limit": False}


def validate_two_step(config: Mapping[str, Any]) -> None:
    check_keys("matrix:two_step", config, [])


def make_two_step(config: Mapping[str, Any]) -> TwoStepGame:
    validate_two_step(config)
    return TwoStepGame()

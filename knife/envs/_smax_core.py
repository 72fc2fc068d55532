"""The JAX side of the `smax:` adapter: jitted reset/step for one scenario config.

Imported lazily by knife.envs.smax (it imports jax and jaxmarl). `get_core(spec)` returns one
`SMAXCore` per scenario config, so every env instance of a scenario shares the compiled
functions, and each is traced once (the trace counters let tests check that).
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    # Importing jaxmarl prints two lines about optional submodules, and its mabrax module
    # sets sys.stdout/sys.stderr to sys.__stdout__/sys.__stderr__, which would undo any
    # redirection the caller had (pytest, Ray log capture). Point all four at a buffer for
    # the import and put the caller's streams back afterwards.
    saved = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    sink = io.StringIO()
    sys.stdout = sys.__stdout__ = sink
    sys.stderr = sys.__stderr__ = sink
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved


with _quiet_import():
    from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

# SMAX's own action layout: 0 north, 1 east, 2 south, 3 west, 4 stop, 5+j attack enemy j.
_SMAX_STOP = 4
_SMAX_ATTACK0 = 5
# Ours (SMACv2's): 0 no-op, 1 stop, 2 north, 3 south, 4 east, 5 west, 6+j attack enemy j.
N_FIXED_ACTIONS = 6
_MOVE_TO_SMAX = (0, 2, 1, 3)  # our north, south, east, west -> SMAX's indices

# SMACv2's surrounded layout: per diagonal d, the map corner and an inner point 2 units off
# the centre; an enemy group sits at t * inner + (1 - t) * corner, t ~ U(0, 1).
_SURROUND_OFFSET = 2.0
_START_JITTER = 1.0  # SMAX has no engine that spreads units spawned on one point
_WALL_MARGIN = 1.0  # SMAX can kill units touching the map edge: start inside it


def _strong(tree: Any) -> Any:
    # reset() leaves some leaves weakly typed while step() returns them strongly typed; the
    # jitted step would then compile twice (once per input signature). Make them all strong.
    return jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), tree)


class WeightedTeams:
    """SMACv2's weighted_teams distribution, in JAX: ally types drawn i.i.d. from `weights`
    over the race's three slots, redrawn while the whole team is exception units; enemies
    copy the ally team and draw any extra enemies the same way. Slots map to SMAX types."""

    def __init__(
        self,
        n_allies: int,
        n_enemies: int,
        weights: tuple[float, ...],
        exception: tuple[bool, ...],
        slot_types: tuple[int, ...],
    ) -> None:
        self.n_allies, self.n_enemies = n_allies, n_enemies
        self.weights = np.asarray(weights, np.float32)
        self.exception = np.asarray(exception, bool)
        self.slot_types = np.asarray(slot_types, np.uint8)

    def _team(self, key: jax.Array, size: int) -> jax.Array:
        weights, exception = jnp.asarray(self.weights), jnp.asarray(self.exception)

        def draw(carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            key, sub = jax.random.split(carry[0])
            return key, jax.random.choice(sub, len(self.weights), (size,), p=weights)

        key, team = draw((key, jnp.zeros((size,), jnp.int32)))
        return jax.lax.while_loop(lambda c: jnp.all(exception[c[1]]), draw, (key, team))[1]

    def slots(self, key: jax.Array) -> jax.Array:
        """Slot indices (0..2 into the race's unit types), allies then enemies."""
        k_team, k_extra = jax.random.split(key)
        team = self._team(k_team, self.n_allies)
        parts = [team, team]
        if self.n_enemies > self.n_allies:
            parts.append(self._team(k_extra, self.n_enemies - self.n_allies))
        return jnp.concatenate(parts)

    def generate(self, key: jax.Array) -> jax.Array:
        # SMAX.reset calls this (its unit_type_generator hook) and wants uint8 type ids.
        return jnp.asarray(self.slot_types)[self.slots(key)]


class SMACv2StartPositions:
    """SMACv2's surrounded_and_reflect start positions, in JAX (SMAX.reset's hook).

    reflect (probability `reflect_prob`, SMACv2's p): allies uniform in the left half (x up to
    width/2 - 1), the first n_allies enemies mirrored in the vertical centre line, extra
    enemies uniform in the right half. surrounded: allies at the centre, enemies in 1-4
    groups on distinct diagonals at a uniform distance between a corner and the centre.
    SMAX adaptations: surrounded units get +-1 jitter (units spawned on one point would never
    separate), and every start point is clipped 1 unit inside the map (SMAX kills units
    touching the edge).
    """

    def __init__(self, n_allies: int, n_enemies: int, size: float, reflect_prob: float) -> None:
        self.n_allies, self.n_enemies = n_allies, n_enemies
        self.size = float(size)
        self.reflect_prob = float(reflect_prob)

    def _reflect(self, key: jax.Array) -> jax.Array:
        n, m, s = self.n_allies, self.n_enemies, self.size
        k_ally, k_extra = jax.random.split(key)
        ally = jax.random.uniform(k_ally, (n, 2)) * jnp.array([s / 2 - 1, s])
        mirrored = jnp.stack([s - ally[:, 0], ally[:, 1]], axis=1)
        extra = jnp.array([s / 2, 0.0]) + jax.random.uniform(k_extra, (m - n, 2)) * jnp.array(
            [s / 2, s]
        )
        return jnp.concatenate([ally, mirrored, extra])

    def _surrounded(self, key: jax.Array) -> jax.Array:
        n, m, s = self.n_allies, self.n_enemies, self.size
        c, o = s / 2, _SURROUND_OFFSET
        corners = jnp.array([[0.0, 0.0], [0.0, s], [s, s], [s, 0.0]])
        inner = jnp.array([[c - o, c - o], [c - o, c + o], [c + o, c + o], [c + o, c - o]])
        k_n, k_group, k_diag, k_t, k_jit = jax.random.split(key, 5)
        n_groups = jax.random.randint(k_n, (), 1, 5)
        # A uniform group per enemy gives the same group sizes as SMACv2's multinomial.
        group = jax.random.randint(k_group, (m,), 0, n_groups)
        diag = jax.random.permutation(k_diag, 4)[group]
        t = jax.random.uniform(k_t, (4,))[group][:, None]
        enemy = inner[diag] * t + corners[diag] * (1 - t)
        ally = jnp.full((n, 2), c)
        jitter = jax.random.uniform(k_jit, (n + m, 2), minval=-_START_JITTER, maxval=_START_JITTER)
        return jnp.concatenate([ally, enemy]) + jitter

    def generate(self, key: jax.Array) -> jax.Array:
        k_pick, k_reflect, k_surround = jax.random.split(key, 3)
        pos = jnp.where(
            jax.random.uniform(k_pick) < self.reflect_prob,
            self._reflect(k_reflect),
            self._surrounded(k_surround),
        )
        return jnp.clip(pos, _WALL_MARGIN, self.size - _WALL_MARGIN)


class SMAXCore:
    """Compiled reset/step of one scenario config (`spec`: a knife.envs.smax.SMAXScenario
    without its episode limit, which the env applies).

    Both return already-fetched NumPy data: everything the host needs is packed into one
    array inside the jitted call and fetched with one jax.device_get, while the SMAX state
    stays on the device for the next step.
    """

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        kwargs: dict[str, Any] = {
            # The time limit is the Python side's (one compile serves every limit); SMAX's
            # own only sets a done flag nothing here reads.
            "max_steps": 2**30,
            "attack_mode": spec.enemy_attack_mode,
            "walls_cause_death": spec.walls_cause_death,
        }
        if spec.race is None:
            kwargs["scenario"] = map_name_to_scenario(spec.name)
        else:
            kwargs.update(
                num_allies=spec.n_allies,
                num_enemies=spec.n_enemies,
                map_width=spec.map_size,
                map_height=spec.map_size,
                smacv2_position_generation=True,
                smacv2_unit_type_generation=True,
            )
        env = HeuristicEnemySMAX(**kwargs)
        self.env = env
        self.unit_type_names: tuple[str, ...] = tuple(env.unit_type_names)
        self.teams: WeightedTeams | None = None
        if spec.race is not None:
            # SMAX draws types and positions through these two hooks when its smacv2_*
            # flags are on; ours follow SMACv2's distributions for the race.
            smax = env._env
            self.teams = WeightedTeams(
                spec.n_allies,
                spec.n_enemies,
                spec.weights,
                spec.exception_slots,
                tuple(self.unit_type_names.index(t) for t in spec.smax_slot_types),
            )
            smax.unit_type_generator = self.teams
            smax.position_generator = SMACv2StartPositions(
                spec.n_allies, spec.n_enemies, spec.map_size, spec.reflect_prob
            )
        n, m = env.num_allies, env.num_enemies
        self.n_allies, self.n_enemies = n, m
        self.n_actions = N_FIXED_ACTIONS + m
        self.obs_dim = int(env.obs_size)
        self.state_dim = int(env.state_size)
        self._to_smax = jnp.asarray(
            (_SMAX_STOP, _SMAX_STOP, *_MOVE_TO_SMAX, *range(_SMAX_ATTACK0, _SMAX_ATTACK0 + m)),
            jnp.int32,
        )
        self.traces = dict.fromkeys(
            ("reset", "step", "reset_many", "reset_rows", "step_rows", "step_all"), 0
        )
        self._layouts: dict[str, list[tuple[int, int, tuple[int, ...]]]] = {}
        self._reset = jax.jit(self._reset_fn)
        self._step = jax.jit(self._step_fn)
        # N envs in one call (knife/envs/smax_vector.py); compiled once per N.
        self._reset_many = jax.jit(self._reset_many_fn)
        self._reset_rows = jax.jit(self._reset_rows_fn)
        self._step_rows = jax.jit(self._step_rows_fn)
        self._step_all = jax.jit(self._step_all_fn)

    # ------------------------------------------------------------------ traced functions

    def _view(self, obs: dict[str, jax.Array], state: Any) -> tuple[jax.Array, ...]:
        env = self.env
        ally_obs = jnp.stack([obs[a] for a in env.agents])
        avail = env.get_avail_actions(state)
        smax_avail = jnp.stack([avail[a] for a in env.agents]).astype(jnp.float32)
        alive = state.state.unit_alive
        ours = jnp.concatenate(
            [
                (~alive[: self.n_allies]).astype(jnp.float32)[:, None],  # no-op: dead only
                alive[: self.n_allies].astype(jnp.float32)[:, None],  # stop: alive only
                smax_avail[:, jnp.asarray(_MOVE_TO_SMAX)],
                smax_avail[:, _SMAX_ATTACK0:],
            ],
            axis=1,
        )
        return ally_obs, obs["world_state"], ours, alive

    def _pack(self, name: str, parts: tuple[jax.Array, ...]) -> jax.Array:
        # One flat float32 buffer, so the host fetches one array per call; float32 holds the
        # 0/1 masks, flags and unit type ids exactly. The layout is recorded at trace time.
        layout, start = [], 0
        for p in parts:
            layout.append((start, start + p.size, p.shape))
            start += p.size
        self._layouts[name] = layout
        return jnp.concatenate([jnp.ravel(p).astype(jnp.float32) for p in parts])

    def _unpack(self, name: str, flat: jax.Array) -> list[np.ndarray]:
        host = np.array(jax.device_get(flat))  # the one transfer (and a writable copy)
        return [host[a:b].reshape(shape) for a, b, shape in self._layouts[name]]

    def _reset_fn(self, key: jax.Array) -> tuple[Any, ...]:
        self.traces["reset"] += 1  # runs at trace time only
        return self._reset_body(key)

    def _reset_body(self, key: jax.Array) -> tuple[Any, ...]:
        key, sub = jax.random.split(key)
        obs, state = self.env.reset(sub)
        state = _strong(state)
        return key, state, self._pack("reset", (*self._view(obs, state), state.state.unit_types))

    def _step_fn(self, key: jax.Array, state: Any, actions: jax.Array) -> tuple[Any, ...]:
        self.traces["step"] += 1
        return self._step_body(key, state, actions)

    def _step_body(self, key: jax.Array, state: Any, actions: jax.Array) -> tuple[Any, ...]:
        key, sub = jax.random.split(key)
        smax_actions = self._to_smax[actions]
        act = {a: smax_actions[i] for i, a in enumerate(self.env.agents)}
        obs, state, rewards, _, _ = self.env.step_env(sub, state, act)
        state = _strong(state)
        alive = state.state.unit_alive
        allies_dead = ~jnp.any(alive[: self.n_allies])
        enemies_dead = ~jnp.any(alive[self.n_allies :])
        terminated = allies_dead | enemies_dead
        won = enemies_dead & ~allies_dead  # both dead at once is a draw, as in SMAX's reward
        reward = rewards[self.env.agents[0]]  # the team reward; every ally gets the same
        flags = (reward, terminated, won)
        return key, state, self._pack("step", (*self._view(obs, state), *flags))

    def _reset_many_fn(self, keys: jax.Array) -> tuple[Any, ...]:
        self.traces["reset_many"] += 1
        return jax.vmap(self._reset_body)(keys)  # the packed layout is one env's, per row

    # Subsets of N envs: only the envs `rows` (B of the N, each B compiled once) are
    # gathered, reset or stepped vmapped, and scattered back. Rows where `live` is false
    # fill the batch up to B and keep their state and key, so their random stream does not
    # move; the rows are distinct, so the scatter is well defined.

    def _scatter(self, full: tuple, new: tuple, old: tuple, rows: jax.Array, live: jax.Array):
        def put(f: jax.Array, n: jax.Array, o: jax.Array) -> jax.Array:
            keep = live.reshape((-1,) + (1,) * (n.ndim - 1))
            return f.at[rows].set(jnp.where(keep, n, o))

        return jax.tree.map(put, full, new, old)

    def _reset_rows_fn(
        self, keys: jax.Array, states: Any, rows: jax.Array, live: jax.Array
    ) -> tuple[Any, ...]:
        self.traces["reset_rows"] += 1
        old = (keys[rows], jax.tree.map(lambda x: x[rows], states))
        new_keys, new_states, flat = jax.vmap(self._reset_body)(old[0])
        keys, states = self._scatter((keys, states), (new_keys, new_states), old, rows, live)
        return keys, states, flat

    def _step_all_fn(self, keys: jax.Array, states: Any, actions: jax.Array) -> tuple[Any, ...]:
        self.traces["step_all"] += 1
        return jax.vmap(self._step_body)(keys, states, actions)

    def _step_rows_fn(
        self, keys: jax.Array, states: Any, actions: jax.Array, rows: jax.Array, live: jax.Array
    ) -> tuple[Any, ...]:
        self.traces["step_rows"] += 1
        old = (keys[rows], jax.tree.map(lambda x: x[rows], states))
        new_keys, new_states, flat = jax.vmap(self._step_body)(*old, actions)
        keys, states = self._scatter((keys, states), (new_keys, new_states), old, rows, live)
        return keys, states, flat

    # ------------------------------------------------------------------ host API

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any, list[np.ndarray]]:
        """(key, state, [obs, world state, avail, alive, unit types]) for a new episode."""
        key, state, flat = self._reset(key)
        return key, state, self._unpack("reset", flat)

    def step(
        self, key: jax.Array, state: Any, actions: np.ndarray
    ) -> tuple[jax.Array, Any, list[np.ndarray]]:
        """(key, state, [obs, world state, avail, alive, reward, terminated, won])."""
        key, state, flat = self._step(key, state, actions)
        return key, state, self._unpack("step", flat)

    def reset_many(self, keys: np.ndarray) -> tuple[jax.Array, Any, list[np.ndarray]]:
        """`reset` of N envs at once (keys uint32 [N, 2]); every array gains a leading N."""
        keys, states, flat = self._reset_many(keys)
        return keys, states, self._unpack_many("reset", flat)

    def reset_rows(
        self, keys: jax.Array, states: Any, mask: np.ndarray
    ) -> tuple[jax.Array, Any, list[np.ndarray]]:
        """`reset` of the N envs where `mask` ([N] bool); the others keep state and key."""
        rows, live = self._batch(mask)
        keys, states, flat = self._reset_rows(keys, states, rows, live)
        return keys, states, self._scatter_host("reset", flat, rows, len(mask))

    def step_rows(
        self, keys: jax.Array, states: Any, actions: np.ndarray, mask: np.ndarray
    ) -> tuple[jax.Array, Any, list[np.ndarray]]:
        """`step` of the N envs where `mask` ([N] bool); the others keep state and key."""
        if mask.all():  # every env: no gather or scatter
            keys, states, flat = self._step_all(keys, states, actions)
            return keys, states, self._unpack_many("step", flat)
        rows, live = self._batch(mask)
        keys, states, flat = self._step_rows(keys, states, actions[rows], rows, live)
        return keys, states, self._scatter_host("step", flat, rows, len(mask))

    @staticmethod
    def _batch(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows to compute: the masked envs, filled up with others to the smallest
        B = N / 2^j that holds them (B >= N / 4, so at most 3 compiled sizes)."""
        n, chosen = len(mask), np.flatnonzero(mask)
        size = n
        while size > -(-n // 4) and (size + 1) // 2 >= len(chosen):  # B >= ceil(N / 4)
            size = (size + 1) // 2
        rows = np.concatenate([chosen, np.flatnonzero(~mask)[: size - len(chosen)]])
        return rows, np.arange(size) < len(chosen)

    def _scatter_host(self, name: str, flat: jax.Array, rows: np.ndarray, n: int) -> list:
        out = self._unpack_many(name, flat)
        full = [np.zeros((n, *part.shape[1:]), part.dtype) for part in out]
        for dst, part in zip(full, out, strict=True):
            dst[rows] = part
        return full

    def _unpack_many(self, name: str, flat: jax.Array) -> list[np.ndarray]:
        host = np.array(jax.device_get(flat))  # [N, packed]: still one transfer
        n = host.shape[0]
        return [host[:, a:b].reshape(n, *shape) for a, b, shape in self._layouts[name]]

    @staticmethod
    def make_key(seed: int) -> jax.Array:
        return jax.random.PRNGKey(seed)

    def draw_slots(self, seed: int, count: int) -> np.ndarray:
        """`count` team draws [count, n_allies + n_enemies] of race slot indices (tests)."""
        if self.teams is None:
            raise ValueError(f"env: {self.spec.name} has fixed teams, no race slots")
        keys = jax.random.split(jax.random.PRNGKey(seed), count)
        return np.asarray(jax.jit(jax.vmap(self.teams.slots))(keys))


@functools.cache
def get_core(spec: Any) -> SMAXCore:
    """One core per (hashable) scenario config, shared by every env instance."""
    return SMAXCore(spec)

"""The smax: adapter (JaxMARL SMAX with heuristic enemies; knife/envs/smax.py)."""

import importlib.util
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from knife.envs import make, names, validate
from knife.envs._smacv2_races import MissingDependencyError
from knife.envs.smax import (
    JAXMARL_MAPS,
    SMAX_SLOT_TYPES,
    SMAX_UNIT_TYPES,
    register_smax,
    team_spec,
)

register_smax()

NOOP, STOP, NORTH, SOUTH, EAST, WEST = range(6)
needs_jaxmarl = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) is not None for m in ("jax", "jaxmarl")),
    reason="jaxmarl not installed (pip install 'knife-marl[smax]')",
)


def attack_or_move(obs, move=EAST):
    """Attack the first attackable enemy, else `move`; no-op for the dead."""
    acts = []
    for row in obs["avail_actions"]:
        if row[NOOP]:
            acts.append(NOOP)
        elif row[6:].any():
            acts.append(6 + int(np.flatnonzero(row[6:])[0]))
        else:
            acts.append(move)
    return np.array(acts)


def random_valid(rng, obs):
    return np.array([rng.choice(np.flatnonzero(row)) for row in obs["avail_actions"]])


# ------------------------------------------------------------------ no jax needed


def test_import_stays_cheap():
    code = "import knife.envs, knife.envs.smax, knife.envs.smacv2, sys; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sizes_without_jax():
    spec = team_spec("protoss_5_vs_5")
    assert (spec.n_agents, spec.n_actions, spec.obs_dim, spec.state_dim) == (5, 11, 127, 120)
    assert spec.episode_limit == 200 and spec.has_win
    spec = team_spec("zerg_10_vs_11", {"episode_limit": 50})
    assert (spec.n_agents, spec.n_actions, spec.episode_limit) == (10, 17, 50)
    assert team_spec("3m").n_agents == 3


@pytest.mark.parametrize(
    ("name", "config", "pattern"),
    [
        ("smax:foo", {}, r"env: unknown smax scenario 'foo'; available: .*3m.*protoss_5_vs_5"),
        ("smax:protoss_6_vs_5", {}, r"more allies \(6\) than enemies \(5\)"),
        (
            "smax:protoss_5_vs_5",
            {"difficulty": 7},
            r"env_config: unknown key 'difficulty' for smax:protoss_5_vs_5; allowed: "
            r"episode_limit, enemy_attack_mode, walls_cause_death, weights, start_positions",
        ),
        ("smax:3m", {"weights": [1, 1, 1]}, r"env_config\.weights: only the race scenarios"),
        ("smax:protoss_5_vs_5", {"weights": [1, 1]}, r"env_config\.weights: must be 3 non-neg"),
        ("smax:protoss_5_vs_5", {"weights": [1, -1, 1]}, r"env_config\.weights: must be 3"),
        ("smax:protoss_5_vs_5", {"weights": [0, 0, 0]}, r"env_config\.weights: must be 3"),
        ("smax:terran_5_vs_5", {"weights": [0, 0, 1]}, r"env_config\.weights: a team may not"),
        (
            "smax:zerg_5_vs_5",
            {"start_positions": "corner"},
            r"env_config\.start_positions: must be one of surrounded_and_reflect, reflect, "
            r"surrounded; got 'corner'",
        ),
        ("smax:3m", {"episode_limit": 0}, r"env_config\.episode_limit: must be an integer >= 1"),
        ("smax:3m", {"walls_cause_death": 1}, r"env_config\.walls_cause_death: must be true"),
        ("smax:3m", {"enemy_attack_mode": "weakest"}, r"env_config\.enemy_attack_mode: must be"),
    ],
)
def test_bad_scenario_or_config(name, config, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate(name, config)
    with pytest.raises(ValueError, match=pattern):
        make(name, **config)


def test_missing_jaxmarl_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "jaxmarl", None)
    monkeypatch.setitem(sys.modules, "knife.envs._smax_core", None)
    for call in (lambda: make("smax:protoss_5_vs_5"), lambda: validate("smax:3m")):
        with pytest.raises(MissingDependencyError, match=r"pip install 'knife-marl\[smax\]'"):
            call()


def test_register_is_idempotent_and_lists_scenarios():
    register_smax()
    register_smax()
    listed = names()
    for name in ("smax:3m", "smax:2s3z", "smax:protoss_5_vs_5", "smax:zerg_20_vs_23"):
        assert name in listed


# ------------------------------------------------------------------ against jaxmarl


@needs_jaxmarl
def test_scenario_and_unit_tables_match_jaxmarl():
    importlib.import_module("knife.envs._smax_core")  # imports jaxmarl with streams intact
    from jaxmarl.environments.smax import SMAX
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

    assert {k: (v.num_allies, v.num_enemies) for k, v in MAP_NAME_TO_SCENARIO.items()} == (
        JAXMARL_MAPS
    )
    assert tuple(SMAX(num_allies=1, num_enemies=1).unit_type_names) == SMAX_UNIT_TYPES
    for race, slots in SMAX_SLOT_TYPES.items():
        assert set(slots) <= set(SMAX_UNIT_TYPES), race


@needs_jaxmarl
@pytest.mark.parametrize("race", ["protoss", "terran", "zerg"])
def test_race_teams_draw_the_race_units_with_smacv2_weights(race):
    env = make(f"smax:{race}_5_vs_5")
    slots = SMAX_SLOT_TYPES[race]
    # The SMAX types a race may use, with the weights their SMACv2 units add up to.
    expected = Counter()
    for smax_type, weight in zip(slots, (0.45, 0.45, 0.1), strict=True):
        expected[smax_type] += weight
    counts = Counter()
    for seed in range(300):
        _, info = env.reset(seed=seed)
        allies, enemies = info["ally_unit_types"], info["enemy_unit_types"]
        assert enemies == allies  # SMACv2: the enemy team copies the ally team
        counts.update(allies)
    assert set(counts) <= set(expected)
    total = sum(counts.values())  # 1500 units: standard error of a share about 0.013
    for smax_type, weight in expected.items():
        assert abs(counts[smax_type] / total - weight) < 0.05, (smax_type, counts)

    # The draw itself, per SMACv2 unit (slot 2 = colossus/medivac/baneling, distinct here).
    draws = env.core.draw_slots(seed=1, count=2000)  # [2000, 10] slot indices
    shares = np.bincount(draws[:, :5].ravel(), minlength=3) / draws[:, :5].size
    np.testing.assert_allclose(shares, [0.45, 0.45, 0.1], atol=0.02)
    np.testing.assert_array_equal(draws[:, 5:], draws[:, :5])
    if race != "protoss":  # the exception unit never makes up a whole team
        assert not (draws[:, :5] == 2).all(axis=1).any()


@needs_jaxmarl
def test_configured_weights_and_extra_enemies():
    env = make("smax:protoss_2_vs_3", weights=[0.2, 0.8, 0.0])
    draws = env.core.draw_slots(seed=2, count=2000)  # the generator reset() runs
    assert draws.shape == (2000, 5)
    np.testing.assert_array_equal(draws[:, 2:4], draws[:, :2])  # enemies copy the allies
    for units in (draws[:, :2], draws[:, 4]):  # allies; the extra enemy, drawn alike
        shares = np.bincount(units.ravel(), minlength=3) / units.size
        np.testing.assert_allclose(shares, [0.2, 0.8, 0.0], atol=0.03)


@needs_jaxmarl
def test_check_env(strict_check_env):
    strict_check_env(make("smax:protoss_5_vs_5"))


@needs_jaxmarl
def test_masks_are_valid():
    env = make("smax:protoss_5_vs_5")
    rng = np.random.default_rng(0)
    saw_dead = False
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        dead_before = np.zeros(5, bool)
        done = False
        while not done:
            avail = obs["avail_actions"]
            assert avail.dtype == np.float32 and set(np.unique(avail)) <= {0.0, 1.0}
            assert (avail.sum(axis=1) >= 1).all()
            dead = avail[:, NOOP] == 1
            assert (avail[dead, 1:] == 0).all()  # dead: no-op only
            assert (avail[~dead, STOP] == 1).all()  # alive: never no-op, always stop
            assert (dead >= dead_before).all()  # nobody comes back
            # a dead agent observes nothing
            assert (obs["obs"][dead] == 0).all()
            saw_dead |= bool(dead.any())
            dead_before = dead
            obs, _, terminated, truncated, _ = env.step(random_valid(rng, obs))
            done = terminated or truncated
    assert saw_dead


@needs_jaxmarl
def test_moves_follow_the_smacv2_layout():
    env = make("smax:3m")
    obs, _ = env.reset(seed=0)
    own = 13 * (3 - 1 + 3)  # own features follow the unit lists: health, x/32, y/32, ...
    for action, (dx, dy) in {NORTH: (0, 1), SOUTH: (0, -1), EAST: (1, 0), WEST: (-1, 0)}.items():
        before = obs["obs"][0, own + 1 : own + 3].copy()
        obs, *_ = env.step([action, STOP, STOP])
        delta = obs["obs"][0, own + 1 : own + 3] - before
        moved = np.array([dx, dy])
        assert (delta * moved).sum() > 0.03, (action, delta)  # about 1.6 / 32 per step
        assert abs(delta[moved == 0][0]) < 0.01, (action, delta)


@needs_jaxmarl
def test_seeding_is_deterministic():
    def rollout(env, seed, steps=30):
        rng = np.random.default_rng(0)
        obs, info = env.reset(seed=seed)
        out = [obs["obs"].copy(), info["ally_unit_types"]]
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(random_valid(rng, obs))
            out += [obs["obs"].copy(), obs["state"].copy(), reward]
            if terminated or truncated:
                obs, _ = env.reset()
        return out

    a, b = make("smax:protoss_5_vs_5"), make("smax:protoss_5_vs_5")
    ra, rb, rc = rollout(a, 3), rollout(b, 3), rollout(a, 4)
    assert all(np.array_equal(x, y) for x, y in zip(ra, rb, strict=True))
    assert not np.array_equal(ra[0], rc[0])
    # Consecutive unseeded resets start different episodes.
    first = a.reset()[0]["obs"]
    assert not np.array_equal(first, a.reset()[0]["obs"])


@needs_jaxmarl
def test_time_limit_truncates():
    env = make("smax:3m", episode_limit=3)
    assert env.team.episode_limit == 3
    obs, _ = env.reset(seed=0)
    for t in range(3):
        obs, reward, terminated, truncated, info = env.step([STOP] * 3)
        assert not terminated
        assert truncated == (t == 2) and info["episode_limit"] == (t == 2)
    assert info["battle_won"] is False
    with pytest.raises(RuntimeError, match="call reset"):
        env.step([STOP] * 3)


@needs_jaxmarl
def test_wins_and_losses_terminate():
    env = make("smax:3m")
    outcomes = set()
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        total = 0.0
        while True:
            obs, reward, terminated, truncated, info = env.step(attack_or_move(obs))
            total += reward
            if terminated or truncated:
                break
        assert terminated and not truncated and not info["episode_limit"]
        assert isinstance(info["battle_won"], bool)
        if info["battle_won"]:
            assert info["dead_enemies"] == 3 and info["dead_allies"] < 3
            assert total > 1.0  # the win bonus on top of the damage reward
        else:
            assert info["dead_allies"] == 3
        outcomes.add(info["battle_won"])
    assert outcomes == {True, False}


@needs_jaxmarl
def test_compiled_once_and_shared_between_instances():
    a = make("smax:protoss_5_vs_5")
    b = make("smax:protoss_5_vs_5", episode_limit=20)  # the limit does not recompile
    assert a.core is b.core
    rng = np.random.default_rng(0)
    for env in (a, b, a):
        obs, _ = env.reset()
        for _ in range(40):
            obs, _, terminated, truncated, _ = env.step(random_valid(rng, obs))
            if terminated or truncated:
                obs, _ = env.reset()
    assert (a.core.traces["reset"], a.core.traces["step"]) == (1, 1)

"""The smacv2: adapter's contract, against a test double of SMACv2 (tests/envs/fake_smacv2.py)."""

import logging
import sys

import numpy as np
import pytest
from fake_smacv2 import (
    REFERENCE_ENV_ARGS,
    REFERENCE_SIZES,
    FakeSMACv2,
    reference_capability_config,
)

from knife.envs import make, names, validate
from knife.envs.smacv2 import SMACv2Env, register_smacv2, team_spec

register_smacv2()

NOOP, STOP = 0, 1


def fake_env(scenario="protoss_5_vs_5", **options):
    factory = FakeSMACv2(**options)
    env = make(f"smacv2:{scenario}", _wrapper_factory=factory)
    return env, factory


def attack_or_stop(obs):
    """Attack the first attackable enemy, else stop; no-op for the dead."""
    acts = []
    for row in obs["avail_actions"]:
        if row[NOOP]:
            acts.append(NOOP)
        elif row[6:].any():
            acts.append(6 + int(np.flatnonzero(row[6:])[0]))
        else:
            acts.append(STOP)
    return np.array(acts)


def run_episode(env, seed=None):
    obs, _ = env.reset(seed=seed)
    while True:
        obs, reward, terminated, truncated, info = env.step(attack_or_stop(obs))
        if terminated or truncated:
            return terminated, truncated, info


# ------------------------------------------------------------------ sizes and config


@pytest.mark.parametrize("scenario", sorted(REFERENCE_SIZES))
def test_sizes_match_the_reference_table(scenario):
    n_agents, n_enemies, obs_dim, state_dim, n_actions = REFERENCE_SIZES[scenario]
    env, factory = fake_env(scenario)
    t = env.team
    assert (t.n_agents, t.obs_dim, t.state_dim, t.n_actions) == (
        n_agents,
        obs_dim,
        state_dim,
        n_actions,
    )
    assert t.episode_limit == 200 and t.has_win
    # The no-smacv2 size formula (for padding task sequences) agrees with the table too.
    assert team_spec(scenario) == t
    obs, info = env.reset(seed=0)
    assert obs["obs"].shape == (n_agents, obs_dim) and obs["obs"].dtype == np.float32
    assert obs["state"].shape == (state_dim,)
    assert obs["avail_actions"].shape == (n_agents, n_actions)
    assert env.observation_space.contains(obs)
    assert env.action_space.nvec.tolist() == [n_actions] * n_agents
    assert info == {}
    race = scenario.split("_")[0]
    assert factory.built[-1].received == {
        "capability_config": reference_capability_config(race, n_agents, n_enemies),
        "map_name": f"10gen_{race}",
        "env_args": {**REFERENCE_ENV_ARGS, "seed": 0},
    }
    env.close()


def test_sizes_outside_the_table_follow_smacv2_feature_counts():
    env, _ = fake_env("protoss_5_vs_6")
    assert team_spec("protoss_5_vs_6") == env.team
    assert env.team.n_actions == 12


def test_each_build_gets_a_fresh_capability_config():
    # SMACv2's wrapper writes into its config; a rebuild must not see the previous writes.
    env, factory = fake_env(crash_on_step=1, faulty=1)
    obs, _ = env.reset()
    env.step(attack_or_stop(obs))  # crash: the next reset builds a second wrapper
    env.reset()
    assert len(factory.built) == 2
    expected = reference_capability_config("protoss", 5, 5)
    assert [w.received["capability_config"] for w in factory.built] == [expected, expected]


def test_env_args_override_and_reserved_keys():
    factory = FakeSMACv2()
    make("smacv2:zerg_5_vs_5", _wrapper_factory=factory, env_args={"difficulty": "5"})
    assert factory.built[-1].received["env_args"] == {**REFERENCE_ENV_ARGS, "difficulty": "5"}
    with pytest.raises(ValueError, match=r"env_config\.env_args\.map_name: set by the scenario"):
        make("smacv2:zerg_5_vs_5", _wrapper_factory=factory, env_args={"map_name": "x"})
    with pytest.raises(ValueError, match=r"env_config\.env_args: must be a mapping"):
        make("smacv2:zerg_5_vs_5", _wrapper_factory=factory, env_args=[1])


# ------------------------------------------------------------------ masks, win flag, ends


def test_action_masks():
    env, _ = fake_env("terran_10_vs_11", enemy_kill_prob=0.1)
    seen_dead = False
    for episode in range(5):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            avail = obs["avail_actions"]
            assert set(np.unique(avail)) <= {0.0, 1.0}
            assert (avail.sum(axis=1) >= 1).all()
            dead = avail[:, NOOP] == 1
            # Dead agents: no-op and nothing else; living agents: never no-op, always stop.
            assert (avail[dead, 1:] == 0).all()
            assert (avail[~dead, STOP] == 1).all()
            seen_dead |= bool(dead.any())
            obs, _, terminated, truncated, _ = env.step(attack_or_stop(obs))
            done = terminated or truncated
    assert seen_dead


def test_win_flag_and_terminated():
    env, _ = fake_env(kill_prob=0.9, enemy_kill_prob=0.0)
    terminated, truncated, info = run_episode(env, seed=1)
    assert terminated and not truncated
    assert info["battle_won"] is True and info["episode_limit"] is False
    assert info["env_crashed"] is False and info["dead_enemies"] == 5


def test_loss_is_terminated_without_win():
    env, _ = fake_env(kill_prob=0.0, enemy_kill_prob=1.0)
    terminated, truncated, info = run_episode(env, seed=1)
    assert terminated and not truncated
    assert info["battle_won"] is False and info["dead_allies"] == 5


def test_time_out_is_truncated():
    env, _ = fake_env(kill_prob=0.0, enemy_kill_prob=0.0, episode_limit=4)
    obs, _ = env.reset(seed=0)
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(attack_or_stop(obs))
    assert (terminated, truncated) == (False, True)
    assert info["episode_limit"] is True and info["battle_won"] is False
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(attack_or_stop(obs))


def test_unavailable_action_is_refused_before_the_game_sees_it():
    env, factory = fake_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions: agent 0 chose action 0, which is unavail"):
        env.step([NOOP, STOP, STOP, STOP, STOP])
    with pytest.raises(ValueError, match=r"actions: expected an integer array of shape \(5,\)"):
        env.step([STOP] * 4)
    assert factory.built[-1].steps_called == 0


# ------------------------------------------------------------------ crashes


def test_crash_mid_episode_truncates_and_the_next_reset_restarts(caplog):
    # Nobody dies (kill_prob, enemy_kill_prob 0): the unseeded game of a reset without a seed
    # must not end the episode before the crash (it won in 2 steps once, in CI).
    env, factory = fake_env(crash_on_step=3, faulty=1, kill_prob=0.0, enemy_kill_prob=0.0)
    obs, _ = env.reset()  # no seed: keeps the first (faulty) game the constructor built
    for _ in range(2):
        obs, *_ = env.step(attack_or_stop(obs))
    with caplog.at_level(logging.WARNING, logger="knife.envs.smacv2"):
        crash_obs, reward, terminated, truncated, info = env.step(attack_or_stop(obs))
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["env_crashed"] is True and info["battle_won"] is False
    assert "connection lost" in info["env_error"]
    # The episode ends on its last good observation, so learners bootstrap from it.
    for key in obs:
        np.testing.assert_array_equal(crash_obs[key], obs[key])
    assert factory.built[0].closed and env.restarts == 1
    assert "restarting" in caplog.text
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(attack_or_stop(obs))
    terminated, truncated, info = run_episode(env)  # retried on a new game
    assert len(factory.built) == 2 and not factory.built[1].closed
    assert info["env_crashed"] is False


def test_smacv2_internal_restart_is_reported_as_a_crash():
    env, factory = fake_env(restart_on_step=2, faulty=1)
    obs, _ = env.reset()
    obs, *_ = env.step(attack_or_stop(obs))
    _, reward, terminated, truncated, info = env.step(attack_or_stop(obs))
    assert (reward, terminated, truncated, info["env_crashed"]) == (0.0, False, True, True)
    # SMACv2 already restarted its game: the wrapper is kept.
    env.reset()
    assert len(factory.built) == 1 and not factory.built[0].closed


def test_crash_in_reset_is_retried_inside_reset():
    env, factory = fake_env(crash_on_reset=True, faulty=2)
    obs, _ = env.reset()
    assert len(factory.built) == 3 and env.restarts == 2
    assert factory.built[0].closed and factory.built[1].closed and not factory.built[2].closed
    assert env.observation_space.contains(obs)


def test_persistent_crashes_give_up_with_a_clear_error():
    env = make(
        "smacv2:protoss_5_vs_5",
        _wrapper_factory=(factory := FakeSMACv2(crash_on_step=1, faulty=10**6)),
        max_restarts=2,
    )
    for _ in range(2):
        obs, _ = env.reset()
        assert env.step(attack_or_stop(obs))[4]["env_crashed"]
    obs, _ = env.reset()
    with pytest.raises(RuntimeError, match=r"failed 3 times in a row.*max_restarts=2") as err:
        env.step(attack_or_stop(obs))
    assert isinstance(err.value.__cause__, ConnectionError)
    assert all(w.closed for w in factory.built)


def test_reset_that_never_works_gives_up():
    env, factory = fake_env(crash_on_reset=True, faulty=10**6)
    with pytest.raises(RuntimeError, match=r"failed 4 times in a row \(last, during reset"):
        env.reset()
    assert len(factory.built) == 4 and all(w.closed for w in factory.built)


def test_a_normal_episode_clears_the_failure_count():
    # Two games crash on their 12th step each. With max_restarts=1 the second crash is fatal
    # unless the episodes that ended normally in between cleared the count.
    factory = FakeSMACv2(crash_on_step=12, faulty=2, kill_prob=0.9, enemy_kill_prob=0.0)
    env = make("smacv2:protoss_5_vs_5", _wrapper_factory=factory, max_restarts=1)
    crashes = normal_ends = 0
    while crashes < 2:
        terminated, truncated, info = run_episode(env)
        crashes += info["env_crashed"]
        normal_ends += not info["env_crashed"]
    assert normal_ends >= 2 and env.restarts == 2 and len(factory.built) == 2
    run_episode(env)  # the rebuilt third game has no fault
    assert len(factory.built) == 3


# ------------------------------------------------------------------ seeding, close, errors


def test_seed_before_the_first_episode_starts_the_game_with_it():
    env, factory = fake_env()
    env.reset(seed=7)
    assert factory.built[-1].received["env_args"]["seed"] == 7
    assert factory.built[0].closed  # the unlaunched wrapper from the constructor
    env.reset(seed=8)  # a running game is not restarted for a new seed
    assert factory.built[-1].received["env_args"]["seed"] == 7
    assert not factory.built[-1].closed


def test_close_is_idempotent_and_reset_after_close_restarts():
    env, factory = fake_env()
    obs, _ = env.reset(seed=0)
    env.close()
    env.close()
    assert factory.built[-1].closed
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(attack_or_stop(obs))
    assert env.get_stats() == {}
    env.reset()
    assert not factory.built[-1].closed and env.get_stats()["battles_game"] == 0
    env.close()


def test_missing_smacv2_says_how_to_install(monkeypatch):
    for name in ("smacv2", "smacv2.env", "smacv2.env.starcraft2", "smacv2.env.starcraft2.wrapper"):
        monkeypatch.setitem(sys.modules, name, None)
    for call in (lambda: make("smacv2:protoss_5_vs_5"), lambda: validate("smacv2:zerg_5_vs_5")):
        with pytest.raises(ImportError) as err:
            call()
        msg = str(err.value)
        assert isinstance(err.value, ValueError)  # config validation reports it cleanly
        assert "pip install git+https://github.com/oxwhirl/smacv2.git" in msg
        assert "StarCraft II 4.10" in msg and "$SC2PATH" in msg and "SMAC_Maps" in msg
        assert "smax:" in msg


@pytest.mark.parametrize(
    ("name", "config", "pattern"),
    [
        ("smacv2:foo", {}, r"env: unknown smacv2 scenario 'foo'; available: protoss_5_vs_5"),
        ("smacv2:protoss_6_vs_5", {}, r"more allies \(6\) than enemies \(5\)"),
        (
            "smacv2:zerg_5_vs_5",
            {"difficulty": 7},
            r"env_config: unknown key 'difficulty' for smacv2:zerg_5_vs_5; allowed: env_args, "
            r"max_restarts",
        ),
        ("smacv2:zerg_5_vs_5", {"max_restarts": -1}, r"env_config\.max_restarts: must be"),
    ],
)
def test_bad_scenario_or_config(name, config, pattern):
    config = {**config, "_wrapper_factory": FakeSMACv2()}
    with pytest.raises(ValueError, match=pattern):
        validate(name, config)
    with pytest.raises(ValueError, match=pattern):
        make(name, **config)


def test_register_is_idempotent_and_lists_the_table():
    register_smacv2()
    register_smacv2()
    listed = names()
    assert all(f"smacv2:{s}" in listed for s in REFERENCE_SIZES)
    assert isinstance(make("smacv2:terran_5_vs_5", _wrapper_factory=FakeSMACv2()), SMACv2Env)

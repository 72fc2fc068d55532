"""Vector envs (knife/envs/vector.py): env k of a vector env plays exactly the episodes a
single env seeded like it plays with the same actions, whichever envs wait.

Each test drives a vector env and N single envs side by side with random valid actions and
a random subset of envs active at every step (so waiting envs are exercised far more than
the lockstep runner does), and each env reset alone when its episode ends (its second
episode continues its random stream while the others play on)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from knife import envs
from knife.envs.registry import make_vector
from knife.envs.vector import PaddedVectorEnv, SerialVectorEnv

needs_jaxmarl = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) is not None for m in ("jax", "jaxmarl")),
    reason="jaxmarl not installed (pip install 'knife-marl[smax]')",
)
KEYS = ("obs", "state", "avail_actions")


def random_valid(rng: np.random.Generator, avail: np.ndarray) -> np.ndarray:
    """One available action per agent (avail [n_agents, n_actions])."""
    return np.array([rng.choice(np.flatnonzero(row)) for row in avail])


def drive_side_by_side(vector, singles, seeds, *, episodes=2, rng_seed=0, wait_prob=0.3):
    """Play `episodes` episodes per env on both; an env whose episode ends is reset alone
    (its random stream goes on) while the others play on. Assert every observation, reward,
    flag and info of every active env equal. Returns each env's episode lengths."""
    rng = np.random.default_rng(rng_seed)
    n = len(singles)
    obs_v, _ = vector.reset(seeds)
    last = []
    for k, (env, seed) in enumerate(zip(singles, seeds, strict=True)):
        obs, _ = env.reset(seed=seed)
        for key in KEYS:
            np.testing.assert_array_equal(obs_v[key][k], obs[key], err_msg=f"reset {key}")
        last.append(obs)
    lengths: list[list[int]] = [[] for _ in range(n)]
    t = np.zeros(n, int)
    while any(len(ls) < episodes for ls in lengths):
        playing = np.array([len(ls) < episodes for ls in lengths])
        active = playing & (rng.random(n) >= wait_prob)
        joint = np.zeros((n, vector.team.n_agents), np.int64)
        for k in np.flatnonzero(active):
            joint[k] = random_valid(rng, last[k]["avail_actions"])
        obs_v, rew_v, term_v, trunc_v, info_v = vector.step(joint, active)
        ended = np.zeros(n, bool)
        for k in np.flatnonzero(active):
            obs, reward, term, trunc, info = singles[k].step(joint[k])
            t[k] += 1
            where = f"env {k} episode {len(lengths[k])} step {t[k]}"
            for key in KEYS:
                np.testing.assert_array_equal(obs_v[key][k], obs[key], err_msg=f"{where} {key}")
            assert rew_v[k] == np.float32(reward), where
            assert (bool(term_v[k]), bool(trunc_v[k])) == (term, trunc), where
            assert info_v[k] == info, where
            last[k] = {key: obs[key].copy() for key in KEYS}
            if term or trunc:
                lengths[k].append(int(t[k]))
                t[k] = 0
                ended[k] = len(lengths[k]) < episodes
        if ended.any():  # reset only these; the others' episodes go on
            obs_v, _ = vector.reset([None] * n, ended)
            for k in np.flatnonzero(ended):
                obs, _ = singles[k].reset()
                for key in KEYS:
                    np.testing.assert_array_equal(obs_v[key][k], obs[key], err_msg=f"reset {k}")
                last[k] = obs
    return lengths


SEEDS = [3, 14, 15, 92, 65, 35]
# Hares only, one catcher each: random play ends the episodes at different steps.
HARES = {"world_shape": [4, 4], "n_agents": 2, "n_stags": 0, "n_hares": 2, "episode_limit": 30}


def _check(name, config, *, vector_type, vary=True):
    vector = make_vector(name, len(SEEDS), **config)
    assert type(vector).__name__ == vector_type
    singles = [envs.make(name, **config) for _ in SEEDS]
    lengths = drive_side_by_side(vector, singles, SEEDS)
    if vary:  # episodes of different lengths: the waiting of finished envs is exercised
        assert len({ls[0] for ls in lengths}) > 1, lengths
    return vector


def test_stag_hunt_vector_equals_single_envs():
    # Hares, punishment, prey that sometimes stay: every rule and every random draw.
    config = {
        "world_shape": [4, 4],
        "n_agents": 4,
        "n_stags": 1,
        "n_hares": 2,
        "episode_limit": 60,
        "punishment": -0.5,
        "prey_move_prob": 0.7,
    }
    _check("stag_hunt", config, vector_type="StagHuntVectorEnv")


def test_stag_hunt_vector_default_config_equals_single_envs():
    _check("stag_hunt", {"episode_limit": 25}, vector_type="StagHuntVectorEnv", vary=False)


def test_matrix_vectors_equal_single_envs():
    _check("matrix:climbing", {"noise_features": 3}, vector_type="MatrixGameVector", vary=False)
    _check("matrix:two_step", {}, vector_type="TwoStepGameVector", vary=False)


def test_matrix_vector_plays_the_permuted_payoff():
    vector = make_vector("matrix:climbing", 3, permute=[[1, 2, 0], [0, 2, 1]])
    vector.reset([0, 1, 2])
    _, rewards, terminated, _, _ = vector.step(
        np.array([[1, 0], [0, 0], [2, 2]]), np.array([True, True, False])
    )
    assert rewards.tolist() == [11.0, 0.0, 0.0]  # the optimum moved to (1, 0); env 2 waited
    assert terminated.tolist() == [True, True, False]


@needs_jaxmarl
def test_smax_vector_equals_single_envs():
    config = {"episode_limit": 25}
    vector = _check("smax:protoss_5_vs_5", config, vector_type="SMAXVectorEnv", vary=False)
    # One compile per batch size, however many steps and resets: the first reset at N,
    # the later ones and the steps of subsets at the sizes B = N / 2^j >= N / 4 (here 6,
    # 3, 2), the steps of all N envs once.
    traces = vector.core.traces
    assert traces["reset_many"] == traces["step_all"] == 1
    assert 1 <= traces["reset_rows"] <= 3 and 1 <= traces["step_rows"] <= 3


@needs_jaxmarl
def test_smax_vector_envs_draw_different_teams_per_seed():
    vector = make_vector("smax:terran_5_vs_5", 4)
    _, infos = vector.reset([0, 1, 2, 3])
    starts = {tuple(info["ally_unit_types"]) for info in infos}
    obs, _ = vector.reset([None] * 4)
    assert len(starts) > 1 and obs["state"].shape == (4, vector.team.state_dim)


def test_envs_without_a_vector_form_are_looped():
    class Plain(envs.StagHuntEnv):
        pass

    envs.register("test:plain_stag_hunt", lambda **cfg: Plain(**cfg), replace=True)
    try:
        _check("test:plain_stag_hunt", HARES, vector_type="SerialVectorEnv")
    finally:
        envs.unregister("test:plain_stag_hunt")


def test_padded_task_vector_equals_padded_single_envs():
    """A task sequence whose tasks differ in size: task 0 padded to task 1's sizes."""
    small = HARES
    sequence = envs.TaskSequence.from_config(
        {
            "tasks": [
                {"env": "stag_hunt", "env_config": small, "steps": 100},
                {"env": "stag_hunt", "env_config": {**small, "n_agents": 3}, "steps": 100},
            ]
        }
    )
    vector = sequence.make_task_vector_env(0, len(SEEDS))
    assert isinstance(vector, PaddedVectorEnv) and vector.team == sequence.spec()
    np.testing.assert_array_equal(vector.agent_mask, sequence.agent_mask(0))
    singles = [sequence.make_task_env(0) for _ in SEEDS]
    lengths = drive_side_by_side(vector, singles, SEEDS)
    assert len({ls[0] for ls in lengths}) > 1, lengths


def test_padded_vector_refuses_unavailable_actions_naming_env_and_agent():
    small = {"world_shape": [4, 4], "n_agents": 2, "n_stags": 1}
    spec = envs.TeamSpec(n_agents=3, n_actions=7, obs_dim=110, state_dim=60, episode_limit=200)
    vector = PaddedVectorEnv(make_vector("stag_hunt", 2, **small), spec)
    obs, _ = vector.reset([0, 1])
    joint = np.zeros((2, 3), np.int64)
    joint[:, :2] = 4  # stay: always available
    joint[1, 1] = 6  # a padded action for a real agent
    with pytest.raises(ValueError, match="env 1, agent 1 chose action 6, which is a padded"):
        vector.step(joint, np.array([True, True]))
    joint[1, 1] = 4
    _, _, _, _, infos = vector.step(joint, np.array([False, True]))
    assert infos[0] == {} and "episode_limit" in infos[1]


def test_vector_contract_errors_name_the_field():
    vector = make_vector("stag_hunt", 2, world_shape=[4, 4], n_agents=2, n_stags=1)
    with pytest.raises(ValueError, match=r"seeds: need one per env \(2\), got 3"):
        vector.reset([0, 1, 2])
    vector.reset([0, 1])
    with pytest.raises(ValueError, match=r"actions: expected an integer array of shape \(2, 2\)"):
        vector.step(np.zeros((2, 3), np.int64), np.array([True, True]))
    with pytest.raises(ValueError, match=r"actions: each action must be in \[0, 5\]"):
        vector.step(np.full((2, 2), 9), np.array([True, True]))
    with pytest.raises(ValueError, match="num_envs_per_env_runner: need at least one env"):
        SerialVectorEnv([])

"""Vectorized sampling (issue 15): N envs stepped in lockstep with one batched forward pass
give the episodes N single-env runs give, with per-env seeds."""

from __future__ import annotations

import numpy as np
import pytest
from qmix_helpers import SMALL_STAG_HUNT, _config, _train

from knife import envs
from knife.policies.env_runner import ENV_SEED_STRIDE, TEST_SEED_OFFSET, play_episode
from knife.policies.lockstep import LockstepSampler, play_episodes

FIELDS = ("obs", "state", "avail_actions", "actions", "rewards")


def _module(algo):
    return algo.env_runner_group.local_env_runner.module


class EndsBySeed:
    """A stag hunt that also ends after 3 + seed % 7 steps: episodes of known, different
    lengths whatever the policy does."""

    def __init__(self, **config):
        self.env = envs.make("stag_hunt", **config)
        self.team = self.env.team

    def reset(self, seed=None):
        self.end, self.t = 3 + (seed or 0) % 7, 0
        return self.env.reset(seed=seed)

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.t += 1
        return obs, reward, terminated or self.t >= self.end, truncated, info


def test_lockstep_episodes_equal_single_env_episodes(ray_local):
    """Greedy actions (so the actions depend only on the observations): N envs in lockstep
    against the same N envs played one at a time with the same seeds; the episodes end at
    different steps, so the waiting of finished envs is exercised."""
    config = {**SMALL_STAG_HUNT, "episode_limit": 40}
    algo = _config("stag_hunt", config, epsilon_anneal_steps=100).build_algo()
    try:
        _train(algo, 200)  # some learning: the greedy actions vary with the observations
        module = _module(algo)
        seeds = [11, 12, 13, 14, 15, 16]
        together = play_episodes(
            [EndsBySeed(**config) for _ in seeds], module, explore=False, seeds=seeds
        )
        alone = [play_episode(EndsBySeed(**config), module, explore=False, seed=s) for s in seeds]
        lengths = [ep.length for ep in together]
        assert lengths == [ep.length for ep in alone] == [3 + s % 7 for s in seeds]
        for a, b in zip(together, alone, strict=True):
            for name in FIELDS:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
            assert (a.terminated, a.info) == (b.terminated, b.info)
        # The stag hunt's own vector env (NumPy, all envs in one step) plays the same
        # episodes as single stag hunts.
        native = play_episodes(
            envs.make_vector("stag_hunt", len(seeds), **config), module, explore=False, seeds=seeds
        )
        plain = [
            play_episode(envs.make("stag_hunt", **config), module, explore=False, seed=s)
            for s in seeds
        ]
        for a, b in zip(native, plain, strict=True):
            for name in FIELDS:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
            assert (a.terminated, a.info) == (b.terminated, b.info)
    finally:
        algo.stop()


def test_carried_episodes_equal_each_env_s_single_env_episodes(ray_local):
    """The runner's way: an env whose episode ends starts the next at once, and episodes in
    flight carry over from one sample() call to the next. Grouped by env, the episodes of
    three calls are each env's consecutive single-env episodes (its random stream goes on
    from one episode to the next)."""
    config = {"world_shape": [4, 4], "n_agents": 2, "n_stags": 0, "n_hares": 2}
    config["episode_limit"] = 30
    algo = _config("stag_hunt", config, epsilon_anneal_steps=100).build_algo()
    try:
        _train(algo, 200)
        module = _module(algo)
        seeds = [21, 22, 23, 24]
        sampler = LockstepSampler(envs.make_vector("stag_hunt", len(seeds), **config), seeds)
        per_env: dict[int, list] = {k: [] for k in range(len(seeds))}
        for _ in range(3):
            played = sampler.sample(module, num_episodes=len(seeds), explore=False)
            assert len(played) >= len(seeds)
            for k, ep in played:
                per_env[k].append(ep)
        counts = [len(eps) for eps in per_env.values()]
        assert len(set(counts)) > 1, counts  # short episodes: an env played more of them
        for k, seed in enumerate(seeds):
            env = envs.make("stag_hunt", **config)
            for i, ep in enumerate(per_env[k]):
                alone = play_episode(env, module, explore=False, seed=seed if i == 0 else None)
                for name in FIELDS:
                    np.testing.assert_array_equal(
                        getattr(ep, name), getattr(alone, name), err_msg=f"env {k} ep {i} {name}"
                    )
    finally:
        algo.stop()


def test_each_env_of_a_runner_has_its_own_seed(ray_local):
    algo = _config("stag_hunt", SMALL_STAG_HUNT, num_envs_per_env_runner=4).build_algo()
    try:
        runner = algo.env_runner_group.local_env_runner
        assert type(runner.vector_env).__name__ == "StagHuntVectorEnv"
        assert runner.vector_env.num_envs == 4 and len(set(runner._train_seeds)) == 4
        sample = runner.sample(num_episodes=2, explore=True)
        assert len(sample["episodes"]) >= 8  # 2 x 4 (more when several end at one step)
        starts = {ep.state[0].tobytes() for ep in sample["episodes"]}
        assert len(starts) >= 4  # every env starts from its own random state
        assert sample["env_steps"] == sum(ep.length for ep in sample["episodes"])
    finally:
        algo.stop()


@pytest.mark.parametrize("n", [8])
def test_two_step_game_reaches_8_with_n_envs(ray_local, n):
    algo = _config(
        "matrix:two_step", td_lambda=0.0, test_interval=200, num_envs_per_env_runner=n
    ).build_algo()
    try:
        metrics = _train(algo, 1500)
        assert metrics["test/return"] == pytest.approx(8.0)
        assert metrics["episodes"] >= 1500 / 2  # two-step episodes are 2 steps long
    finally:
        algo.stop()


def test_with_n_envs_tests_and_random_baselines_play_in_lockstep_rounds(ray_local):
    """N > 1: the greedy tests and the random-policy baseline use N envs of their own in
    rounds of one episode per env; each test env's episodes are a single test env's, seeded
    like it, and the count asked for is returned."""
    algo = _config("stag_hunt", SMALL_STAG_HUNT, num_envs_per_env_runner=4).build_algo()
    try:
        runner = algo.env_runner_group.local_env_runner
        tests = runner.sample(num_episodes=6, explore=False)["episodes"]
        assert len(tests) == 6  # two rounds of 4, the first 6 kept
        sampler = runner._test_samplers[0]
        assert sampler.venv is not runner.vector_env  # never the training envs
        first = runner._seed_base + TEST_SEED_OFFSET
        for k in range(4):  # round 1 is env 0..3's first episode, round 2 env 0, 1's second
            env = envs.make("stag_hunt", **SMALL_STAG_HUNT)
            mine = [tests[k]] + ([tests[4 + k]] if k < 2 else [])
            for i, ep in enumerate(mine):
                seed = first + ENV_SEED_STRIDE * k if i == 0 else None
                alone = play_episode(env, _module(algo), explore=False, seed=seed)
                np.testing.assert_array_equal(ep.obs, alone.obs, err_msg=f"env {k} ep {i}")
                np.testing.assert_array_equal(ep.actions, alone.actions)
        randoms = runner.sample(num_episodes=5, random_policy=True)["episodes"]
        assert len(randoms) == 5 and all(ep.length >= 1 for ep in randoms)
    finally:
        algo.stop()

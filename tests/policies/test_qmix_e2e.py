"""End-to-end learning with real RLlib (embedded Ray), sized for 2 CPU cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qmix_helpers import SMALL_STAG_HUNT, _config, _train

import knife.envs as envs
from knife.policies import result_metrics
from knife.policies.env_runner import TeamEnvRunner


def _random_return(env_name, env_config, episodes=200):
    env = envs.make(env_name, **env_config)
    rng = np.random.default_rng(0)
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            avail = obs["avail_actions"]
            acts = np.array([rng.choice(np.flatnonzero(row)) for row in avail])
            obs, r, term, trunc, _ = env.step(acts)
            total += r
            done = term or trunc
    return total / episodes


@pytest.mark.e2e
def test_qmix_solves_the_two_step_game(ray_local):
    algo = _config(
        "matrix:two_step",
        td_lambda=0.0,
        target_update_interval=50,
        epsilon_anneal_steps=2000,
        test_interval=1000,
        test_episodes=4,
    ).build_algo()
    try:
        metrics = _train(algo, 6000)
    finally:
        algo.stop()
    assert metrics["test/return"] == pytest.approx(8.0)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "steps",
    [
        # The overlap's bookkeeping in the default suite; that it still solves the game
        # (6000 steps, 100 s here) with the long runs (pytest -m slow).
        pytest.param(1500, id="bookkeeping"),
        pytest.param(6000, id="learns", marks=pytest.mark.slow),
    ],
)
def test_remote_runner_samples_while_the_learner_updates(ray_local, steps):
    # The two-step game as above, played by one EnvRunner actor while the driver learns.
    two_step = dict(td_lambda=0.0, target_update_interval=50, epsilon_anneal_steps=2000)
    cfg = _config("matrix:two_step", runners=1, test_interval=1000, test_episodes=4, **two_step)
    algo = cfg.training(sample_while_learning=True).build_algo()
    try:
        metrics = _train(algo, steps)
        assert algo._samples_in_flight == 1  # the next episode is already being played
        remote_steps = algo.env_runner_group.foreach_env_runner(
            lambda r: r.num_env_steps_sampled_lifetime, local_env_runner=False
        )
    finally:
        algo.stop()
    if steps >= 6000:
        assert metrics["test/return"] == pytest.approx(8.0)
    # Every collected episode reached the buffer; one update per episode past the first 31.
    assert len(algo.replay_buffer) == metrics["episodes"]
    assert metrics["learner_updates"] == metrics["episodes"] - 31
    # The runner played everything collected plus the one episode still in flight.
    assert remote_steps == [metrics["env_steps"] + 2]


@pytest.mark.e2e
# QMIX in the default suite; VDN and IQL (45 s each) with the long runs (pytest -m slow).
@pytest.mark.parametrize(
    "algorithm",
    [
        "qmix",
        pytest.param("vdn", marks=pytest.mark.slow),
        pytest.param("iql", marks=pytest.mark.slow),
    ],
)
def test_small_stag_hunt_beats_random(ray_local, algorithm):
    random_return = _random_return("stag_hunt", SMALL_STAG_HUNT)
    algo = _config("stag_hunt", SMALL_STAG_HUNT, algorithm=algorithm).build_algo()
    try:
        metrics = _train(algo, 20_000)
    finally:
        algo.stop()
    # Random play catches the stag in well under 1 episode of 10; a learned team in most.
    assert random_return < 1.0
    assert metrics["test/return"] >= random_return + 3.0, metrics


@pytest.mark.e2e
def test_checkpoint_restore_gives_identical_weights_and_actions(ray_local, tmp_path):
    cfg = _config("stag_hunt", SMALL_STAG_HUNT, test_interval=1000)
    algo = cfg.build_algo()
    restored = None
    try:
        before = _train(algo, 2000)
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        restored = type(algo).from_checkpoint(path)

        def module_of(a):
            return a.learner_group._learner.module["default_policy"]

        sd_a, sd_b = module_of(algo).state_dict(), module_of(restored).state_dict()
        assert sd_a.keys() == sd_b.keys()
        assert any(k.startswith("target_agent") for k in sd_a)
        for key in sd_a:
            assert torch.equal(sd_a[key], sd_b[key]), key

        # Greedy actions of the EnvRunner modules agree on real observations.
        env = envs.make("stag_hunt", **SMALL_STAG_HUNT)
        obs, _ = env.reset(seed=123)
        batch_obs = {k: torch.from_numpy(v)[None] for k, v in obs.items() if k != "state"}
        acts = []
        for a in (algo, restored):
            module = a.env_runner_group.local_env_runner.module
            state = {k: v[None] for k, v in module.get_initial_state().items()}
            out = module.forward_inference({"obs": batch_obs, "state_in": state})
            acts.append(out["actions"])
        assert torch.equal(acts[0], acts[1])

        assert restored.counters["env_steps"] == algo.counters["env_steps"]
        assert len(restored.replay_buffer) == len(algo.replay_buffer)
        after = result_metrics(restored.train())
        assert after["env_steps"] > before["env_steps"]
        assert after["learner_updates"] > before["learner_updates"]
    finally:
        algo.stop()
        if restored is not None:
            restored.stop()


@pytest.mark.e2e
def test_target_network_syncs_every_interval(ray_local):
    algo = _config(
        "matrix:two_step", target_update_interval=5, learning_starts=32, epsilon_anneal_steps=100
    ).build_algo()
    try:
        _train(algo, 200)  # fills the buffer, some updates happen
        learner = algo.learner_group._learner
        module = learner.module["default_policy"]

        def same():
            online = module.agent.state_dict()
            target = module.target_agent.state_dict()
            return all(torch.equal(online[k], target[k]) for k in online)

        while learner.num_updates % 5 != 0:
            algo._update_once()
        assert same()
        algo._update_once()
        assert not same()  # online moved, target waits for the next sync
        while learner.num_updates % 5 != 0:
            algo._update_once()
        assert same()
    finally:
        algo.stop()


def test_consecutive_training_episodes_start_differently():
    cfg = _config("stag_hunt", SMALL_STAG_HUNT)
    runner = TeamEnvRunner(config=cfg)
    first = [runner.sample(num_episodes=1)["episodes"][0].state[0] for _ in range(3)]
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[1], first[2])
    # Same seed, new runner: the same sequence of starts (reproducible).
    again = TeamEnvRunner(config=cfg)
    assert np.array_equal(again.sample(num_episodes=1)["episodes"][0].state[0], first[0])

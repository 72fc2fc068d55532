"""Short real-RLlib QMIX runs on the adapter envs (SMAX, PettingZoo): they run end to end."""

from __future__ import annotations

import pytest
from qmix_helpers import _config, _train


@pytest.mark.e2e
@pytest.mark.parametrize(
    "env, env_config",
    [
        ("smax:protoss_5_vs_5", {"episode_limit": 50}),
        ("pettingzoo:mpe2.simple_spread_v3", {"max_cycles": 25}),
        ("pettingzoo:mpe2.simple_tag_v3", {"max_cycles": 25, "team": "adversary"}),
    ],
)
def test_qmix_runs_end_to_end(ray_local, env, env_config):
    if env.startswith("smax:"):
        pytest.importorskip("jaxmarl")
    algo = _config(
        env,
        env_config,
        test_interval=200,
        test_episodes=2,
        epsilon_anneal_steps=500,
        batch_size=4,
        learning_starts=4,
    ).build_algo()
    try:
        metrics = _train(algo, 400)
    finally:
        algo.stop()
    assert metrics["env_steps"] >= 400
    assert metrics["learner_updates"] >= 1
    assert metrics["test/at_env_steps"] >= 200
    if env.startswith("smax:"):
        assert 0.0 <= metrics["test/win_rate"] <= 1.0

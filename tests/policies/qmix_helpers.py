"""Shared builders for the real-RLlib tests."""

from __future__ import annotations

from knife.policies import QMixConfig, result_metrics, test_records

SMALL_STAG_HUNT = {"world_shape": [5, 5], "n_agents": 2, "n_stags": 1, "episode_limit": 25}


def _config(env=None, env_config=None, algorithm="qmix", runners=0, tasks=None, **training):
    """A small QMixConfig: one env, or a task sequence (`tasks`)."""
    defaults = dict(
        lr=1e-3,
        batch_size=32,
        learning_starts=32,
        target_update_interval=200,
        epsilon_anneal_steps=5000,
        test_interval=2000,
        test_episodes=16,
    )
    defaults.update(training)
    cfg = QMixConfig()
    if tasks is None:
        cfg.environment(env=env, env_config=env_config or {})
    cfg = (
        cfg.tasks(tasks)
        .training(algorithm=algorithm, **defaults)
        .env_runners(num_env_runners=runners)
        .debugging(seed=0)
    )
    cfg.min_sample_timesteps_per_iteration = min(1000, defaults["test_interval"])
    return cfg


def _train(algo, steps, records=None):
    """Train to `steps` env steps; the last flat metrics. `records`, if a list, collects
    the test records of every iteration."""
    metrics = {}
    while metrics.get("env_steps", 0) < steps:
        result = algo.train()
        metrics = result_metrics(result)
        if records is not None:
            records.extend(test_records(result))
    return metrics

"""Task sequences inside one real RLlib trial: switching, padding, buffer policy, results."""

from __future__ import annotations

import numpy as np
import pytest
from qmix_helpers import _config, _train

PAYOFF_A = [[1, 0], [0, 0]]  # 2 actions
PAYOFF_B = [[0, 0, 0], [0, 0, 0], [0, 0, 5]]  # 3 actions: the sequence pads task A to 3


def _seq_config(tasks, **training):
    defaults = dict(epsilon_anneal_steps=300, test_interval=100, test_episodes=2)
    return _config(tasks=tasks, **{**defaults, **training})


def _matrix_tasks(buffer_on_switch):
    return {
        "buffer_on_switch": buffer_on_switch,
        "eval_previous": True,
        "tasks": [
            {"env": "matrix:custom", "env_config": {"payoff": PAYOFF_A}, "steps": 600},
            {"env": "matrix:custom", "env_config": {"payoff": PAYOFF_B}, "steps": 600},
        ],
    }


@pytest.mark.e2e
def test_matrix_sequence_switches_with_knife_at_the_boundary(ray_local):
    cfg = _seq_config(_matrix_tasks("flush"))
    cfg.plasticity("knife", monitor={"metrics_interval": 5})
    algo = cfg.build_algo()
    try:
        before = _train(algo, 500)
        assert before["task_index"] == 0
        assert before["plasticity/interventions"] == 0
        assert "plasticity/agent/stagnant_fraction" in before  # logged during training
        episodes_task0 = algo.counters["episodes"]
        runner = algo.env_runner_group.local_env_runner
        # Padded: task A's third action is never available, so never taken.
        assert algo.replay_buffer._data["avail_actions"][:episodes_task0, :, :, 2].max() == 0
        records = []
        after = _train(algo, 1200, records)
    finally:
        algo.stop()
    # Each test arrives once, as a record at the env step it ran: at the switch the final
    # test of task 0 and the first test of task 1; after it, task 0 is re-tested.
    steps = [step for step, _ in records]
    assert steps == sorted(steps) and all(r["test/return"] is not None for _, r in records)
    at_switch = [r for step, r in records if abs(step - after["task/1/start_env_steps"]) < 1]
    assert [sorted(k for k in r if k.startswith("task/")) for r in at_switch] == [
        ["task/0/test_return"],
        ["task/0/retest_return", "task/1/test_return"],
    ]
    assert at_switch[0]["task/0/test_return"] == after["task/0/final_test_return"]
    later = [r for step, r in records if step > after["task/1/start_env_steps"]]
    assert later and all(
        "task/0/retest_return" in r and "task/0/test_return" not in r for r in later
    )
    # The boundary and the env behaviour changed: task B pays 5 for (2, 2).
    assert after["task_index"] == 1
    assert after["task/1/start_env_steps"] == pytest.approx(600, abs=2)
    env = runner.env
    env.reset(seed=0)
    assert env.step(np.array([2, 2]))[1] == 5.0
    # KNIFE fired at the switch; the buffer was flushed (only task-B episodes remain).
    assert after["plasticity/interventions"] == 1
    assert after["plasticity/at_switch/units_changed_total"] >= 0
    # One-step games: 600 episodes per task; after the flush only task B's remain.
    assert algo.counters["episodes"] >= 1200 > episodes_task0
    assert len(algo.replay_buffer) <= 600 + 1
    # Per-task results: final test, AUC, and the earlier task re-tested (forgetting).
    assert after["task/0/final_test_return"] == pytest.approx(1.0)
    assert after["task/1/final_test_return"] == pytest.approx(5.0)
    assert 0.0 <= after["task/0/auc"] <= 1.0 and after["task/1/auc"] > 0
    assert "task/0/retest_return" in after


@pytest.mark.e2e
def test_stag_hunt_punishment_sequence_keeps_the_buffer(ray_local):
    small = {"world_shape": [5, 5], "n_agents": 2, "n_stags": 1, "episode_limit": 25}
    tasks = {
        "buffer_on_switch": "keep",
        "tasks": [
            {"env": "stag_hunt", "env_config": {**small, "punishment": 0.0}, "steps": 800},
            {"env": "stag_hunt", "env_config": {**small, "punishment": -1.0}, "steps": 800},
        ],
    }
    cfg = _seq_config(tasks, test_interval=400, test_episodes=4)
    cfg.env_runners(num_env_runners=1)
    algo = cfg.build_algo()
    try:
        m = _train(algo, 1600)
        # Every collected episode is still in the buffer (kept across the switch).
        assert len(algo.replay_buffer) == algo.counters["episodes"]
        punishments = algo.env_runner_group.foreach_env_runner(
            lambda r: r.env.env.cfg.punishment, local_env_runner=True
        )
    finally:
        algo.stop()
    assert m["task_index"] == 1 and set(punishments) == {-1.0}
    assert m["task/1/start_env_steps"] >= 800
    assert "task/0/final_test_return" in m and "task/1/final_test_return" in m


def test_sequence_that_cannot_share_a_network_is_refused_before_ray():
    bad = [
        {"env": "matrix:climbing", "steps": 100},
        {"env": "stag_hunt", "steps": 100},
    ]
    with pytest.raises(ValueError, match="env families"):
        _seq_config(bad)


def test_task_without_steps_is_refused():
    with pytest.raises(ValueError, match=r"tasks\[0\]\.steps"):
        _seq_config([{"env": "matrix:climbing"}])


def test_each_task_records_a_random_policys_return_without_moving_the_streams(ray_local):
    """task/<i>/random_return: a uniformly random policy's mean return on task i, measured
    at its start on a separate env (knife report's 0 of a normalized score). Training and
    greedy tests are the same as without it."""
    payoff = [[11, -30, 0], [-30, 7, 6], [0, 0, 5]]  # the climbing game: mean -31/9
    tasks = {
        "tasks": [
            {"env": "matrix:custom", "env_config": {"payoff": payoff}, "steps": 150},
            {"env": "matrix:custom", "env_config": {"payoff": PAYOFF_B}, "steps": 150},
        ]
    }
    results = {}
    for episodes in (0, 64):
        algo = _seq_config(tasks, td_lambda=0.0, test_interval=50, test_random_episodes=episodes)
        algo = algo.build_algo()
        try:
            records: list = []
            results[episodes] = (_train(algo, 300, records), records)
        finally:
            algo.stop()
    metrics, records = results[64]
    random_0, random_1 = metrics["task/0/random_return"], metrics["task/1/random_return"]
    # 64 uniformly random joint actions: the mean payoff within ~3 standard errors
    sd = np.std(payoff) / np.sqrt(64)
    assert abs(random_0 - np.mean(payoff)) < 3.5 * sd
    assert abs(random_1 - np.mean(PAYOFF_B)) < 3.5 * np.std(PAYOFF_B) / np.sqrt(64) + 1e-9
    assert "task/0/random_return" not in results[0][0]  # random_episodes: 0 measures none
    assert records == results[0][1]  # the same greedy tests at the same steps
    assert metrics["train/return"] == results[0][0]["train/return"]

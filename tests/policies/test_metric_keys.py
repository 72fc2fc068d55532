"""Metric names are built and parsed in one place (knife.policies.metric_keys)."""

from __future__ import annotations

from knife.policies import metric_keys as mk
from knife.policies.task_progress import TaskProgress


def test_task_keys_round_trip_and_reject_other_names():
    assert mk.task_key(3, mk.AUC) == "task/3/auc"
    assert mk.split_task_key("task/12/final_test_return") == (12, mk.FINAL_TEST_RETURN)
    for other in ("task_index", "task/x/auc", "task/1", "task/1/", "task/1/a/b", "plasticity/a"):
        assert mk.split_task_key(other) is None, other
    assert mk.stagnant_key("agent") == "plasticity/stagnant_fraction/agent"


def test_what_task_progress_writes_is_what_the_keys_parse():
    progress = TaskProgress()
    progress.record_test(0, 0, 1.0, 0.5)
    progress.record_test(0, 100, 3.0, 1.0)
    progress.end_task(100)
    progress.start_task(100)
    progress.record_test(1, 100, 2.0, None)
    progress.record_test(0, 150, 2.5, None)  # a re-test of the finished task
    metrics = progress.metrics()
    parsed = {mk.split_task_key(k): v for k, v in metrics.items() if mk.split_task_key(k)}
    assert parsed[(0, mk.AUC)] == 2.0  # mean height of 1 -> 3 over [0, 100]
    assert parsed[(0, mk.FINAL_TEST_RETURN)] == 3.0
    assert parsed[(0, mk.RETEST_RETURN)] == 2.5
    assert parsed[(1, mk.START_ENV_STEPS)] == 100.0
    assert (1, mk.FINAL_TEST_RETURN) not in parsed  # task 1 is still running
    assert metrics[mk.TASK_INDEX] == 1.0

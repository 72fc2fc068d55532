"""Metric names are built and parsed in one place (knife.policies.metric_keys)."""

from __future__ import annotations

from knife.policies import metric_keys as mk
from knife.policies.task_progress import TaskProgress


def test_task_keys_round_trip_and_reject_other_names():
    assert mk.task_key(3, mk.AUC) == "task/3/auc"
    assert mk.split_task_key("task/12/final_test_return") == (12, mk.FINAL_TEST_RETURN)
    for other in ("task_index", "task/x/auc", "task/1", "task/1/", "task/1/a/b", "plasticity/a"):
        assert mk.split_task_key(other) is None, other
    assert mk.stagnant_key("agent") == "plasticity/agent/stagnant_fraction"


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


def test_plasticity_keys_are_grouped_per_network_and_layer():
    nets = ("agent", "mixer")
    assert mk.plasticity_key("stagnant_fraction/agent", nets) == mk.stagnant_key("agent")
    assert (
        mk.plasticity_key("grad_ratio/p10/agent.rnn", nets) == "plasticity/agent.rnn/grad_ratio_p10"
    )
    assert mk.plasticity_key("dormant_fraction/all", nets) == "plasticity/all/dormant_fraction"
    # no network named: a counter of the section `plasticity`
    assert mk.plasticity_key("stagnation/num_updates", nets) == "plasticity/stagnation_num_updates"
    assert mk.plasticity_key("weight_norm/mixer", ("agent",)) == "plasticity/weight_norm_mixer"
    assert mk.section(mk.stagnant_key("mixer")) == "plasticity/mixer"


def test_sections_sort_test_first_and_tasks_by_index():
    names = [
        "system",
        "plasticity/at_switch/agent",
        "plasticity/agent",
        "task/10",
        "task/2",
        "train",
        "",
        "test",
        "plasticity",
    ]
    assert sorted(names, key=mk.section_rank) == [
        "test",
        "train",
        "task/2",
        "task/10",
        "plasticity",
        "plasticity/agent",
        "plasticity/at_switch/agent",
        "",
        "system",
    ]


def test_every_key_a_result_shows_has_a_section_but_the_counters():
    for key in (*mk.PROGRESS_KEYS, mk.EPSILON, mk.ENV_STEPS_PER_S, mk.learner_key("loss")):
        assert mk.section(key) in ("test", "train"), key
    for key in (mk.ENV_STEPS, mk.EPISODES, mk.LEARNER_UPDATES, mk.TASK_INDEX):
        assert mk.section(key) == "", key  # MLflow's "Model metrics"
    assert all(mk.RENAMED[old] != old for old in mk.RENAMED)

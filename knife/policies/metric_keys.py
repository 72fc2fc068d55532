"""The names of the metrics a trial reports, in one place (docs/design.md 10).

The Algorithm and the Learner write them (knife.policies); the platform reads them back (the
metric stream, plots, the report, summary.json). Both sides import these names instead of
spelling strings, and per-task names are built and parsed only here. Imports nothing.
"""

from __future__ import annotations

# Counters and the latest greedy test (`test_at_env_steps`: the env step it ran at).
ENV_STEPS = "env_steps"
EPISODES = "episodes"
LEARNER_UPDATES = "learner_updates"
TEST_RETURN = "test_return"
TEST_WIN_RATE = "test_win_rate"
TEST_AT = "test_at_env_steps"
TEST_KEYS = (TEST_RETURN, TEST_WIN_RATE)
# The result key of one iteration's greedy tests, as records (env step, {metric: value}):
# each test is logged once, at the step it ran (the flat result keeps the latest as a state).
TEST_RECORDS = "test_records"
# Per iteration.
TRAIN_RETURN = "train_return"
TRAIN_EPISODE_LEN = "train_episode_len"
TRAIN_WIN_RATE = "train_win_rate"
EPSILON = "epsilon"
ENV_STEPS_PER_S = "env_steps_per_s"
# Task sequences: the current task and, per task i, `task/<i>/<field>`.
TASK_INDEX = "task_index"
START_ENV_STEPS = "start_env_steps"
AUC = "auc"
FINAL_TEST_RETURN = "final_test_return"
FINAL_TEST_WIN_RATE = "final_test_win_rate"
RETEST_RETURN = "retest_return"  # greedy tests of an earlier task (forgetting)
_TASK = "task/"
# Plasticity (knife.policies.plasticity_hook): `plasticity/<metric>[/<network or layer>]`,
# and the values measured just before a task switch under `plasticity/at_switch/`.
PLASTICITY = "plasticity/"
AT_SWITCH = PLASTICITY + "at_switch/"
STAGNANT_FRACTION = "stagnant_fraction"


def task_key(task: int, field: str) -> str:
    """`task/<task>/<field>`, e.g. task_key(1, AUC) == 'task/1/auc'."""
    return f"{_TASK}{task}/{field}"


def split_task_key(key: str) -> tuple[int, str] | None:
    """(task, field) of a `task/<i>/<field>` key, else None."""
    if not key.startswith(_TASK):
        return None
    index, sep, field = key[len(_TASK) :].partition("/")
    if not sep or not index.isdigit() or not field or "/" in field:
        return None
    return int(index), field


def is_test_key(key: str) -> bool:
    """Whether `key` is a test result (which arrives as a test record)."""
    if key in TEST_KEYS or key == TEST_AT:
        return True
    task = split_task_key(key)
    return task is not None and task[1] in (*TEST_KEYS, RETEST_RETURN)


def stagnant_key(network: str) -> str:
    """The stagnant fraction of one plasticity network (knife.plasticity.metrics)."""
    return f"{PLASTICITY}{STAGNANT_FRACTION}/{network}"

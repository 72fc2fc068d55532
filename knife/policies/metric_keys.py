"""The names of the metrics a trial reports, in one place (docs/design.md 10).

The Algorithm and the Learner write them (knife.policies); the platform reads them back (the
metric stream, plots, the report, summary.json). Both sides import these names instead of
spelling strings, and per-task names are built and parsed only here. Imports nothing.
"""

from __future__ import annotations

# Names are `<section>/<name>`: MLflow's chart view shows each prefix (all but the last
# part) as a section, so the test, train, per-task and per-network charts stand apart
# (docs/design.md 10). Counters and timings have no prefix (MLflow's "Model metrics").
ENV_STEPS = "env_steps"
EPISODES = "episodes"
LEARNER_UPDATES = "learner_updates"
COUNTER_KEYS = (ENV_STEPS, EPISODES, LEARNER_UPDATES)
# The latest greedy test (`TEST_AT`: the env step it ran at).
TEST = "test/"
TEST_RETURN = TEST + "return"
TEST_WIN_RATE = TEST + "win_rate"
TEST_AT = TEST + "at_env_steps"
TEST_KEYS = (TEST_RETURN, TEST_WIN_RATE)
# The result key of one iteration's greedy tests, as records (env step, {metric: value}):
# each test is logged once, at the step it ran (the flat result keeps the latest as a state).
TEST_RECORDS = "test_records"
# Per iteration: the epsilon-greedy episodes, exploration, throughput and the TD loss.
TRAIN = "train/"
TRAIN_RETURN = TRAIN + "return"
TRAIN_EPISODE_LEN = TRAIN + "episode_len"
TRAIN_WIN_RATE = TRAIN + "win_rate"
EPSILON = TRAIN + "epsilon"
ENV_STEPS_PER_S = TRAIN + "env_steps_per_s"
LEARNER_KEYS = ("loss", "td_error_abs", "q_taken_mean", "target_mean", "gradients_maybe_clipped")


def learner_key(name: str) -> str:
    """The result key of one of the Learner's LEARNER_KEYS, e.g. 'train/loss'."""
    return TRAIN + name


# Task sequences: the current task and, per task i, `task/<i>/<field>`.
TASK_INDEX = "task_index"
START_ENV_STEPS = "start_env_steps"
AUC = "auc"
TASK_TEST_RETURN = "test_return"  # the task's own greedy tests
TASK_TEST_WIN_RATE = "test_win_rate"
FINAL_TEST_RETURN = "final_test_return"
FINAL_TEST_WIN_RATE = "final_test_win_rate"
RETEST_RETURN = "retest_return"  # greedy tests of an earlier task (forgetting)
RANDOM_RETURN = "random_return"  # a uniformly random policy on the task, at its start
TASK_TEST_KEYS = (TASK_TEST_RETURN, TASK_TEST_WIN_RATE, RETEST_RETURN)
_TASK = "task/"
# Plasticity (knife.policies.plasticity_hook): `plasticity/<network or unit layer>/<metric>`
# (a section per network and per layer), counters as `plasticity/<counter>`, and the values
# measured just before a task switch under `plasticity/at_switch/`.
PLASTICITY = "plasticity/"
AT_SWITCH = PLASTICITY + "at_switch/"
STAGNANT_FRACTION = "stagnant_fraction"
ALL_NETWORKS = "all"  # the toolkit's aggregate over every network
# Where the chart view's sections go, in this order (then MLflow's own, then the rest).
SECTION_ORDER = (TEST, TRAIN, _TASK, PLASTICITY, AT_SWITCH)
# Names before the sections (sweep files and notebooks may still say them).
RENAMED = {
    "test_return": TEST_RETURN,
    "test_win_rate": TEST_WIN_RATE,
    "train_return": TRAIN_RETURN,
    "epsilon": EPSILON,
    "env_steps_per_s": ENV_STEPS_PER_S,
    **{name: learner_key(name) for name in LEARNER_KEYS},
}
# What Tune's progress table and summary.json show of a trial, besides its counters.
PROGRESS_KEYS = (TEST_RETURN, TEST_WIN_RATE, TRAIN_RETURN)


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
    return task is not None and task[1] in TASK_TEST_KEYS


def plasticity_key(raw: str, networks: tuple[str, ...]) -> str:
    """The result key of one plasticity-toolkit metric (`<metric>/<network or layer>`).

    plasticity_key('stagnant_fraction/agent', ('agent',)) == 'plasticity/agent/stagnant_fraction'
    and 'grad_ratio/p10/agent.rnn' -> 'plasticity/agent.rnn/grad_ratio_p10'; a metric of no
    network ('stagnation/num_updates') -> 'plasticity/stagnation_num_updates'.
    """
    metric, _, path = raw.rpartition("/")
    owner = path.split(".", 1)[0]
    if metric and (owner in networks or path == ALL_NETWORKS):
        return f"{PLASTICITY}{path}/{metric.replace('/', '_')}"
    return PLASTICITY + raw.replace("/", "_")


def stagnant_key(network: str) -> str:
    """The stagnant fraction of one plasticity network (knife.plasticity.metrics)."""
    return f"{PLASTICITY}{network}/{STAGNANT_FRACTION}"


def section(key: str) -> str:
    """The chart-view section MLflow puts `key` in: all of it but the last part."""
    return key.rpartition("/")[0]


def section_rank(name: str) -> tuple:
    """Sort key of a section: SECTION_ORDER's prefixes first (tasks by index), then the rest."""
    for rank, prefix in reversed(list(enumerate(SECTION_ORDER))):
        if (name + "/").startswith(prefix):
            rest = name[len(prefix) :]
            index = int(rest) if prefix == _TASK and rest.isdigit() else -1
            return (rank, index, rest)
    return (len(SECTION_ORDER), 0, name)

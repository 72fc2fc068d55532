"""Paired branches (issue 16, docs/design.md 9): a method's trial restores the shared
prefix's final checkpoint (method none, task 0 alone) into its own algorithm (its method, the
whole sequence) and starts exactly where the prefix ended; then it switches and learns on."""

from __future__ import annotations

import copy

import pytest

from knife.platform.algorithm_factory import build_algorithm
from knife.platform.checkpoints import restore_checkpoint, state_digest, write_checkpoint
from knife.platform.config import parse_trial_config
from knife.platform.trial_loop import TrialProgress

TASKS = [
    {"env": "matrix:climbing", "steps": 120, "name": "climbing"},
    {"env": "matrix:penalty", "steps": 120, "name": "penalty"},
]
BASE = {
    "algorithm": "qmix",
    "seed": 3,
    "training": {
        "batch_size": 8,
        "learning_starts": 8,
        "buffer_size": 200,
        "epsilon_anneal_steps": 60,
        "td_lambda": 0.0,
        "num_env_runners": 0,
    },
    "evaluation": {"episodes": 2, "interval": 40},
    "plasticity": {"monitor": {"metrics_interval": 10}},
}


def _config(method: str, tasks: list[dict]) -> dict:
    raw = copy.deepcopy(BASE)
    raw["tasks"] = {"tasks": tasks, "reanneal_epsilon": True, "buffer_on_switch": "flush"}
    raw["plasticity"]["method"] = method
    return raw


def _train(algo, steps: int) -> None:
    while algo.counters["env_steps"] < steps:
        algo.train()


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """Task 0 alone with method none, trained to its end and checkpointed."""
    algo = build_algorithm(parse_trial_config(_config("none", TASKS[:1])))
    try:
        _train(algo, TASKS[0]["steps"])
        progress = TrialProgress(iteration=3, metrics={"env_steps": algo.counters["env_steps"]})
        folder = write_checkpoint(algo, progress, tmp_path_factory.mktemp("prefix") / "ckpt")
        return folder, state_digest(algo), algo.counters["env_steps"]
    finally:
        algo.stop()


@pytest.mark.parametrize("method", ["none", "knife"])
def test_a_branch_starts_byte_identical_to_the_prefix_end_and_switches(prefix, method):
    folder, digest, end = prefix
    algo = build_algorithm(parse_trial_config(_config(method, TASKS)))
    try:
        progress = restore_checkpoint(algo, folder)
        assert progress.iteration == 3
        # Networks (online and target), optimizer state, replay buffer and sampling RNG.
        assert state_digest(algo) == digest
        assert algo.progress.index == 0 and algo.counters["env_steps"] == end
        algo.train()  # the first step switches (the method acts), then trains on task 1
        assert algo.progress.index == 1
        # No update since the restore, so the measurements at the switch ran on the buffer's
        # latest episodes: the probe and the stagnant fraction are there, as in a straight run.
        at_switch = algo._plasticity_latest
        for network in ("agent", "mixer"):
            assert at_switch[f"plasticity/at_switch/{network}/probe_loss_ratio"] > 0
            assert 0 <= at_switch[f"plasticity/at_switch/{network}/stagnant_fraction"] <= 1
        assert algo.progress.records[1].start_env_steps == end
        assert algo.progress.records[1].tests[0][0] == end  # the new task's starting point
        _train(algo, end + TASKS[1]["steps"])
        assert algo.progress.records[1].end_env_steps is not None
        assert state_digest(algo)["networks"] != digest["networks"]  # it learned on
        hook = algo.learner_group._learner.plasticity
        interventions = sum(h.injections for h in hook.values())
        assert interventions == (1 if method == "knife" else 0)
    finally:
        algo.stop()

"""Wall time of one study trial with N = 1 and N envs per EnvRunner, side by side (issue 15).

Takes one trial of a study sweep (default: tune_configs/study_stag_hunt.yaml, its first
grid point: QMIX, method none, seed 0, the four-task punishment sequence), scales each task to
`--steps-per-task` env steps, and trains it to the end as the sweep would (the Algorithm,
no Tune or MLflow: the platform's share is measured by benchmarks/sweep_scaling.py), once
with `num_envs_per_env_runner: 1` and once with N, alternating, `--repeats` times. Both
sides keep the study's one update per collected episode, but their counts differ a little:
with N envs a task ends on a whole collection, so each task overshoots its budget by up to
N episodes, and episodes still in flight at a switch are dropped. So the output gives the
learner updates and env steps of every run, and two ratios of medians: wall time per trial
and wall time per learner update.

    python benchmarks/study_wall_time.py [--sweep FILE] [--steps-per-task 2500] [--envs 8]
        [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

from knife.platform.algorithm_factory import algorithm_config
from knife.platform.config import parse_trial_config
from knife.platform.sweep_config import load_sweep_config

ROOT = Path(__file__).resolve().parent.parent


def trial_dict(sweep_file: Path, steps_per_task: int, n_envs: int) -> dict[str, Any]:
    [first, *_] = load_sweep_config(sweep_file).trials()
    config = copy.deepcopy(first.config)
    for task in config["tasks"]["tasks"]:
        task["steps"] = steps_per_task
    config["training"]["num_envs_per_env_runner"] = n_envs
    return config


def run(config: dict[str, Any]) -> dict[str, float]:
    cfg = parse_trial_config(config)
    algo = algorithm_config(cfg).build_algo()
    try:
        start = time.perf_counter()
        while algo.counters["env_steps"] < algo.sequence.total_steps:
            algo.train()
        wall = time.perf_counter() - start
        counters = dict(algo.counters)
    finally:
        algo.stop()
    return {
        "wall_s": wall,
        "learner_updates": counters["learner_updates"],
        "env_steps": counters["env_steps"],
        "episodes": counters["episodes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "tune_configs/study_stag_hunt.yaml")
    parser.add_argument("--steps-per-task", type=int, default=2500)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sides = {1: [], args.envs: []}
    for _ in range(args.repeats):
        for n in sides:
            sides[n].append(run(trial_dict(args.sweep, args.steps_per_task, n)))
    out: dict[str, Any] = {}
    for n, rows in sides.items():
        out[f"n{n}"] = {
            "median_wall_s": statistics.median(r["wall_s"] for r in rows),
            "median_s_per_update": statistics.median(
                r["wall_s"] / r["learner_updates"] for r in rows
            ),
            "runs": rows,
        }
    n1, nn = out["n1"], out[f"n{args.envs}"]
    out["ratio_n1_over_n"] = n1["median_wall_s"] / nn["median_wall_s"]
    out["ratio_per_update_n1_over_n"] = n1["median_s_per_update"] / nn["median_s_per_update"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

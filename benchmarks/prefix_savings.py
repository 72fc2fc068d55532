"""The compute a shared prefix saves (grid.branch, issue 16): the env steps and learner
updates a sweep trains, and its number of trials, without branching, with `prefix` (task 0
once per seed and grid point, every method branching from its end) and with `every_switch`
(every method branching from none's state at each switch), counted from the sweep's own
expanded trials (the same expansion `knife sweep` runs). Counted, not timed: a branch trains
exactly the steps of the tasks after its restore point.

    python benchmarks/prefix_savings.py [tune_configs/study_stag_hunt.yaml]
"""

from __future__ import annotations

import argparse
import copy

from knife.envs.tasks import TaskSequence
from knife.platform.config import load_yaml, parse_trial_config
from knife.platform.sweep_config import BRANCH_TASK_TAG, TrialSpec, parse_sweep_config


def trained_steps(spec: TrialSpec, branch: str) -> int:
    """The env steps the trial trains itself: a prefix-mode branch skips task 0 (restored),
    an every_switch branch trains its one task."""
    cfg = parse_trial_config(spec.config)
    tasks = TaskSequence.from_config(cfg.tasks).tasks if cfg.tasks else None
    steps = [t.steps for t in tasks] if tasks else [cfg.steps]
    if spec.branch_of is not None:
        if branch == "prefix":
            steps = steps[1:]
        else:
            steps = [steps[int(spec.tags[BRANCH_TASK_TAG])]]
    return sum(steps)


def count(raw: dict, branch: str) -> dict[str, float]:
    raw = copy.deepcopy(raw)
    raw.setdefault("grid", {})["branch"] = branch
    sweep = parse_sweep_config(raw)
    trials = sweep.trials()
    steps = [trained_steps(t, branch) for t in trials]
    return {
        "trials": len(trials),
        "env_steps": sum(steps),
        "stages": len(sweep.stages()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default="tune_configs/study_stag_hunt.yaml")
    args = parser.parse_args()
    raw = load_yaml(args.sweep)
    rows = {branch: count(raw, branch) for branch in ("none", "prefix", "every_switch")}
    base = rows["none"]["env_steps"]
    # A trial's learner updates are its episodes x its updates_per_episode: they follow the
    # steps wherever updates_per_episode is not a grid axis.
    print(f"{args.sweep}: env steps trained over all trials")
    print("grid.branch    trials  stages  env steps   of none's")
    for branch, r in rows.items():
        print(
            f"{branch:13}  {r['trials']:6}  {r['stages']:6}  {r['env_steps']:9,}"
            f"   {r['env_steps'] / base:.3f}"
        )


if __name__ == "__main__":
    main()

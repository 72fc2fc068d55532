"""`grid.branch: every_switch` in the report: one method's runs of one seed, one per switch,
read as one sequential run (docs/design.md 9, paired branches).

Under every_switch the branch of switch k (tag knife.branch_task = k) restores `none`'s state
at the end of task k-1 and trains task k alone, so its own data is task k; what it holds of
tasks 0..k-1 is `none`'s history, copied. The merged run takes task k (scores, test curve,
stagnation) from branch k, task 0 (the shared prefix, the same for every method) from branch
1, and the probe at switch k (measured before the method acts, so on `none`'s state) for
`none` only. Re-tests of earlier tasks are left out: each branch plays one task, so a
method's forgetting across the sequence is not measured here.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from knife.platform.report import RunData


def merge_switch_branches(runs: list[RunData]) -> list[RunData]:
    """`runs` with each (sequence, algorithm, method, seed)'s every_switch branches replaced
    by one run; runs that are not such branches pass through unchanged."""
    out = [r for r in runs if r.branch_task is None]
    groups: dict[tuple[str, str, str, str], list[RunData]] = {}
    for run in runs:
        if run.branch_task is not None:
            key = (run.sequence, run.algorithm, run.method, run.seed)
            groups.setdefault(key, []).append(run)
    return out + [_merged(sorted(g, key=lambda r: r.branch_task)) for g in groups.values()]


def _merged(branches: list[RunData]) -> RunData:
    last = branches[-1]
    tasks, curves = {}, {}
    first = branches[0]
    if first.branch_task == 1 and 0 in first.tasks:  # the shared prefix
        tasks[0], curves[0] = first.tasks[0], first.test_curves.get(0)
    for run in branches:
        k = run.branch_task
        if k in run.tasks:
            tasks[k] = dataclasses.replace(run.tasks[k], probe_ratio_end={})
            curves[k] = run.test_curves.get(k)
    if last.method == "none":  # the probe at switch k measures none's end of task k-1
        for run in branches:
            before = run.tasks.get(run.branch_task - 1)
            if before is not None and run.branch_task - 1 in tasks:
                tasks[run.branch_task - 1].probe_ratio_end = dict(before.probe_ratio_end)
    return dataclasses.replace(
        last,
        run_id="+".join(r.run_id for r in branches),
        tasks=tasks,
        test_curves={k: c for k, c in curves.items() if c is not None},
        retest_curves={},
        stagnant=_stagnant(branches),
        branch_task=None,
    )


def _stagnant(branches: list[RunData]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each network's stagnant-fraction curve: the shared history before the first
    branch's task, then each branch's points within its own task."""
    starts = dict(branches[-1].boundaries)
    out = {}
    for network in branches[-1].stagnant:
        steps_parts, value_parts = [], []
        for n, run in enumerate(branches):
            if network not in run.stagnant:
                continue
            steps, values = run.stagnant[network]
            k = run.branch_task
            low = -np.inf if n == 0 else starts.get(k, np.inf)
            high = starts.get(k + 1, np.inf)
            keep = (steps >= low) & (steps < high)
            steps_parts.append(steps[keep])
            value_parts.append(values[keep])
        if steps_parts:
            out[network] = (np.concatenate(steps_parts), np.concatenate(value_parts))
    return out

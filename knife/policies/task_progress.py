"""Per-task bookkeeping of a task-transfer run: test curves, AUC, final results.

The Algorithm owns one `TaskProgress`; it records every greedy test against the task it
ran on and turns them into the per-task results of DESIGN 9 (result keys `task/<i>/...`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from knife.policies import metric_keys as mk


def curve_auc(steps: np.ndarray, values: np.ndarray) -> float | None:
    """Area under a test curve divided by its length (the curve's mean height, so tasks of
    different lengths compare); one test -> its value; none -> None."""
    if len(values) == 0:
        return None
    if len(values) == 1 or steps[-1] == steps[0]:
        return float(np.mean(values))
    return float(np.trapezoid(values, steps) / (steps[-1] - steps[0]))


@dataclass
class TaskRecord:
    start_env_steps: int
    tests: list[tuple[int, float]] = field(default_factory=list)  # (env steps, return)
    win_rates: list[float] = field(default_factory=list)
    retests: list[tuple[int, float]] = field(default_factory=list)  # after the task ended
    end_env_steps: int | None = None
    random_return: float | None = None  # a uniformly random policy's mean return

    def auc(self) -> float | None:
        """The task's test curve's `curve_auc`."""
        steps = np.array([s for s, _ in self.tests], np.float64)
        values = np.array([v for _, v in self.tests], np.float64)
        return curve_auc(steps, values)


class TaskProgress:
    """The task records of one run and the metrics they give."""

    def __init__(self) -> None:
        self.records: list[TaskRecord] = [TaskRecord(start_env_steps=0)]

    @property
    def index(self) -> int:
        return len(self.records) - 1

    @property
    def current(self) -> TaskRecord:
        return self.records[-1]

    def record_test(self, task: int, env_steps: int, ret: float, win: float | None) -> None:
        rec = self.records[task]
        if task == self.index and rec.end_env_steps is None:
            rec.tests.append((env_steps, ret))
            if win is not None:
                rec.win_rates.append(win)
        else:
            rec.retests.append((env_steps, ret))

    def end_task(self, env_steps: int) -> None:
        self.current.end_env_steps = env_steps

    def start_task(self, env_steps: int) -> None:
        self.records.append(TaskRecord(start_env_steps=env_steps))

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {mk.TASK_INDEX: float(self.index)}
        for i, rec in enumerate(self.records):
            out[mk.task_key(i, mk.START_ENV_STEPS)] = float(rec.start_env_steps)
            if rec.tests:
                out[mk.task_key(i, mk.TASK_TEST_RETURN)] = rec.tests[-1][1]
                out[mk.task_key(i, mk.AUC)] = rec.auc()
            if rec.win_rates:
                out[mk.task_key(i, mk.TASK_TEST_WIN_RATE)] = rec.win_rates[-1]
            if rec.end_env_steps is not None and rec.tests:
                out[mk.task_key(i, mk.FINAL_TEST_RETURN)] = rec.tests[-1][1]
                if rec.win_rates:
                    out[mk.task_key(i, mk.FINAL_TEST_WIN_RATE)] = rec.win_rates[-1]
            if rec.retests:
                out[mk.task_key(i, mk.RETEST_RETURN)] = rec.retests[-1][1]
            if rec.random_return is not None:
                out[mk.task_key(i, mk.RANDOM_RETURN)] = rec.random_return
        return out

    def state_dict(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.records = [
            TaskRecord(
                start_env_steps=r["start_env_steps"],
                tests=[tuple(t) for t in r["tests"]],
                win_rates=list(r["win_rates"]),
                retests=[tuple(t) for t in r["retests"]],
                end_env_steps=r["end_env_steps"],
                random_return=r.get("random_return"),  # absent in older checkpoints
            )
            for r in state
        ]

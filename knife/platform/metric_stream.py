"""Successive `result_metrics()` dicts -> MLflow writes stepped by env steps.

`result_metrics()` repeats state-like values in every iteration: the latest greedy test,
the per-task results `task/<i>/...`, the plasticity metrics at the last task switch. Logging
them again each iteration would draw staircases in MLflow and break "one point per test".
So, per iteration:

* test results (`test_return`, `test_win_rate`, `task/<i>/test_return`, ...) are logged once,
  at the env step the test ran (`test_at_env_steps`), and a task's own curve only while it
  is the current task (plus its final test, which runs at the switch);
* `task/<i>/retest_return` (tests on earlier tasks) at each new test;
* other state values (`task_index`, `task/<i>/auc`, `task/<i>/final_test_return`,
  `task/<i>/start_env_steps`, `plasticity/at_switch/...`) when they change;
* everything else at the iteration's env steps.

No mlflow here: the stream only decides what to write at which step; its state goes into
the trial's checkpoint so a restored trial neither repeats nor skips a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from knife.platform.tracking import finite_float
from knife.policies import metric_keys as mk

# Other state values, logged when they change.
_ON_CHANGE_KEYS = (mk.TASK_INDEX, mk.TEST_AT)


class MetricStream:
    """Decides, per iteration, which metrics to write at which env step."""

    def __init__(self) -> None:
        self.last_test_step: float | None = None
        self.logged_state: dict[str, float] = {}

    def split(self, metrics: Mapping[str, Any]) -> list[tuple[int, dict[str, float]]]:
        """[(step, {key: value}), ...] to log for this iteration's metrics."""
        values = {k: x for k, v in metrics.items() if (x := finite_float(v)) is not None}
        if mk.ENV_STEPS not in values:
            raise ValueError(f"metrics without {mk.ENV_STEPS!r}: cannot step them")
        env_steps = int(values[mk.ENV_STEPS])
        tested_at = values.get(mk.TEST_AT)
        fresh_test = tested_at is not None and tested_at != self.last_test_step
        task_index = int(values.get(mk.TASK_INDEX, 0))
        tasks = {k: t for k in values if (t := mk.split_task_key(k)) is not None}
        # A task whose final result shows up now ended in this iteration: its final test
        # (at the switch) still belongs on its curve.
        just_ended = {
            i
            for k, (i, name) in tasks.items()
            if name == mk.FINAL_TEST_RETURN and k not in self.logged_state
        }

        now: dict[str, float] = {}
        tests: dict[str, float] = {}
        for key, value in values.items():
            if key in mk.TEST_KEYS:
                if fresh_test:
                    tests[key] = value
                continue
            task, name = tasks.get(key, (None, None))
            if name in mk.TEST_KEYS:
                if fresh_test and (task == task_index or task in just_ended):
                    tests[key] = value
                continue
            if name == mk.RETEST_RETURN:
                if fresh_test and task < task_index:
                    tests[key] = value
                continue
            if key in _ON_CHANGE_KEYS or task is not None or key.startswith(mk.AT_SWITCH):
                if self.logged_state.get(key) != value:
                    now[key] = value
                    self.logged_state[key] = value
                continue
            now[key] = value

        out = []
        if tests:
            self.last_test_step = tested_at
            out.append((int(tested_at), tests))
        if now:
            out.append((env_steps, now))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"last_test_step": self.last_test_step, "logged_state": dict(self.logged_state)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_test_step = state.get("last_test_step")
        self.logged_state = dict(state.get("logged_state", {}))

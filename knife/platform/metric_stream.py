"""One iteration's metrics and test records -> MLflow writes stepped by env steps.

The Algorithm hands over every greedy test as a record (env step, {metric: value}),
knife.policies.test_records: those are written once, at the step the test ran (records of
one step are merged, later values winning: at a switch the finished task's final test and the
next task's first test run at the same env step). The flat `result_metrics()` also repeats
state-like values every iteration (the latest test, `task/<i>/...`, the plasticity metrics at
the last switch) for Python users and Tune's table. Logging them again each iteration would
draw staircases in MLflow, so per iteration:

* test results in the flat metrics are skipped (they came as records);
* other state values (`task_index`, `task/<i>/auc`, `task/<i>/final_test_return`,
  `task/<i>/start_env_steps`, `plasticity/at_switch/...`) are written when they change;
* everything else at the iteration's env steps.

No mlflow here: the stream only decides what to write at which step; its state goes into
the trial's checkpoint so a restored trial does not write a state again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from knife.platform.tracking import finite_float
from knife.policies import metric_keys as mk


class MetricStream:
    """Decides, per iteration, which metrics to write at which env step."""

    def __init__(self) -> None:
        self.logged_state: dict[str, float] = {}

    def split(
        self,
        metrics: Mapping[str, Any],
        records: Iterable[tuple[int, Mapping[str, Any]]] = (),
    ) -> list[tuple[int, dict[str, float]]]:
        """[(step, {key: value}), ...] to log for this iteration's metrics and test records."""
        values = {k: x for k, v in metrics.items() if (x := finite_float(v)) is not None}
        if mk.ENV_STEPS not in values:
            raise ValueError(f"metrics without {mk.ENV_STEPS!r}: cannot step them")
        env_steps = int(values[mk.ENV_STEPS])
        tests: dict[int, dict[str, float]] = {}
        for step, record in records:
            finite = {k: x for k, v in record.items() if (x := finite_float(v)) is not None}
            tests.setdefault(int(step), {}).update(finite)

        now: dict[str, float] = {}
        for key, value in values.items():
            if mk.is_test_key(key):
                continue
            is_state = (
                key == mk.TASK_INDEX
                or mk.split_task_key(key) is not None
                or key.startswith(mk.AT_SWITCH)
            )
            if is_state:
                if self.logged_state.get(key) != value:
                    now[key] = value
                    self.logged_state[key] = value
                continue
            now[key] = value

        out = [(step, batch) for step, batch in sorted(tests.items()) if batch]
        if now:
            out.append((env_steps, now))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"logged_state": dict(self.logged_state)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.logged_state = dict(state.get("logged_state", {}))

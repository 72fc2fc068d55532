"""One trial's training loop and outputs, shared by `knife train` and sweep trials (DESIGN 3, 10).

    progress = TrialProgress()                  # or restored from a checkpoint
    train_to_budget(algo, cfg, logger, progress, hooks=[bar.update])
    summary = finish_trial(cfg, logger, progress, title=..., extra={...})

`train_to_budget` calls `algo.train()` until the trial's budget of env steps (or a stop
rule), logs each iteration's metrics through the metric stream (each test once, at the env
step it ran), times the loop, and calls its hooks after every iteration: the progress bar
of `knife train`, the Tune report and checkpoint policy of a sweep trial. `finish_trial`
writes what every finished trial has: the learning-curve and stagnant-fraction plots, one
`summary.json` schema, and the timing metrics.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knife.platform.config import TrialConfig
from knife.platform.metric_stream import MetricStream
from knife.platform.tracking import TrialLogger, finite_float, redact_uri
from knife.policies import metric_keys as mk

# Iterations in a row without new env steps before the loop gives up instead of spinning.
MAX_STALLED_ITERATIONS = 50


class Timer:
    """Seconds inside algo.train() vs the whole loop: the platform's own overhead."""

    def __init__(self, state: Mapping[str, float] | None = None) -> None:
        state = dict(state or {})
        self.train_s = float(state.get("train_s", 0.0))
        self.loop_s = float(state.get("loop_s", 0.0))

    def state(self) -> dict[str, float]:
        return {"train_s": self.train_s, "loop_s": self.loop_s}

    def metrics(self) -> dict[str, float]:
        overhead = (self.loop_s - self.train_s) / self.train_s if self.train_s > 0 else 0.0
        return {"platform_overhead": overhead, "train_seconds": self.train_s}


@dataclass
class TrialProgress:
    """Where a trial stands: the metric stream, the iteration, the timer, the latest finite
    value of every metric and why it stopped early (if it did). A sweep checkpoint carries it
    (to_json), so a restored trial continues its MLflow run where it stopped."""

    stream: MetricStream = field(default_factory=MetricStream)
    iteration: int = 0
    timer: Timer = field(default_factory=Timer)
    metrics: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None

    @property
    def env_steps(self) -> int:
        return int(self.metrics.get(mk.ENV_STEPS, 0))

    def to_json(self) -> str:
        return json.dumps(
            {
                "stream": self.stream.state_dict(),
                "iteration": self.iteration,
                "timer": self.timer.state(),
                "metrics": self.metrics,
                "stop_reason": self.stop_reason,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TrialProgress:
        state = json.loads(text)
        progress = cls(
            iteration=int(state["iteration"]),
            timer=Timer(state["timer"]),
            metrics=dict(state.get("metrics") or {}),
            stop_reason=state.get("stop_reason"),
        )
        progress.stream.load_state_dict(state["stream"])
        return progress

    def report(self, run_id: str | None) -> dict[str, Any]:
        """What Tune gets each iteration (the same metric names as MLflow)."""
        out = {**self.metrics, "iteration": self.iteration, "mlflow_run_id": run_id}
        out.update(self.timer.metrics())
        return out


def _stop_reason(stop: Mapping[str, float], values: Mapping[str, Any]) -> str | None:
    for key, threshold in stop.items():
        value = values.get(key)
        if isinstance(value, int | float) and value >= threshold:
            return f"{key} >= {threshold:g}"
    return None


# A hook after each iteration: (progress, done) -> None.
Hook = Callable[[TrialProgress, bool], None]


def train_to_budget(
    algo: Any,
    cfg: TrialConfig,
    logger: TrialLogger,
    progress: TrialProgress,
    *,
    stop: Mapping[str, float] | None = None,
    hooks: Iterable[Hook] = (),
) -> TrialProgress:
    """algo.train() until cfg.steps env steps or a `stop` rule ({metric: threshold});
    a progress already at its end (a restored final checkpoint) trains no further."""
    from knife.policies import result_metrics, test_records

    stop = dict(stop or {})
    hooks = list(hooks)
    logger.monitor_system(cfg.training.system_metrics_interval_s)
    done = progress.env_steps >= cfg.steps or progress.stop_reason is not None
    stalled = 0
    previous: float | None = None
    while not done:
        t0 = time.perf_counter()
        if previous is not None:
            progress.timer.loop_s += t0 - previous  # train + logging + hooks
        previous = t0
        result = algo.train()
        metrics, records = result_metrics(result), test_records(result)
        progress.timer.train_s += time.perf_counter() - t0
        if mk.ENV_STEPS not in metrics:
            raise RuntimeError("result_metrics() gave no 'env_steps'; cannot track the budget")
        steps_before = progress.env_steps
        progress.iteration += 1
        # NaN/inf (a metric not measured this iteration) never replaces a measured value.
        progress.metrics.update(
            {k: x for k, v in metrics.items() if (x := finite_float(v)) is not None}
        )
        stalled = stalled + 1 if progress.env_steps <= steps_before else 0
        if stalled >= MAX_STALLED_ITERATIONS:
            raise RuntimeError(
                f"no new env steps in {stalled} iterations (at {progress.env_steps})"
            )
        for step, batch in progress.stream.split(metrics, records):
            if step > logger.logged_through:  # a step is logged once (retrained ones are not)
                logger.log_metrics(batch, step=step)
        values = {**progress.report(logger.run_id), "time_total_s": progress.timer.loop_s}
        progress.stop_reason = _stop_reason(stop, values)
        done = progress.env_steps >= cfg.steps or progress.stop_reason is not None
        if done:
            progress.timer.loop_s += time.perf_counter() - previous
        for hook in hooks:
            hook(progress, done)
    return progress


def task_names(cfg: TrialConfig) -> dict[int, str]:
    if cfg.tasks is None:
        return {0: cfg.env}
    return {i: t.get("name") or t["env"] for i, t in enumerate(cfg.tasks["tasks"])}


def task_summaries(cfg: TrialConfig, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per task of the sequence, from the run's latest values (task/<i>/...)."""
    out = []
    for i, task in enumerate(cfg.tasks["tasks"]):
        entry = {
            "index": i,
            "name": task.get("name") or task["env"],
            "env": task["env"],
            "env_config": task.get("env_config", {}),
            "steps": task["steps"],
        }
        for name in (mk.START_ENV_STEPS, mk.FINAL_TEST_RETURN, mk.FINAL_TEST_WIN_RATE, mk.AUC):
            entry[name] = finite_float(metrics.get(mk.task_key(i, name)))
        out.append(entry)
    return out


def trial_summary(
    cfg: TrialConfig, logger: TrialLogger, progress: TrialProgress, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The one summary.json schema of a finished trial (`extra`: the caller's own fields,
    e.g. run_dir and checkpoint of `knife train`, attempts of a sweep trial)."""
    metrics = progress.metrics
    learner_updates = finite_float(metrics.get(mk.LEARNER_UPDATES))
    summary: dict[str, Any] = {
        "algorithm": cfg.algorithm,
        "method": cfg.plasticity.get("method", "none"),
        "env": cfg.env,
        "env_config": cfg.env_config,
        "sequence": cfg.sequence_name,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "env_steps": progress.env_steps,
        "learner_updates": None if learner_updates is None else int(learner_updates),
        # The latest value of each progress key, under the name MLflow and Tune show.
        "final": {key: finite_float(metrics.get(key)) for key in mk.PROGRESS_KEYS},
        "stopped": progress.stop_reason,
        "experiment": logger.experiment,
        "mlflow_run_id": logger.run_id,
        "tracking_uri": redact_uri(logger.tracking_uri),
        **progress.timer.metrics(),
        **extra,
    }
    if cfg.tasks is not None:
        summary["tasks"] = task_summaries(cfg, metrics)
    return summary


def finish_trial(
    cfg: TrialConfig,
    logger: TrialLogger,
    progress: TrialProgress,
    *,
    title: str,
    extra: Mapping[str, Any] = (),
    summary_file: Path | None = None,
) -> dict[str, Any]:
    """Plots, summary.json (written to `summary_file` if given) and the timing metrics of a
    finished trial, all logged to its run; returns the summary."""
    extra = dict(extra)
    with tempfile.TemporaryDirectory(prefix="knife-trial-") as tmp:
        folder = Path(tmp)
        for plot in write_plots(cfg, logger, progress.metrics, folder, title):
            logger.log_artifact(plot, "plots")
        summary = trial_summary(cfg, logger, progress, extra)
        path = summary_file or folder / "summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        logger.log_artifact(path)
    logger.log_metrics(progress.timer.metrics(), step=progress.env_steps)
    return summary


def write_plots(
    cfg: TrialConfig, logger: TrialLogger, metrics: Mapping[str, Any], folder: Path, title: str
) -> list[Path]:
    """learning_curve.png and stagnant_fraction.png of the run, from its MLflow histories."""
    from knife.platform.mlflow_plots import (
        NETWORKS,
        Curve,
        learning_curve_plot,
        stagnant_plot,
        task_boundaries,
    )

    _, run_id = logger.live_run()
    history = logger.store.history
    names = task_names(cfg)
    bounds = task_boundaries(metrics)
    curves = {}
    if cfg.tasks is None:
        curves["greedy test"] = Curve(*history(run_id, mk.TEST_RETURN))
    for i, name in names.items():
        if cfg.tasks is not None:  # each task's own curve, ending with its final test
            curves[f"test: {name}"] = Curve(*history(run_id, mk.task_key(i, mk.TASK_TEST_RETURN)))
        steps, values = history(run_id, mk.task_key(i, mk.RETEST_RETURN))
        if len(steps):
            curves[f"retest: {name}"] = Curve(steps, values)
    train = Curve(*history(run_id, mk.TRAIN_RETURN))
    if len(train.steps):
        curves["train (epsilon-greedy)"] = train
    panels = {}
    for network in NETWORKS:
        steps, values = history(run_id, mk.stagnant_key(network))
        panels[network] = {"stagnant fraction": Curve(steps, values)} if len(steps) else {}
    curve_png, stagnant_png = folder / "learning_curve.png", folder / "stagnant_fraction.png"
    learning_curve_plot(curves, bounds, curve_png, title=title, names=names, ylabel="return")
    stagnant_plot(panels, bounds, stagnant_png, title=title, names=names)
    return [curve_png, stagnant_png]

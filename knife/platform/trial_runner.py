"""One sweep trial inside Tune: the function trainable that `knife sweep` runs (DESIGN 3, 10).

The trial owns its MLflow run (one run per trial, created here so the trial can log its
plots): it is the run's only writer while it lives, and every write goes through the
store's lock-retry (knife.platform.tracking). The run is found again by its tag
`knife.trial_key` (sweep id + Tune trial id), so a retried or resumed trial continues its
own run instead of creating a second one.

Checkpoints (RLlib Algorithm state + the metric stream's state) go to Tune every
`checkpoint_every` iterations, at each task switch and at the end; a retried or resumed trial
restarts from the latest one.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knife.platform.config import TrialConfig, parse_trial_config
from knife.platform.metric_stream import MetricStream
from knife.platform.sweep_config import build_trial_config, import_plugins
from knife.platform.tracking import TrialLogger, redact_uri, retry, trial_tags
from knife.policies import metric_keys as mk

META = "knife"  # param_space key of the sweep's own settings
KIND_TAG = "knife.kind"  # trial | report
TRIAL_KEY_TAG = "knife.trial_key"
ATTEMPTS_TAG = "knife.attempts"
NODE_TAG = "ray_node_id"  # the Ray node of the latest attempt; per attempt: knife.attempt/<n>/...
STATE_FILE = "trial_state.json"
ALGO_DIR = "algorithm"
MAX_STALLED_ITERATIONS = 50


def trial_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial config of one Tune trial: base + grid point + sampled choices."""
    overrides = {**config["variant"]["overrides"], **dict(config.get("sampled") or {})}
    return build_trial_config(config["base"], overrides)


class SweepRunLogger(TrialLogger):
    """A TrialLogger that reopens the run of its trial key instead of making a second one."""

    def __init__(self, *args: Any, trial_key: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trial_key = trial_key
        self.reopened = False
        self.attempt = 1

    def start(self) -> str:
        experiment_id = self.store.experiment_id(self.experiment)
        found = retry(
            self.client.search_runs,
            [experiment_id],
            filter_string=f"tags.`{TRIAL_KEY_TAG}` = '{self.trial_key}'",
            max_results=1,
        )
        if found:
            run = found[0]
            self.run_id = run.info.run_id
            self.reopened = True
            self.attempt = int(run.data.tags.get(ATTEMPTS_TAG, "1")) + 1
            retry(self.client.update_run, self.run_id, status="RUNNING")
        else:
            tags = {**self.tags, TRIAL_KEY_TAG: self.trial_key}
            run = retry(
                self.client.create_run,
                experiment_id,
                run_name=self.run_name,
                tags={k: str(v) for k, v in tags.items()},
            )
            self.run_id = run.info.run_id
        self.set_tags({ATTEMPTS_TAG: self.attempt, **node_tags(self.attempt)})
        return self.run_id


def node_tags(attempt: int) -> dict[str, str]:
    """The Ray node (id and host name) this attempt runs on, as the latest and per attempt:
    on a cluster, a trial retried after its node was lost shows where each attempt ran."""
    import socket

    import ray

    if not ray.is_initialized():
        return {}
    node_id = ray.get_runtime_context().get_node_id()
    return {
        NODE_TAG: node_id,
        "ray_node_host": socket.gethostname(),
        f"knife.attempt/{attempt}/{NODE_TAG}": node_id,
    }


def _task_names(cfg: TrialConfig) -> dict[int, str]:
    if cfg.tasks is None:
        return {0: cfg.env}
    return {i: t.get("name") or t["env"] for i, t in enumerate(cfg.tasks["tasks"])}


def _stop_reason(stop: Mapping[str, float], values: Mapping[str, Any]) -> str | None:
    for key, threshold in stop.items():
        value = values.get(key)
        if isinstance(value, int | float) and value >= threshold:
            return f"{key} >= {threshold:g}"
    return None


class _Timer:
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


def sweep_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: train one trial config to its budget, logging to MLflow."""
    from ray import tune

    meta = config[META]
    import_plugins(meta.get("plugins", ()))  # custom envs, registered in this worker too
    cfg = parse_trial_config(trial_dict(config))
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    tags = {
        **trial_tags(cfg),
        KIND_TAG: "trial",
        "sweep": meta["sweep"],
        "sweep_id": meta["sweep_id"],
        "trial_id": trial_id,
        "trial_label": config["variant"]["label"],
    }
    for i, name in _task_names(cfg).items():
        tags[mk.task_key(i, "name")] = name
    logger = SweepRunLogger(
        meta["tracking_uri"],
        meta["experiment"],
        run_name=ctx.get_trial_name(),
        tags=tags,
        trial_key=f"{meta['sweep_id']}/{trial_id}",
    )
    logger.start()
    try:
        _run(cfg, config, meta, logger, ctx)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) else "FAILED"
        try:
            logger.end(status)
        except Exception:  # the original error matters more than a failed status write
            pass
        raise


@dataclass
class _Progress:
    """What a checkpoint carries besides the Algorithm: enough to continue the MLflow run
    where it stopped (or only finish it, when the checkpoint is the trial's last)."""

    stream: MetricStream = field(default_factory=MetricStream)
    iteration: int = 0
    timer: _Timer = field(default_factory=_Timer)
    metrics: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None

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
    def from_json(cls, text: str) -> _Progress:
        state = json.loads(text)
        progress = cls(
            iteration=int(state["iteration"]),
            timer=_Timer(state["timer"]),
            metrics=dict(state.get("metrics") or {}),
            stop_reason=state.get("stop_reason"),
        )
        progress.stream.load_state_dict(state["stream"])
        return progress

    def report(self, run_id: str | None) -> dict[str, Any]:
        out = {**self.metrics, "iteration": self.iteration, "mlflow_run_id": run_id}
        out.update(self.timer.metrics())
        return out


def _run(cfg: TrialConfig, config: dict, meta: dict, logger: SweepRunLogger, ctx: Any) -> None:
    from ray import tune

    from knife.platform.algorithm_factory import build_algorithm
    from knife.policies import result_metrics

    if not logger.reopened:
        logger.log_params(cfg.to_dict())
        logger.log_dict(cfg.to_dict(), "config.yaml")
    algo = build_algorithm(cfg)
    try:
        progress = _Progress()
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                algo.restore_from_path(str(Path(folder) / ALGO_DIR))
                progress = _Progress.from_json((Path(folder) / STATE_FILE).read_text())
            logger.set_tags({"knife.restored_from_iteration": progress.iteration})

        every = int(meta["checkpoint_every"])
        stop = dict(meta.get("stop") or {})
        env_steps = int(progress.metrics.get("env_steps", 0))
        # A checkpoint taken at the end (resume after the driver died between the trial's
        # last report and Tune recording it) only needs finishing, not more training.
        done = env_steps >= cfg.steps or progress.stop_reason is not None
        stalled, task_index = 0, progress.metrics.get("task_index")
        previous: float | None = None
        while not done:
            t0 = time.perf_counter()
            if previous is not None:
                progress.timer.loop_s += t0 - previous  # train + logging + report + checkpoint
            previous = t0
            metrics = result_metrics(algo.train())
            progress.timer.train_s += time.perf_counter() - t0
            progress.iteration += 1
            progress.metrics = metrics
            new_steps = int(metrics["env_steps"])
            stalled = stalled + 1 if new_steps <= env_steps else 0
            if stalled >= MAX_STALLED_ITERATIONS:
                raise RuntimeError(f"no new env steps in {stalled} iterations (at {new_steps})")
            env_steps = new_steps
            for step, batch in progress.stream.split(metrics):
                logger.log_metrics(batch, step=step)
            report = progress.report(logger.run_id)
            progress.stop_reason = _stop_reason(
                stop, {**report, "time_total_s": progress.timer.loop_s}
            )
            done = env_steps >= cfg.steps or progress.stop_reason is not None
            if done:
                progress.timer.loop_s += time.perf_counter() - previous
                break
            switched = task_index is not None and metrics.get("task_index") != task_index
            task_index = metrics.get("task_index")
            if progress.iteration % every == 0 or switched:
                _report_with_checkpoint(algo, report, progress)
            else:
                tune.report(report)

        if progress.stop_reason is not None:
            logger.set_tags({"knife.stopped": progress.stop_reason})
        _finish(cfg, logger, progress.metrics, progress.timer, ctx)
        run_id = logger.run_id
        logger.end("FINISHED")  # before the last report: Tune may end this process after it
        _report_with_checkpoint(algo, progress.report(run_id), progress)
    finally:
        algo.stop()


def _report_with_checkpoint(algo: Any, report: dict, progress: _Progress) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="knife-ckpt-") as tmp:
        folder = Path(tmp)
        # Absolute path: RLlib restores need it.
        algo.save_to_path(str(folder.resolve() / ALGO_DIR))
        (folder / STATE_FILE).write_text(progress.to_json())
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(folder)))


def _finish(
    cfg: TrialConfig, logger: SweepRunLogger, metrics: dict[str, Any], timer: _Timer, ctx: Any
) -> None:
    """Plots, summary.json and the last metrics of a finished trial."""
    from knife.platform.mlflow_plots import (
        NETWORKS,
        Curve,
        learning_curve_plot,
        stagnant_plot,
        task_boundaries,
    )

    _, run_id = logger.live_run()
    history = logger.store.history
    names = _task_names(cfg)
    bounds = task_boundaries(metrics)
    title = f"{ctx.get_trial_name()}  ({cfg.algorithm}, method {cfg.plasticity['method']})"
    curves = {}
    if cfg.tasks is None:
        curves["greedy test"] = Curve(*history(run_id, mk.TEST_RETURN))
    for i, name in names.items():
        if cfg.tasks is not None:  # each task's own curve, ending with its final test
            curves[f"test: {name}"] = Curve(*history(run_id, mk.task_key(i, mk.TEST_RETURN)))
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
    with tempfile.TemporaryDirectory(prefix="knife-plots-") as tmp:
        folder = Path(tmp)
        learning_curve_plot(
            curves, bounds, folder / "learning_curve.png", title=title, names=names, ylabel="return"
        )
        stagnant_plot(panels, bounds, folder / "stagnant_fraction.png", title=title, names=names)
        logger.log_artifact(folder / "learning_curve.png", "plots")
        logger.log_artifact(folder / "stagnant_fraction.png", "plots")
        summary = _summary(cfg, logger, metrics, timer)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        logger.log_artifact(folder / "summary.json")
    logger.log_metrics(timer.metrics(), step=int(metrics.get("env_steps", 0)))


def _summary(
    cfg: TrialConfig, logger: SweepRunLogger, metrics: dict[str, Any], timer: _Timer
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "algorithm": cfg.algorithm,
        "method": cfg.plasticity.get("method", "none"),
        "seed": cfg.seed,
        "sequence": cfg.sequence_name,
        "env_steps": metrics.get("env_steps"),
        "final_test_return": metrics.get("test_return"),
        "final_test_win_rate": metrics.get("test_win_rate"),
        "attempts": logger.attempt,
        "mlflow_run_id": logger.run_id,
        "tracking_uri": redact_uri(logger.tracking_uri),
        **timer.metrics(),
    }
    if cfg.tasks is not None:
        from knife.platform.train import task_summaries

        summary["tasks"] = task_summaries(cfg, metrics)
    return summary

"""`knife train`: one trial without Tune (DESIGN 3, 10).

Order matters: validate -> run folder + config.yaml -> MLflow run -> Ray -> algorithm. A bad
config fails before anything is created; a failure later leaves the folder and a FAILED run.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from knife.platform.checkpoints import (
    CheckpointError,
    restore_first_good,
    stop_with_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)
from knife.platform.config import ConfigError, TrialConfig, load_yaml, parse_trial_config
from knife.platform.preemption import Preempted, StopRequest
from knife.platform.tracking import (
    ATTEMPTS_TAG,
    RESTORED_TAG,
    TrialLogger,
    resolve_tracking_uri,
    trial_tags,
)
from knife.platform.trial_loop import TrialProgress, finish_trial, train_to_budget
from knife.policies import metric_keys as mk

DEFAULT_EXPERIMENT = "train"
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"  # the MLflow run of this folder, for --resume
CHECKPOINT_DIR = "checkpoint"  # written at the end and on a stop notice


def run_dir_name(cfg: TrialConfig) -> str:
    """cfg.name, else algorithm-env-seed-timestamp (folder-safe)."""
    if cfg.name:
        return cfg.name
    env = re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.env)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.algorithm}-{env}-s{cfg.seed}-{stamp}"


def make_run_dir(runs_dir: Path, experiment: str, name: str) -> Path:
    """A new folder <runs_dir>/<experiment>/<name>[-N]; never reuses an existing one."""
    parent = Path(runs_dir).expanduser().resolve() / experiment
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        path = parent / (name if i == 0 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not make a fresh run folder under {parent} for {name!r}")


class ProgressBar:
    """tqdm bar over env steps (a trial-loop hook); a no-op when disabled."""

    def __init__(self, total: int, enabled: bool, desc: str, initial: int = 0) -> None:
        self.bar = None
        self.total = total
        self.shown = min(initial, total)
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=self.shown, unit="step", desc=desc, dynamic_ncols=True
            )

    def __call__(self, progress: TrialProgress, done: bool) -> None:
        if self.bar is None:
            return
        metrics = progress.metrics
        now = min(progress.env_steps, self.total)
        if now > self.shown:
            self.bar.update(now - self.shown)
            self.shown = now
        post = {}
        for key, label in (
            (mk.TRAIN_RETURN, "train"),
            (mk.TEST_RETURN, "test"),
            (mk.TEST_WIN_RATE, "win"),
        ):
            if key in metrics:
                post[label] = f"{metrics[key]:.3g}"
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_trial(
    cfg: TrialConfig,
    runs_dir: Path,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: bool = True,
    *,
    address: str | None = None,
    echo: bool = True,
) -> dict[str, Any]:
    """Train one trial to cfg.steps env steps; returns (and writes) its summary.

    `address` joins a Ray cluster (default: embedded Ray or $RAY_ADDRESS). `echo` prints the
    summary as JSON at the end.
    """
    # Re-validate: a TrialConfig built in code skips parse_trial_config's checks.
    cfg = parse_trial_config(cfg.to_dict())
    from knife.platform.algorithm_factory import resolve_device

    resolve_device(cfg.training.device)  # a missing GPU is a config error, before Ray
    experiment = experiment or DEFAULT_EXPERIMENT
    runs_dir = Path(runs_dir).expanduser().resolve()
    tracking_uri = resolve_tracking_uri(runs_dir, tracking_uri)
    run_dir = make_run_dir(runs_dir, experiment, run_dir_name(cfg))
    config_file = run_dir / CONFIG_FILE
    config_file.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    logger = TrialLogger(tracking_uri, experiment, run_name=run_dir.name, tags=trial_tags(cfg))
    logger.start()
    record = {"mlflow_run_id": logger.run_id, "experiment": experiment}
    (run_dir / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")
    try:
        logger.set_tags({"run_dir": str(run_dir), ATTEMPTS_TAG: 1})
        logger.log_params(cfg.to_dict())
        logger.log_artifact(config_file)
    except BaseException:
        logger.end("FAILED")
        raise
    return _run(cfg, run_dir, logger, progress, address, echo, attempt=1, resume=False)


def resume_trial(
    run_dir: Path,
    tracking_uri: str | None = None,
    progress: bool = True,
    *,
    address: str | None = None,
    echo: bool = True,
) -> dict[str, Any]:
    """Continue a `knife train` run folder from its checkpoint to its budget, in the same
    MLflow run. A run already FINISHED is not trained again (its summary is returned).
    Everything is checked before Ray starts: the folder, its config, its run, its checkpoint."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: no run folder {run_dir}")
    cfg = parse_trial_config(load_yaml(run_dir / CONFIG_FILE))
    try:
        record = json.loads((run_dir / RUN_FILE).read_text())
        run_id, experiment = record["mlflow_run_id"], record["experiment"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"--resume: {run_dir / RUN_FILE} is missing or unreadable ({type(exc).__name__}); "
            "it names the folder's MLflow run"
        ) from None
    # The folder sits at <runs_dir>/<experiment>/<name>: the same default store as train.
    tracking_uri = resolve_tracking_uri(run_dir.parents[1], tracking_uri)
    logger = TrialLogger(tracking_uri, experiment, run_name=run_dir.name)
    try:
        run = logger.store.retry(logger.client.get_run, run_id)
    except Exception as exc:
        raise ConfigError(
            f"--resume: MLflow run {run_id} of {run_dir} is not in {tracking_uri} "
            f"({type(exc).__name__}); pass the --tracking-uri it was trained with"
        ) from None
    if run.info.status == "FINISHED":
        print(f"knife: run {run_id} ({run_dir.name}) is FINISHED; not training it again")
        summary_file = run_dir / "summary.json"
        return json.loads(summary_file.read_text()) if summary_file.exists() else {}
    try:
        verify_checkpoint(run_dir / CHECKPOINT_DIR)
    except CheckpointError as exc:
        raise ConfigError(
            f"--resume: cannot continue {run_dir.name}: {exc}. Start it again from scratch: "
            f"knife train {run_dir / CONFIG_FILE}"
        ) from None
    attempt = int(run.data.tags.get(ATTEMPTS_TAG, "1")) + 1
    logger.reopen(run_id)
    logger.set_tags({ATTEMPTS_TAG: attempt})
    return _run(cfg, run_dir, logger, progress, address, echo, attempt=attempt, resume=True)


def _run(
    cfg: TrialConfig,
    run_dir: Path,
    logger: TrialLogger,
    show_progress: bool,
    address: str | None,
    echo: bool,
    *,
    attempt: int,
    resume: bool,
) -> dict[str, Any]:
    """Train, then write the summary; the run ends FINISHED, KILLED (a stop notice or Ctrl-C)
    or FAILED."""
    t0 = time.monotonic()
    try:
        done = _train_with_ray(cfg, run_dir, logger, show_progress, address, resume)
        wall = round(time.monotonic() - t0, 3)
        extra = {"attempts": attempt, "wall_seconds": wall, "run_dir": str(run_dir)}
        summary = finish_trial(
            cfg,
            logger,
            done,
            title=f"{run_dir.name}  ({cfg.algorithm}, method {cfg.plasticity['method']})",
            extra={**extra, "checkpoint": str(run_dir / CHECKPOINT_DIR)},
            summary_file=run_dir / "summary.json",
        )
        logger.log_metrics({"wall_seconds": wall}, step=done.env_steps)
    except KeyboardInterrupt:
        logger.end("KILLED")
        raise
    except BaseException:
        logger.end("FAILED")
        raise
    logger.end("FINISHED")
    if echo:
        print(json.dumps(summary, indent=2), flush=True)
    return summary


def _train_with_ray(
    cfg: TrialConfig,
    run_dir: Path,
    logger: TrialLogger,
    show_progress: bool,
    address: str | None,
    resume: bool,
) -> TrialProgress:
    from knife.platform.algorithm_factory import build_algorithm
    from knife.platform.ray_runtime import start_ray, stop_ray

    # Before Ray's start-up (a notice may come at any time) and again after it, since it
    # installs a SIGTERM handler of its own.
    stop = StopRequest()
    restore_handlers = stop.install()
    started = start_ray(address=address)
    stop.install()
    checkpoint = run_dir / CHECKPOINT_DIR
    algo = None
    bar = None
    progress = TrialProgress()
    try:
        algo = build_algorithm(cfg)
        if resume:
            rebuild = lambda: build_algorithm(cfg)  # noqa: E731
            algo, restored = restore_first_good(algo, [checkpoint], rebuild)
            progress = restored or progress
            logger.set_tags({RESTORED_TAG: progress.iteration})
        desc = f"{cfg.algorithm} {cfg.env}"
        bar = ProgressBar(cfg.steps, show_progress, desc=desc, initial=progress.env_steps)
        train_to_budget(algo, cfg, logger, progress, hooks=[bar, stop.hook])
        bar.close()
        write_checkpoint(algo, progress, checkpoint)
        return progress
    except Preempted as exc:
        if algo is not None and exc.at_boundary:  # a whole iteration: worth keeping
            stop_with_checkpoint(algo, progress, logger, checkpoint)
            print(
                f"knife: stopped at iteration {progress.iteration} ({progress.env_steps} env "
                f"steps); checkpoint {checkpoint}; continue with: knife train --resume {run_dir}",
                flush=True,
            )
        raise
    finally:
        if bar is not None:
            bar.close()
        restore_handlers()
        if algo is not None:
            algo.stop()
        if started:
            stop_ray()

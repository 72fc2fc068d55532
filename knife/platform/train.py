"""`knife train`: one trial without Tune (DESIGN 3, 10).

Order matters: validate -> run folder + config.yaml -> MLflow run -> Ray -> algorithm. A bad
config fails before anything is created; a failure later leaves the folder and a FAILED run.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from knife.platform.config import TrialConfig, parse_trial_config
from knife.platform.tracking import (
    TrialLogger,
    resolve_tracking_uri,
    trial_tags,
)
from knife.platform.trial_loop import TrialProgress, finish_trial, train_to_budget
from knife.policies import metric_keys as mk

DEFAULT_EXPERIMENT = "train"


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

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="step", desc=desc, dynamic_ncols=True)
        self.total = total
        self.shown = 0

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
    config_file = run_dir / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    t0 = time.monotonic()
    with TrialLogger(
        tracking_uri, experiment, run_name=run_dir.name, tags=trial_tags(cfg)
    ) as logger:
        logger.set_tags({"run_dir": str(run_dir)})
        logger.log_params(cfg.to_dict())
        logger.log_artifact(config_file)
        done, checkpoint = _train_with_ray(cfg, run_dir, logger, progress, address)
        wall = round(time.monotonic() - t0, 3)
        extra = {"attempts": 1, "wall_seconds": wall, "run_dir": str(run_dir)}
        summary = finish_trial(
            cfg,
            logger,
            done,
            title=f"{run_dir.name}  ({cfg.algorithm}, method {cfg.plasticity['method']})",
            extra={**extra, "checkpoint": checkpoint},
            summary_file=run_dir / "summary.json",
        )
        logger.log_metrics({"wall_seconds": wall}, step=done.env_steps)
    if echo:
        print(json.dumps(summary, indent=2), flush=True)
    return summary


class Preempted(KeyboardInterrupt):
    """SIGTERM: the machine is being taken away (a cloud provider's preemption notice).

    A KeyboardInterrupt, so it takes the Ctrl-C path: the trial checkpoints, its MLflow run
    ends KILLED and `knife` exits with 143 (128 + SIGTERM) instead of a C stack dump."""


def _raise_preempted(signum: int, frame: object) -> None:
    raise Preempted()


def _train_with_ray(
    cfg: TrialConfig, run_dir: Path, logger: TrialLogger, progress: bool, address: str | None
) -> tuple[TrialProgress, str]:
    from knife.platform.algorithm_factory import build_algorithm
    from knife.platform.ray_runtime import start_ray, stop_ray

    # Before Ray's start-up (a notice may come at any time) and again after it, since it
    # installs handlers of its own; only the main thread can.
    previous = None
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        previous = signal.signal(signal.SIGTERM, _raise_preempted)
    started = start_ray(address=address)
    if main_thread:
        signal.signal(signal.SIGTERM, _raise_preempted)
    algo = None
    bar = ProgressBar(cfg.steps, progress, desc=f"{cfg.algorithm} {cfg.env}")
    try:
        algo = build_algorithm(cfg)
        done = train_to_budget(algo, cfg, logger, TrialProgress(), hooks=[bar])
        bar.close()
        # Absolute path: RLlib checkpoints restored from another folder need it.
        checkpoint = algo.save_to_path(str(run_dir / "checkpoint"))
        return done, str(checkpoint)
    except KeyboardInterrupt:
        if algo is not None:  # what was trained so far, within the grace period
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second notice must not cut it
            path = algo.save_to_path(str(run_dir / "checkpoint"))
            logger.set_tags({"interrupted_checkpoint": str(path)})
            print(f"interrupted: checkpoint written to {path}", flush=True)
        raise
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if algo is not None:
            algo.stop()
        if started:
            stop_ray()

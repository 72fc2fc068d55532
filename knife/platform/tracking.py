"""MLflow for the platform (DESIGN 10): `MlflowStore`, the one way platform modules reach a
tracking store, and `TrialLogger`, one run per trial (flattened params, metrics by env step).

Uses `MlflowClient` with an explicit run id rather than MLflow's global "active run", so
several loggers can live in one process (Tune trials, tests) without stepping on each other.

The default store is a SQLite file, and several trial processes may write to it at once:
SQLite then answers "database is locked" once its busy timeout runs out. Every call goes
through `retry`, which backs off and tries again a bounded number of times, and the first
touch of a store (its tables, an experiment) happens under a file lock (`init_lock`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from knife.platform.config import flatten

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from knife.platform.config import TrialConfig

T = TypeVar("T")

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# MLflow servers before 1.x and some hosted stores cap a param value at 500 characters; a
# local 3.x store allows 6000. Use the smaller cap so a run logs the same anywhere.
PARAM_VALUE_MAX = 500
PARAMS_PER_BATCH = 100  # MLflow's limit for params (and tags) in one log_batch
METRICS_PER_BATCH = 1000
RETRIES = 8
_LOCK_MARKERS = ("database is locked", "database table is locked", "database schema is locked")


# A trial's run, both commands: how many attempts it took, where a resumed attempt continued,
# where a stop notice ended one (knife.platform.checkpoints.stop_with_checkpoint).
ATTEMPTS_TAG = "knife.attempts"
RESTORED_TAG = "knife.restored_from_iteration"
# A paired branch (grid.branch): the MLflow run it continues (a prefix, or under
# every_switch none's branch of the switch before), whose metric history it holds (copied
# once: BRANCH_COPIED_TAG), and the digests of the state it started from, per component.
# A run that branches hand on writes the digests of its final state (BRANCH_END_STATE_TAG):
# a branch's start tags equal its parent's end tags.
BRANCH_OF_TAG = "knife.branch_of"
BRANCH_COPIED_TAG = "knife.branch_history_copied"
BRANCH_STATE_TAG = "knife.branch_state"
BRANCH_END_STATE_TAG = "knife.branch_end_state"
STOPPED_AT_TAG = "knife.stopped_at"
INTERRUPTED_CHECKPOINT_TAG = "interrupted_checkpoint"

# MLflow's UI picks the experiment layout from this tag: without it a new experiment opens in
# the GenAI layout (traces, judges, prompts); "custom_model_development" is model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def ensure_model_training_kind(client: Any, experiment: Any) -> None:
    """Tag an experiment as model training unless it already says what it is."""
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        retry(
            client.set_experiment_tag,
            experiment.experiment_id,
            EXPERIMENT_KIND_TAG,
            MODEL_TRAINING_KIND,
        )


def resolve_tracking_uri(runs_dir: str | Path, explicit: str | None = None) -> str:
    """The MLflow store: an explicit URI (CLI flag) > $MLFLOW_TRACKING_URI > SQLite in runs_dir."""
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    # Absolute, so runs started from another folder (Ray workers, `knife ui`) find it.
    return "sqlite:///" + str(Path(runs_dir).expanduser().resolve() / DB_FILE)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file behind a sqlite:/// URI, else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///"))


def code_version() -> str:
    """`git describe --always --dirty` of the source checkout, else $KNIFE_CODE_VERSION (the
    Docker images set it to the commit they were built from), else the package version."""
    import knife

    repo = Path(knife.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("KNIFE_CODE_VERSION") or f"knife-marl {knife.__version__}"


def trial_tags(cfg: TrialConfig) -> dict[str, str]:
    """The tags DESIGN 10 asks for, so runs can be grouped in the UI ("Group by method" in
    one click) and the report. `task`: the env, or a sequence's task names in order."""
    if cfg.tasks is None:
        task = cfg.env
    else:
        task = " -> ".join(t.get("name") or t["env"] for t in cfg.tasks["tasks"])
    return {
        "method": str(cfg.plasticity.get("method", "none")),
        "algorithm": cfg.algorithm,
        "env": cfg.env,
        "sequence": cfg.sequence_name,
        "seed": str(cfg.seed),
        "task": task,
        "code_version": code_version(),
    }


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _LOCK_MARKERS)


def retry(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call fn; on 'database is locked' wait (exponential backoff + jitter) and try again."""
    for attempt in range(RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_locked(exc) or attempt == RETRIES - 1:
                raise
            # Jitter so that writers that collided do not collide again in lock-step.
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def init_lock(tracking_uri: str) -> Iterator[None]:
    """Serialize the first touch of a SQLite store across processes.

    MLflow creates the tables of a fresh SQLite file without a lock, so two trials starting
    together can both try to create them; one then fails with 'table already exists'.
    """
    db = sqlite_path(tracking_uri)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; MLflow's own behaviour
        fcntl = None  # type: ignore[assignment]
    if db is None or fcntl is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(str(db) + ".init.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def finite_float(value: Any) -> float | None:
    """`value` as a float, or None if it is missing, not a number, NaN or infinite."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _truncate(value: str) -> str:
    return value if len(value) <= PARAM_VALUE_MAX else value[: PARAM_VALUE_MAX - 3] + "..."


class MlflowStore:
    """One MLflow tracking store: its client (built under the store's init lock), lock-retried
    calls, model-training experiments and metric histories.

    store = MlflowStore(uri); store.retry(store.client.search_runs, [exp_id])
    """

    def __init__(self, tracking_uri: str, artifact_root: str | Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            with init_lock(self.tracking_uri):
                # The client may build the store (and create its tables) right away: inside.
                self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @staticmethod
    def retry(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs), tried again while the store answers 'database is locked'."""
        return retry(fn, *args, **kwargs)

    def experiment_id(self, name: str, *, create: bool = True) -> str | None:
        """The id of experiment `name` (tagged model-training, older ones included); with
        `create`, made if missing, under the init lock so that racing trials make one."""
        client = self.client
        exp = retry(client.get_experiment_by_name, name)
        if exp is not None:
            ensure_model_training_kind(client, exp)
            return exp.experiment_id
        if not create:
            return None
        with init_lock(self.tracking_uri):
            exp = retry(client.get_experiment_by_name, name)
            if exp is not None:
                return exp.experiment_id
            try:
                return retry(
                    client.create_experiment,
                    name,
                    artifact_location=self._artifact_location(name),
                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
                )
            except Exception:
                # Another store user (not behind our file lock) made it meanwhile.
                exp = retry(client.get_experiment_by_name, name)
                if exp is None:
                    raise
                return exp.experiment_id

    def _artifact_location(self, experiment: str) -> str | None:
        # A SQLite store would otherwise put artifacts under ./mlartifacts of whatever folder
        # the process runs in; keep them beside the database instead.
        if self.artifact_root is not None:
            root = Path(self.artifact_root).expanduser().resolve()
        else:
            db = sqlite_path(self.tracking_uri)
            if db is None:
                return None  # a server decides where artifacts go
            root = db.parent / ARTIFACTS_DIR
        return (root / experiment).as_uri()

    def search_all(self, experiment_id: str, filter_string: str = "") -> list[Any]:
        """Every run of the experiment matching `filter_string`, all pages."""
        runs: list[Any] = []
        token = None
        while True:
            page = retry(
                self.client.search_runs,
                [experiment_id],
                filter_string=filter_string,
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def history(self, run_id: str, key: str) -> tuple[Any, Any]:
        """(steps, values) of one metric as float arrays, sorted by step, one value per step
        (the latest logged)."""
        import numpy as np

        points = retry(self.client.get_metric_history, run_id, key)
        by_step: dict[int, tuple[int, float]] = {}
        for m in points:
            seen = by_step.get(m.step)
            if seen is None or m.timestamp >= seen[0]:
                by_step[m.step] = (m.timestamp, m.value)
        steps = np.array(sorted(by_step), dtype=np.float64)
        values = np.array([by_step[int(s)][1] for s in steps], dtype=np.float64)
        return steps, values

    def copy_history(self, source: str, target: str) -> int:
        """Log every metric point of run `source` into run `target` (same steps, values and
        timestamps); returns the number of points."""
        from mlflow.entities import Metric

        keys = retry(self.client.get_run, source).data.metrics
        points = [
            Metric(m.key, m.value, m.timestamp, m.step)
            for key in sorted(keys)
            for m in retry(self.client.get_metric_history, source, key)
        ]
        for i in range(0, len(points), 1000):  # MLflow's batch limit
            retry(self.client.log_batch, target, metrics=points[i : i + 1000])
        return len(points)

    def end_run(self, run_id: str, status: str, *, only_if_running: bool = False) -> bool:
        """Set a run's final status; with `only_if_running`, leave an ended run alone.
        Returns whether the status was written."""
        client = self.client
        if only_if_running and retry(client.get_run, run_id).info.status != "RUNNING":
            return False
        retry(client.set_terminated, run_id, status=status)
        return True


class TrialLogger:
    """One MLflow run for one trial.

    Use as a context manager (the run ends FAILED if the block raises, KILLED on Ctrl-C) or
    call start()/end() yourself.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        artifact_root: str | Path | None = None,
    ) -> None:
        self.store = MlflowStore(tracking_uri, artifact_root)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        self.logged_through = -1  # env step through which the run has metrics (see reopen)
        self._system_monitor: Any = None

    @property
    def client(self) -> MlflowClient:
        return self.store.client

    # -- run lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Create the experiment if needed, start the run, return its id."""
        experiment_id = self.store.experiment_id(self.experiment)
        run = retry(
            self.client.create_run,
            experiment_id,
            run_name=self.run_name,
            tags={k: str(v) for k, v in self.tags.items()},
        )
        self.run_id = run.info.run_id
        return self.run_id

    def reopen(self, run_id: str) -> str:
        """Continue an existing run (a resumed trial): it is RUNNING again, this its writer.
        `logged_through` becomes the last env step it has metrics for: a trial restored from
        an older checkpoint retrains those steps, and the loop does not log them twice."""
        retry(self.client.update_run, run_id, status="RUNNING")
        self.run_id = run_id
        steps, _ = self.store.history(run_id, "env_steps")
        self.logged_through = int(steps[-1]) if len(steps) else -1
        return run_id

    def monitor_system(self, interval_s: float) -> None:
        """MLflow's system-metrics logging for this run (`system/cpu_utilization_percentage`,
        `system/system_memory_usage_megabytes`, disk, network, `system/gpu_*` when a GPU is
        seen): one sample every `interval_s` seconds from a thread, until the run ends. Its
        step counts samples (MLflow's convention), not env steps. 0: off."""
        if interval_s <= 0 or self.run_id is None or self._system_monitor is not None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            self.run_id,
            sampling_interval=interval_s,
            resume_logging=self.logged_through >= 0,  # a reopened run continues its steps
            tracking_uri=self.tracking_uri,
        )
        monitor.start()
        self._system_monitor = monitor

    def end(self, status: str = "FINISHED") -> None:
        """End the run with FINISHED, FAILED or KILLED; safe to call twice."""
        if self._system_monitor is not None:
            self._system_monitor.finish()  # its last samples, before the run ends
            self._system_monitor = None
        if self.run_id is None:
            return
        self.store.end_run(self.run_id, status)
        self.run_id = None

    def __enter__(self) -> TrialLogger:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self.end(status)

    # -- logging -------------------------------------------------------------------------

    def live_run(self) -> tuple[MlflowClient, str]:
        """(client, run id) of the run this logger writes; an error before start() or after
        end()."""
        if self.run_id is None:
            raise RuntimeError("TrialLogger: no live run (call start() first; or it has ended)")
        return self.client, self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested or flat) mapping as params: dotted keys, values cut to 500 chars."""
        from mlflow.entities import Param

        client, run_id = self.live_run()
        flat = flatten(params)
        items = [Param(k, _truncate(v)) for k, v in flat.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            retry(client.log_batch, run_id, params=items[i : i + PARAMS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        client, run_id = self.live_run()
        items = [RunTag(k, _truncate(str(v))) for k, v in tags.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            retry(client.log_batch, run_id, tags=items[i : i + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log the finite numeric values at `step` (env steps); None/NaN/inf are skipped."""
        from mlflow.entities import Metric

        client, run_id = self.live_run()
        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            x = finite_float(value)
            if x is not None:
                items.append(Metric(key, x, now, int(step)))
        for i in range(0, len(items), METRICS_PER_BATCH):
            retry(client.log_batch, run_id, metrics=items[i : i + METRICS_PER_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        client, run_id = self.live_run()
        retry(client.log_artifact, run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Write a dict as JSON (or YAML for .yaml/.yml) into the run's artifacts."""
        client, run_id = self.live_run()
        name = Path(artifact_file).name
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            if name.endswith((".yaml", ".yml")):
                import yaml

                local.write_text(yaml.safe_dump(dict(data), sort_keys=False))
            else:
                local.write_text(json.dumps(data, indent=2, default=str))
            parent = str(Path(artifact_file).parent)
            retry(client.log_artifact, run_id, str(local), None if parent == "." else parent)


def redact_uri(uri: str) -> str:
    """A tracking URI without user:password, safe to print or write to summary.json."""
    parsed = urlparse(uri)
    if parsed.password is None and parsed.username is None:
        return uri
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return parsed._replace(netloc=host).geturl()

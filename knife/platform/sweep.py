"""`knife sweep`: a validated sweep file -> `ray.tune.Tuner` over `KnifeTrial` (DESIGN 10).

Order matters: validate (no Ray) -> check a cluster address is reachable -> refuse to
overwrite a sweep / find the one to resume -> start Ray -> prepare the MLflow store (tables,
experiment, WAL journal) from this single process -> Tune. A bad file or address fails
before anything is written.

Layout: <runs_dir>/<sweep name>/ is Tune's experiment folder (trial folders with their
checkpoints, Tune's state for `--resume`), plus sweep.yaml (the file as run) and
sweep_summary.json; the MLflow store is <runs_dir>/mlflow.db unless a URI is given. On a
cluster, `storage_path` (a folder every node sees, or a URI: s3://, gs://, file://) takes
Tune's experiment folder instead; sweep.yaml and sweep_summary.json stay in the driver's
<runs_dir>/<sweep name>/.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from ray.tune import Callback

from knife.platform.config import ConfigError, parse_trial_config
from knife.platform.mlflow_views import refresh_views
from knife.platform.preemption import Preempted
from knife.platform.sweep_config import BRANCH, MAIN, PREFIX, SweepConfig, build_trial_config
from knife.platform.sweep_resume import (
    check_restart_labels,
    close_stale_runs,
    repair_tune_state,
    restart_trials,
)
from knife.platform.sweep_stop import (
    StopWhenTrialsCheckpointed,
    clear_notice,
    install_stop_handlers,
    stopped_by,
)
from knife.platform.sweep_trainable import KnifeTrial
from knife.platform.tracking import MlflowStore, resolve_tracking_uri, sqlite_path
from knife.platform.trial_runner import KIND_TAG, META, trial_dict
from knife.policies import metric_keys as mk

SUMMARY_FILE = "sweep_summary.json"
SWEEP_FILE = "sweep.yaml"
ADDRESS_TIMEOUT_S = 5.0


@dataclass
class TrialOutcome:
    label: str
    trial_id: str
    status: str  # TERMINATED | ERROR
    env_steps: float | None
    test_return: float | None
    mlflow_run_id: str | None
    error: str | None = None


# ---------------------------------------------------------------------------------------
# Checks before anything is written


def check_tracking_uri(uri: str) -> None:
    """Credentials belong in MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, not in the URI:
    the URI travels in Tune's trial configs and would land in its state files."""
    parsed = urlparse(uri)
    if parsed.username is not None or parsed.password is not None:
        raise ConfigError(
            "--tracking-uri: has a user name or password in it; set MLFLOW_TRACKING_USERNAME"
            " / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
        )


def check_address(address: str | None) -> None:
    """Fail fast (seconds, not Ray's minute of retries) when a cluster is not reachable."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("local", "auto"):
        return
    text = address
    default_port = 6379
    for scheme, port in (("ray://", 10001), ("http://", 8265), ("https://", 443)):
        if text.startswith(scheme):
            text, default_port = text[len(scheme) :], port
    host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(
            f"--address {address!r}: expected HOST:PORT, e.g. 10.0.0.5:6379"
        ) from None
    try:
        with socket.create_connection((host, port), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--address {address}: no Ray cluster reachable at {host}:{port} ({reason}); "
            "start one with `ray start --head` or leave --address out for embedded Ray"
        ) from None


# ---------------------------------------------------------------------------------------
# The MLflow store


def prepare_store(tracking_uri: str, experiment: str) -> str:
    """Create the store's tables and the experiment from this one process, so trials that
    start together do not race for them; switch SQLite to WAL so the UI's reads and several
    trials' writes wait on each other less. Returns the experiment id."""
    experiment_id = MlflowStore(tracking_uri).experiment_id(experiment)
    db = sqlite_path(tracking_uri)
    if db is not None:
        try:
            with sqlite3.connect(str(db).split("?", 1)[0], timeout=10) as conn:
                conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
        except sqlite3.Error:
            pass  # e.g. a reader holds it right now: the lock retries still cover us
    return experiment_id


# ---------------------------------------------------------------------------------------
# Tune pieces (module-level: Tune pickles them into its experiment state for --resume)


def trial_label(trial: Any) -> str:
    return f"{trial.config['variant']['label']}_{trial.trial_id.rsplit('_', 1)[-1]}"


def trial_dirname(trial: Any) -> str:
    return f"{trial.config['variant']['label']}_{trial.trial_id}"


def trial_device(device: str) -> str:
    """Where a trial's learner will run, judged by the cluster rather than by this driver
    process (on a cluster the driver often has no GPU): 'cuda' asks Ray for a GPU per trial,
    'auto' does so when the cluster has GPUs."""
    import ray

    if device == "auto":
        gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
        return "cuda" if gpus > 0 else "cpu"
    return device


def trial_resources(config: Mapping[str, Any]) -> Any:
    """What the trial's algorithm asks for (1 CPU with no remote EnvRunners/Learners), or
    tune.resources_per_trial for the trial's own bundle."""
    from ray.tune import PlacementGroupFactory

    from knife.platform.algorithm_factory import algorithm_config
    from knife.policies import QMix

    cfg = parse_trial_config(trial_dict(config))
    device = trial_device(cfg.training.device)
    request = QMix.default_resource_request(algorithm_config(cfg, device))
    bundles = [dict(b) for b in request.bundles]
    override = config[META].get("resources_per_trial")
    if override:
        bundles[0] = {**bundles[0], "CPU": float(override.get("cpu", bundles[0].get("CPU", 1)))}
        if override.get("gpu"):
            bundles[0]["GPU"] = float(override["gpu"])
    return PlacementGroupFactory(bundles, strategy=request.strategy)


class CloseStrandedRuns(Callback):
    """A trial that Tune ends from outside (a scheduler's early stop, a final error after its
    retries) cannot end its own MLflow run: the driver does, once nobody else writes to it."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    def _close(self, trial: Any, status: str) -> None:
        run_id = (trial.last_result or {}).get("mlflow_run_id")
        if not run_id:
            return
        try:
            MlflowStore(self.tracking_uri).end_run(run_id, status, only_if_running=True)
        except Exception as exc:  # a report, not a reason to fail the sweep
            print(f"warning: could not close MLflow run {run_id}: {exc}", file=sys.stderr)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A trial that ended by itself has closed its run (FINISHED); one still RUNNING here
        # was stopped from outside before its budget: KILLED, as the trial itself would say.
        self._close(trial, "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FAILED")


def write_compare_views(store: MlflowStore, experiment: str) -> None:
    """The experiment's saved views in MLflow's UI, for the metrics its trials logged
    (knife.platform.mlflow_views); a failure is reported, the sweep's results stand."""
    try:
        refresh_views(store, store.experiment_id(experiment, create=False))
    except Exception as exc:
        print(f"warning: could not write the MLflow views of {experiment}: {exc}", file=sys.stderr)


def open_sweep_run(tracking_uri: str, sweep: SweepConfig, sweep_id: str | None) -> str:
    """The sweep's parent run (knife.kind = sweep), under which its trials nest: made for a
    new sweep (`sweep_id`), found again and set RUNNING for a resumed one (None)."""
    store = MlflowStore(tracking_uri)
    experiment_id = store.experiment_id(sweep.experiment)
    if sweep_id is None:
        found = store.retry(
            store.client.search_runs,
            [experiment_id],
            filter_string=f"tags.`{KIND_TAG}` = 'sweep' and tags.sweep = '{sweep.name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            store.retry(store.client.update_run, run_id, status="RUNNING")
            return run_id
        sweep_id = "unknown"  # a sweep started before parent runs existed
    tags = {KIND_TAG: "sweep", "sweep": sweep.name, "sweep_id": sweep_id}
    run = store.retry(store.client.create_run, experiment_id, run_name=sweep.name, tags=tags)
    return run.info.run_id


def param_space(
    sweep: SweepConfig,
    tracking_uri: str,
    sweep_id: str,
    parent_run_id: str | None = None,
    stage: str = MAIN,
    branches: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Tune's param space of one stage of the sweep; a BRANCH stage's variants carry the
    checkpoint and MLflow run of the prefix each continues (`branches`, by prefix label)."""
    from ray import tune

    t = sweep.tune
    variants = []
    for spec in sweep.trials():
        if spec.stage != stage:
            continue
        variant = {"label": spec.label, "overrides": spec.overrides, "tags": spec.tags}
        if spec.branch_of is not None:
            variant["branch"] = dict((branches or {})[spec.branch_of])
        if spec.branch_source:
            variant["branch_source"] = True
        variants.append(variant)
    for v in variants:  # choice axes are drawn below, not fixed by the grid point
        for axis in sweep.choice_axes:
            v["overrides"].pop(axis.target, None)
    return {
        META: {
            "sweep": sweep.name,
            "sweep_id": sweep_id,
            "parent_run_id": parent_run_id,
            "experiment": sweep.experiment,
            "tracking_uri": tracking_uri,
            "plugins": list(sweep.plugins),
            "checkpoint_every": t.checkpoint_every,
            "preempt_grace_s": t.preempt_grace_s,
            "stop": dict(t.stop),
            "resources_per_trial": t.resources_per_trial,
        },
        "base": sweep.base,
        "variant": tune.grid_search(variants),
        "sampled": {a.target: tune.choice(list(a.values)) for a in sweep.choice_axes},
    }


# Tune's table shows the result keys themselves (the names MLflow and summary.json use).
PROGRESS_COLUMNS = (mk.ENV_STEPS, mk.TASK_INDEX, *mk.PROGRESS_KEYS, mk.ENV_STEPS_PER_S)


def progress_reporter(metric: str) -> Any:
    """A trial table with the columns a researcher watches, instead of Tune's full dump of
    every result (hundreds of keys) and every trial's config."""
    from ray.tune import CLIReporter

    columns = list(dict.fromkeys((*PROGRESS_COLUMNS, metric)))
    return CLIReporter(
        metric_columns=columns,
        parameter_columns={"variant/label": "grid point"},
        max_report_frequency=15,
        max_column_length=30,
    )


def _scheduler(sweep: SweepConfig) -> Any:
    if sweep.tune.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    budgets = [parse_trial_config(s.config).steps for s in sweep.trials()]
    max_t = max(budgets)
    # Compare trials by env steps, not iterations (iterations differ in length).
    return ASHAScheduler(time_attr="env_steps", max_t=max_t, grace_period=max(1, max_t // 8))


def stage_name(sweep: SweepConfig, stage: str) -> str:
    """Tune's experiment name of one stage: the sweep's name, `<name>-branches` for the
    branches of a `prefix` sweep (a second Tune run, after its prefixes) and
    `<name>-switch<k>` for the branches of switch k of an `every_switch` sweep."""
    if stage == BRANCH:
        return f"{sweep.name}-branches"
    return sweep.name if stage in (MAIN, PREFIX) else f"{sweep.name}-{stage}"


def _new_tuner(
    sweep: SweepConfig,
    storage: str,
    tracking_uri: str,
    verbose: int,
    *,
    stage: str = MAIN,
    branches: Mapping[str, Mapping[str, str]] | None = None,
    parent: str | None = None,
) -> tuple[Any, str]:
    """(the Tuner of a new sweep stage, the sweep's parent run id: made for the first
    stage, the given one for later stages)."""
    from ray import tune

    name = stage_name(sweep, stage)
    tune_path = f"{storage}/{name}"
    t = sweep.tune
    if parent is None:
        sweep_id = uuid.uuid4().hex[:12]
        parent = open_sweep_run(tracking_uri, sweep, sweep_id)
    else:
        store = MlflowStore(tracking_uri)
        sweep_id = store.retry(store.client.get_run, parent).data.tags.get("sweep_id", "unknown")
    tuner = tune.Tuner(
        tune.with_resources(KnifeTrial, trial_resources),
        param_space=param_space(sweep, tracking_uri, sweep_id, parent, stage, branches),
        tune_config=tune.TuneConfig(
            metric=t.metric,
            mode=t.mode,
            scheduler=_scheduler(sweep),
            num_samples=t.num_samples,
            max_concurrent_trials=t.max_concurrent_trials,
            reuse_actors=t.reuse_actors,
            trial_name_creator=trial_label,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=t.keep_checkpoints),
            callbacks=[CloseStrandedRuns(tracking_uri), StopWhenTrialsCheckpointed(tune_path)],
            progress_reporter=progress_reporter(t.metric),
            verbose=verbose,
        ),
    )
    return tuner, parent


# ---------------------------------------------------------------------------------------
# The command


def experiment_path(runs_dir: str | Path, sweep: SweepConfig) -> Path:
    """The driver's own folder of the sweep (sweep.yaml, sweep_summary.json)."""
    return Path(runs_dir).expanduser().resolve() / sweep.name


def storage_root(runs_dir: str | Path, storage_path: str | None = None) -> str:
    """Where Tune keeps trial folders and checkpoints: `storage_path`, else
    $KNIFE_STORAGE_PATH, else the runs folder. A URI (s3://bucket/prefix, gs://...,
    file:///nfs/...) is kept as it is; a folder is made absolute."""
    value = storage_path or os.environ.get("KNIFE_STORAGE_PATH") or None
    if value is None:
        return str(Path(runs_dir).expanduser().resolve())
    if "://" in value:
        if urlparse(value).password is not None:
            raise ConfigError(
                "--storage-path: has a password in it; give the cloud's credentials through "
                "its own environment variables or instance role instead"
            )
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


def run_sweep(
    sweep: SweepConfig,
    runs_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    resume: bool = False,
    verbose: int = 1,
    num_cpus: int | None = None,
    storage_path: str | None = None,
    restart: Sequence[str] = (),
) -> list[TrialOutcome]:
    """Run (or resume) a sweep to the end; returns one outcome per trial. `restart`: labels
    of trials a resume starts again from scratch (`--restart-trial`)."""
    tracking_uri = resolve_tracking_uri(runs_dir, tracking_uri)
    check_tracking_uri(tracking_uri)
    exp_path = experiment_path(runs_dir, sweep)
    storage = storage_root(runs_dir, storage_path)
    tune_path = f"{storage}/{sweep.name}"  # Tune's experiment folder (or URI)
    from ray.tune import Tuner

    local = "://" not in storage
    restorable = (not local or Path(tune_path).is_dir()) and Tuner.can_restore(tune_path)
    if resume and not restorable:
        raise ConfigError(f"--resume: no sweep {sweep.name!r} to resume at {tune_path}")
    if not resume and restorable:
        raise ConfigError(
            f"sweep {sweep.name!r} already exists at {tune_path}: pass --resume to continue "
            "it, or give the sweep another name (or remove that folder)"
        )
    if restart and sweep.branch != "none":
        raise ConfigError(
            "--restart-trial: not available for a sweep with grid.branch (a branch restarts "
            "from its prefix's checkpoint; that is not built yet)"
        )
    if restart and not resume:
        raise ConfigError("--restart-trial: only with --resume (it restarts a trial of a sweep)")
    if restart and not local:
        raise ConfigError(
            "--restart-trial: needs the sweep's storage on a local or mounted file system, "
            f"not {storage}"
        )
    to_restart = check_restart_labels(tune_path, restart) if restart else []
    check_address(address)

    from knife.platform.ray_runtime import start_ray, stop_ray

    # Tune's newer console output ignores the reporter above and prints every result whole.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Short trials checkpoint often; Tune then warns that it snapshots its state often,
    # which is what makes --resume exact and costs milliseconds here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = start_ray(address=address, num_cpus=num_cpus)
    outcomes: list[TrialOutcome] = []
    stopped = None
    try:
        prepare_store(tracking_uri, sweep.experiment)
        parent: str | None = None
        branches: dict[str, dict[str, str]] = {}
        # One Tune run per stage (a branched sweep: its prefixes, then their branches); a
        # resume continues the stage it stopped in and starts the ones after it.
        stages = sweep.stages()
        for n, stage in enumerate(stages):
            path = f"{storage}/{stage_name(sweep, stage)}"
            if n == 0:
                resuming = resume
            else:
                resuming = (not local or Path(path).is_dir()) and Tuner.can_restore(path)
            if resuming:
                tuner, parent = _restored_tuner(
                    sweep, path, local, tracking_uri, exp_path, to_restart, parent
                )
            else:
                if n == 0:
                    exp_path.mkdir(parents=True, exist_ok=True)
                    (exp_path / SWEEP_FILE).write_text(
                        yaml.safe_dump(sweep_file_dict(sweep), sort_keys=False)
                    )
                tuner, parent = _new_tuner(
                    sweep,
                    storage,
                    tracking_uri,
                    verbose,
                    stage=stage,
                    branches=branches,
                    parent=parent,
                )
            restore_handlers = install_stop_handlers(path, sweep.tune.preempt_grace_s)
            try:
                grid = tuner.fit()
            except BaseException:
                MlflowStore(tracking_uri).end_run(parent, "KILLED")
                raise
            finally:
                restore_handlers()
            stage_outcomes = _outcomes(grid, path)
            outcomes += stage_outcomes
            stopped = stopped_by(path)
            if stopped is not None or any(o.status != "TERMINATED" for o in stage_outcomes):
                break  # a later stage needs every trial of this one
            if n + 1 < len(stages):  # where the next stage's branches start
                branches = stage_checkpoints(grid)
        done = len(outcomes) == len(sweep.trials()) * sweep.tune.num_samples and all(
            o.status == "TERMINATED" for o in outcomes
        )
        status = "KILLED" if stopped else "FINISHED" if done else "FAILED"
        store = MlflowStore(tracking_uri)
        store.end_run(parent, status)
        write_compare_views(store, sweep.experiment)
    finally:
        if started:
            stop_ray()
    exp_path.mkdir(parents=True, exist_ok=True)  # a resume on another driver machine
    (exp_path / SUMMARY_FILE).write_text(
        json.dumps([asdict(o) for o in outcomes], indent=2, default=str) + "\n"
    )
    if stopped is not None and not done:
        raise SweepStopped(stopped.signum, outcomes)
    return outcomes


def _restored_tuner(
    sweep: SweepConfig,
    tune_path: str,
    local: bool,
    tracking_uri: str,
    exp_path: Path,
    to_restart: list[Any],
    parent: str | None,
) -> tuple[Any, str]:
    """(Tune's saved state of one stage, ready to continue; the sweep's parent run, found
    again and set RUNNING on the first resumed stage)."""
    from ray import tune
    from ray.tune import Tuner

    if parent is None:
        _warn_if_edited(sweep, exp_path)
    clear_notice(tune_path)
    if local:
        missing = repair_tune_state(tune_path)
        if missing:
            print(
                f"{missing} checkpoint(s) in Tune's saved state no longer exist; "
                "their trials continue from the newest checkpoint on disk",
                flush=True,
            )
    if parent is None:
        closed = close_stale_runs(tracking_uri, sweep.experiment, sweep.name)
        if closed:
            print(
                f"marked {closed} stale RUNNING run{'s' * (closed != 1)} of sweep "
                f"{sweep.name!r} KILLED (no live trial); resumed trials reopen theirs",
                flush=True,
            )
        restart_trials(tune_path, to_restart, tracking_uri, sweep.experiment)
        parent = open_sweep_run(tracking_uri, sweep, None)
    tuner = Tuner.restore(
        tune_path,
        trainable=tune.with_resources(KnifeTrial, trial_resources),
        resume_unfinished=True,
        resume_errored=True,
    )
    return tuner, parent


def stage_checkpoints(grid: Any) -> dict[str, dict[str, str]]:
    """Label of each trial of a stage that later branches start from (`branch_source`: a
    prefix, or none's every_switch branch) -> its last checkpoint (taken at the end of its
    last task) and its MLflow run (the branches' parent in the UI).

    A sweep started before trials carried the flag (knife-marl before 6a416c3) is resumed
    with its recorded configs: when no trial of the stage carries it, every trial is read,
    as then."""
    results = list(grid)
    flagged = any(_variant(r).get("branch_source") for r in results)
    out = {}
    for result in results:
        variant = _variant(result)
        if flagged and not variant.get("branch_source"):
            continue
        label = variant.get("label", "?")
        if result.checkpoint is None:
            raise RuntimeError(f"trial {label} finished without a checkpoint to branch from")
        run_id = (result.metrics or {}).get("mlflow_run_id") or ""
        out[label] = {"checkpoint": result.checkpoint.path, "parent_run_id": run_id}
    return out


def _variant(result: Any) -> dict[str, Any]:
    return (result.config or {}).get("variant", {})


class SweepStopped(Preempted):
    """`knife sweep` stopped on a signal after its trials checkpointed; carries the table."""

    def __init__(self, signum: int, outcomes: list[TrialOutcome]) -> None:
        super().__init__(signum)
        self.outcomes = outcomes


def _warn_if_edited(sweep: SweepConfig, exp_path: Path) -> None:
    """--resume continues the sweep as it was started (Tune keeps its trial configs)."""
    recorded = exp_path / SWEEP_FILE
    if not recorded.exists():
        return
    now = yaml.safe_load(yaml.safe_dump(sweep_file_dict(sweep), sort_keys=False))
    then = yaml.safe_load(recorded.read_text())
    now.pop("source", None)
    then.pop("source", None)
    if now != then:
        print(
            f"warning: {sweep.source or 'the sweep file'} differs from the sweep as started "
            f"({recorded}); --resume continues the sweep as started",
            file=sys.stderr,
        )


def sweep_file_dict(sweep: SweepConfig) -> dict[str, Any]:
    """The sweep as run (after validation), for the record."""
    return {
        "name": sweep.name,
        "source": sweep.source,
        "experiment": sweep.experiment,
        "plugins": list(sweep.plugins),
        "tune": asdict(sweep.tune),
        "trials": [
            {"label": s.label, "config": build_trial_config(s.config, {})} for s in sweep.trials()
        ],
    }


def _outcomes(grid: Any, exp_path: str) -> list[TrialOutcome]:
    """One outcome per trial, with Tune's own status (TERMINATED, ERROR, or PENDING /
    RUNNING / PAUSED for a sweep stopped early, e.g. by Ctrl-C)."""
    from ray.tune import ExperimentAnalysis

    try:
        statuses = {t.trial_id: t.status for t in ExperimentAnalysis(exp_path).trials}
    except Exception:  # the table below still says what it can
        statuses = {}
    out = []
    for result in grid:
        metrics = result.metrics or {}
        config = result.config or {}
        # A trial that never reported has no metrics: its folder ends with its id.
        trial_id = str(
            metrics.get("trial_id") or "_".join(Path(result.path).name.rsplit("_", 2)[-2:])
        )
        status = statuses.get(trial_id, "UNKNOWN")
        if result.error is not None:
            status = "ERROR"
        out.append(
            TrialOutcome(
                label=config.get("variant", {}).get("label", "?"),
                trial_id=trial_id,
                status=status,
                env_steps=metrics.get("env_steps"),
                test_return=metrics.get(mk.TEST_RETURN),
                mlflow_run_id=metrics.get("mlflow_run_id"),
                error=None if result.error is None else error_line(result.error),
            )
        )
    return sorted(out, key=lambda o: o.label)


def error_line(error: BaseException) -> str:
    """The line that says what went wrong: the exception's own (the last line of a Ray task
    error's text; its first line only names the worker process)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:1500]


NO_GOOD_CHECKPOINT = "no checkpoint of this trial restores"


def format_outcomes(
    outcomes: list[TrialOutcome], experiment: str, command: str = "knife sweep FILE"
) -> str:
    """The trial table the CLI prints; `command`: how this sweep was started (for the
    restart advice of a trial without a good checkpoint)."""
    width = max([len(o.label) for o in outcomes] + [5])
    lines = [f"{'trial':{width}}  status      env_steps  test/return  mlflow_run_id"]
    for o in outcomes:
        steps = "-" if o.env_steps is None else f"{o.env_steps:.0f}"
        ret = "-" if o.test_return is None else f"{o.test_return:.3g}"
        lines.append(
            f"{o.label:{width}}  {o.status:10}  {steps:>9}  {ret:>11}  {o.mlflow_run_id or '-'}"
        )
        if o.error:
            lines.append(f"{'':{width}}  error: {o.error}")
        if o.error and NO_GOOD_CHECKPOINT in o.error:
            restart = f"{command} --resume --restart-trial {o.label}"
            lines.append(f"{'':{width}}  restart it from scratch: {restart}")
    lines.append("")
    if any(o.status != "TERMINATED" for o in outcomes):
        lines.append("not all trials finished: run the same command with --resume to continue")
    lines.append(f"compare in MLflow: knife ui   (experiment {experiment!r})")
    lines.append(f"aggregate:         knife report {experiment}")
    return "\n".join(lines)


__all__ = ["KIND_TAG", "TrialOutcome", "run_sweep", "check_address", "prepare_store"]

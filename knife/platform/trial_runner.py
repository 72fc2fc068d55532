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
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from knife.platform.checkpoints import (
    checkpoint_candidates,
    restore_first_good,
    state_digest,
    stop_with_checkpoint,
    write_checkpoint,
)
from knife.platform.config import TrialConfig, parse_trial_config
from knife.platform.preemption import ACK_FILE, NOTICE_FILE, Preempted, StopRequest
from knife.platform.sweep_config import (
    TuneOptions,
    build_trial_config,
    import_plugins,
)
from knife.platform.tracking import (
    ATTEMPTS_TAG,
    BRANCH_COPIED_TAG,
    BRANCH_END_STATE_TAG,
    BRANCH_OF_TAG,
    BRANCH_STATE_TAG,
    RESTORED_TAG,
    MlflowStore,
    TrialLogger,
    retry,
    trial_tags,
)
from knife.platform.trial_loop import TrialProgress, finish_trial, task_names, train_to_budget
from knife.policies import metric_keys as mk

META = "knife"  # param_space key of the sweep's own settings
KIND_TAG = "knife.kind"  # trial | sweep (a sweep's parent run) | report
PARENT_TAG = "mlflow.parentRunId"  # MLflow's nesting: the UI shows trials under their sweep
TRIAL_KEY_TAG = "knife.trial_key"
NODE_TAG = "ray_node_id"  # the Ray node of the latest attempt; per attempt: knife.attempt/<n>/...


def trial_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial config of one Tune trial: base + grid point + sampled choices."""
    overrides = {**config["variant"]["overrides"], **dict(config.get("sampled") or {})}
    return build_trial_config(config["base"], overrides)


class SweepRunLogger(TrialLogger):
    """A TrialLogger that reopens the run of its trial key instead of making a second one.

    A run found FINISHED is left alone (`finished_run`): its trial completed and only Tune
    did not hear of it (the driver died between the run's end and Tune recording the final
    checkpoint), so nothing is trained or logged again.
    """

    def __init__(
        self, *args: Any, trial_key: str, parent_run_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.trial_key = trial_key
        self.parent_run_id = parent_run_id
        self.reopened = False
        self.attempt = 1
        self.finished_run: Any = None

    def start(self) -> str:
        experiment_id = self.store.experiment_id(self.experiment)
        found = retry(
            self.client.search_runs,
            [experiment_id],
            filter_string=f"tags.`{TRIAL_KEY_TAG}` = '{self.trial_key}'",
            max_results=1,
        )
        if found and found[0].info.status == "FINISHED":
            self.finished_run = found[0]
            return found[0].info.run_id
        if found:
            run = found[0]
            self.reopened = True
            self.attempt = int(run.data.tags.get(ATTEMPTS_TAG, "1")) + 1
            self.reopen(run.info.run_id)
        else:
            tags = {**self.tags, TRIAL_KEY_TAG: self.trial_key}
            if self.parent_run_id:
                tags[PARENT_TAG] = self.parent_run_id
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
        **config["variant"].get("tags", {}),  # a scratch reference's role and task
    }
    for i, name in task_names(cfg).items():
        tags[mk.task_key(i, "name")] = name
    logger = SweepRunLogger(
        meta["tracking_uri"],
        meta["experiment"],
        run_name=ctx.get_trial_name(),
        tags=tags,
        trial_key=f"{meta['sweep_id']}/{trial_id}",
        parent_run_id=meta.get("parent_run_id"),
    )
    logger.start()
    if logger.finished_run is not None:
        _report_finished(logger.finished_run)
        return
    try:
        _run(cfg, config, meta, logger, ctx)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) else "FAILED"
        try:
            logger.end(status)
        except Exception:  # the original error matters more than a failed status write
            pass
        raise


def trial_storage_dir(ctx: Any) -> str | None:
    """The trial's folder in the sweep's storage, where Tune writes its checkpoints, when
    that storage is a local (or mounted) file system; None for cloud storage. Not
    `ctx.get_trial_dir()`: that is this attempt's working folder under the Ray session,
    which a resumed sweep (a new session) does not share."""
    import pyarrow.fs

    storage = ctx.get_storage()
    if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return None
    return storage.trial_fs_path


# This worker process's own notice: set by SIGTERM to it (knife.platform.sweep_trainable),
# which then waits for WORKER_IDLE (no trial running, or the running one has stopped with a
# checkpoint) before it lets Ray end the process.
WORKER_STOP = threading.Event()
WORKER_IDLE = threading.Event()
WORKER_IDLE.set()


def preempt_grace_s(meta: Mapping[str, Any]) -> float:
    """The sweep's `tune.preempt_grace_s` (its default for a sweep started without it)."""
    return float(meta.get("preempt_grace_s", TuneOptions.preempt_grace_s))


def _stop_request(trial_dir: str | None) -> StopRequest:
    """Set by this worker's SIGTERM or by the driver's notice file (in the sweep's folder,
    the trial folder's parent)."""
    notice = Path(trial_dir).parent / NOTICE_FILE if trial_dir else None
    return StopRequest(notice, event=WORKER_STOP)


def _stop_with_checkpoint(
    algo: Any, progress: TrialProgress, logger: SweepRunLogger, trial_dir: str
) -> Path:
    """A stop notice between iterations: a checkpoint in the trial's own folder (found by
    the next attempt, newest iteration first; Tune's driver may not be listening any more),
    the run KILLED, and the acknowledgement the driver waits for."""
    folder = Path(trial_dir) / f"checkpoint_stop_{progress.iteration:06d}"
    stop_with_checkpoint(algo, progress, logger, folder)
    logger.end("KILLED")
    ack = {"iteration": progress.iteration, "env_steps": progress.env_steps}
    (Path(trial_dir) / ACK_FILE).write_text(json.dumps(ack))
    print(f"knife: stopped at iteration {progress.iteration} on a notice; {folder}", flush=True)
    return folder


def _report_finished(run: Any) -> None:
    """Tell Tune a trial is done from its FINISHED MLflow run: its final values, no training,
    no write to the run."""
    from ray import tune

    print(f"knife: trial's MLflow run {run.info.run_id} is FINISHED; not training it again")
    tune.report({**run.data.metrics, "mlflow_run_id": run.info.run_id, "already_finished": 1})


def _run(cfg: TrialConfig, config: dict, meta: dict, logger: SweepRunLogger, ctx: Any) -> None:
    from ray import tune

    from knife.platform.algorithm_factory import build_algorithm

    if not logger.reopened:
        logger.log_params(cfg.to_dict())
        logger.log_dict(cfg.to_dict(), "config.yaml")
    algo = build_algorithm(cfg)
    trial_dir = trial_storage_dir(ctx)
    stop = _stop_request(trial_dir)
    grace = preempt_grace_s(meta)
    WORKER_IDLE.clear()
    progress = TrialProgress()
    try:
        candidates = checkpoint_candidates(tune.get_checkpoint(), trial_dir)
        algo, restored = restore_first_good(algo, candidates, lambda: build_algorithm(cfg))
        if restored is not None:
            progress = restored
            logger.set_tags({RESTORED_TAG: progress.iteration})
        elif config["variant"].get("branch"):
            algo, progress = _start_branch(algo, cfg, config["variant"]["branch"], logger, meta)

        every = int(meta["checkpoint_every"])
        # A checkpoint taken at the end (resume after the driver died between the trial's
        # last report and Tune recording it) only needs finishing, not more training.
        state = {"task_index": progress.metrics.get(mk.TASK_INDEX)}

        def tune_report(progress: TrialProgress, done: bool) -> None:
            """Every iteration to Tune; with a checkpoint every `checkpoint_every`
            iterations and at each task switch (the last report comes after finishing)."""
            if done:
                return
            task_index = progress.metrics.get(mk.TASK_INDEX)
            switched = state["task_index"] is not None and task_index != state["task_index"]
            state["task_index"] = task_index
            report = progress.report(logger.run_id)
            if progress.iteration % every == 0 or switched:
                _report_with_checkpoint(algo, report, progress)
            else:
                tune.report(report)

        # The stop check first: after a notice the driver may no longer collect reports.
        hooks = [stop.hook, tune_report]
        train_to_budget(algo, cfg, logger, progress, stop=meta.get("stop") or {}, hooks=hooks)
        if progress.stop_reason is not None:
            logger.set_tags({"knife.stopped": progress.stop_reason})
        title = f"{ctx.get_trial_name()}  ({cfg.algorithm}, method {cfg.plasticity['method']})"
        finish_trial(cfg, logger, progress, title=title, extra={"attempts": logger.attempt})
        run_id = logger.run_id
        if config["variant"].get("branch_source"):
            # What the next stage's branches must start from: they check it against their
            # own state.
            logger.set_tags(_digest_tags(algo, BRANCH_END_STATE_TAG))
        logger.end("FINISHED")  # before the last report: Tune may end this process after it
        _report_with_checkpoint(algo, progress.report(run_id), progress)
    except Preempted as exc:
        if trial_dir is None or not exc.at_boundary:
            raise
        _stop_with_checkpoint(algo, progress, logger, trial_dir)
        WORKER_IDLE.set()  # a worker sent SIGTERM may exit now
        # Returning would tell Tune the trial is done: wait for the driver to stop Tune
        # (it ends this actor), or for this worker's exit. Past that, fail the attempt.
        threading.Event().wait(10 * grace)
        raise
    finally:
        WORKER_IDLE.set()
        algo.stop()


def _digest_tags(algo: Any, tag: str = BRANCH_STATE_TAG) -> dict[str, str]:
    return {f"{tag}/{k}": v for k, v in state_digest(algo).items()}


def _start_branch(
    algo: Any,
    cfg: TrialConfig,
    branch: Mapping[str, str],
    logger: SweepRunLogger,
    meta: Mapping[str, Any],
) -> tuple[Any, TrialProgress]:
    """A paired branch's first attempt (grid.branch): restore the prefix's final checkpoint
    into this trial's own algorithm (its method, the whole sequence), record the state it
    starts from, and give its MLflow run the prefix's history, so its curves start at 0."""
    from ray import tune

    from knife.platform.algorithm_factory import build_algorithm

    source = tune.Checkpoint(branch["checkpoint"])
    algo, progress = restore_first_good(algo, [source], lambda: build_algorithm(cfg))
    if progress is None:
        raise RuntimeError(f"branch: nothing to restore at {branch['checkpoint']}")
    logger.set_tags({BRANCH_OF_TAG: branch["parent_run_id"], **_digest_tags(algo)})
    store = MlflowStore(meta["tracking_uri"])
    run = store.retry(store.client.get_run, logger.run_id)
    if run.data.tags.get(BRANCH_COPIED_TAG) is None and branch["parent_run_id"]:
        copied = store.copy_history(branch["parent_run_id"], logger.run_id)
        logger.set_tags({BRANCH_COPIED_TAG: copied})
    return algo, progress


def _report_with_checkpoint(algo: Any, report: dict, progress: TrialProgress) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="knife-ckpt-") as tmp:
        folder = write_checkpoint(algo, progress, Path(tmp) / "checkpoint")
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(folder)))

"""What `knife sweep --resume` mends before Tune restores a sweep (DESIGN 10).

- `repair_tune_state`: Tune's saved state names checkpoints its rotation deleted;
- `close_stale_runs`: MLflow runs left RUNNING by a driver that died;
- `restart_trials`: `--restart-trial NAME`, a trial with no checkpoint that restores starts
  again from scratch; its checkpoints are set aside (renamed, not deleted) and its old MLflow
  run is kept, KILLED, out of the report, so the restarted trial writes a fresh one.

All of it reads Tune's saved experiment state (`experiment_state-*.json`, with each trial's
cloudpickled `_CheckpointManager`): tied to the pinned Ray release, local storage only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from knife.platform.config import ConfigError
from knife.platform.preemption import ACK_FILE
from knife.platform.tracking import MlflowStore
from knife.platform.trial_runner import KIND_TAG, META, TRIAL_KEY_TAG


def repair_tune_state(tune_path: str) -> int:
    """Before `Tuner.restore` (local storage): Tune's saved state can name checkpoints that its
    rotation (`keep_checkpoints`) deleted after the state was written, when the driver died in
    between; Tune then fails the trial on every attempt ("does not exist on storage anymore").
    Drop those from the state: the latest becomes the newest recorded one that exists, or none,
    and then the trial continues from its folder's newest checkpoint that restores
    (knife.platform.trial_runner). Returns how many were dropped."""

    def exists(result: Any) -> bool:
        return result is not None and Path(result.checkpoint.path).is_dir()

    def drop_missing(trial: dict, manager: Any) -> int:
        kept = [r for r in manager._checkpoint_results if exists(r)]
        gone = len(manager._checkpoint_results) - len(kept)
        latest = manager._latest_checkpoint_result
        if latest is not None and not exists(latest):
            manager._latest_checkpoint_result = kept[-1] if kept else None
            gone += latest not in manager._checkpoint_results
        manager._checkpoint_results = kept
        return gone

    return edit_tune_checkpoints(tune_path, drop_missing)


def edit_tune_checkpoints(tune_path: str, edit: Callable[[dict, Any], int]) -> int:
    """Apply `edit(trial, checkpoint_manager)` to every trial in Tune's saved experiment
    state and save the managers back where it changed something (edit returns how many
    records it changed). Reads Tune's own (cloudpickled) `_CheckpointManager`: tied to the
    pinned Ray release."""
    from ray import cloudpickle

    changed_total = 0
    for path in Path(tune_path).glob("experiment_state-*.json"):
        data = json.loads(path.read_text())
        changed = False
        for entry in data.get("trial_data", []):
            meta = json.loads(entry[1])
            blob = meta.get("checkpoint_manager")
            if not isinstance(blob, dict) or blob.get("_type") != "CLOUDPICKLE_FALLBACK":
                continue
            manager = cloudpickle.loads(bytes.fromhex(blob["value"]))
            count = edit(json.loads(entry[0]), manager)
            if count:
                blob["value"] = cloudpickle.dumps(manager).hex()
                entry[1] = json.dumps(meta)
                changed_total += count
                changed = True
        if changed:
            tmp = path.with_suffix(".repair")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)
    return changed_total


def close_stale_runs(tracking_uri: str, experiment: str, sweep_name: str) -> int:
    """Before a resume: runs of this sweep still RUNNING have no live trial (their driver is
    gone), so they end KILLED, tagged `knife.closed_stale`; the trials Tune resumes reopen
    theirs. Returns how many were closed."""
    store = MlflowStore(tracking_uri)
    experiment_id = store.experiment_id(experiment, create=False)
    if experiment_id is None:
        return 0
    running = store.search_all(
        experiment_id, f"attributes.status = 'RUNNING' and tags.sweep = '{sweep_name}'"
    )
    stale = [r for r in running if r.data.tags.get(KIND_TAG) != "sweep"]  # the driver's own
    for run in stale:
        store.retry(store.client.set_tag, run.info.run_id, "knife.closed_stale", "resume")
        store.end_run(run.info.run_id, "KILLED")
    return len(stale)


def forget_checkpoints(tune_path: str, which: Callable[[dict], bool]) -> int:
    """Tune's saved state keeps no checkpoint for the trials `which(trial)` picks (Tune then
    restarts them without one); returns how many records were dropped."""

    def forget(trial: dict, manager: Any) -> int:
        if not which(trial):
            return 0
        count = len(manager._checkpoint_results) + (manager._latest_checkpoint_result is not None)
        manager._checkpoint_results = []
        manager._latest_checkpoint_result = None
        return count

    return edit_tune_checkpoints(tune_path, forget)


def saved_trials(tune_path: str) -> list[dict[str, Any]]:
    """Tune's saved trials (label, trial_id, status, sweep_id), from its latest state file."""
    states = sorted(Path(tune_path).glob("experiment_state-*.json"))
    if not states:
        return []
    out = []
    for entry in json.loads(states[-1].read_text()).get("trial_data", []):
        trial = json.loads(entry[0])
        config = trial.get("config") or {}
        out.append(
            {
                "label": (config.get("variant") or {}).get("label", "?"),
                "trial_id": trial["trial_id"],
                "status": trial["status"],
                "sweep_id": (config.get(META) or {}).get("sweep_id"),
            }
        )
    return out


def check_restart_labels(tune_path: str, labels: Iterable[str]) -> list[dict[str, Any]]:
    """The saved trials that `--restart-trial` names; a ConfigError for an unknown label or
    a finished trial (before anything is changed or Ray starts)."""
    trials = {t["label"]: t for t in saved_trials(tune_path)}
    chosen = []
    for label in labels:
        if label not in trials:
            known = ", ".join(sorted(trials)) or "none"
            raise ConfigError(
                f"--restart-trial: no trial {label!r} in this sweep (trials: {known})"
            )
        if trials[label]["status"] == "TERMINATED":
            raise ConfigError(
                f"--restart-trial: trial {label!r} finished; a finished trial is not retrained"
            )
        chosen.append(trials[label])
    return chosen


def restart_trials(
    tune_path: str, trials: list[dict[str, Any]], tracking_uri: str, experiment: str
) -> None:
    """Make each trial start from scratch on this resume (see the module docstring)."""
    if not trials:
        return
    ids = {t["trial_id"] for t in trials}
    forget_checkpoints(tune_path, lambda trial: trial["trial_id"] in ids)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    store = MlflowStore(tracking_uri)
    experiment_id = store.experiment_id(experiment, create=False)
    for trial in trials:
        for folder in Path(tune_path).glob(f"*_{trial['trial_id']}"):
            for checkpoint in folder.glob("checkpoint_*"):
                checkpoint.rename(folder / f"set_aside_{stamp}_{checkpoint.name}")
            (folder / ACK_FILE).unlink(missing_ok=True)
        key = f"{trial['sweep_id']}/{trial['trial_id']}"
        if experiment_id is None:
            continue
        for run in store.search_all(experiment_id, f"tags.`{TRIAL_KEY_TAG}` = '{key}'"):
            run_id = run.info.run_id
            store.retry(store.client.set_tag, run_id, TRIAL_KEY_TAG, f"{key}/restarted-{stamp}")
            store.retry(store.client.set_tag, run_id, "knife.restarted", "from scratch")
            store.end_run(run_id, "KILLED", only_if_running=True)
        print(f"knife: trial {trial['label']} starts again from scratch", flush=True)

"""Fault injection for the resume tests: SIGKILL the sweep's driver at a chosen point.

`plugins: [fault_plugin]` in a sweep file, with these variables in the driver's environment
(local Ray workers inherit it):
- KNIFE_FAULT_FLAG: a file; the kill happens once, by whichever process creates it first;
- KNIFE_FAULT_TRACKING_URI: the sweep's MLflow store;
- KNIFE_FAULT_POINT, where (at a checkpoint report of a trial):
  `after_finished`: the trial's MLflow run is FINISHED and its final checkpoint not yet
  reported to Tune (the window the driver can die in);
  `before_any_end`: a periodic checkpoint at iteration >= 3 while no trial run has finished;
  `during_last`: a periodic checkpoint at iteration >= 3 of the last trial (all others
  FINISHED; KNIFE_FAULT_TRIALS says how many trials the sweep has).

The driver is found as the process of this process's session whose command line is
`knife.platform.cli sweep` (the tests start it in a session of its own).
"""

from __future__ import annotations

import os
import signal
import time

from knife.platform import trial_runner


def _claim(flag_file: str) -> bool:
    try:
        os.close(os.open(flag_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _kill_driver() -> None:
    import psutil

    sid = os.getsid(0)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        try:
            if "knife.platform.cli sweep" in cmd and os.getsid(proc.info["pid"]) == sid:
                os.kill(proc.info["pid"], signal.SIGKILL)
        except (OSError, psutil.Error):
            continue


_plain_report = trial_runner._report_with_checkpoint


def _finished_runs(client, run_id: str) -> int:
    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_runs([experiment_id], "attributes.status = 'FINISHED'")
    return sum(r.data.tags.get("knife.kind") == "trial" for r in found)


def _due(client, report, progress) -> bool:
    point = os.environ.get("KNIFE_FAULT_POINT")
    run = client.get_run(report["mlflow_run_id"])
    if point == "after_finished":
        return run.info.status == "FINISHED"
    if run.info.status == "FINISHED" or progress.iteration < 3:
        return False
    finished = _finished_runs(client, report["mlflow_run_id"])
    if point == "before_any_end":
        return finished == 0
    if point == "during_last":
        return finished == int(os.environ["KNIFE_FAULT_TRIALS"]) - 1
    return False


def _report_with_checkpoint(algo, report, progress):
    if os.environ.get("KNIFE_FAULT_POINT"):
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=os.environ["KNIFE_FAULT_TRACKING_URI"])
        if _due(client, report, progress) and _claim(os.environ["KNIFE_FAULT_FLAG"]):
            _kill_driver()
            time.sleep(120)  # never reaches Tune: the session is torn down meanwhile
    return _plain_report(algo, report, progress)


trial_runner._report_with_checkpoint = _report_with_checkpoint

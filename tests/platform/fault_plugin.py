"""Fault injection for the resume tests: SIGKILL the sweep's driver at a chosen point.

`plugins: [fault_plugin]` in a sweep file, with these variables in the driver's environment
(local Ray workers inherit it):
- KNIFE_FAULT_FLAG: a file; the kill happens once, by whichever process creates it first;
- KNIFE_FAULT_TRACKING_URI: the sweep's MLflow store;
- KNIFE_FAULT_POINT: `after_finished`: a trial's MLflow run is FINISHED and its final
  checkpoint not yet reported to Tune (the window the driver can die in).

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


def _report_with_checkpoint(algo, report, progress):
    if os.environ.get("KNIFE_FAULT_POINT") == "after_finished":
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=os.environ["KNIFE_FAULT_TRACKING_URI"])
        run = client.get_run(report["mlflow_run_id"])
        if run.info.status == "FINISHED" and _claim(os.environ["KNIFE_FAULT_FLAG"]):
            _kill_driver()
            time.sleep(120)  # never reaches Tune: the session is torn down meanwhile
    return _plain_report(algo, report, progress)


trial_runner._report_with_checkpoint = _report_with_checkpoint

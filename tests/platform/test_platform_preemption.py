"""Preemption and damaged checkpoints, end to end (real Ray, Tune and MLflow; issue 18):

- SIGTERM to `knife sweep`: the running trials stop after their iteration with a verified
  checkpoint, their runs and the sweep's end KILLED, exit 143 without a stack dump;
- `--resume` falls back to an older checkpoint when the newest is truncated, and for a trial
  whose checkpoints are all truncated fails it naming the file and the restart command;
- `--resume --restart-trial NAME` then trains that trial from scratch in a fresh run;
- SIGTERM to a trial's Ray worker: the trial stops with a checkpoint and its retry
  continues from it.
Every trial ends with exactly one FINISHED run at its budget, no metric step logged twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from test_platform_sweep_e2e import (  # noqa: E402
    SWEEP_TIMEOUT_S,
    _two_step_sweep,
    client_for,
    knife_cmd,
    knife_env,
    reap,
    start_sweep,
    trial_runs,
    write_sweep,
)

pytestmark = [pytest.mark.e2e, pytest.mark.own_ray]
BUDGET = 600


def _wait_until_running(runs: Path, experiment: str, proc, n: int, log: Path) -> None:
    """Until `n` trial runs are RUNNING with a few iterations logged."""
    client = client_for(runs)
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no trial started"
        live = [r for r in trial_runs(runs, experiment) if r.info.status == "RUNNING"]
        deep = [r for r in live if len(client.get_metric_history(r.info.run_id, "env_steps")) >= 4]
        if len(deep) >= n:
            return
        time.sleep(0.3)


def _sweep(runs: Path, path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        knife_cmd("sweep", str(path), "--runs-dir", str(runs), "--quiet", *extra),
        env=knife_env(),
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )


def _assert_one_clean_finished_run_per_trial(runs: Path, experiment: str, trials: int) -> dict:
    client = client_for(runs)
    finished = [r for r in trial_runs(runs, experiment) if r.info.status == "FINISHED"]
    keys = [r.data.tags["knife.trial_key"] for r in finished]
    assert len(finished) == trials and len(set(keys)) == trials
    for run in finished:
        history = client.get_metric_history(run.info.run_id, "env_steps")
        steps = [m.step for m in history]
        assert len(steps) == len(set(steps)), f"{run.info.run_name}: a step logged twice"
        assert max(m.value for m in history) == BUDGET
    return {r.data.tags["trial_label"]: r for r in finished}


def test_sigterm_to_the_sweep_then_damaged_checkpoints_then_restart_trial(tmp_path):
    from knife.platform.checkpoints import ALGO_DIR, verify_checkpoint

    runs = tmp_path / "runs"
    raw = _two_step_sweep("stop", [0, 1], steps=BUDGET)
    raw["tune"].update(max_concurrent_trials=2, max_failures=1, checkpoint_every=3)
    path = write_sweep(tmp_path, raw)
    log = tmp_path / "first.log"
    proc = start_sweep(path, runs, log, knife_env())
    try:
        _wait_until_running(runs, "stop", proc, 2, log)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        reap(proc)
    out = log.read_text()
    assert proc.returncode == 143, out[-3000:]
    assert "Traceback" not in out and "*** " not in out
    assert "2 of 2 running trials stopped with a checkpoint" in out
    assert took < 30, f"the stop took {took:.0f} s, more than a 30 s preemption notice"

    client = client_for(runs)
    stopped = {r.data.tags["trial_label"]: r for r in trial_runs(runs, "stop")}
    assert set(stopped) == {"none-s0", "none-s1"}
    for run in stopped.values():
        assert run.info.status == "KILLED"
        checkpoint = Path(run.data.tags["interrupted_checkpoint"])
        assert checkpoint.name.startswith("checkpoint_stop_")
        verify_checkpoint(checkpoint)
    exp = client.get_experiment_by_name("stop")
    found = client.search_runs([exp.experiment_id])
    [parent] = [r for r in found if r.data.tags.get("knife.kind") == "sweep"]
    assert parent.info.status == "KILLED"

    # Damage: s0's newest checkpoint truncated (an older one must be used), all of s1's.
    def truncate(checkpoint: Path) -> None:
        for state in (checkpoint / ALGO_DIR).rglob("*.pkl"):
            state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])

    s0_folder = Path(stopped["none-s0"].data.tags["interrupted_checkpoint"])
    truncate(s0_folder)
    s1_folder = Path(stopped["none-s1"].data.tags["interrupted_checkpoint"]).parent
    for checkpoint in s1_folder.glob("checkpoint_*"):
        truncate(checkpoint)

    failed = _sweep(runs, path, "--resume")
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "no checkpoint of this trial restores" in failed.stdout, failed.stdout[-3000:]
    assert "state.pkl" in failed.stdout and "the manifest says" in failed.stdout
    restart = "--resume --restart-trial none-s1"
    assert restart in failed.stdout
    runs_now = {r.data.tags["trial_label"]: r for r in trial_runs(runs, "stop")}
    s0 = runs_now["none-s0"]
    assert s0.info.status == "FINISHED"
    assert (
        1
        <= int(s0.data.tags["knife.restored_from_iteration"])
        < int(s0.data.tags["knife.stopped_at"])
    )  # the previous good checkpoint, not the truncated newest one
    assert runs_now["none-s1"].info.status == "FAILED"

    unknown = _sweep(runs, path, "--resume", "--restart-trial", "nope")
    assert unknown.returncode == 2 and "no trial 'nope'" in unknown.stderr
    done = _sweep(runs, path, "--resume", "--restart-trial", "none-s0")
    assert done.returncode == 2 and "finished; a finished trial is not retrained" in done.stderr

    restarted = _sweep(runs, path, *restart.split())
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    finished = _assert_one_clean_finished_run_per_trial(runs, "stop", 2)
    assert finished["none-s0"].info.run_id == s0.info.run_id  # not trained again
    fresh = finished["none-s1"]
    assert fresh.info.run_id != stopped["none-s1"].info.run_id  # a new run, from scratch
    assert "knife.restored_from_iteration" not in fresh.data.tags
    old = client.get_run(stopped["none-s1"].info.run_id)
    assert old.info.status == "FAILED" and old.data.tags["knife.restarted"] == "from scratch"
    assert list(s1_folder.glob("set_aside_*_checkpoint_*"))  # kept, not deleted


@pytest.mark.slow  # 35 s; outside the default suite (pytest -m slow)
def test_sigterm_to_a_trial_worker_checkpoints_and_the_retry_continues(tmp_path):
    import psutil

    runs = tmp_path / "runs"
    raw = _two_step_sweep("worker", [0], steps=BUDGET)
    raw["tune"].update(max_concurrent_trials=1, max_failures=1, checkpoint_every=50)
    path = write_sweep(tmp_path, raw)
    log = tmp_path / "sweep.log"
    proc = start_sweep(path, runs, log, knife_env())
    try:
        _wait_until_running(runs, "worker", proc, 1, log)
        workers = [
            p
            for p in psutil.process_iter(["pid", "cmdline"])
            # Tune's with_resources subclasses the trainable as ResourceTrainable.
            if "ray::ResourceTrainable" in " ".join(p.info["cmdline"] or [])
        ]
        assert len(workers) == 1, [w.info["cmdline"] for w in workers]
        workers[0].send_signal(signal.SIGTERM)
        proc.wait(timeout=SWEEP_TIMEOUT_S)
    finally:
        reap(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    [run] = _assert_one_clean_finished_run_per_trial(runs, "worker", 1).values()
    assert run.data.tags["knife.attempts"] == "2"
    # The retry continued from the checkpoint the stopped worker wrote, not from a periodic
    # one (every 50 iterations: none yet).
    assert run.data.tags["knife.restored_from_iteration"] == run.data.tags["knife.stopped_at"]

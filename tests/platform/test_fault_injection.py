"""The driver SIGKILLed at three points of one sweep, each followed by `--resume` (issue 18):
before any trial ends, between a trial's FINISHED and its final checkpoint, and during the
last trial. At the end: exactly one FINISHED run per trial, every run's env_steps equal to
its budget, no metric history with a step logged twice.

Outside the default suite (about 3 minutes on a 2-core machine):
    python -m pytest -m slow tests/platform/test_fault_injection.py
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from test_platform_sweep_e2e import (  # noqa: E402
    SWEEP_TIMEOUT_S,
    _two_step_sweep,
    client_for,
    knife_env,
    reap,
    start_sweep,
    trial_runs,
    write_sweep,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SEEDS = [0, 1, 2]
BUDGET = 300
POINTS = ("before_any_end", "after_finished", "during_last")


def _sweep(runs: Path, path: Path, log: Path, env: dict, *extra: str) -> int:
    proc = start_sweep(path, runs, log, env, *extra)
    try:
        proc.wait(timeout=SWEEP_TIMEOUT_S)
    finally:
        reap(proc)
    return proc.returncode


def test_driver_killed_at_three_points_and_resumed_each_time(tmp_path):
    runs = tmp_path / "runs"
    uri = "sqlite:///" + str((runs / "mlflow.db").resolve())
    raw = _two_step_sweep("faults", SEEDS, steps=BUDGET, plugins=["fault_plugin"])
    raw["tune"].update(max_concurrent_trials=1, checkpoint_every=2)
    path = write_sweep(tmp_path, raw)
    finished_before: dict[str, int] = {}
    for i, point in enumerate(POINTS):
        env = knife_env(
            KNIFE_FAULT_POINT=point,
            KNIFE_FAULT_FLAG=str(tmp_path / f"{point}.flag"),
            KNIFE_FAULT_TRACKING_URI=uri,
            KNIFE_FAULT_TRIALS=str(len(SEEDS)),
        )
        log = tmp_path / f"{i}-{point}.log"
        rc = _sweep(runs, path, log, env, *(["--resume"] if i else []))
        assert rc == -signal.SIGKILL, f"{point}: {log.read_text()[-3000:]}"
        assert (tmp_path / f"{point}.flag").exists()
        done = [r for r in trial_runs(runs, "faults") if r.info.status == "FINISHED"]
        # Where the kill landed: 0 finished; then 1 (its final checkpoint unknown to Tune);
        # then all but the last.
        assert len(done) == {0: 0, 1: 1, 2: len(SEEDS) - 1}[i], point
        finished_before.update({r.data.tags["knife.trial_key"]: r.info.run_id for r in done})
    log = tmp_path / "final.log"
    assert _sweep(runs, path, log, knife_env(), "--resume") == 0, log.read_text()[-3000:]

    client = client_for(runs)
    trials = trial_runs(runs, "faults")
    keys = [r.data.tags["knife.trial_key"] for r in trials]
    assert len(trials) == len(SEEDS) and len(set(keys)) == len(SEEDS)  # one run per trial
    for run in trials:
        assert run.info.status == "FINISHED"
        key = run.data.tags["knife.trial_key"]
        if key in finished_before:  # a finished run is never reopened
            assert run.info.run_id == finished_before[key]
        for metric in ("env_steps", "test/return", "train/return"):
            history = client.get_metric_history(run.info.run_id, metric)
            steps = [m.step for m in history]
            assert len(steps) == len(set(steps)), f"{run.info.run_name}: {metric} step twice"
        assert run.data.metrics["env_steps"] == BUDGET
    restored = [r for r in trials if "knife.restored_from_iteration" in r.data.tags]
    assert restored, "no trial continued from a checkpoint"

"""`knife ui`: the MLflow UI on 127.0.0.1 over the same store the trials write (DESIGN 10).

Runs `mlflow server` as a child process against the SQLite store of the runs folder (or says
where the server is when the tracking URI already points at one), waits until it answers,
then prints where to look and how to compare runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from knife.platform.config import ConfigError
from knife.platform.mlflow_views import (
    LAYOUT_PARAM,
    METHODS_VIEW,
    TRIALS_VIEW,
    VIEWS,
    experiment_page,
    refresh_views,
)
from knife.platform.tracking import ARTIFACTS_DIR, redact_uri, sqlite_path

STARTUP_TIMEOUT_S = 120.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")

COMPARE_HINT = """\
Compare runs (docs/platform.md, "Comparing methods in the MLflow UI"):
  * the links above open the model-training layout. A sweep is one row; its trials nest
    under it (expand the row). Tags `method`, `seed`, `sequence`, `task` are columns.
  * "knife: every trial" opens the chart view with one line per trial, grouped by method;
    "knife: methods" one line per method (mean over seeds). Sections: test/, train/,
    task/<i>/, plasticity/<network>/, then counters and system/ metrics. Both are in the
    Views menu of the experiment page.
  * the compare link of a sweep puts its finished trials side by side (params, parallel
    coordinates, metric charts over env steps).
  * each run's Artifacts tab holds plots/learning_curve.png (task boundaries dashed),
    plots/stagnant_fraction.png, config.yaml and summary.json.
  * `knife report EXPERIMENT` writes IQM tables with 95% bootstrap intervals and logs them
    as a run of the experiment EXPERIMENT/report; the sweep's row carries its tables (its
    Artifacts tab, report/) and the tag knife.report naming that run."""


def server_command(tracking_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The `mlflow server` command line for a store (SQLite: artifacts beside the file)."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    db = sqlite_path(tracking_uri)
    if db is not None:
        # Where experiments made in the UI keep uploads; runs' own artifacts are found
        # through their artifact URIs (file:// beside the database).
        cmd += ["--artifacts-destination", str(db.parent / ARTIFACTS_DIR)]
    return cmd


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer at {url} within {timeout:.0f} s")


def experiment_links(tracking_uri: str, url: str, experiment: str | None) -> list[str]:
    from knife.platform.tracking import MlflowStore, ensure_model_training_kind

    store = MlflowStore(tracking_uri)
    client = store.client
    experiments = client.search_experiments()
    if experiment is not None:
        experiments = [e for e in experiments if e.name == experiment]
        if not experiments:
            raise ConfigError(f"--experiment {experiment!r}: no such experiment in the store")
    for e in experiments:  # stores made before the tag existed open in the training layout
        if e.name != "Default":
            ensure_model_training_kind(client, e)
    lines = []
    for e in experiments:
        if e.name == "Default":
            continue
        lines.append(f"  {e.name}: {experiment_page(url, e.experiment_id)}")
        runs = store.search_all(e.experiment_id)  # one search for the views and the links
        if refresh_views(store, e.experiment_id, runs):  # its trials' metrics as they are now
            for view in (TRIALS_VIEW, METHODS_VIEW):
                link = experiment_page(url, e.experiment_id, view=view)
                lines.append(f"    {VIEWS[view]}: {link}")
        lines += [f"    {line}" for line in sweep_compare_links(runs, url, e.experiment_id)]
    return lines


def sweep_compare_links(runs: list[Any], url: str, experiment_id: str) -> list[str]:
    """One link per sweep of the experiment: MLflow's compare page of its finished trials
    (params side by side, parallel coordinates, metric charts)."""
    from knife.platform.trial_runner import KIND_TAG, PARENT_TAG

    out = []
    for sweep in (r for r in runs if r.data.tags.get(KIND_TAG) == "sweep"):
        trials = [
            r.info.run_id
            for r in runs
            if r.data.tags.get(PARENT_TAG) == sweep.info.run_id and r.info.status == "FINISHED"
        ]
        if trials:
            ids = json.dumps(trials, separators=(",", ":"))
            query = f'runs={ids}&experiments=["{experiment_id}"]'  # as MLflow's own links
            out.append(
                f"compare sweep {sweep.info.run_name} ({len(trials)} trials): "
                f"{url}/#/compare-runs?{query}"
            )
    return out


def serve(
    tracking_uri: str,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    experiment: str | None = None,
) -> int:
    """Start the UI and block until it stops (Ctrl-C); returns its exit status."""
    if tracking_uri.startswith(("http://", "https://")):
        print(f"MLflow tracking server: {redact_uri(tracking_uri)} (open it in a browser)")
        print(COMPARE_HINT)
        return 0
    db = sqlite_path(tracking_uri)
    if db is not None and not db.exists():
        raise ConfigError(
            f"no MLflow store at {db} yet; run `knife sweep` or `knife train` first, "
            "or pass --runs-dir / --tracking-uri"
        )
    if host not in LOOPBACK:
        print(
            f"warning: --host {host} makes the MLflow UI reachable from other machines; it "
            "has no authentication",
            file=sys.stderr,
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    links = experiment_links(tracking_uri, url, experiment)
    # Its own session: `mlflow server` runs uvicorn as a child, and stopping the group stops
    # both (a plain terminate() would orphan uvicorn, still holding the port).
    proc = subprocess.Popen(server_command(tracking_uri, host, port), start_new_session=True)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        wait_until_up(url, proc)
        home = f"{url}/#/experiments?{LAYOUT_PARAM}"
        print(f"MLflow UI: {home}   (store: {redact_uri(tracking_uri)}; Ctrl-C stops it)")
        if links:
            print("Experiments:")
            print("\n".join(links))
        print(COMPARE_HINT, flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_server(proc)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_server(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop the server's process group (this call started it: start_new_session): SIGTERM,
    then SIGKILL for whatever is left after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # nobody left in the group
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, so it does not count as alive
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)

"""`knife sweep` / `report` / `ui` end to end: real Tune on local Ray, a real SQLite MLflow
store, a real `mlflow server` read by headless Chromium.

Each sweep runs as its own `knife sweep` process (the driver), as a user would start it;
trials are sized for 2 cores (matrix games, a few hundred env steps each).
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "tests" / "artifacts"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytestmark = [pytest.mark.e2e, pytest.mark.own_ray]

TOKEN = secrets.token_hex(16)  # the Ray auth token of these tests' clusters
SWEEP_TIMEOUT_S = 420

TRAINING = {
    "batch_size": 8,
    "learning_starts": 8,
    "buffer_size": 200,
    "epsilon_anneal_steps": 100,
    "target_update_interval": 20,
    "td_lambda": 0.0,
}

# The quickstart, shrunk: 2 methods x 2 seeds x a 2-task matrix-game sequence, and a scratch
# reference per seed for task 1 (grid.scratch): 6 trials.
CI_SWEEP = {
    "name": "ci",
    "base": {
        "algorithm": "qmix",
        "training": TRAINING,
        "evaluation": {"episodes": 2, "interval": 50},
        "plasticity": {"monitor": {"metrics_interval": 10}},
    },
    "grid": {
        "methods": ["none", "knife"],
        "seeds": [0, 1],
        "sequences": {
            "climb_pen": [
                {"env": "matrix:climbing", "steps": 150, "name": "climbing"},
                {"env": "matrix:penalty", "steps": 150, "name": "penalty"},
            ]
        },
        "scratch": True,
    },
    "tune": {"max_concurrent_trials": 2, "checkpoint_every": 2},
}
BUDGET = 300


def knife_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=TOKEN,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def knife_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "knife.platform.cli", *args]


def write_sweep(folder: Path, raw: dict) -> Path:
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def client_for(runs: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri="sqlite:///" + str((runs / "mlflow.db").resolve()))


def trial_runs(runs: Path, experiment: str) -> list:
    client = client_for(runs)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    found = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in found if r.data.tags.get("knife.kind") == "trial"]


def session_listeners(sid: int) -> list[tuple[str, int, str]]:
    """(ip, port, command) of every listening socket of the processes in session `sid`."""
    import psutil

    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or not conn.pid:
            continue
        try:
            if os.getsid(conn.pid) != sid:
                continue
            cmd = " ".join(psutil.Process(conn.pid).cmdline())
        except (OSError, psutil.Error):
            continue
        out.append((conn.laddr.ip, conn.laddr.port, cmd))
    return out


def session_commands(sid: int) -> list[str]:
    import psutil

    cmds = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(proc.info["pid"]) == sid:
                cmds.append(" ".join(proc.info["cmdline"] or []))
        except (OSError, psutil.Error):
            continue
    return cmds


def end_session(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """After the driver is gone: give Ray's processes of its session time to follow, then
    stop what is left of that session (this test started it: start_new_session)."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and session_commands(proc.pid):
        time.sleep(1.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """A sweep driver started by start_sweep: killed if still running, its session cleared
    (after `grace` seconds for a driver that stops Ray itself; 0 for a killed one, whose
    Ray processes stay up until they are killed too, as if the machine was lost)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    end_session(proc, grace)


def report_without_mlflow(runs: Path, experiment: str, out: Path) -> subprocess.CompletedProcess:
    """`knife report EXPERIMENT --out OUT --no-mlflow`, asserted to succeed."""
    report = subprocess.run(
        knife_cmd("report", experiment, "--runs-dir", str(runs), "--out", str(out), "--no-mlflow"),
        env=knife_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    return report


def start_sweep(path: Path, runs: Path, log: Path, env: dict, *extra: str) -> subprocess.Popen:
    """`knife sweep FILE --quiet` in a session of its own (so end_session can clear it up),
    its output in `log`."""
    with open(log, "w") as fh:
        return subprocess.Popen(
            knife_cmd("sweep", str(path), "--runs-dir", str(runs), "--quiet", *extra),
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def ci_sweep(tmp_path_factory):
    """Run the CI sweep once; watch the listening sockets of its processes meanwhile."""
    tmp = tmp_path_factory.mktemp("ci_sweep")
    runs = tmp / "runs"
    path = write_sweep(tmp, CI_SWEEP)
    out, err = tmp / "stdout.log", tmp / "stderr.log"
    t0 = time.monotonic()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            knife_cmd("sweep", str(path), "--runs-dir", str(runs)),
            cwd=tmp,
            env=knife_env(),
            stdout=fo,
            stderr=fe,
            start_new_session=True,
        )
        listeners: set[tuple[str, int, str]] = set()
        commands: set[str] = set()
        try:
            while proc.poll() is None and time.monotonic() - t0 < SWEEP_TIMEOUT_S:
                listeners.update(session_listeners(proc.pid))
                commands.update(session_commands(proc.pid))
                time.sleep(2.0)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            end_session(proc)
    return SimpleNamespace(
        tmp=tmp,
        runs=runs,
        rc=proc.returncode,
        stdout=out.read_text(),
        stderr=err.read_text(),
        seconds=time.monotonic() - t0,
        listeners=listeners,
        commands=commands,
    )


def test_ci_sweep_one_mlflow_run_per_trial_with_tags_params_metrics_plots(ci_sweep):
    assert ci_sweep.rc == 0, ci_sweep.stderr[-3000:]
    print(f"CI sweep wall time: {ci_sweep.seconds:.1f} s")
    every = trial_runs(ci_sweep.runs, "ci")
    runs = [r for r in every if r.data.tags.get("knife.role") != "scratch"]
    assert len(runs) == 4 and len(every) == 6
    assert sorted((r.data.tags["method"], r.data.tags["seed"]) for r in runs) == [
        ("knife", "0"),
        ("knife", "1"),
        ("none", "0"),
        ("none", "1"),
    ]
    assert len({r.data.tags["knife.trial_key"] for r in runs}) == 4
    client = client_for(ci_sweep.runs)
    # One parent run per sweep, FINISHED; every trial is nested under it (MLflow's
    # mlflow.parentRunId), so the run table shows one expandable row for the sweep.
    exp = client.get_experiment_by_name("ci")
    parents = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("knife.kind") == "sweep"
    ]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].info.run_name == "ci" and parents[0].data.tags["sweep"] == "ci"
    assert {r.data.tags["mlflow.parentRunId"] for r in every} == {parents[0].info.run_id}
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        assert tags["algorithm"] == "qmix" and tags["sequence"] == "climb_pen"
        assert tags["env"] == "matrix:climbing" and tags["code_version"]
        assert tags["knife.attempts"] == "1" and tags["sweep"] == "ci"
        assert tags["task/1/name"] == "penalty" and tags["task"] == "climbing -> penalty"
        # the flattened trial config
        assert params["plasticity.method"] == tags["method"] and params["seed"] == tags["seed"]
        assert params["training.batch_size"] == "8" and params["tasks.name"] == "climb_pen"
        assert params["evaluation.interval"] == "50" and params["steps"] == str(BUDGET)
        # curated metrics: returns, per-task results, plasticity, losses, throughput
        for key in (
            "train/return",
            "test/return",
            "train/loss",
            "train/td_error_abs",
            "train/epsilon",
            "train/env_steps_per_s",
            "task/0/final_test_return",
            "task/1/final_test_return",
            "task/0/auc",
            "task/1/start_env_steps",
            "plasticity/agent/stagnant_fraction",
            "plasticity/mixer/stagnant_fraction",
        ):
            assert key in metrics, key
        ray_internals = ("env_runners", "learners", "timers", "perf", "info", "config", "num_")
        assert not [k for k in metrics if k.startswith(ray_internals)]
        assert len(metrics) < 250
        # stepped by env steps: one train point per iteration of 50 one-step episodes
        train_steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/return")]
        assert train_steps == list(range(50, BUDGET + 1, 50))
        test = client.get_metric_history(run.info.run_id, "test/return")
        assert [m.step for m in test] == sorted({m.step for m in test})  # once per test
        assert metrics["task/1/start_env_steps"] == 150.0
        task0 = client.get_metric_history(run.info.run_id, "task/0/test_return")
        assert max(m.step for m in task0) == 150  # task 0's curve ends at its switch
        # artifacts: the trial config, a summary, the plots
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "summary.json", "plots"} <= arts
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert plots == {"plots/learning_curve.png", "plots/stagnant_fraction.png"}
        local = Path(client.download_artifacts(run.info.run_id, "plots/learning_curve.png"))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        summary = json.loads(
            Path(client.download_artifacts(run.info.run_id, "summary.json")).read_text()
        )
        assert summary["env_steps"] == BUDGET and len(summary["tasks"]) == 2
        # One summary.json schema with `knife train` (knife.platform.trial_loop): the
        # fields that used to be train-only are here too.
        assert summary["steps"] == BUDGET and summary["env"] == "matrix:climbing"
        assert summary["learner_updates"] > 0 and summary["attempts"] == 1
    # The scratch references: per seed, a fresh network on task 1 alone with the sequential
    # run's seed, budget, protocol and test schedule, read back from their params and
    # counters: its tests and epsilon at the same steps of the task as the sequence's.
    nones = {r.data.tags["seed"]: r for r in runs if r.data.tags["method"] == "none"}
    references = [r for r in every if r.data.tags.get("knife.role") == "scratch"]
    assert sorted(r.data.tags["seed"] for r in references) == ["0", "1"]

    def history(run, key, start=0):  # (env steps since `start`, value) from `start` on
        points = client.get_metric_history(run.info.run_id, key)
        return sorted((m.step - start, m.value) for m in points if m.step >= start)

    for ref in references:
        seq = nones[ref.data.tags["seed"]]
        tags, params = ref.data.tags, ref.data.params
        assert (tags["method"], tags["knife.scratch_task"], tags["sequence"]) == (
            "scratch",
            "1",
            "climb_pen",
        )
        assert params["plasticity.method"] == "none" and params["seed"] == seq.data.params["seed"]
        assert params["steps"] == "150" and tags["task/0/name"] == "penalty"
        for key in ("tasks.buffer_on_switch", "tasks.reanneal_epsilon", "evaluation.interval"):
            assert params[key] == seq.data.params[key], key
        assert seq.data.params["tasks.buffer_on_switch"] == "flush"
        assert seq.data.params["tasks.reanneal_epsilon"] == "True"
        assert ref.data.metrics["env_steps"] == 150
        ref_tests = [step for step, _ in history(ref, "task/0/test_return")]
        assert ref_tests == [step for step, _ in history(seq, "task/1/test_return", 150)]
        assert ref_tests[0] == 0 and ref_tests[-1] == 150
        seq_epsilon = [p for p in history(seq, "train/epsilon", 150) if p[0] > 0]
        ref_epsilon = history(ref, "train/epsilon")
        assert [p[0] for p in ref_epsilon] == [p[0] for p in seq_epsilon] == [50, 100, 150]
        assert [p[1] for p in ref_epsilon] == pytest.approx([p[1] for p in seq_epsilon])

    # the driver's closing table and Tune's folder
    assert "compare in MLflow: knife ui" in ci_sweep.stdout
    exp_dir = ci_sweep.runs / "ci"
    assert (exp_dir / "sweep.yaml").exists()
    outcomes = json.loads((exp_dir / "sweep_summary.json").read_text())
    assert sorted(o["status"] for o in outcomes) == ["TERMINATED"] * 6
    assert {o["mlflow_run_id"] for o in outcomes} == {r.info.run_id for r in every}
    checkpoints = list(exp_dir.glob("*/checkpoint_*"))
    assert checkpoints  # kept, for resume and later analysis


def test_concurrent_trials_never_hit_database_locked(ci_sweep):
    """Two trials wrote the same SQLite file at once; no lock error escaped a retry."""
    assert ci_sweep.rc == 0
    text = ci_sweep.stdout + ci_sweep.stderr
    assert "database is locked" not in text
    for path in (ci_sweep.runs / "ci").rglob("error.txt"):
        pytest.fail(f"a trial errored: {path.read_text()[:500]}")
    import sqlite3

    with sqlite3.connect(ci_sweep.runs / "mlflow.db") as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_no_token_in_logs_params_or_files(ci_sweep):
    assert ci_sweep.rc == 0
    assert TOKEN not in ci_sweep.stdout and TOKEN not in ci_sweep.stderr
    for run in trial_runs(ci_sweep.runs, "ci"):
        for value in (*run.data.params.values(), *run.data.tags.values()):
            assert TOKEN not in value
    checked = 0
    for path in ci_sweep.tmp.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert TOKEN.encode() not in path.read_bytes(), path
            checked += 1
    assert checked > 20  # Tune's state, results, checkpoints, the store, artifacts


def test_ray_dashboard_binds_loopback(ci_sweep):
    """Ray's dashboard process of the embedded cluster is told 127.0.0.1, and whatever it
    listens on is loopback; nothing in the sweep's processes serves Ray's dashboard port
    on another interface."""
    dashboards = [c for c in ci_sweep.commands if "dashboard/dashboard.py" in c]
    assert dashboards, "no Ray dashboard process seen"
    assert all("--host=127.0.0.1" in c for c in dashboards)
    for ip, port, cmd in ci_sweep.listeners:
        if "dashboard/dashboard.py" in cmd or port == 8265:
            assert ip in ("127.0.0.1", "::1"), (ip, port, cmd)


def _hand_iqm(values: list[float]) -> float:
    """Interquartile mean by hand: sort, drop floor(n/4) from each end, average."""
    ordered = sorted(values)
    cut = len(ordered) // 4
    kept = ordered[cut : len(ordered) - cut]
    return sum(kept) / len(kept)


def test_report_on_the_sweep_matches_a_hand_computation(ci_sweep):
    assert ci_sweep.rc == 0
    out = ci_sweep.tmp / "report"
    proc = subprocess.run(
        knife_cmd("report", "ci", "--runs-dir", str(ci_sweep.runs), "--out", str(out)),
        env=knife_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 1: penalty | knife | 2 |" in proc.stdout
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 2 * 2 + 2  # (task 0, task 1) x (knife, none) + `all` per method
    runs = [r for r in trial_runs(ci_sweep.runs, "ci") if r.data.tags.get("knife.role") is None]
    for row in rows:
        members = [r for r in runs if r.data.tags["method"] == row["method"]]
        assert int(row["seeds"]) == len(members) == 2
        tasks = [0, 1] if row["task"] == "all" else [int(row["task"])]
        for score, key in (("final_return", "final_test_return"), ("auc", "auc")):
            values = [r.data.metrics[f"task/{i}/{key}"] for r in members for i in tasks]
            assert float(row[f"{score}_iqm"]) == pytest.approx(_hand_iqm(values), abs=1e-9)
            if row["task"] != "all":
                # two seeds a, b: resamples give a, b or their mean; 2.5% / 97.5% -> min, max
                assert float(row[f"{score}_ci_low"]) == pytest.approx(min(values))
                assert float(row[f"{score}_ci_high"]) == pytest.approx(max(values))
    assert (out / "report.md").exists()
    pngs = sorted(p.name for p in out.glob("*.png"))
    # plasticity_gap.png needs a normalized gap (references ending above the random policy):
    # drawn here as a rule, tested on hand-made data in test_platform_paired_tables.py.
    assert [p for p in pngs if p != "plasticity_gap.png"] == [
        "learning_curves_climb_pen_qmix.png",
        "stagnant_fraction_climb_pen_qmix.png",
        "stagnation_vs_learning_climb_pen_qmix.png",
    ]
    raw = list(csv.DictReader(open(out / "runs.csv")))
    assert len(raw) == 4 * 2 + 2 and all(r["stagnant_agent_end"] != "" for r in raw)
    # The paired tables: the gap of none against its scratch reference on task 1, by hand
    # from the runs' test curves (final = the mean of the last 3 tests of the task).
    assert "## Is there plasticity loss here?" in proc.stdout
    assert "**`climb_pen` (qmix)**: " in proc.stdout
    paired = list(csv.DictReader(open(out / "paired.csv")))
    assert sorted((r["method"], r["against"], r["score"]) for r in paired) == sorted(
        (m, a, s)
        for m, a in (("none", "scratch"), ("knife", "none"), ("knife", "scratch"))
        for s in ("final", "auc")
    )
    assert {(r["task"], r["seeds"]) for r in paired} == {("1", "2")}
    client = client_for(ci_sweep.runs)
    scratch = {r.data.tags["seed"]: r for r in trial_runs(ci_sweep.runs, "ci")
               if r.data.tags.get("knife.role") == "scratch"}  # fmt: skip

    def final(run, key):
        values = [m.value for m in sorted(client.get_metric_history(run.info.run_id, key),
                                          key=lambda m: m.step)]  # fmt: skip
        return sum(values[-3:]) / len(values[-3:])

    nones = {r.data.tags["seed"]: r for r in runs if r.data.tags["method"] == "none"}
    gaps = [
        final(nones[s], "task/1/test_return") - final(scratch[s], "task/0/test_return")
        for s in ("0", "1")
    ]
    [gap] = [
        r for r in paired if (r["method"], r["against"], r["score"]) == ("none", "scratch", "final")
    ]
    assert float(gap["diff_mean"]) == pytest.approx(sum(gaps) / 2, abs=1e-9)
    assert gap["verdict"] in ("loss", "gain", "equivalent", "undetermined")
    exp = client.get_experiment_by_name("ci")
    assert not [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("knife.kind") == "report"
    ]  # not among the trials: their chart view stays theirs
    report_exp = client.get_experiment_by_name("ci/report")
    reports = client.search_runs([report_exp.experiment_id])
    assert len(reports) == 1 and reports[0].data.tags["knife.kind"] == "report"
    arts = {a.path for a in client.list_artifacts(reports[0].info.run_id)}
    assert {"report.md", "summary.csv", "plots"} <= arts
    # Reachable from the sweep: its parent run names the report and carries its tables.
    [parent] = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("knife.kind") == "sweep"
    ]
    assert (
        parent.data.tags["knife.report"] == f"{report_exp.experiment_id}/{reports[0].info.run_id}"
    )
    on_parent = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/summary.csv"} <= on_parent
    # The report run is not a trial: a second report reads the same 4 runs.
    again = subprocess.run(
        knife_cmd(
            "report", "ci", "--runs-dir", str(ci_sweep.runs), "--out", str(out), "--no-mlflow"
        ),
        env=knife_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and list(csv.DictReader(open(out / "summary.csv"))) == rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(url: str, profile: Path, *, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (headless Chromium, fresh profile)."""
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        "--virtual-time-budget=20000",
    ]
    dom = subprocess.run(
        [binary, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180
    ).stdout
    if screenshot is not None:
        subprocess.run(
            [binary, *flags, f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=180,
        )
    return dom


CARD = 'data-testid="experiment-view-compare-runs-card"'
# The screenshots docs/platform.md shows (a second Chromium start each, ~5 s): written with
# KNIFE_UI_SCREENSHOTS=1; by default only the compare page's, which the test checks.
ALL_SCREENSHOTS = os.environ.get("KNIFE_UI_SCREENSHOTS") == "1"


def _shot(name: str) -> Path | None:
    return ARTIFACTS / name if ALL_SCREENSHOTS else None


def _chart_view(url: str, profile: Path, *, screenshot: Path | None, tries: int = 3) -> str:
    """A chart view's DOM once its first chart card has rendered: MLflow draws the cards
    after fetching every run's metrics, which on a loaded machine can outlast Chromium's
    virtual-time budget (seen in CI for the methods view). Loaded again, fresh profile."""
    for attempt in range(tries):
        page = _chromium(url, profile.with_name(f"{profile.name}-{attempt}"), screenshot=screenshot)
        if CARD in page:
            return page
    return page


def _first_chart(page: str) -> tuple[str | None, set[str]]:
    """The chart view's first card: its metric and the names in its legend."""
    assert CARD in page, "the chart view rendered no chart card"
    card = page.split(CARD)[1]
    title = re.search(r'title="([^"]+)"', card)
    metric = None if title is None else title.group(1)
    return metric, set(re.findall(rf">([^<>]+) \({re.escape(metric or '')}\)<", card))


def test_ui_serves_the_sweep_to_headless_chromium(ci_sweep, tmp_path):
    import psutil

    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        message = "Debian's chromium is not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing browser must not pass silently
        pytest.skip(message)

    assert ci_sweep.rc == 0
    port = _free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as fh:
        ui = subprocess.Popen(
            knife_cmd("ui", "--runs-dir", str(ci_sweep.runs), "--port", str(port)),
            env=knife_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 150
        while "Compare runs" not in log.read_text():  # its last lines
            assert ui.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}" in text and "Compare runs" in text
        # bound to loopback only
        bound = {
            c.laddr.ip
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert bound == {"127.0.0.1"}

        client = client_for(ci_sweep.runs)
        exp = client.get_experiment_by_name("ci")
        runs = trial_runs(ci_sweep.runs, "ci")
        names = [r.info.run_name for r in runs]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        base = f"http://127.0.0.1:{port}"
        [home] = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("  ci: ")]
        layout = "workflowType=machine_learning"
        assert home == f"{base}/#/experiments/{exp.experiment_id}/runs?{layout}"

        page = _chromium(home, tmp_path / "p1", screenshot=_shot("mlflow_experiment.png"))
        # The model-training layout: its navigation (runs, models), none of the GenAI one.
        nav = set(re.findall(rf'href="#/experiments/{exp.experiment_id}/([a-z-]+)', page))
        assert {"runs", "models"} <= nav, nav
        genai = {"overview", "chat-sessions", "judges", "prompts", "playground", "review-queue"}
        assert not nav & genai, f"GenAI navigation on the experiment page: {nav & genai}"
        # The run table shows the sweep's parent row; its trials nest under it.
        [parent] = [
            r
            for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("knife.kind") == "sweep"
        ]
        assert parent.info.run_id in page, "the sweep's parent run is not on the experiment page"
        assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in runs)
        # The report is one click from the sweep: its run page names it.
        if "knife.report" not in parent.data.tags:  # this test run alone, without the report's
            subprocess.run(
                knife_cmd("report", "ci", "--runs-dir", str(ci_sweep.runs), "--no-progress"),
                env=knife_env(),
                capture_output=True,
                timeout=300,
                check=True,
            )
        page = _chromium(
            f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}", tmp_path / "p3"
        )
        assert "knife.report" in page, "the sweep's run page does not link its report"

        # knife ui prints the sweep's compare page and the saved chart views: open those.
        [compare] = [
            line.split(": ", 1)[1]
            for line in text.splitlines()
            if line.strip().startswith("compare sweep ci (6 trials)")  # 4 + 2 references
        ]
        for run in runs:
            assert run.info.run_id in compare
        [charts] = [
            line[line.index("http") :]
            for line in text.splitlines()
            if line.strip().startswith("knife: every trial")
        ]
        assert "viewStateShareKey=knife-trials" in charts and "compareRunsMode=CHART" in charts
        page = _chart_view(charts, tmp_path / "p4", screenshot=_shot("mlflow_chart_view.png"))
        sections = re.findall(
            r'white-space: pre;">([^<]+)</div><div class="[^"]*"[^>]*>\((\d+)\)', page
        )
        shown = [name for name, _ in sections]
        assert shown[:2] == ["test", "train"], shown  # test first, then train
        assert {"task/0", "task/1", "plasticity/agent", "System metrics"} <= set(shown), shown
        # Its first chart is test/return with a line for every trial of the sweep.
        title, lines = _first_chart(page)
        assert title == "test/return"
        assert lines == {r.info.run_name for r in runs}, lines
        page = _chart_view(
            charts.replace("knife-trials", "knife-methods"),
            tmp_path / "p5",
            screenshot=_shot("mlflow_methods_view.png"),
        )
        _, lines = _first_chart(page)
        # One line per method, the mean of its seeds. MLflow may add its "Unassigned" group:
        # the sweep's own row, which has no method tag (seen in CI, not always locally).
        assert lines - {"Unassigned"} == {"none", "knife", "scratch"}, lines
        page = _chromium(compare, tmp_path / "p2", screenshot=ARTIFACTS / "mlflow_compare_runs.png")
        assert f"Comparing {len(runs)} Runs" in page
        for name in names:
            assert name in page, f"run {name} not on the compare page"
        # the metric table (alphabetical; rows further down render on scroll)
        assert "episodes" in page and "learner_updates" in page
        assert (ARTIFACTS / "mlflow_compare_runs.png").stat().st_size > 10_000
    finally:
        # MLflow's server, uvicorn, its job runner and huey consumers: all must go with it.
        descendants = psutil.Process(ui.pid).children(recursive=True)
        stopped_at = time.monotonic()
        ui.send_signal(signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
    assert ui.returncode == 0
    assert len(descendants) >= 2  # at least mlflow server and uvicorn were watched

    def alive() -> list:
        return [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    while alive() and time.monotonic() < stopped_at + 10:
        time.sleep(0.2)
    left = [p.pid for p in alive()]
    for p in alive():
        p.kill()
    assert not left, f"left behind 10 s after SIGTERM to knife ui: {left}"
    with socket.socket() as s:  # the server (and its uvicorn child) went with it
        assert s.connect_ex(("127.0.0.1", port)) != 0


# --- resume and retry ------------------------------------------------------------------


def _two_step_sweep(name: str, seeds: list[int], steps: int, **extra) -> dict:
    raw = {
        "name": name,
        "base": {
            "algorithm": "qmix",
            "env": "matrix:two_step",
            "steps": steps,
            "training": TRAINING,
            "evaluation": {"episodes": 2, "interval": 50},
        },
        "grid": {"methods": ["none"], "seeds": seeds},
        "tune": {"max_concurrent_trials": 2, "checkpoint_every": 1, "max_failures": 2},
    }
    for key, value in extra.items():
        raw[key] = value
    return raw


def _tune_state(exp_dir: Path) -> dict[str, str]:
    """trial id -> status, from Tune's experiment state file (as --resume will read it)."""
    out = {}
    for path in exp_dir.glob("experiment_state-*.json"):
        try:
            data = json.loads(path.read_text())
            for entry in data["trial_data"]:
                trial = json.loads(entry[0])
                out[trial["trial_id"]] = trial["status"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return {}
    return out


@pytest.mark.slow  # 81 s (pytest -m slow); the default suite resumes in test_platform_preemption
def test_resume_after_killing_the_driver(tmp_path):
    runs = tmp_path / "runs"
    raw = _two_step_sweep("resume", [0, 1, 2], steps=400)
    raw["tune"]["max_concurrent_trials"] = 1  # one finishes, the next is cut mid-way
    path = write_sweep(tmp_path, raw)
    exp_dir = runs / "resume"
    # Tune saves its experiment state at most every 10 s by default; every second here, so
    # that the kill below lands on a state that already knows the running trial's checkpoint.
    env = knife_env(TUNE_GLOBAL_CHECKPOINT_S="1")
    proc = start_sweep(path, runs, tmp_path / "first.log", env)
    try:
        # Kill once Tune's saved state has a finished trial and a running one whose
        # checkpoint that state already knows about (and whose MLflow run is live).
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "sweep made no progress"
            state = _tune_state(exp_dir)
            saved_at = max(
                (p.stat().st_mtime for p in exp_dir.glob("experiment_state-*.json")), default=0.0
            )
            running = [tid for tid, st in state.items() if st == "RUNNING"]
            with_ckpt = [
                tid
                for tid in running
                for d in exp_dir.glob(f"*_{tid}")
                if any(c.stat().st_mtime < saved_at for c in d.glob("checkpoint_*"))
            ]
            live = {
                r.data.tags.get("trial_id")
                for r in trial_runs(runs, "resume")
                if r.info.status == "RUNNING"
            }
            if "TERMINATED" in state.values() and set(with_ckpt) & live:
                break
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as a crash would
        proc.wait()
    finally:
        reap(proc)
    # Tune's saved state can lag the checkpoints in a trial's folder (the worker writes the
    # folder before the driver records it): make this resume meet that case, always.
    from knife.platform.sweep_resume import forget_checkpoints

    forget_checkpoints(str(exp_dir), lambda trial: trial["status"] == "RUNNING")

    before = {r.data.tags["knife.trial_key"]: r for r in trial_runs(runs, "resume")}
    finished = {k: r for k, r in before.items() if r.info.status == "FINISHED"}
    assert finished, "no trial had finished when the driver was killed"
    assert any(r.info.status == "RUNNING" for r in before.values())  # left by the kill
    client = client_for(runs)
    finished_history = {
        k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "env_steps")]
        for k, r in finished.items()
    }

    resumed = subprocess.run(
        knife_cmd("sweep", str(path), "--runs-dir", str(runs), "--resume", "--quiet"),
        env=env,
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The run left RUNNING by the kill was closed before Tune resumed (and then reopened).
    assert "marked 1 stale RUNNING run of sweep 'resume' KILLED" in resumed.stdout
    after = trial_runs(runs, "resume")
    exp = client.get_experiment_by_name("resume")
    parents = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("knife.kind") == "sweep"
    ]
    # The same parent run, reopened by the resume and finished by it; trials stay under it.
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in after} == {parents[0].info.run_id}
    keys = [r.data.tags["knife.trial_key"] for r in after]
    assert len(after) == 3 and len(set(keys)) == 3  # exactly one run per trial
    assert all(r.info.status == "FINISHED" for r in after)
    for run in after:
        key = run.data.tags["knife.trial_key"]
        assert run.data.metrics["env_steps"] >= 400
        if key in finished:  # not re-run: same run, same history, first attempt
            assert run.info.run_id == finished[key].info.run_id
            assert run.data.tags["knife.attempts"] == "1"
            history = client.get_metric_history(run.info.run_id, "env_steps")
            assert [(m.step, m.value) for m in history] == finished_history[key]
        elif key in before:  # interrupted: same run, continued from its checkpoint
            assert run.info.run_id == before[key].info.run_id
            assert run.data.tags["knife.attempts"] == "2"
            log = (resumed.stdout + resumed.stderr)[-6000:]
            assert "knife.restored_from_iteration" in run.data.tags, log
            assert int(run.data.tags["knife.restored_from_iteration"]) >= 1
    assert any("knife.restored_from_iteration" in r.data.tags for r in after), (
        "no trial continued from a checkpoint"
    )


@pytest.mark.slow  # 73 s (pytest -m slow), as the fault-injection test's second point
def test_resume_after_the_driver_died_between_finished_and_the_final_checkpoint(tmp_path):
    """The driver is SIGKILLed exactly when a trial's MLflow run is FINISHED but Tune has
    not recorded its final checkpoint (tests/platform/fault_plugin.py): --resume must not
    train that trial again nor append to its finished history."""
    runs = tmp_path / "runs"
    uri = "sqlite:///" + str((runs / "mlflow.db").resolve())
    raw = _two_step_sweep("finished", [0], steps=300, plugins=["fault_plugin"])
    raw["tune"]["max_concurrent_trials"] = 1
    path = write_sweep(tmp_path, raw)
    fault = {
        "KNIFE_FAULT_POINT": "after_finished",
        "KNIFE_FAULT_FLAG": str(tmp_path / "killed.flag"),
        "KNIFE_FAULT_TRACKING_URI": uri,
    }
    proc = start_sweep(path, runs, tmp_path / "first.log", knife_env(**fault))
    try:
        proc.wait(timeout=SWEEP_TIMEOUT_S)
    finally:
        reap(proc)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    before = {r.data.tags["knife.trial_key"]: r for r in trial_runs(runs, "finished")}
    finished = {k: r for k, r in before.items() if r.info.status == "FINISHED"}
    assert len(finished) == 1  # the kill came right after the first trial's run ended
    client = client_for(runs)
    [(key, run)] = finished.items()
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "env_steps")]

    resumed = subprocess.run(
        knife_cmd("sweep", str(path), "--runs-dir", str(runs), "--resume", "--quiet"),
        env=knife_env(),
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {r.data.tags["knife.trial_key"]: r for r in trial_runs(runs, "finished")}
    assert len(after) == 1 and all(r.info.status == "FINISHED" for r in after.values())
    same = after[key]
    assert same.info.run_id == run.info.run_id and same.data.tags["knife.attempts"] == "1"
    again = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "env_steps")]
    assert again == history  # nothing appended
    steps = [s for s, _ in again]
    assert len(steps) == len(set(steps)) and max(steps) == 300
    # The resumed trial reported its finished run to Tune instead of training.
    results = [p.read_text() for p in (runs / "finished").glob("*/result.json")]
    assert sum('"already_finished": 1' in text for text in results) == 1


@pytest.mark.slow  # 35 s (pytest -m slow); test_cluster_multinode retries a trial by default
def test_failing_trial_is_retried_and_the_sweep_completes(tmp_path):
    runs = tmp_path / "runs"
    flag = tmp_path / "failed-once.flag"
    raw = _two_step_sweep("flaky", [0], steps=300, plugins=["flaky_env"])
    raw["base"]["env"] = "flaky:matrix:two_step"
    raw["base"]["env_config"] = {"flag_file": str(flag), "fail_after": 120}
    path = write_sweep(tmp_path, raw)
    proc = subprocess.run(
        knife_cmd("sweep", str(path), "--runs-dir", str(runs)),
        env=knife_env(),
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert flag.exists()  # it did fail once
    assert "FlakyError" in proc.stdout + proc.stderr  # and Tune said so
    runs_ = trial_runs(runs, "flaky")
    assert len(runs_) == 1
    run = runs_[0]
    assert run.info.status == "FINISHED" and run.data.metrics["env_steps"] >= 300
    assert run.data.tags["knife.attempts"] == "2"
    assert int(run.data.tags["knife.restored_from_iteration"]) >= 1
    steps = [m.step for m in client_for(runs).get_metric_history(run.info.run_id, "env_steps")]
    # the retry does not re-log the steps it retrained after its checkpoint
    assert len(steps) == len(set(steps)) and steps == sorted(steps)


def test_every_switch_sweep_branches_from_none_at_each_switch_and_resumes_after_a_kill(
    tmp_path,
):
    """grid.branch every_switch, 3 tasks, 1 seed: per seed a prefix (task 0), trained once,
    then per switch k a stage where none and knife restore none's state at the end of task
    k-1 byte-identical and train task k alone. The driver is killed while the branches of
    switch 1 run; --resume finishes that stage and starts the next, losing and duplicating
    nothing. knife report reads each method's branches of a seed as one run and pairs them.
    (grid.branch prefix runs the same stage code with uncut branches; its expansion is
    tested in test_platform_sweep_config.)"""
    runs = tmp_path / "runs"
    tasks = [
        {"env": "matrix:climbing", "steps": 100, "name": "climbing"},
        {"env": "matrix:penalty", "steps": 100, "name": "penalty"},
        {
            "env": "matrix:climbing",
            "env_config": {"permute": [[1, 2, 0], [0, 2, 1]]},
            "steps": 100,
            "name": "climbing_moved",
        },
    ]
    grid = {"methods": ["none", "knife"], "seeds": [0], "sequences": {"three": tasks}}
    raw = {**CI_SWEEP, "name": "switches", "grid": {**grid, "branch": "every_switch"}}
    path = write_sweep(tmp_path, raw)
    env = knife_env(TUNE_GLOBAL_CHECKPOINT_S="1")
    proc = start_sweep(path, runs, tmp_path / "first.log", env)
    try:
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while True:  # kill once a branch of switch 1 has a live MLflow run
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the branches never started"
            live = [
                r
                for r in trial_runs(runs, "switches")
                if r.info.status == "RUNNING" and r.data.tags.get("knife.branch_task") == "1"
            ]
            if live:
                break
            time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        reap(proc, grace=0.0)
    resumed = subprocess.run(
        knife_cmd("sweep", str(path), "--runs-dir", str(runs), "--resume", "--quiet"),
        env=env,
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    after = trial_runs(runs, "switches")
    assert all(r.info.status == "FINISHED" for r in after)
    by_label = {r.data.tags["trial_label"]: r for r in after}
    assert len(by_label) == len(after)  # one run per trial
    assert sorted(by_label) == [
        "knife-s0-three-sw1",
        "knife-s0-three-sw2",
        "none-s0-three-sw1",
        "none-s0-three-sw2",
        "prefix-s0-three",
    ]  # the prefix once per seed, one branch per method and switch
    assert by_label["prefix-s0-three"].data.tags["knife.attempts"] == "1"
    client = client_for(runs)
    components = ("networks", "optimizer", "replay_buffer", "rng")
    for method in ("none", "knife"):
        for k, parent in ((1, "prefix-s0-three"), (2, "none-s0-three-sw1")):
            run, source = by_label[f"{method}-s0-three-sw{k}"], by_label[parent]
            assert run.data.tags["knife.branch_of"] == source.info.run_id
            assert run.data.tags["knife.branch_task"] == str(k)
            for c in components:  # it starts from none's end of task k-1, byte for byte
                assert (
                    run.data.tags[f"knife.branch_state/{c}"]
                    == source.data.tags[f"knife.branch_end_state/{c}"]
                ), (method, k, c)
            assert run.data.metrics[f"task/{k}/start_env_steps"] == 100.0 * k
            assert run.data.metrics["env_steps"] == 100.0 * (k + 1)  # task k, then it stops
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "env_steps")]
            assert len(steps) == len(set(steps)), (method, k)  # nothing logged twice

        # The prefix's history, copied once: task 0's curve is the prefix's, step by step.
        def task0(label: str) -> list[tuple[int, float]]:
            history = client.get_metric_history(by_label[label].info.run_id, "task/0/test_return")
            return sorted((m.step, m.value) for m in history)

        mine = task0(f"{method}-s0-three-sw1")
        assert mine == task0("prefix-s0-three") and len({s for s, _ in mine}) == len(mine)
    sw1 = {m: by_label[f"{m}-s0-three-sw1"].data.metrics for m in ("none", "knife")}
    interventions = "plasticity/interventions"
    assert sw1["none"][interventions] == 0 and sw1["knife"][interventions] >= 1  # knife acted
    ends = [label for label, r in by_label.items() if "knife.branch_end_state/rng" in r.data.tags]
    assert sorted(ends) == ["none-s0-three-sw1", "prefix-s0-three"]  # what a later stage continues
    out = tmp_path / "report"
    report = report_without_mlflow(runs, "switches", out)
    assert "2 finished trial runs" in report.stdout, report.stdout[-2000:]
    rows = {(r["method"], r["seed"], r["task"]): r for r in csv.DictReader(open(out / "runs.csv"))}
    assert sorted(rows) == [(m, "0", str(k)) for m in ("knife", "none") for k in range(3)]
    for method in ("none", "knife"):
        for k in (1, 2):  # task k of a method is its branch of switch k
            run = by_label[f"{method}-s0-three-sw{k}"]
            row = rows[(method, "0", str(k))]
            assert run.info.run_id in row["run_id"].split("+")
            want = run.data.metrics[f"task/{k}/final_test_return"]
            assert float(row["final_return"]) == pytest.approx(want)
    assert rows[("none", "0", "0")]["final_return"] == rows[("knife", "0", "0")]["final_return"]
    paired = list(csv.DictReader(open(out / "paired.csv")))
    assert {(r["method"], r["against"], r["seeds"]) for r in paired} == {("knife", "none", "1")}

"""`knife sweep --address` on a real two-node Ray cluster on this machine (issue 6).

A head (`ray start --head` on 127.0.0.1, 1 CPU) and a second node that joins it (`ray start
--address`, 1 CPU and its own resource), both with Ray's token authentication on (a token
made for this test, passed by environment), and an `mlflow server` on loopback (SQLite in a
temporary folder). `knife sweep --address` runs a tiny sweep there with
MLFLOW_TRACKING_URI=http://127.0.0.1:PORT; every trial tags its MLflow run with the Ray node
it ran on (`ray_node_id`, and per attempt `knife.attempt/<n>/ray_node_id`).

Then the second node is killed (SIGKILL to every process of that node) while one of its
trials runs: Tune retries the trial on the head from its last checkpoint, and the sweep ends
with exactly one FINISHED MLflow run per trial.

Each node runs as `ray start --block` in a session of its own, so the test ends exactly the
processes it started (never `ray stop`, which would stop every Ray on the machine). Ray's
temporary folder is a fresh short one (TMPDIR and --temp-dir), so no other process on this
machine sees these nodes through /tmp/ray/ray_current_cluster.

Run alone: `python -m pytest -q tests/platform/test_cluster_multinode.py` (about 2-3 minutes
on 2 cores).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_platform_sweep_e2e import _free_port, _two_step_sweep, write_sweep

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.own_ray]

TOKEN = secrets.token_hex(16)
START_TIMEOUT_S = 120
SWEEP_TIMEOUT_S = 420


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"port {port} not open: {log.read_text()[-3000:]}"
        time.sleep(0.5)


def session_pids(sid: int) -> list[int]:
    import psutil

    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.info["pid"]) == sid:
                out.append(proc.info["pid"])
        except OSError:
            continue
    return out


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the session that `proc` leads (it was started with
    start_new_session), as a machine that loses power would."""
    for pid in session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def stop_node(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to `ray start --block` (it stops its node's processes), then SIGKILL to
    whatever of its session is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + grace
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill_session(proc)


def cluster_env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "KNIFE_STORAGE_PATH")
        and not k.startswith("RAY_AUTH_")
    }
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=TOKEN,
        TMPDIR=str(tmp),  # Ray's default temp root: nothing of ours in /tmp/ray
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def ray_cmd(*args: str) -> list[str]:
    ray = Path(sys.executable).with_name("ray")
    return [str(ray) if ray.exists() else "ray", *args]


def list_nodes(address: str, env: dict[str, str]) -> list[dict]:
    """The cluster's alive nodes, read by a separate driver (this test process keeps its
    own embedded Ray, if any, untouched)."""
    code = (
        "import json, ray\n"
        f"ray.init(address={address!r}, log_to_driver=False)\n"
        "print('NODES=' + json.dumps([{'id': n['NodeID'], 'resources': n['Resources']}\n"
        "    for n in ray.nodes() if n['Alive']]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("NODES="))
    return json.loads(line.removeprefix("NODES="))


@pytest.fixture(scope="module")
def cluster():
    # Short path: Ray's unix sockets live below it (108-byte limit).
    tmp = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    env = cluster_env(tmp)
    port, mlflow_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--block"]
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        log = tmp / f"{name}.log"
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=tmp,
            stdout=open(log, "w"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    try:
        head = start(
            "head",
            ray_cmd(
                "start",
                "--head",
                f"--port={port}",
                f"--temp-dir={tmp / 'ray'}",
                "--include-dashboard=false",
                f"--dashboard-agent-listen-port={_free_port()}",
                '--resources={"head_node": 1}',
                *common,
            ),
        )
        wait_port(port, head, tmp / "head.log", START_TIMEOUT_S)
        worker = start(
            "worker",
            ray_cmd(
                "start",
                f"--address={address}",
                f"--dashboard-agent-listen-port={_free_port()}",
                '--resources={"worker_node": 1}',
                *common,
            ),
        )
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        mlflow = start(
            "mlflow",
            [
                str(mlflow_bin) if mlflow_bin.exists() else "mlflow",
                "server",
                "--host=127.0.0.1",
                f"--port={mlflow_port}",
                f"--backend-store-uri=sqlite:///{tmp / 'mlflow.db'}",
                f"--artifacts-destination={tmp / 'mlartifacts'}",
                "--workers=1",
            ],
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            nodes = list_nodes(address, env)
            if len(nodes) == 2:
                break
            assert worker.poll() is None, (tmp / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"second node never joined: {nodes}"
            time.sleep(2.0)
        head_id = next(n["id"] for n in nodes if "head_node" in n["resources"])
        worker_id = next(n["id"] for n in nodes if "worker_node" in n["resources"])
        wait_port(mlflow_port, mlflow, tmp / "mlflow.log", START_TIMEOUT_S)
        yield SimpleNamespace(
            tmp=tmp,
            env=env,
            address=address,
            tracking_uri=f"http://127.0.0.1:{mlflow_port}",
            head=head,
            worker=worker,
            head_id=head_id,
            worker_id=worker_id,
        )
    finally:
        for proc in reversed(procs):
            stop_node(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_file(folder: Path, name: str, seeds: list[int], steps: int) -> Path:
    """The resume/retry tests' sweep: QMIX on the two-step game, 2 trials at a time,
    a checkpoint every iteration, 2 retries per trial."""
    return write_sweep(folder, _two_step_sweep(name, seeds, steps))


def sweep_cmd(cluster, path: Path, storage: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "knife.platform.cli",
        "sweep",
        str(path),
        "--address",
        cluster.address,
        "--runs-dir",
        str(cluster.tmp / "driver-runs"),
        "--storage-path",
        storage,
        "--quiet",
    ]


def trial_runs(tracking_uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    found = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in found if r.data.tags.get("knife.kind") == "trial"]


def test_sweep_runs_trials_on_both_nodes_into_one_mlflow_server(cluster):
    path = sweep_file(cluster.tmp, "twonode", seeds=[0, 1, 2, 3], steps=150)
    # Tune's folder through a URI, as s3:// or gs:// would be on a cloud (here: the local
    # disk both nodes share, like NFS).
    storage = (cluster.tmp / "shared").as_uri()
    t0 = time.monotonic()
    proc = subprocess.run(
        sweep_cmd(cluster, path, storage),
        env={**cluster.env, "MLFLOW_TRACKING_URI": cluster.tracking_uri},
        cwd=cluster.tmp,
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    print(f"two-node sweep: {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = trial_runs(cluster.tracking_uri, "twonode")
    assert len(runs) == 4
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1", "2", "3"]
    assert len({r.data.tags["knife.trial_key"] for r in runs}) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.metrics["env_steps"] >= 150 for r in runs)
    nodes = {r.data.tags["ray_node_id"] for r in runs}
    assert nodes == {cluster.head_id, cluster.worker_id}
    assert all(r.data.tags["ray_node_host"] == socket.gethostname() for r in runs)
    # Tune's trial folders and checkpoints went to the storage path, not the driver's folder
    shared = cluster.tmp / "shared" / "twonode"
    assert len(list(shared.glob("*/checkpoint_*"))) >= 4
    outcomes = json.loads(
        (cluster.tmp / "driver-runs" / "twonode" / "sweep_summary.json").read_text()
    )
    assert {o["mlflow_run_id"] for o in outcomes} == {r.info.run_id for r in runs}
    # nothing went to a local store: the server is the one store
    assert not (cluster.tmp / "driver-runs" / "mlflow.db").exists()
    assert TOKEN not in proc.stdout + proc.stderr


def _worker_trial_with_checkpoint(cluster, experiment: str, shared: Path) -> str | None:
    """The trial id of a RUNNING trial on the second node that has a checkpoint."""
    for run in trial_runs(cluster.tracking_uri, experiment):
        tags = run.data.tags
        if run.info.status != "RUNNING" or tags.get("ray_node_id") != cluster.worker_id:
            continue
        trial_id = tags["trial_id"]
        if any(shared.glob(f"*_{trial_id}/checkpoint_*")):
            return trial_id
    return None


def test_killing_the_second_node_mid_sweep_retries_its_trial_on_the_head(cluster):
    """Runs after the test above (same cluster); the second node does not come back."""
    path = sweep_file(cluster.tmp, "nodeloss", seeds=[0, 1, 2], steps=600)
    shared = cluster.tmp / "shared-nodeloss"
    log = cluster.tmp / "nodeloss.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            sweep_cmd(cluster, path, str(shared)),
            env={**cluster.env, "MLFLOW_TRACKING_URI": cluster.tracking_uri},
            cwd=cluster.tmp,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        victim = None
        while victim is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial on the second node checkpointed"
            victim = _worker_trial_with_checkpoint(cluster, "nodeloss", shared / "nodeloss")
            time.sleep(0.5)
        kill_session(cluster.worker)  # the node's raylet, its workers, everything
        t_kill = time.monotonic()
        rc = proc.wait(timeout=SWEEP_TIMEOUT_S)
        print(f"sweep finished {time.monotonic() - t_kill:.1f} s after the node was killed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_session(proc)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    runs = trial_runs(cluster.tracking_uri, "nodeloss")
    keys = [r.data.tags["knife.trial_key"] for r in runs]
    assert len(runs) == 3 and len(set(keys)) == 3  # none lost, none duplicated
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.metrics["env_steps"] >= 600 for r in runs)
    retried = next(r for r in runs if r.data.tags["trial_id"] == victim)
    tags = retried.data.tags
    assert int(tags["knife.attempts"]) >= 2
    assert tags["knife.attempt/1/ray_node_id"] == cluster.worker_id
    last = tags["knife.attempts"]
    assert tags[f"knife.attempt/{last}/ray_node_id"] == cluster.head_id
    assert tags["ray_node_id"] == cluster.head_id
    assert int(tags["knife.restored_from_iteration"]) >= 1  # continued from its checkpoint


def test_storage_path_flag_env_and_uris(tmp_path, monkeypatch):
    """--storage-path (or $KNIFE_STORAGE_PATH) moves Tune's folder; URIs pass unchanged."""
    from knife.platform.cli import build_parser
    from knife.platform.config import ConfigError
    from knife.platform.sweep import storage_root

    args = build_parser().parse_args(["sweep", "x.yaml", "--storage-path", "s3://b/p"])
    assert args.storage_path == "s3://b/p"
    monkeypatch.delenv("KNIFE_STORAGE_PATH", raising=False)
    assert storage_root(tmp_path / "runs") == str((tmp_path / "runs").resolve())
    assert storage_root(tmp_path, "gs://bucket/knife/") == "gs://bucket/knife"
    monkeypatch.chdir(tmp_path)
    assert storage_root("runs", "nfs/tune") == str(tmp_path.resolve() / "nfs" / "tune")
    monkeypatch.setenv("KNIFE_STORAGE_PATH", "s3://from-env/tune")
    assert storage_root("runs") == "s3://from-env/tune"
    assert storage_root("runs", "s3://flag/tune") == "s3://flag/tune"  # the flag wins
    with pytest.raises(ConfigError, match="password"):
        storage_root("runs", "s3://user:secret@bucket/p")

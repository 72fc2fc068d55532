"""`knife train` command line: bad input stops before Ray; one real short trial (e2e)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform import cli  # noqa: E402
from knife.platform.config import ConfigError, TrialConfig  # noqa: E402
from knife.platform.train import make_run_dir, run_dir_name, run_trial  # noqa: E402

GOOD = """\
algorithm: qmix
env: matrix:two_step
steps: 1000
"""

# (yaml text, --set overrides, substrings of the error)
BAD_INPUTS = {
    "unknown env": (
        GOOD.replace("matrix:two_step", "foo:bar"),
        [],
        ["env:", "foo:bar", "matrix:two_step"],
    ),
    "ragged payoff": (
        GOOD.replace("matrix:two_step", "matrix:custom") + "env_config: {payoff: [[1, 2], [3]]}\n",
        [],
        ["env_config.payoff"],
    ),
    "negative steps": (GOOD, ["steps=-100"], ["steps:", "> 0"]),
    "absurd steps": (GOOD, ["steps=100000000000"], ["steps: at most 1e+10 env steps"]),
    "unknown mixer": (GOOD, ["algorithm=qtran"], ["algorithm: unknown 'qtran'", "qmix, vdn"]),
    "unknown override": (GOOD, ["training.lrr=1"], ["training.lrr", "allowed: lr"]),
    "bad hyperparameter": (GOOD, ["training.gamma=2"], ["training.gamma", "(0, 1]"]),
    "ambiguous plasticity key": (
        GOOD + "plasticity: {method: redo, tau: 0.1}\n",
        [],
        ["plasticity.tau: ambiguous", "plasticity.monitor.tau", "plasticity.options.redo.tau"],
    ),
    "unknown plasticity option": (
        GOOD,
        ["plasticity.options.knife.taux=0.1"],
        ["plasticity.options.knife.taux", "allowed:", "max_fraction"],
    ),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text(text)
    return path


def _argv(path: Path, runs: Path, overrides: list[str]) -> list[str]:
    argv = ["train", str(path), "--runs-dir", str(runs), "--no-progress"]
    for item in overrides:
        argv += ["--set", item]
    return argv


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_config_exits_2_with_message(tmp_path, capsys, case):
    text, overrides, expected = BAD_INPUTS[case]
    runs = tmp_path / "runs"
    assert cli.main(_argv(_write(tmp_path, text), runs, overrides)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    for part in expected:
        assert part in err, f"{part!r} not in {err!r}"
    assert not runs.exists()  # nothing written before validation passed


def test_bad_config_never_imports_ray(tmp_path):
    # A fresh interpreter, so other tests' imports do not hide an import of ray.
    runs = tmp_path / "runs"
    paths = []
    for i, (text, overrides, _) in enumerate(BAD_INPUTS.values()):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text)
        paths.append((str(path), overrides))
    script = textwrap.dedent(
        f"""
        import json, sys
        from knife.platform.cli import main
        codes = [main(["train", p, "--runs-dir", {str(runs)!r}] +
                      [a for o in ov for a in ("--set", o)])
                 for p, ov in json.loads(sys.argv[1])]
        print(json.dumps({{"codes": codes, "ray": "ray" in sys.modules,
                          "mlflow": "mlflow" in sys.modules}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"codes": [2] * len(paths), "ray": False, "mlflow": False}
    assert proc.stderr.count("error: ") == len(paths)
    assert elapsed < 30  # no Ray start-up hidden in there
    assert not runs.exists()


def test_console_entry_point_via_python_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "knife.platform.cli", "train", str(tmp_path / "missing.yaml")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "error: config file not found" in proc.stderr


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--set", "--runs-dir", "--tracking-uri", "--experiment", "--no-progress"):
        assert flag in out


def test_train_resume_refuses_bad_input_before_ray(tmp_path, capsys):
    cases = [
        (["train"], "CONFIG: give a trial config YAML"),
        (["train", "--resume", str(tmp_path / "nope")], "--resume: no run folder"),
        (["train", "x.yaml", "--resume", str(tmp_path)], "--resume: continues the run as it"),
        (["train", "--resume", str(tmp_path)], "config.yaml"),  # a folder without its config
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)


def test_runs_dir_default_and_env(monkeypatch):
    monkeypatch.delenv("KNIFE_RUNS_DIR", raising=False)
    assert cli.default_runs_dir() == Path("runs")
    monkeypatch.setenv("KNIFE_RUNS_DIR", "/tmp/elsewhere")
    assert cli.default_runs_dir() == Path("/tmp/elsewhere")


def test_run_trial_revalidates_a_hand_built_config(tmp_path):
    cfg = TrialConfig(algorithm="qmix", env="matrix:two_step", steps=-1)
    with pytest.raises(ConfigError, match="steps"):
        run_trial(cfg, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_run_dir_names(tmp_path):
    cfg = TrialConfig(algorithm="vdn", env="matrix:two_step", steps=10, seed=3)
    assert run_dir_name(cfg).startswith("vdn-matrix_two_step-s3-")
    named = TrialConfig(algorithm="vdn", env="matrix:two_step", steps=10, name="mine")
    assert run_dir_name(named) == "mine"
    first = make_run_dir(tmp_path, "exp", "mine")
    second = make_run_dir(tmp_path, "exp", "mine")
    assert first == tmp_path.resolve() / "exp" / "mine" and second.name == "mine-1"


def test_algorithm_factory_kwargs_match_qmix_config():
    from knife.platform.algorithm_factory import training_kwargs
    from knife.platform.config import parse_trial_config

    cfg = parse_trial_config(
        {
            "algorithm": "vdn",
            "env": "matrix:two_step",
            "steps": 10,
            "evaluation": {"episodes": 3, "interval": 77},
        }
    )
    kwargs = training_kwargs(cfg)
    assert kwargs["algorithm"] == "vdn" and kwargs["test_episodes"] == 3
    assert kwargs["test_interval"] == 77
    assert "device" not in kwargs  # the platform resolves it into .learners()
    from knife.policies import QMixConfig
    from knife.policies.schema import ALGORITHM_KEYS

    # Every keyword is one the schema gives QMixConfig, and QMixConfig takes it.
    assert set(kwargs) <= set(ALGORITHM_KEYS)
    config = QMixConfig().training(**kwargs)
    assert (config.algorithm, config.test_interval) == ("vdn", 77)


@pytest.mark.e2e
def test_knife_train_two_step_end_to_end(tmp_path, ray_local, monkeypatch):
    """A short real trial: summary.json, config.yaml, checkpoint and one MLflow run."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    rc = cli.main(
        [
            "train",
            str(ROOT / "tune_configs" / "train_two_step.yaml"),
            "--runs-dir",
            str(runs),
            "--no-progress",
            "--set",
            "steps=1000",
            "--set",
            "evaluation.interval=500",
            "--set",
            "name=e2e",
            "--set",
            "training.system_metrics_interval_s=1",
        ]
    )
    assert rc == 0
    run_dir = runs / "train" / "e2e"
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "algorithm",
        "env",
        "env_steps",
        "final",
        "wall_seconds",
        "mlflow_run_id",
    ):
        assert key in summary
    assert summary["algorithm"] == "qmix" and summary["env"] == "matrix:two_step"
    # the final values under the names MLflow and Tune show
    assert summary["env_steps"] >= 1000 and summary["final"]["test/win_rate"] is None
    assert (run_dir / "config.yaml").exists() and Path(summary["checkpoint"]).is_dir()

    client = MlflowClient(tracking_uri="sqlite:///" + str((runs / "mlflow.db").resolve()))
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["training.td_lambda"] == "0.0" and run.data.tags["algorithm"] == "qmix"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/return")]
    assert steps and steps == sorted(steps) and steps[-1] == summary["env_steps"]
    for key in ("test/return", "train/loss", "train/epsilon", "train/env_steps_per_s"):
        assert key in run.data.metrics, key
    assert summary["final"]["test/return"] == run.data.metrics["test/return"]
    # MLflow's system metrics, one sample a second while it trained.
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 2 and all(0 <= m.value <= 100 for m in cpu)
    assert "system/system_memory_usage_megabytes" in run.data.metrics


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize(
    "content",
    [b"algorithm: qmix\nenv: matrix:\xe9\xff\n", b"\x89PNG\r\n\x1a\n\x00\x00\xff"],
    ids=["latin-1", "binary"],
)
def test_unreadable_config_file_exits_2_naming_it(tmp_path, capsys, command, content):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    runs = tmp_path / "runs"
    assert cli.main([command, str(path), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and "UTF-8" in err
    assert "Traceback" not in err and not runs.exists()


def test_directory_as_config_exits_2(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path) in err


@pytest.mark.own_ray
def test_sigterm_to_knife_train_checkpoints_and_resume_finishes_it(tmp_path):
    """A preempted cloud machine sends SIGTERM: the trial stops after its iteration, writes
    a verified checkpoint, ends its run KILLED, exits 143 without a stack dump; then
    `knife train --resume RUN_DIR` finishes the same run at its budget, no step logged twice."""
    import signal
    import sqlite3

    from mlflow import MlflowClient

    from knife.platform.checkpoints import verify_checkpoint

    runs = tmp_path / "runs"
    budget = 2000
    argv = [sys.executable, "-m", "knife.platform.cli", "train"]
    argv += [str(ROOT / "tune_configs" / "train_two_step.yaml"), "--runs-dir", str(runs)]
    argv += ["--no-progress", "--set", f"steps={budget}", "--set", "name=preempted"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        n_metrics = 0
        while time.monotonic() < deadline and n_metrics < 5:  # training has started
            time.sleep(0.2)
            with contextlib.suppress(sqlite3.Error):
                db = sqlite3.connect(runs / "mlflow.db")
                n_metrics = db.execute("select count(*) from metrics").fetchone()[0]
                db.close()
        assert n_metrics >= 5, "training never started"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "Fatal Python error" not in err and "*** " not in err
    assert "stopped (SIGTERM)" in err and "knife train --resume" in out
    run_dir = runs / "train" / "preempted"
    verify_checkpoint(run_dir / "checkpoint")  # whole: every file matches its manifest
    client = MlflowClient(tracking_uri="sqlite:///" + str((runs / "mlflow.db").resolve()))
    [run] = client.search_runs(client.get_experiment_by_name("train").experiment_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["interrupted_checkpoint"] == str(run_dir / "checkpoint")
    stopped_at = int(run.data.tags["knife.stopped_at"])
    before = client.get_metric_history(run.info.run_id, "env_steps")
    assert 0 < before[-1].value < budget, "the notice came after the trial had finished"

    resumed = subprocess.run(
        [*argv[:4], "--resume", str(run_dir), "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["knife.attempts"] == "2"
    assert int(run.data.tags["knife.restored_from_iteration"]) == stopped_at
    history = client.get_metric_history(run.info.run_id, "env_steps")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)  # nothing logged twice
    assert history[-1].value == budget
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == budget
    # Resuming a finished run trains nothing and says so.
    again = subprocess.run(
        [*argv[:4], "--resume", str(run_dir), "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0 and "is FINISHED; not training it again" in again.stdout
    assert len(client.get_metric_history(run.info.run_id, "env_steps")) == len(history)

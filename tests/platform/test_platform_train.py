"""run_trial's loop, summary and failure handling with a stand-in algorithm (Ray not started)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform import train  # noqa: E402
from knife.platform.config import parse_trial_config  # noqa: E402

CFG = parse_trial_config(
    {"algorithm": "qmix", "env": "matrix:two_step", "steps": 250, "seed": 1, "name": "fake"}
)


class FakeAlgo:
    """Emits result_metrics-shaped dicts; 100 env steps per train() call."""

    def __init__(self, results=None):
        self.results = results
        self.calls = 0
        self.stopped = False
        self.saved_to = None

    def train(self):
        self.calls += 1
        if self.results is not None:
            return self.results[min(self.calls, len(self.results)) - 1]
        steps = 100 * self.calls
        out = {
            "env_steps": steps,
            "train/return": float(self.calls),
            "loss": 0.1,
            "train/epsilon": 0.5,
            "train/env_steps_per_s": 1000.0,
            "learner_updates": self.calls,
            "td_error_abs": 0.2,
        }
        # As QMix.train(): a test record when a test runs (every other iteration here);
        # the flat result repeats the latest test until the next one.
        tested = self.calls if self.calls % 2 else self.calls - 1
        out["test/return"] = 7.0 + tested
        out["test/at_env_steps"] = 100 * tested
        if tested == self.calls:
            out["test_records"] = [(100 * tested, {"test/return": 7.0 + tested})]
        return out

    def save_to_path(self, path):
        self.saved_to = path
        Path(path).mkdir(parents=True)
        return path

    def stop(self):
        self.stopped = True


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient("sqlite:///" + str(db)).search_experiments()
    return db


@pytest.fixture
def fake(monkeypatch, tmp_path, empty_store):
    """Patch Ray start/stop, the algorithm builder and result_metrics (identity)."""
    import knife.platform.algorithm_factory as factory
    import knife.platform.ray_runtime as runtime

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "runs").mkdir()
    shutil.copyfile(empty_store, tmp_path / "runs" / "mlflow.db")
    holder = {"algo": FakeAlgo(), "ray": []}
    monkeypatch.setattr(
        runtime, "start_ray", lambda address=None: holder["ray"].append("up") or True
    )
    monkeypatch.setattr(runtime, "stop_ray", lambda: holder["ray"].append("down"))
    monkeypatch.setattr(factory, "build_algorithm", lambda cfg: holder["algo"])
    policies = pytest.importorskip("knife.policies")
    monkeypatch.setattr(policies, "result_metrics", lambda result: dict(result))
    return holder


def _client(tmp_path):
    from mlflow import MlflowClient

    return MlflowClient("sqlite:///" + str((tmp_path / "runs" / "mlflow.db").resolve()))


def test_loop_summary_and_mlflow(fake, tmp_path, capsys):
    summary = train.run_trial(CFG, tmp_path / "runs", experiment="exp", progress=True)
    run_dir = tmp_path.resolve() / "runs" / "exp" / "fake"
    algo = fake["algo"]
    assert algo.calls == 3 and algo.stopped and fake["ray"] == ["up", "down"]
    # Saved beside the checkpoint folder, then swapped in whole with its manifest.
    assert algo.saved_to == str(run_dir / "checkpoint.partial" / "algorithm")
    assert (run_dir / "checkpoint" / "manifest.json").is_file()
    assert summary["env_steps"] == 300 and summary["learner_updates"] == 3
    assert summary["final"]["test/return"] == 10.0  # call 3; NaN in between is not a test
    assert summary["final"]["test/win_rate"] is None  # two-step has no win
    assert summary["run_dir"] == str(run_dir)
    assert summary["checkpoint"] == str(run_dir / "checkpoint")
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert "algorithm: qmix" in (run_dir / "config.yaml").read_text()
    assert json.loads(capsys.readouterr().out) == summary  # printed

    # The sweep trial's summary fields and plots, from the same trial loop.
    assert summary["method"] == "none" and summary["attempts"] == 1
    assert summary["platform_overhead"] >= 0 and summary["train_seconds"] >= 0

    client = _client(tmp_path)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "fake"
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/learning_curve.png", "plots/stagnant_fraction.png"}
    assert run.data.tags["run_dir"] == str(run_dir)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/return")] == [
        100,
        200,
        300,
    ]
    assert [
        (m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test/return")
    ] == [
        (100, 8.0),
        (300, 10.0),
    ]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "config.yaml",
        "summary.json",
    }


def test_win_rate_is_kept_when_present(fake, tmp_path):
    fake["algo"] = FakeAlgo(
        [
            {
                "env_steps": 200,
                "test/return": 1.0,
                "test/win_rate": 0.25,
                "test_records": [(150, {"test/return": 1.0, "test/win_rate": 0.25})],
            },
            {
                "env_steps": 400,
                "test/return": 2.0,
                "test/win_rate": 0.5,
                "test_records": [(350, {"test/return": 2.0, "test/win_rate": 0.5})],
            },
        ]
    )
    summary = train.run_trial(CFG, tmp_path / "runs", progress=False, echo=False)
    assert summary["final"]["test/win_rate"] == 0.5 and summary["final"]["test/return"] == 2.0


def test_failure_ends_run_failed_and_keeps_files(fake, tmp_path):
    class Boom(FakeAlgo):
        def train(self):
            if self.calls == 1:
                raise RuntimeError("learner exploded")
            return super().train()

    fake["algo"] = Boom()
    with pytest.raises(RuntimeError, match="learner exploded"):
        train.run_trial(CFG, tmp_path / "runs", progress=False, echo=False)
    run_dir = tmp_path / "runs" / "train" / "fake"
    assert (run_dir / "config.yaml").exists() and not (run_dir / "summary.json").exists()
    assert fake["algo"].stopped and fake["ray"] == ["up", "down"]
    runs = _client(tmp_path).search_runs(
        [_client(tmp_path).get_experiment_by_name("train").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def test_stalled_env_steps_stop_the_loop(fake, tmp_path, monkeypatch):
    from knife.platform import trial_loop

    monkeypatch.setattr(trial_loop, "MAX_STALLED_ITERATIONS", 3)
    fake["algo"] = FakeAlgo([{"env_steps": 10}])
    with pytest.raises(RuntimeError, match="no new env steps"):
        train.run_trial(CFG, tmp_path / "runs", progress=False, echo=False)
    assert fake["algo"].stopped


def test_missing_env_steps_is_an_error(fake, tmp_path):
    fake["algo"] = FakeAlgo([{"train/return": 1.0}])
    with pytest.raises(RuntimeError, match="env_steps"):
        train.run_trial(CFG, tmp_path / "runs", progress=False, echo=False)

"""`knife train` on a task sequence: summary.json lists every task; MLflow has task metrics."""

from __future__ import annotations

import json

import pytest
import yaml

from knife.platform import cli


@pytest.mark.e2e
def test_knife_train_on_a_two_task_sequence(tmp_path, ray_local, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {
        "algorithm": "vdn",
        "name": "seq",
        "tasks": {
            "name": "two_payoffs",
            "tasks": [
                {"env": "matrix:climbing", "steps": 300},
                {"env": "matrix:penalty", "env_config": {"k": -10}, "steps": 300},
            ],
        },
        "training": {"epsilon_anneal_steps": 200, "target_update_interval": 50},
        "evaluation": {"episodes": 2, "interval": 100},
        "plasticity": {"method": "redo"},
    }
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    assert cli.main(["train", str(path), "--runs-dir", str(runs), "--no-progress"]) == 0

    summary = json.loads((runs / "train" / "seq" / "summary.json").read_text())
    assert summary["env_steps"] >= 600 and summary["sequence"] == "two_payoffs"
    tasks = summary["tasks"]
    assert [t["env"] for t in tasks] == ["matrix:climbing", "matrix:penalty"]
    assert [t["steps"] for t in tasks] == [300, 300]
    assert tasks[0]["start_env_steps"] == 0 and tasks[1]["start_env_steps"] >= 300
    for task in tasks:
        assert task["final_test_return"] is not None and task["auc"] is not None
        assert task["final_test_win_rate"] is None  # matrix games have no win

    client = MlflowClient(tracking_uri="sqlite:///" + str((runs / "mlflow.db").resolve()))
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.tags["sequence"] == "two_payoffs" and run.data.tags["method"] == "redo"
    for key in ("task_index", "task/1/final_test_return", "plasticity/interventions"):
        assert key in run.data.metrics, key
    assert run.data.metrics["plasticity/interventions"] == 1.0  # ReDo fired at the switch

"""`knife train` on a task sequence: summary.json lists every task; MLflow has task metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from knife.platform import cli


def _train(tmp_path, monkeypatch, config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Run `knife train` on `config`; its summary.json and its MLflow run."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    assert cli.main(["train", str(path), "--runs-dir", str(runs), "--no-progress"]) == 0
    summary = json.loads((runs / "train" / config["name"] / "summary.json").read_text())
    client = MlflowClient(tracking_uri="sqlite:///" + str((runs / "mlflow.db").resolve()))
    return summary, client.get_run(summary["mlflow_run_id"])


@pytest.mark.e2e
def test_knife_train_on_a_two_task_sequence(tmp_path, ray_local, monkeypatch):
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
    summary, run = _train(tmp_path, monkeypatch, config)
    assert summary["env_steps"] >= 600 and summary["sequence"] == "two_payoffs"
    tasks = summary["tasks"]
    assert [t["env"] for t in tasks] == ["matrix:climbing", "matrix:penalty"]
    assert [t["steps"] for t in tasks] == [300, 300]
    assert tasks[0]["start_env_steps"] == 0 and tasks[1]["start_env_steps"] >= 300
    for task in tasks:
        assert task["final_test_return"] is not None and task["auc"] is not None
        assert task["final_test_win_rate"] is None  # matrix games have no win

    assert run.data.tags["sequence"] == "two_payoffs" and run.data.tags["method"] == "redo"
    for key in ("task_index", "task/1/final_test_return", "plasticity/interventions"):
        assert key in run.data.metrics, key
    assert run.data.metrics["plasticity/interventions"] == 1.0  # ReDo fired at the switch


@pytest.mark.e2e
def test_knife_train_on_a_repeated_sequence_reports_every_visit(tmp_path, ray_local, monkeypatch):
    """tasks.repeat 2: four task indices, each with its own results, named by visit."""
    relabelled = {"permute": [[1, 2, 0], [0, 2, 1]]}
    config = {
        "algorithm": "qmix",
        "name": "rep",
        "tasks": {
            "name": "ab_twice",
            "repeat": 2,
            "tasks": [
                {"env": "matrix:climbing", "steps": 60, "name": "a"},
                {"env": "matrix:climbing", "env_config": relabelled, "steps": 60, "name": "b"},
            ],
        },
        "training": {"epsilon_anneal_steps": 40, "batch_size": 8, "learning_starts": 8},
        "evaluation": {"episodes": 1, "interval": 30},
    }
    summary, run = _train(tmp_path, monkeypatch, config)
    tasks = summary["tasks"]
    assert [(t["index"], t["name"]) for t in tasks] == [(0, "a"), (1, "b"), (2, "a#2"), (3, "b#2")]
    starts = [t["start_env_steps"] for t in tasks]
    assert starts[0] == 0 and all(s >= 60 * i for i, s in enumerate(starts))
    assert all(t["final_test_return"] is not None and t["auc"] is not None for t in tasks)
    assert run.data.tags["task"] == "a -> b -> a#2 -> b#2"
    assert "task/3/final_test_return" in run.data.metrics

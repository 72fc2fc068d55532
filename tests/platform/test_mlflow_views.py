"""The saved MLflow views knife writes (knife.platform.mlflow_views); the browser side is
test_ui_serves_the_sweep_to_headless_chromium."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from knife.platform import mlflow_views as mv
from knife.platform.tracking import MlflowStore

KEYS = [
    "env_steps",
    "system/cpu_utilization_percentage",
    "plasticity/agent/stagnant_fraction",
    "task/1/auc",
    "task/0/auc",
    "train/return",
    "test/win_rate",
    "test/return",
]


def test_sections_in_order_and_test_return_first():
    state = mv.view_state(KEYS, mean_per_method=False, runs=12)
    names = [s["name"] for s in state["compareRunSections"]]
    assert names == [
        "test",
        "train",
        "task/0",
        "task/1",
        "plasticity/agent",
        "Model metrics",
        "System metrics",
    ]
    cards = state["compareRunCharts"]
    assert [c["metricKey"] for c in cards[:2]] == ["test/return", "test/win_rate"]
    section_of = {s["uuid"]: s["name"] for s in state["compareRunSections"]}
    assert section_of[cards[-1]["metricSectionId"]] == "System metrics"
    assert all(c["runsCountToCompare"] == 12 for c in cards)
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "method"}]
    assert state["runsHiddenMode"] == "SHOW_ALL"


def test_a_large_view_is_cut_to_mlflows_tag_limit_keeping_the_first_cards():
    keys = [f"plasticity/agent.l{i}/metric_{j}" for i in range(60) for j in range(40)]
    state = mv.view_state(["test/return", *keys], mean_per_method=True)
    value = mv.view_tag_value("big", state, 0)
    assert len(value) <= mv.MAX_TAG_VALUE
    kept = mv.decode_state(json.loads(value)["state"])["compareRunCharts"]
    assert 0 < len(kept) < len(keys) and kept[0]["metricKey"] == "test/return"


def test_views_are_written_from_the_trials_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    assert not mv.refresh_views(MlflowStore(uri), exp)  # no trial yet: nothing written
    run = client.create_run(exp, tags={"knife.kind": "trial", "method": "none"})
    client.log_metric(run.info.run_id, "test/return", 1.0, step=10)
    client.create_run(exp, tags={"knife.kind": "sweep"})  # not a trial: its metrics not read
    assert mv.refresh_views(MlflowStore(uri), exp)
    tags = client.get_experiment(exp).tags
    for view, name in mv.VIEWS.items():
        envelope = json.loads(tags[mv.VIEW_TAG_PREFIX + view])
        assert envelope["name"] == name and envelope["state"].startswith("deflate;")
        state = mv.decode_state(envelope["state"])
        assert [c["metricKey"] for c in state["compareRunCharts"]] == ["test/return"]
        assert state["useGroupedValuesInCharts"] == (view == mv.METHODS_VIEW)
    link = mv.experiment_page("http://127.0.0.1:5000", exp, view=mv.TRIALS_VIEW)
    assert link.endswith(
        "workflowType=machine_learning&compareRunsMode=CHART&viewStateShareKey=knife-trials"
    )

"""Saved views of an experiment in MLflow's UI: how a sweep's trials open for comparison
(docs/design.md 10, docs/platform.md "Comparing methods in the MLflow UI").

MLflow 3 keeps a saved view as one experiment tag, `mlflow.sharedViewState.<id>`, whose value
is `{"name", "createdAt", "state"}` with `state` the JSON of the experiment page's UI state;
the page opens it with `?viewStateShareKey=<id>` and lists it under "Views". This module
writes two such views for every experiment with trials:

* `knife-trials`: the chart view with a line per trial, rows grouped by the `method` tag;
* `knife-methods`: the same with one line per method (the mean over its seeds, with a band).

Both order the chart sections as knife.policies.metric_keys.SECTION_ORDER (test first). Why
by hand: MLflow sorts sections alphabetically, shows only the first 10 runs by default, and
hides a sweep's trials behind its collapsed parent row, whose children the charts skip;
grouping by method lists the trials themselves. A per-run setting (rows expanded) is not
part of a saved view in MLflow 3.17, so grouping is the way to show every trial.

Links add `workflowType=machine_learning`: MLflow 3.17 picks the page layout from that URL
parameter (or the browser's last choice), not from the experiment's `mlflow.experimentKind`
tag, and opens the GenAI layout (traces, judges, prompts) otherwise.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Iterable
from typing import Any

from knife.policies import metric_keys as mk

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
TRIALS_VIEW = "knife-trials"
METHODS_VIEW = "knife-methods"
VIEWS = {
    TRIALS_VIEW: "knife: every trial (grouped by method)",
    METHODS_VIEW: "knife: methods (mean over seeds)",
}
LAYOUT_PARAM = "workflowType=machine_learning"
GROUP_TAG = "method"
# MLflow's limit on an experiment tag's value (mlflow.utils.validation).
MAX_TAG_VALUE = 20000
# MLflow's own names for the sections of unprefixed and `system/` metrics.
MODEL_METRICS, SYSTEM_METRICS = "Model metrics", "System metrics"


def _section_name(key: str) -> str:
    if key.startswith("system/"):
        return SYSTEM_METRICS
    return mk.section(key) or MODEL_METRICS


def chart_sections(metric_keys: Iterable[str]) -> list[dict[str, Any]]:
    """MLflow section configs for these metrics: metric_keys.SECTION_ORDER first, then
    MLflow's "Model metrics" (counters, timings) and "System metrics"."""
    names = {_section_name(k) for k in metric_keys} - {MODEL_METRICS, SYSTEM_METRICS}
    ordered = [*sorted(names, key=mk.section_rank), MODEL_METRICS, SYSTEM_METRICS]
    return [
        {"uuid": f"knife-section-{i}", "name": name, "display": True, "isReordered": True}
        for i, name in enumerate(ordered)
    ]


def line_card(key: str, section_id: str, index: int, runs: int) -> dict[str, Any]:
    """One line chart of `key` over env steps (the metric step), as MLflow serializes it."""
    return {
        "type": "LINE",
        "uuid": f"knife-chart-{index}",
        "metricSectionId": section_id,
        "metricKey": key,
        "selectedMetricKeys": [key],
        "isGenerated": True,
        "deleted": False,
        "runsCountToCompare": runs,
        "lineSmoothness": 0,
        "xAxisKey": "step",
        "xAxisScaleType": "linear",
        "scaleType": "linear",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
        "range": {},
    }


def view_state(
    metric_keys: Iterable[str], *, mean_per_method: bool, runs: int = 100
) -> dict[str, Any]:
    """The UI state of one saved view (MLflow's ExperimentPageUIState fields): a line chart
    per metric in its section, sections in SECTION_ORDER, `runs`: the most lines a chart
    draws (MLflow's default is 10)."""
    keys = sorted(set(metric_keys))
    sections = chart_sections(keys)
    ids = {section["name"]: section["uuid"] for section in sections}
    rank = {section["name"]: i for i, section in enumerate(sections)}
    # MLflow inserts charts of metrics it has no card for at a shifting place, so every
    # known metric gets its card here, in order (test/return first); new ones it adds.
    keys.sort(key=lambda k: (rank[_section_name(k)], k != mk.TEST_RETURN, k))
    cards = [line_card(k, ids[_section_name(k)], i, runs) for i, k in enumerate(keys)]
    return {
        "compareRunSections": sections,
        "compareRunCharts": cards,
        "isAccordionReordered": True,  # keep the section order above
        "runsHiddenMode": "SHOW_ALL",  # MLflow's default charts only the first 10 runs
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": GROUP_TAG}],
        },
        "groupsExpanded": {},
        "useGroupedValuesInCharts": mean_per_method,
        "hideEmptyCharts": True,
        "autoRefreshEnabled": True,
    }


def encode_state(state: dict[str, Any]) -> str:
    """A view state as MLflow's UI writes it: zlib-deflated JSON, base64, `deflate;` first."""
    raw = json.dumps(state, separators=(",", ":")).encode()
    return "deflate;" + base64.b64encode(zlib.compress(raw, 9)).decode()


def decode_state(value: str) -> dict[str, Any]:
    if value.startswith("deflate;"):
        value = zlib.decompress(base64.b64decode(value[len("deflate;") :])).decode()
    return json.loads(value)


def view_tag_value(name: str, state: dict[str, Any], created_ms: int) -> str:
    """The experiment-tag value of a saved view. When its cards do not fit MLflow's tag
    limit, the last sections' cards are left for MLflow to add."""
    cards = list(state["compareRunCharts"])
    while True:
        envelope = {"name": name, "createdAt": created_ms, "state": encode_state(state)}
        value = json.dumps(envelope)
        if len(value) <= MAX_TAG_VALUE or not cards:
            return value
        cards = cards[: len(cards) * 3 // 4]
        state = {**state, "compareRunCharts": cards}


def write_views(
    client: Any, experiment_id: str, metric_keys: Iterable[str], *, runs: int = 100
) -> None:
    """Set (or refresh) the experiment's knife views for these metric keys and `runs` trials."""
    created = int(time.time() * 1000)
    # The two views differ only in drawing the per-method mean: build the charts once.
    trials = view_state(metric_keys, mean_per_method=False, runs=max(runs, 10))
    for view, name in VIEWS.items():
        state = {**trials, "useGroupedValuesInCharts": view == METHODS_VIEW}
        value = view_tag_value(name, state, created)
        client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + view, value)


def refresh_views(store: Any, experiment_id: str, runs: list[Any] | None = None) -> bool:
    """Write the views from the metrics the experiment's trials logged (`runs`: the
    experiment's runs when the caller has them already); False when it has no trial."""
    from knife.platform.trial_runner import KIND_TAG

    if runs is None:
        runs = store.search_all(experiment_id, f"tags.`{KIND_TAG}` = 'trial'")
    runs = [r for r in runs if r.data.tags.get(KIND_TAG) == "trial"]
    keys = {key for run in runs for key in run.data.metrics}
    if keys:
        write_views(store.client, experiment_id, keys, runs=len(runs))
    return bool(keys)


def experiment_page(url: str, experiment_id: str, *, view: str | None = None) -> str:
    """The experiment's page in the model-training layout, opening `view` in the chart view."""
    page = f"{url}/#/experiments/{experiment_id}/runs?{LAYOUT_PARAM}"
    if view is None:
        return page
    return f"{page}&compareRunsMode=CHART&viewStateShareKey={view}"

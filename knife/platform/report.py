"""`knife report EXPERIMENT`: aggregate a sweep's MLflow runs across seeds (DESIGN 10).

Per sequence, algorithm (QMIX/VDN), task and method: the interquartile mean and 95%
stratified-bootstrap interval (knife.platform.stats) of the final greedy test return, of the
area under the test curve and, where the env has a win, of the final test win rate; plus an
`all` row per method over the sequence's tasks (runs resampled within each task). Written as
report.md and summary.csv with PNG plots (learning curves with task boundaries and intervals,
stagnant fraction over time per network, stagnant fraction at a task's end against the
learning on the next task), plus runs.csv, the raw per-run, per-task values every table and
scatter plot is computed from, and headline.csv, KNIFE against the best other method and its
ablations (knife.platform.headline). All of it is logged to MLflow as a report run in the
experiment `<EXPERIMENT>/report`, not among the trials (their chart view would otherwise open
on the report's single-point charts), and each sweep run of EXPERIMENT (the trials' parent)
gets the report's tables under its artifacts `report/` and a tag `knife.report` naming the
report run: the report is one click from the sweep.

Where the numbers come from, per run (the latest value of each metric):
* a task of a sequence: `task/<i>/final_test_return`, `task/<i>/auc`,
  `task/<i>/final_test_win_rate` (the Algorithm's own per-task results);
* a single-env run: the last `test/return` / `test/win_rate`, and the area under its logged
  test curve divided by its span (the same definition as the per-task AUC).
* a sweep's grid points besides method, seed, sequence and algorithm (tag `knife.point`,
  e.g. the labels of its params axes) are groups of their own: `<sequence> [<point>]`.
* stagnant fraction at the end of a task: the last logged `plasticity/<net>/stagnant_fraction`
  before the next task starts (before any intervention at the switch), or the run's last.
A run without a value for a cell (stopped before that task ended) is left out of that cell;
the `seeds` column says how many runs each number rests on.
"""

from __future__ import annotations

import bisect
import csv
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knife.platform.config import ConfigError
from knife.platform.headline import headline_markdown, headline_rows, write_headline_csv
from knife.platform.mlflow_plots import (
    NETWORKS,
    Curve,
    gap_plot,
    learning_curve_plot,
    stagnant_plot,
    stagnation_scatter_plot,
    task_boundaries,
)
from knife.platform.paired_tables import (
    EQUIVALENCE_MARGIN,
    FINAL_TESTS,
    FORGETTING_COLUMNS,
    SCRATCH,
    forgetting_rows,
    paired_rows,
    score_table,
    task_values,
    write_rows,
)
from knife.platform.paired_tables import markdown as paired_markdown
from knife.platform.stats import (
    REPS,
    Estimate,
    curve_bands,
    format_interval,
    stratified_bootstrap,
)
from knife.platform.sweep_config import (
    BRANCH_TASK_TAG,
    POINT_TAG,
    PREFIX,
    ROLE_TAG,
    SCRATCH_TASK_TAG,
    SCRATCH_TASKS_TAG,
)
from knife.platform.switch_branches import merge_switch_branches
from knife.platform.tracking import MlflowStore, redact_uri
from knife.platform.trial_runner import KIND_TAG
from knife.policies import metric_keys as mk
from knife.policies.task_progress import curve_auc

NOT_TRIALS = ("report", "sweep")  # knife.kind of the runs that are not trials
SCORES = ("final_return", "auc", "final_win_rate")
CSV_COLUMNS = (
    "sequence",
    "algorithm",
    "task",
    "task_name",
    "method",
    "seeds",
    *(f"{s}_{part}" for s in SCORES for part in ("iqm", "ci_low", "ci_high")),
    *(f"stagnant_{network}_end_iqm" for network in NETWORKS),
    *(f"probe_{network}_ratio_end_iqm" for network in NETWORKS),
)
RUN_COLUMNS = (
    "run_id",
    "role",
    "sequence",
    "algorithm",
    "method",
    "seed",
    "task",
    "task_name",
    "start_env_steps",
    "final_return",
    "final_mean",
    "auc",
    "final_win_rate",
    "forgetting",
    *(f"stagnant_{network}_end" for network in NETWORKS),
    *(f"probe_{network}_ratio_end" for network in NETWORKS),
)
CURVE_POINTS = 100  # stagnant-fraction curves are resampled onto this many env steps
PROBE_RATIO = "probe_loss_ratio"  # the trainability probe's metric (knife.plasticity.probe)


@dataclass
class TaskScores:
    name: str
    final_return: float | None = None
    auc: float | None = None
    final_win_rate: float | None = None
    start_env_steps: float | None = None
    random_return: float | None = None  # a uniformly random policy's, at the task's start
    stagnant_end: dict[str, float] = field(default_factory=dict)  # network -> fraction
    # network -> the trainability probe's loss ratio at the switch that ended the task
    probe_ratio_end: dict[str, float] = field(default_factory=dict)


@dataclass
class RunData:
    run_id: str
    method: str
    seed: str
    sequence: str
    algorithm: str = "qmix"
    role: str = "trial"  # or "scratch": a scratch reference (grid.scratch)
    branch_task: int | None = None  # grid.branch every_switch: the task this branch trains
    learner_updates: float | None = None
    tasks: dict[int, TaskScores] = field(default_factory=dict)
    boundaries: list[tuple[int, float]] = field(default_factory=list)
    test_curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    retest_curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    stagnant: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class ReportResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    files: list[Path]
    runs: int
    mlflow_run_id: str | None


def _value(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _task_indices(metrics: Mapping[str, float], tags: Mapping[str, str]) -> list[int]:
    found = {t[0] for key in (*metrics, *tags) if (t := mk.split_task_key(key)) is not None}
    return sorted(found)


def load_run(store: MlflowStore, run: Any) -> RunData:
    """The scores and curves of one finished run."""
    tags, metrics = run.data.tags, run.data.metrics
    # Runs of one grid point but their method and seed are compared: a sweep's other axes
    # (params) make groups of their own, named after the sequence.
    point = tags.get(POINT_TAG)
    sequence = tags.get("sequence", "none")
    data = RunData(
        run_id=run.info.run_id,
        method=tags.get("method", "none"),
        seed=tags.get("seed", "?"),
        sequence=f"{sequence} [{point}]" if point else sequence,
        algorithm=tags.get("algorithm", "qmix"),
        role=tags.get(ROLE_TAG, "trial"),
        learner_updates=_value(metrics, mk.LEARNER_UPDATES),
        branch_task=int(tags[BRANCH_TASK_TAG]) if BRANCH_TASK_TAG in tags else None,
    )
    indices = _task_indices(metrics, tags)
    if not indices:  # one env, no task sequence
        steps, values = store.history(run.info.run_id, mk.TEST_RETURN)
        data.tasks[0] = TaskScores(
            name=tags.get("task/0/name") or tags.get("env", "task 0"),
            final_return=_value(metrics, mk.TEST_RETURN),
            auc=curve_auc(steps, values),
            final_win_rate=_value(metrics, mk.TEST_WIN_RATE),
        )
        data.test_curves[0] = (steps, values)
    else:
        for i in indices:
            data.tasks[i] = TaskScores(
                name=tags.get(mk.task_key(i, "name"), f"task {i}"),
                final_return=_value(metrics, mk.task_key(i, mk.FINAL_TEST_RETURN)),
                auc=_value(metrics, mk.task_key(i, mk.AUC)),
                final_win_rate=_value(metrics, mk.task_key(i, mk.FINAL_TEST_WIN_RATE)),
                random_return=_value(metrics, mk.task_key(i, mk.RANDOM_RETURN)),
            )
            curve = mk.task_key(i, mk.TASK_TEST_RETURN)
            data.test_curves[i] = store.history(run.info.run_id, curve)
            if mk.task_key(i, mk.RETEST_RETURN) in metrics:
                retest = mk.task_key(i, mk.RETEST_RETURN)
                data.retest_curves[i] = store.history(run.info.run_id, retest)
        data.boundaries = task_boundaries(metrics)
        for i, start in data.boundaries:
            if i in data.tasks:
                data.tasks[i].start_env_steps = start
    for network in NETWORKS:
        steps, values = store.history(run.info.run_id, mk.stagnant_key(network))
        if len(steps):
            data.stagnant[network] = (steps, values)
    _stagnant_at_task_ends(data)
    if data.boundaries:
        _probe_at_switches(store, run.info.run_id, metrics, data)
    if data.role == SCRATCH and SCRATCH_TASK_TAG in tags:
        served = tags.get(SCRATCH_TASKS_TAG) or tags[SCRATCH_TASK_TAG]
        _as_scratch_task(data, [int(k) for k in served.split(",")])
    return data


def _as_scratch_task(data: RunData, served: list[int]) -> None:
    """A scratch reference trains task k of its sequence alone, as its task 0: file its
    values under k, where the sequential runs have theirs, and under every later visit of
    the same task it serves (tasks.repeat: knife.scratch_tasks)."""
    task, curve = data.tasks.get(0), data.test_curves.get(0)
    data.tasks = {k: task for k in served} if task is not None else {}
    data.test_curves = {k: curve for k in served} if curve is not None else {}
    data.boundaries = []


def _probe_at_switches(
    store: MlflowStore, run_id: str, metrics: Mapping[str, float], data: RunData
) -> None:
    """The probe's loss ratio logged at each switch (plasticity.probe), filed under the task
    the switch ended: the one before the latest task that started at or before the logged
    step. The step is the end of the iteration that switched, which is past the next task's
    start whenever the iteration went on after the switch (N envs, several training steps)."""
    switches = sorted((start, i) for i, start in data.boundaries if i > 0)
    starts = [start for start, _ in switches]
    for network in NETWORKS:
        key = f"{mk.AT_SWITCH}{network}/{PROBE_RATIO}"
        if key not in metrics:
            continue
        for step, value in zip(*store.history(run_id, key), strict=True):
            k = bisect.bisect_right(starts, float(step))  # switches at or before the step
            task = data.tasks.get(switches[k - 1][1] - 1) if k else None
            if task is not None:
                task.probe_ratio_end[network] = float(value)


def _stagnant_at_task_ends(data: RunData) -> None:
    """Each task's last stagnant fraction logged before the next task starts."""
    starts = dict(data.boundaries)
    for i, task in data.tasks.items():
        end = starts.get(i + 1, math.inf)
        for network, (steps, values) in data.stagnant.items():
            before = np.flatnonzero(steps < end)
            if len(before):
                task.stagnant_end[network] = float(values[before[-1]])


def finished_runs(store: MlflowStore, experiment: str) -> tuple[str, list[Any]]:
    """(experiment id, its FINISHED runs that are not reports: trials and scratch
    references)."""
    client = store.client
    experiment_id = store.experiment_id(experiment, create=False)
    if experiment_id is None:
        names = [e.name for e in store.retry(client.search_experiments)]
        raise ConfigError(
            f"experiment {experiment!r} not found; experiments in this store: "
            f"{', '.join(sorted(names)) or '(none)'}"
        )
    found = store.search_all(experiment_id, "attributes.status = 'FINISHED'")
    runs = [r for r in found if r.data.tags.get(KIND_TAG) not in NOT_TRIALS]
    # A shared prefix (grid.branch) is in every branch's run: its history is copied there.
    runs = [r for r in runs if r.data.tags.get(ROLE_TAG) != PREFIX]
    if not runs:
        raise ConfigError(f"experiment {experiment!r} has no finished runs to report on")
    return experiment_id, runs


def unfinished_counts(store: MlflowStore, experiment_id: str) -> dict[str, int]:
    """Status -> number of the experiment's trial runs that are not FINISHED (left out of the
    report; a RUNNING one may be live, or stale after a crash)."""
    counts: dict[str, int] = {}
    for run in store.search_all(experiment_id, "attributes.status != 'FINISHED'"):
        if run.data.tags.get(KIND_TAG) not in NOT_TRIALS:
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return dict(sorted(counts.items()))


def left_out_line(counts: Mapping[str, int]) -> str:
    """The report's sentence on runs it left out ('' when none)."""
    if not counts:
        return ""
    total = sum(counts.values())
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return (
        f"Left out: {total} run{'s' * (total != 1)} not FINISHED ({parts}); a RUNNING run may "
        "still be live, or stale after a crash (`knife sweep FILE --resume` closes its sweep's "
        "stale runs)."
    )


# ---------------------------------------------------------------------------------------
# Aggregation


def _estimate(values: Iterable[float | None], reps: int, seed: int) -> Estimate | None:
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return stratified_bootstrap(np.array(kept), reps=reps, seed=seed)


def aggregate(runs: list[RunData], reps: int = REPS, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (sequence, task, method), then an `all` row per (sequence, method)."""
    groups: dict[tuple[str, str, str], list[RunData]] = defaultdict(list)
    for run in runs:
        groups[(run.sequence, run.algorithm, run.method)].append(run)
    rows = []
    for (sequence, algorithm, method), members in sorted(groups.items()):
        indices = sorted({i for r in members for i in r.tasks})
        for i in indices:
            cell = [r.tasks[i] for r in members if i in r.tasks]
            row: dict[str, Any] = {
                "sequence": sequence,
                "algorithm": algorithm,
                "task": str(i),
                "task_name": cell[0].name,
                "method": method,
            }
            seeds = 0
            for score in SCORES:
                est = _estimate((getattr(t, score) for t in cell), reps, seed)
                _put(row, score, est)
                if score == "final_return" and est is not None:
                    seeds = est.n
            row["seeds"] = seeds
            rows.append(row)
            for network in NETWORKS:
                est = _estimate((t.stagnant_end.get(network) for t in cell), reps, seed)
                row[f"stagnant_{network}_end_iqm"] = None if est is None else est.value
                est = _estimate((t.probe_ratio_end.get(network) for t in cell), reps, seed)
                row[f"probe_{network}_ratio_end_iqm"] = None if est is None else est.value
        if len(indices) > 1:
            row = _all_tasks_row(sequence, method, members, indices, reps, seed)
            rows.append({**row, "algorithm": algorithm})
    # Per sequence and algorithm: task 0 (every method), task 1, ..., then `all`.
    return sorted(
        rows,
        key=lambda r: (
            r["sequence"],
            r["algorithm"],
            r["task"] == "all",
            int(r["task"]) if r["task"] != "all" else 0,
            r["method"],
        ),
    )


def _all_tasks_row(
    sequence: str, method: str, members: list[RunData], indices: list[int], reps: int, seed: int
) -> dict[str, Any]:
    """Over all tasks: runs with a value for every task, resampled within each task."""
    row: dict[str, Any] = {"sequence": sequence, "task": "all", "task_name": "all tasks"}
    row["method"] = method
    row["seeds"] = 0
    for score in SCORES:
        matrix = [
            [getattr(r.tasks[i], score) for i in indices]
            for r in members
            if all(i in r.tasks and getattr(r.tasks[i], score) is not None for i in indices)
        ]
        est = None
        if matrix:
            est = stratified_bootstrap(np.array(matrix), reps=reps, seed=seed)
            if score == "final_return":
                row["seeds"] = est.n
        _put(row, score, est)
    return row


def _put(row: dict[str, Any], score: str, est: Estimate | None) -> None:
    for part in ("iqm", "ci_low", "ci_high"):
        row[f"{score}_{part}"] = None
    if est is not None:
        row[f"{score}_iqm"] = est.value
        row[f"{score}_ci_low"] = est.low
        row[f"{score}_ci_high"] = est.high


# ---------------------------------------------------------------------------------------
# Output


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return path


def write_runs_csv(runs: list[RunData], path: Path, final_tests: int = FINAL_TESTS) -> Path:
    """The raw values behind the tables: one row per run (trial or scratch reference) and
    task; `final_mean` is the paired tables' final (the mean of the last tests)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_COLUMNS)
        writer.writeheader()
        order = sorted(runs, key=lambda r: (r.sequence, r.algorithm, r.role, r.method, r.seed))
        for run in order:
            for i, task in sorted(run.tasks.items()):
                steps, values = run.test_curves.get(i, (np.array([]), np.array([])))
                retests = run.retest_curves.get(i, (None, None))[1]
                paired = task_values(steps, values, task.auc, final_tests, retests)
                row = {
                    "run_id": run.run_id,
                    "role": run.role,
                    "sequence": run.sequence,
                    "algorithm": run.algorithm,
                    "method": run.method,
                    "seed": run.seed,
                    "task": i,
                    "task_name": task.name,
                    "start_env_steps": task.start_env_steps,
                    "final_return": task.final_return,
                    "final_mean": paired.final,
                    "auc": task.auc,
                    "final_win_rate": task.final_win_rate,
                    "forgetting": paired.forgetting,
                }
                for network in NETWORKS:
                    row[f"stagnant_{network}_end"] = task.stagnant_end.get(network)
                    row[f"probe_{network}_ratio_end"] = task.probe_ratio_end.get(network)
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def stagnation_points(
    runs: list[RunData],
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """network -> method -> [(stagnant fraction at the end of task i-1, relative AUC on
    task i)], where the relative AUC is the run's AUC on task i minus the median AUC on task
    i over all the given runs: tasks differ in what a return means, so each is centred on
    its own median and a point says how much faster or slower than usual this run learned."""
    aucs: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for i, task in run.tasks.items():
            if task.auc is not None:
                aucs[i].append(task.auc)
    median = {i: float(np.median(v)) for i, v in aucs.items()}
    out: dict[str, dict[str, list[tuple[float, float]]]] = {n: defaultdict(list) for n in NETWORKS}
    for run in runs:
        for i, task in run.tasks.items():
            before = run.tasks.get(i - 1)
            if before is None or task.auc is None:
                continue
            for network, fraction in before.stagnant_end.items():
                out[network][run.method].append((fraction, task.auc - median[i]))
    return out


def spearman(points: Iterable[tuple[float, float]]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None below 3 points or when
    either side is constant."""
    xy = np.array(list(points), dtype=float).reshape(-1, 2)
    if len(xy) < 3:
        return None
    ranks = [_average_ranks(xy[:, k]) for k in (0, 1)]
    if ranks[0].std() == 0 or ranks[1].std() == 0:
        return None
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def write_markdown(
    rows: list[dict[str, Any]],
    path: Path,
    experiment: str,
    n_runs: int,
    plots: list[Path],
    correlations: Mapping[tuple[str, str, str], float | None] | None = None,
    headline: list[dict[str, Any]] | None = None,
    left_out: Mapping[str, int] | None = None,
    paired: list[str] | None = None,
    n_scratch: int = 0,
) -> Path:
    """report.md: first the paired tables (knife.platform.paired_tables: is there
    plasticity loss, each method against `none` and the scratch reference), then per
    sequence and algorithm KNIFE's headline (knife.platform.headline), the score table,
    the stagnant fraction at each task's end, and the rank correlation of stagnation with
    learning on the next task."""
    headline = headline_rows(rows) if headline is None else headline
    has_win = any(r.get("final_win_rate_iqm") is not None for r in rows)
    head = ["task", "method", "seeds", "final test return", "AUC (mean test return)"]
    scores = ["final_return", "auc"]
    if has_win:
        head.append("final win rate")
        scores.append("final_win_rate")
    scratch = f" and {n_scratch} scratch references" if n_scratch else ""
    lines = [f"# Report: {experiment}", "", f"{n_runs} finished trial runs{scratch}."]
    if left_out:
        lines += ["", left_out_line(left_out)]
    lines += ["", *(paired or [])]
    lines += [
        "",
        "## Scores per method",
        "",
        "Each cell: interquartile mean across seeds [95% stratified bootstrap interval]. "
        "`all`: over the sequence's tasks (raw returns, not normalized), runs resampled "
        "within each task. Unpaired: the paired tables above decide; these describe.",
    ]
    for sequence, algorithm in sorted({(r["sequence"], r["algorithm"]) for r in rows}):
        group = [r for r in rows if (r["sequence"], r["algorithm"]) == (sequence, algorithm)]
        lines += ["", f"### Sequence `{sequence}`, algorithm `{algorithm}`", ""]
        ours = [h for h in headline if (h["sequence"], h["algorithm"]) == (sequence, algorithm)]
        if ours:
            lines += [*headline_markdown(ours), "", "All methods:", ""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in group:
            task = "all" if r["task"] == "all" else f"{r['task']}: {r['task_name']}"
            cells = [task, r["method"], str(r["seeds"]), *(format_interval(r, s) for s in scores)]
            lines.append("| " + " | ".join(cells) + " |")
        stagnant = [r for r in group if r["task"] != "all"]
        columns = [f"stagnant_{n}_end_iqm" for n in NETWORKS]
        headers, probe_note = list(NETWORKS), ""
        probes = [f"probe_{n}_ratio_end_iqm" for n in NETWORKS]
        if any(r.get(c) is not None for r in stagnant for c in probes):
            columns += probes
            headers = [f"stagnant {n}" for n in NETWORKS] + [f"probe {n}" for n in NETWORKS]
            probe_note = (
                "; the trainability probe's loss ratio at the switch that ends the task, 1 = "
                "as trainable as a fresh network, higher = less (knife.plasticity.probe)"
            )
        if any(r.get(c) is not None for r in stagnant for c in columns):
            lines += [
                "",
                "Stagnant fraction at the end of each task (IQM across seeds; measured before "
                f"any intervention at the switch){probe_note}:",
                "",
                "| task | method | " + " | ".join(headers) + " |",
                "|---|---|" + "---|" * len(headers),
            ]
            for r in stagnant:
                values = [r.get(c) for c in columns]
                shown = ["-" if v is None else f"{v:.3f}" for v in values]
                task = f"{r['task']}: {r['task_name']}"
                lines.append(f"| {task} | {r['method']} | " + " | ".join(shown) + " |")
        rhos = {n: (correlations or {}).get((sequence, algorithm, n)) for n in NETWORKS}
        if any(v is not None for v in rhos.values()):
            text = ", ".join(f"{n} {v:+.2f}" for n, v in rhos.items() if v is not None)
            lines += [
                "",
                "Spearman rank correlation, over every run and task switch, of the stagnant "
                "fraction at the end of a task with the AUC on the next task (relative to that "
                f"task's median over all runs): {text}.",
            ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")
    return path


def _segments(members: list[RunData], index: int, reps: int, seed: int) -> tuple[Curve | None, int]:
    """IQM test curve (with interval) of one task across runs, on the union of test steps."""
    curves = [r.test_curves[index] for r in members if len(r.test_curves.get(index, ((),))[0])]
    if not curves:
        return None, 0
    grid = np.unique(np.concatenate([s for s, _ in curves]))
    lo, hi = max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves)
    grid = grid[(grid >= lo) & (grid <= hi)] if lo <= hi else grid
    values = np.stack([np.interp(grid, s, v) for s, v in curves])
    center, low, high = curve_bands(values, reps=min(reps, 500), seed=seed)
    return Curve(grid, center, low, high), len(curves)


def _by_group(runs: list[RunData]) -> dict[tuple[str, str], list[RunData]]:
    """(sequence, algorithm) -> its runs."""
    groups: dict[tuple[str, str], list[RunData]] = defaultdict(list)
    for run in runs:
        groups[(run.sequence, run.algorithm)].append(run)
    return dict(sorted(groups.items()))


def correlations(runs: list[RunData]) -> dict[tuple[str, str, str], float | None]:
    """(sequence, algorithm, network) -> Spearman's rho of stagnation vs next-task AUC."""
    out = {}
    for (sequence, algorithm), members in _by_group(runs).items():
        for network, by_method in stagnation_points(members).items():
            pooled = [p for pts in by_method.values() for p in pts]
            out[(sequence, algorithm, network)] = spearman(pooled)
    return out


def file_stem(name: str) -> str:
    """A group name as a file name: 'b1000 [4]_qmix' -> 'b1000_4_qmix' (no spaces or
    brackets, which break Markdown image links)."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]+", "_", name)).strip("_")


def write_plots(runs: list[RunData], out: Path, reps: int, seed: int) -> list[Path]:
    files = []
    for (sequence, algorithm), members_all in _by_group(runs).items():
        methods: dict[str, list[RunData]] = defaultdict(list)
        for run in members_all:
            methods[run.method].append(run)
        group = file_stem(f"{sequence}_{algorithm}")
        some = next(iter(methods.values()))
        names = {i: t.name for r in some for i, t in r.tasks.items()}
        starts: dict[int, list[float]] = defaultdict(list)
        for members in methods.values():
            for r in members:
                for i, step in r.boundaries:
                    starts[i].append(step)
        bounds = sorted((i, float(np.median(v))) for i, v in starts.items())
        curves: dict[str, list[Curve]] = {}
        for method, members in sorted(methods.items()):
            segs = []
            n = 0
            for i in sorted({i for r in members for i in r.tasks}):
                curve, n_i = _segments(members, i, reps, seed)
                if curve is not None:
                    segs.append(curve)
                    n = max(n, n_i)
            curves[f"{method} (n={n})"] = segs
        files.append(
            learning_curve_plot(
                curves,
                bounds,
                out / f"learning_curves_{group}.png",
                title=f"{sequence} ({algorithm}): greedy test return, IQM across seeds "
                "with 95% bootstrap CI",
                names=names,
            )
        )
        panels: dict[str, dict[str, Curve]] = {}
        for network in NETWORKS:
            panels[network] = {}
            for method, members in sorted(methods.items()):
                series = [r.stagnant[network] for r in members if network in r.stagnant]
                if not series:
                    continue
                end = min(s[-1] for s, _ in series)
                start = max(s[0] for s, _ in series)
                grid = np.linspace(start, end, CURVE_POINTS) if end > start else series[0][0]
                values = np.stack([np.interp(grid, s, v) for s, v in series])
                center, low, high = curve_bands(values, reps=min(reps, 200), seed=seed)
                panels[network][method] = Curve(grid, center, low, high)
        files.append(
            stagnant_plot(
                panels,
                bounds,
                out / f"stagnant_fraction_{group}.png",
                title=f"{sequence} ({algorithm}): stagnant fraction, IQM across seeds with "
                "95% bootstrap CI",
                names=names,
            )
        )
        points = stagnation_points(members_all)
        if any(points[n] for n in NETWORKS):
            files.append(
                stagnation_scatter_plot(
                    points,
                    out / f"stagnation_vs_learning_{group}.png",
                    title=f"{sequence} ({algorithm}): stagnation at a task's end vs learning "
                    "on the next task (one point per run and switch)",
                )
            )
    return files


def write_gap_plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """plasticity_gap.png: the normalized gap of `none` against scratch per task against
    the learner updates per task, one line per (algorithm, task, grid point) across the
    sequences (e.g. one sequence per budget); nothing without scratch references."""
    panels: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    for r in rows:
        gap = (r["method"], r["against"]) == ("none", SCRATCH)
        if not gap or r.get("norm_diff_mean") is None or not r.get("updates_per_task"):
            continue
        point = r["sequence"].partition(" [")[2].rstrip("]")
        name = f"{r['algorithm']} task {r['task']}" + (f" [{point}]" if point else "")
        point_xy = (
            r["updates_per_task"],
            r["norm_diff_mean"],
            r["norm_diff_low"],
            r["norm_diff_high"],
        )
        panels.setdefault(r["score"], {}).setdefault(name, []).append(point_xy)
    if not panels:
        return []
    title = "plasticity gap: none - scratch reference, normalized, mean over seeds, 95% CI"
    return [gap_plot(panels, out / "plasticity_gap.png", title=title)]


REPORT_SUFFIX = "/report"  # the report runs of experiment E live in experiment E/report
REPORT_TAG = "knife.report"  # on a sweep's parent run: the latest report's experiment/run


def _log_report(
    store: MlflowStore,
    experiment: str,
    experiment_id: str,
    files: list[Path],
    rows: list[dict[str, Any]],
) -> str:
    from mlflow.entities import Metric, RunTag

    client, retry = store.client, store.retry
    report_experiment = store.experiment_id(experiment + REPORT_SUFFIX)
    run = retry(
        client.create_run,
        report_experiment,
        run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={KIND_TAG: "report", "knife.reports_on": experiment},
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = []
    for r in rows:
        if r["final_return_iqm"] is None:
            continue
        # A grid point's sequence name, "seq [updates_per_episode=4]", holds characters
        # MLflow refuses in metric names: "seq updates_per_episode:4".
        sequence = re.sub(r"[^\w\-. :/]", "", r["sequence"].replace("=", ":"))
        key = f"final_return_iqm/{sequence}/task_{r['task']}/{r['method']}"
        metrics.append(Metric(key, float(r["final_return_iqm"]), now, 0))
    try:
        for i in range(0, len(metrics), 1000):
            retry(client.log_batch, run_id, metrics=metrics[i : i + 1000])
        retry(client.log_batch, run_id, tags=[RunTag("rows", str(len(rows)))])
        for path in files:
            folder = "plots" if path.suffix == ".png" else None
            retry(client.log_artifact, run_id, str(path), folder)
    except BaseException:
        store.end_run(run_id, "FAILED")  # not left RUNNING; the files on disk stand
        raise
    store.end_run(run_id, "FINISHED")
    # Reachable from the sweep: its tables on each sweep run, and where the rest is.
    link = f"{report_experiment}/{run_id}"
    for sweep in store.search_all(experiment_id, f"tags.`{KIND_TAG}` = 'sweep'"):
        retry(client.set_tag, sweep.info.run_id, REPORT_TAG, link)
        for path in files:
            if path.suffix in (".md", ".csv"):
                retry(client.log_artifact, sweep.info.run_id, str(path), "report")
    return run_id


def build_report(
    experiment: str,
    tracking_uri: str,
    out_dir: str | Path,
    *,
    reps: int = REPS,
    seed: int = 0,
    final_tests: int = FINAL_TESTS,
    margin: float = EQUIVALENCE_MARGIN,
    log_to_mlflow: bool = True,
    progress: bool = True,
) -> ReportResult:
    """Read the experiment's finished runs, write tables and plots, log a report run."""
    store = MlflowStore(tracking_uri)
    try:
        experiment_id, raw_runs = finished_runs(store, experiment)
    except ConfigError as err:
        raise ConfigError(f"{err} (store: {redact_uri(tracking_uri)})") from None
    iterator: Iterable[Any] = raw_runs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(raw_runs, desc=f"reading {experiment}", unit="run")
    loaded = merge_switch_branches([load_run(store, r) for r in iterator])
    # Scratch references are read by the paired tables only, never pooled with a method.
    runs = [r for r in loaded if r.role != SCRATCH]
    if not runs:
        raise ConfigError(f"experiment {experiment!r} has only scratch references, no trials")
    rows = aggregate(runs, reps=reps, seed=seed)
    table, ambiguous = score_table(loaded, final_tests)
    names = {(r.sequence, r.algorithm, i): t.name for r in loaded for i, t in r.tasks.items()}
    paired = paired_rows(table, names, margin=margin, reps=reps, seed=seed)
    forgetting = forgetting_rows(table, names, reps=reps, seed=seed)
    paired_lines = paired_markdown(paired, forgetting, margin)
    if ambiguous:
        paired_lines += [
            "",
            f"Not paired: {', '.join(ambiguous)}, where two runs of one method share a seed "
            "and a grid point (tune.num_samples > 1, or runs without a knife.point tag from "
            "before it existed).",
        ]

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(runs, out, reps, seed) + write_gap_plot(paired, out)
    files = [
        write_csv(rows, out / "summary.csv"),
        write_runs_csv(loaded, out / "runs.csv", final_tests),
        write_rows(paired, out / "paired.csv"),
        write_rows(forgetting, out / "forgetting.csv", FORGETTING_COLUMNS),
    ]
    headline = headline_rows(rows)
    files.append(write_headline_csv(headline, out / "headline.csv"))
    rhos = correlations(runs)
    left_out = unfinished_counts(store, experiment_id)
    n_scratch = len(loaded) - len(runs)
    md = write_markdown(
        rows,
        out / "report.md",
        experiment,
        len(runs),
        plots,
        rhos,
        headline,
        left_out,
        paired_lines,
        n_scratch,
    )
    files.append(md)
    files += plots
    run_id = _log_report(store, experiment, experiment_id, files, rows) if log_to_mlflow else None
    return ReportResult(out, rows, files, len(runs), run_id)

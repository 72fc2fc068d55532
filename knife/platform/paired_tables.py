"""The paired tables of `knife report` (issue 16, docs/design.md 12): is there plasticity loss
here, and does a method help against `none` and against a fresh network?

Every comparison is paired by seed: within a (sequence, algorithm) group, run a of one
method and run b of another (or the scratch reference, `grid.scratch`) with the same seed
give one difference d = a - b, and the statistics are those of the d's
(knife.platform.paired_stats).

Scores of a run on task k (`TaskValues`):
* final: the mean of the task's last `final_tests` greedy tests (FINAL_TESTS), steadier than
  the last test alone;
* auc: the area under the task's test curve divided by its span (the per-task AUC).
Normalized per (sequence, algorithm, task) from the scratch references: 0 = a uniformly
random policy's return on the task (`task/<i>/random_return`, measured at the task's start,
evaluation.random_episodes; the references' first greedy test for runs without it), 1 = their
final, each the mean over seeds. A task whose references end no better than random is not
normalized; its rows show raw returns and have no equivalence test.

Tests: every row with at least 2 pairs gets a two-sided paired t-test; the p-values of all
rows of a report (gap and comparisons) form one family for Holm's correction. Verdicts:
* loss / worse (gain / better): Holm-adjusted p < ALPHA and mean d < 0 (> 0);
* equivalent: two one-sided tests on the normalized d's within +-EQUIVALENCE_MARGIN;
* undetermined otherwise, with the seeds a paired t-test needs for 80% power at the observed
  effect and at a minimal normalized effect MIN_EFFECT.
The tests and the margin are read from the d's; CI overlap decides nothing here.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knife.platform.paired_stats import (
    ALPHA,
    equivalence,
    holm,
    observed_effect,
    paired_difference,
    paired_p_value,
    probability_of_improvement,
    seeds_needed,
)

FINAL_TESTS = 3  # "final" = the mean of a task's last FINAL_TESTS greedy tests
EQUIVALENCE_MARGIN = 0.1  # normalized: a tenth of what the scratch reference learns
MIN_EFFECT = 0.1  # normalized: the smallest effect the seed-planning line plans for
SCRATCH = "scratch"  # the scratch references' place among the methods
BASELINE = "none"
PAIRED_SCORES = ("final", "auc")
SCORE_NAMES = {"final": "final", "auc": "AUC"}
ALL_TASKS = "all"
FIRST_VISIT = "first visit"  # a repeated task's later visit against its first (tasks.repeat)
COLUMNS = (
    "sequence",
    "algorithm",
    "task",
    "task_name",
    "score",
    "method",
    "against",
    "seeds",
    "normalized",
    *(f"diff_{p}" for p in ("mean", "low", "high")),
    *(f"norm_diff_{p}" for p in ("mean", "low", "high")),
    *(f"forward_transfer_{p}" for p in ("mean", "low", "high")),
    "updates_per_task",
    "prob_improvement",
    "p",
    "p_holm",
    "effect_d",
    "equivalent",
    "seeds_for_power_observed",
    "seeds_for_power_min_effect",
    "verdict",
)
FORGETTING_COLUMNS = (
    "sequence",
    "algorithm",
    "task",
    "task_name",
    "method",
    "seeds",
    "forgetting_mean",
    "forgetting_low",
    "forgetting_high",
)


@dataclass(frozen=True)
class TaskValues:
    """One run's scores on one task."""

    start: float | None  # the first greedy test (the task's env step 0 for a fresh network)
    final: float | None
    auc: float | None
    forgetting: float | None = None  # peak of the task's tests minus its last re-test
    updates: float | None = None  # a scratch reference's learner updates (on its one task)
    random: float | None = None  # a uniformly random policy's return on the task


# (sequence, algorithm) -> method (or SCRATCH) -> task -> seed -> values
ScoreTable = dict[tuple[str, str], dict[str, dict[int, dict[str, TaskValues]]]]


def task_values(
    steps: np.ndarray,
    values: np.ndarray,
    auc: float | None,
    final_tests: int = FINAL_TESTS,
    retests: np.ndarray | None = None,
    updates: float | None = None,
    random: float | None = None,
) -> TaskValues:
    """A task's values from its greedy test curve (and its re-tests after it ended)."""
    del steps  # the tests are in step order; their steps matter only to the AUC
    if len(values) == 0:
        return TaskValues(None, None, auc, updates=updates, random=random)
    forgetting = None
    if retests is not None and len(retests):
        forgetting = float(np.max(values) - retests[-1])
    final = float(np.mean(values[-final_tests:]))
    return TaskValues(float(values[0]), final, auc, forgetting, updates, random)


def score_table(runs: list[Any], final_tests: int = FINAL_TESTS) -> tuple[ScoreTable, list[str]]:
    """The table of every run's task values, and the (sequence, algorithm) groups left out
    because two runs of one method share a seed (another grid axis: pairing is ambiguous)."""
    table: ScoreTable = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    ambiguous = set()
    for run in runs:
        group = (run.sequence, run.algorithm)
        who = SCRATCH if run.role == SCRATCH else run.method
        for i, task in run.tasks.items():
            steps, values = run.test_curves.get(i, (np.array([]), np.array([])))
            retests = run.retest_curves.get(i, (None, None))[1]
            cell = table[group][who][i]
            if run.seed in cell:
                ambiguous.add(group)
            updates = run.learner_updates if who == SCRATCH else None
            cell[run.seed] = task_values(
                steps, values, task.auc, final_tests, retests, updates, task.random_return
            )
    left_out = sorted(f"{s} ({a})" for s, a in ambiguous)
    for group in ambiguous:
        del table[group]
    return table, left_out


def normalizers(table: ScoreTable) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(sequence, algorithm, task) -> (zero, one): zero = the scratch references' mean
    random-policy return on the task (evaluation.random_episodes; their first greedy test
    where it was not measured), one = their mean final, where one > zero."""
    out = {}
    for group, methods in table.items():
        for task, seeds in methods.get(SCRATCH, {}).items():
            randoms = [v.random for v in seeds.values() if v.random is not None]
            starts = randoms or [v.start for v in seeds.values() if v.start is not None]
            finals = [v.final for v in seeds.values() if v.final is not None]
            if starts and finals and np.mean(finals) > np.mean(starts):
                out[(*group, task)] = (float(np.mean(starts)), float(np.mean(finals)))
    return out


def _paired(
    a: Mapping[str, TaskValues], b: Mapping[str, TaskValues], score: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    seeds = sorted(
        (
            s
            for s in a.keys() & b.keys()
            if None not in (getattr(a[s], score), getattr(b[s], score))
        ),
        key=lambda s: (len(s), s),
    )
    x = np.array([getattr(a[s], score) for s in seeds], dtype=np.float64)
    y = np.array([getattr(b[s], score) for s in seeds], dtype=np.float64)
    return seeds, x, y


def _interval(prefix: str, x: np.ndarray, y: np.ndarray, reps: int, seed: int) -> dict:
    est = paired_difference(x, y, reps=reps, seed=seed)
    return {f"{prefix}_mean": est.mean, f"{prefix}_low": est.low, f"{prefix}_high": est.high}


def _stats(
    x: np.ndarray,
    y: np.ndarray,
    xn: np.ndarray | None,
    yn: np.ndarray | None,
    margin: float,
    reps: int,
    seed: int,
) -> dict[str, Any]:
    """The statistics of one paired comparison: raw scores x, y and, where the task is
    normalized, the same scores normalized (xn, yn)."""
    row: dict[str, Any] = {"seeds": len(x), "normalized": xn is not None}
    if len(x) < 2:
        return row
    row.update(_interval("diff", x, y, reps, seed))
    row["prob_improvement"] = probability_of_improvement(x, y)
    row["p"] = paired_p_value(x, y)
    effect = observed_effect(x, y)
    row["effect_d"] = effect
    row["seeds_for_power_observed"] = seeds_needed(effect) if math.isfinite(effect) else None
    if xn is not None and yn is not None:
        row.update(_interval("norm_diff", xn, yn, reps, seed))
        row["equivalent"] = equivalence(xn, yn, margin)[0]
        sd = float(np.std(xn - yn, ddof=1))
        row["seeds_for_power_min_effect"] = seeds_needed(MIN_EFFECT / sd) if sd > 0 else None
    return row


def _forward_transfer(x: np.ndarray, y: np.ndarray, reps: int, seed: int) -> dict[str, Any]:
    """MEAL's forward transfer (AUC - AUC_scratch) / |AUC_scratch|, per seed; seeds whose
    scratch AUC is 0 have none."""
    keep = y != 0
    if keep.sum() < 2:
        return {}
    ft = (x[keep] - y[keep]) / np.abs(y[keep])
    return _interval("forward_transfer", ft, np.zeros_like(ft), reps, seed)


def paired_rows(
    table: ScoreTable,
    names: Mapping[tuple[str, str, int], str],
    *,
    margin: float = EQUIVALENCE_MARGIN,
    reps: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The gap rows (`none` against SCRATCH) and the comparison rows (each other method
    against `none` and against SCRATCH), per group, task k >= 1 (or the only task of a
    one-task group) and score, then per method over all those tasks (normalized); Holm-
    adjusted over all of them, with verdicts."""
    norms = normalizers(table)
    rows: list[dict[str, Any]] = []
    for group, methods in sorted(table.items()):
        tasks = sorted({i for cells in methods.values() for i in cells})
        compared = [i for i in tasks if i >= 1] or tasks
        pairs = [(BASELINE, SCRATCH)] + [
            (m, against)
            for m in sorted(methods)
            if m not in (BASELINE, SCRATCH)
            for against in (BASELINE, SCRATCH)
        ]
        for method, against in pairs:
            if method not in methods or against not in methods:
                continue
            for score in PAIRED_SCORES:
                per_task = {}
                for i in compared:
                    seeds, x, y = _paired(
                        methods[method].get(i, {}), methods[against].get(i, {}), score
                    )
                    if not seeds:
                        continue
                    xn, yn = _normalized(x, y, norms.get((*group, i)))
                    if xn is not None:
                        per_task[i] = dict(zip(seeds, zip(xn, yn, strict=True), strict=True))
                    row = {
                        **_where(group, i, names),
                        "score": score,
                        "method": method,
                        "against": against,
                        **_stats(x, y, xn, yn, margin, reps, seed),
                    }
                    if score == "auc" and against == SCRATCH:
                        row.update(_forward_transfer(x, y, reps, seed))
                    if against == SCRATCH:
                        row["updates_per_task"] = _mean_updates(methods[SCRATCH].get(i, {}))
                    rows.append(row)
                if len(compared) > 1 and len(per_task) == len(compared):
                    rows.append(
                        _all_tasks_row(group, method, against, score, per_task, margin, reps, seed)
                    )
        rows += _visit_rows(group, methods, names, norms, margin, reps, seed)
    _adjust(rows)
    return rows


def _visit_rows(
    group: tuple[str, str],
    methods: Mapping[str, Mapping[int, Mapping[str, TaskValues]]],
    names: Mapping[tuple[str, str, int], str],
    norms: Mapping[tuple[str, str, int], tuple[float, float]],
    margin: float,
    reps: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Repeated sequences (tasks.repeat), plasticity as MEAL measures it: each method's
    k-th visit of a task against its first visit, paired by seed (against = FIRST_VISIT)."""
    from knife.envs.tasks import visit_of  # the visit names are the sequence's

    tasks = sorted({i for cells in methods.values() for i in cells})
    first: dict[str, int] = {}
    for i in tasks:
        base, visit = visit_of(names.get((*group, i), ""))
        if visit == 1:
            first.setdefault(base, i)
    rows = []
    for method in sorted(m for m in methods if m != SCRATCH):
        for i in tasks:
            base, visit = visit_of(names.get((*group, i), ""))
            j = first.get(base)
            if visit == 1 or j is None:
                continue
            for score in PAIRED_SCORES:
                cells = methods[method]
                seeds, x, y = _paired(cells.get(i, {}), cells.get(j, {}), score)
                if not seeds:
                    continue
                xn, yn = _normalized(x, y, norms.get((*group, i)) or norms.get((*group, j)))
                rows.append(
                    {
                        **_where(group, i, names),
                        "score": score,
                        "method": method,
                        "against": FIRST_VISIT,
                        **_stats(x, y, xn, yn, margin, reps, seed),
                    }
                )
    return rows


def _where(
    group: tuple[str, str], task: int, names: Mapping[tuple[str, str, int], str]
) -> dict[str, str]:
    """A row's sequence, algorithm, task and task name."""
    name = names.get((*group, task), f"task {task}")
    return {"sequence": group[0], "algorithm": group[1], "task": str(task), "task_name": name}


def _normalized(
    x: np.ndarray, y: np.ndarray, norm: tuple[float, float] | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both sides on the task's normalized scale (zero, one), or (None, None) without one."""
    if norm is None:
        return None, None
    zero, one = norm
    return (x - zero) / (one - zero), (y - zero) / (one - zero)


def _mean_updates(references: Mapping[str, TaskValues]) -> float | None:
    """The learner updates a task's budget buys (its scratch references', mean over seeds):
    the x axis of the gap plot."""
    updates = [v.updates for v in references.values() if v.updates is not None]
    return float(np.mean(updates)) if updates else None


def _all_tasks_row(
    group: tuple[str, str],
    method: str,
    against: str,
    score: str,
    per_task: Mapping[int, Mapping[str, tuple[float, float]]],
    margin: float,
    reps: int,
    seed: int,
) -> dict[str, Any]:
    """Over all compared tasks: per seed, the mean normalized score over the tasks (seeds
    with every task); probability of improvement averaged over tasks, as rliable does."""
    seeds = sorted(
        set.intersection(*(set(v) for v in per_task.values())), key=lambda s: (len(s), s)
    )
    tasks = sorted(per_task)
    xm = np.array([[per_task[i][s][0] for i in tasks] for s in seeds]).reshape(
        len(seeds), len(tasks)
    )
    ym = np.array([[per_task[i][s][1] for i in tasks] for s in seeds]).reshape(
        len(seeds), len(tasks)
    )
    x, y = xm.mean(axis=1), ym.mean(axis=1)
    row = {
        "sequence": group[0],
        "algorithm": group[1],
        "task": ALL_TASKS,
        "task_name": "all (normalized)",
        "score": score,
        "method": method,
        "against": against,
        **_stats(x, y, x, y, margin, reps, seed),
    }
    if len(seeds) >= 2:
        row["prob_improvement"] = probability_of_improvement(xm, ym)
    return row


def _adjust(rows: list[dict[str, Any]]) -> None:
    """Holm over every tested row, then each row's verdict."""
    tested = [r for r in rows if r.get("p") is not None]
    for row, p in zip(tested, holm([r["p"] for r in tested]), strict=True):
        row["p_holm"] = p
    for row in rows:
        row["verdict"] = verdict(row)


def verdict(row: Mapping[str, Any]) -> str:
    gap = (row["method"], row["against"]) == (BASELINE, SCRATCH)
    if row.get("p_holm") is None:
        return "too few seeds"
    mean = row["diff_mean"]
    if row["p_holm"] < ALPHA and mean != 0:
        if gap:
            return "loss" if mean < 0 else "gain"
        return "worse" if mean < 0 else "better"
    if row.get("equivalent"):
        return "equivalent"
    return "undetermined"


def forgetting_rows(
    table: ScoreTable, names: Mapping[tuple[str, str, int], str], reps: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Per group, method and task with re-tests: forgetting = peak test minus last re-test,
    mean over seeds with a bootstrap interval."""
    rows = []
    for group, methods in sorted(table.items()):
        for method, cells in sorted(methods.items()):
            for i, seeds in sorted(cells.items()):
                values = [v.forgetting for v in seeds.values() if v.forgetting is not None]
                if not values:
                    continue
                row = {**_where(group, i, names), "method": method, "seeds": len(values)}
                if len(values) >= 2:
                    f = np.array(values)
                    est = paired_difference(f, np.zeros_like(f), reps=reps, seed=seed)
                    row.update(
                        forgetting_mean=est.mean, forgetting_low=est.low, forgetting_high=est.high
                    )
                else:
                    row["forgetting_mean"] = values[0]
                rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# Output


def write_rows(rows: list[dict[str, Any]], path: Path, columns: tuple[str, ...] = COLUMNS) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return path


def _interval_text(row: Mapping[str, Any], prefix: str) -> str:
    if row.get(f"{prefix}_mean") is None:
        return "-"
    if row.get(f"{prefix}_low") is None:  # one seed: no interval
        return f"{row[f'{prefix}_mean']:+.3f}"
    return (
        f"{row[f'{prefix}_mean']:+.3f} [{row[f'{prefix}_low']:+.3f}, {row[f'{prefix}_high']:+.3f}]"
    )


def _seeds_text(row: Mapping[str, Any]) -> str:
    def one(n: int | None) -> str:
        return "-" if n is None else str(n)

    return (
        f"{one(row.get('seeds_for_power_observed'))} / {one(row.get('seeds_for_power_min_effect'))}"
    )


def _p_text(row: Mapping[str, Any]) -> str:
    if row.get("p") is None:
        return "-"
    return f"{row['p']:.3g} ({row['p_holm']:.3g})"


def _task_text(row: Mapping[str, Any]) -> str:
    return row["task_name"] if row["task"] == ALL_TASKS else f"{row['task']}: {row['task_name']}"


def answer(rows: list[dict[str, Any]]) -> str:
    """The one-line answer for one group's gap rows."""
    if not rows:
        return "No answer: no task has both `none` and its scratch reference."
    where = {v: [f"{_task_text(r)} ({SCORE_NAMES[r['score']]})" for r in rows if r["verdict"] == v]
             for v in ("loss", "gain", "equivalent", "undetermined", "too few seeds")}  # fmt: skip
    n = max(r["seeds"] for r in rows)
    if where["loss"]:
        return f"**Yes**: `none` learns worse than a fresh network on {', '.join(where['loss'])}."
    if len(where["equivalent"]) == len(rows):
        return (
            f"**No**: `none` is within +-{EQUIVALENCE_MARGIN} (normalized) of a fresh network "
            "on every task."
        )
    if where["gain"] and not (where["undetermined"] or where["too few seeds"]):
        gains = ", ".join(where["gain"])
        return f"**No**: `none` learns better than a fresh network (positive transfer) on {gains}."
    needs = [r.get("seeds_for_power_observed") for r in rows if r["verdict"] == "undetermined"]
    mins = [r.get("seeds_for_power_min_effect") for r in rows if r["verdict"] == "undetermined"]
    plan = ""
    if any(v is not None for v in needs + mins):
        worst = max((v for v in needs if v is not None), default=None)
        worst_min = max((v for v in mins if v is not None), default=None)
        plan = (
            f" A paired t-test needs up to {worst if worst is not None else '-'} seeds for 80% "
            f"power at the observed effects, {worst_min if worst_min is not None else '-'} at "
            f"a normalized effect of {MIN_EFFECT}."
        )
    gains = f" Positive transfer on {', '.join(where['gain'])}." if where["gain"] else ""
    return f"**Not determined with {n} seeds**.{gains}{plan}"


def markdown(
    rows: list[dict[str, Any]], forgetting: list[dict[str, Any]], margin: float
) -> list[str]:
    """The report's first sections: the gap, then each method paired against `none` and
    against the scratch reference, then forgetting."""
    tested = sum(r.get("p") is not None for r in rows)
    lines = [
        "## Is there plasticity loss here?",
        "",
        "The plasticity gap: `none`, trained through the sequence, minus the scratch reference, "
        "a fresh network trained on that task alone with the same seed and schedule; paired "
        "by seed. Negative = the network that has learned earlier tasks learns this one worse "
        f"than a fresh one. `final` = mean of the task's last {FINAL_TESTS} greedy tests; AUC = "
        "area under its test curve / span. Normalized: 0 = a uniformly random policy's return "
        "on the task, 1 = the scratch reference's final (means over seeds). Forward transfer "
        "(MEAL): (AUC - AUC_scratch) / |AUC_scratch|. p: two-sided paired t-test (the exact "
        "sign test where the differences have no spread), in brackets Holm-adjusted over the "
        f"{tested} tests of this report; equivalent = two one-sided tests within +-{margin} "
        "normalized. "
        f"Seeds: for 80% power at the observed effect / at a normalized effect of {MIN_EFFECT}.",
    ]
    groups = sorted({(r["sequence"], r["algorithm"]) for r in rows})
    gap_groups = sorted({(r["sequence"], r["algorithm"]) for r in rows if r["against"] == SCRATCH})
    if not gap_groups:
        lines += ["", "No scratch references in this experiment, so it cannot say: sweep with "
                  "`grid.scratch: true` (docs/platform.md)."]  # fmt: skip
    for group in gap_groups:
        gap = [r for r in rows if (r["sequence"], r["algorithm"]) == group
               and (r["method"], r["against"]) == (BASELINE, SCRATCH)]  # fmt: skip
        lines += ["", f"**`{group[0]}` ({group[1]})**: {answer(gap)}", ""]
        lines += [
            "| task | score | seeds | gap (none - scratch) [95% CI] | normalized | forward "
            "transfer | p (Holm) | verdict | seeds for 80% power |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in gap:
            lines.append(
                f"| {_task_text(r)} | {SCORE_NAMES[r['score']]} | {r['seeds']} | "
                f"{_interval_text(r, 'diff')} | {_interval_text(r, 'norm_diff')} | "
                f"{_interval_text(r, 'forward_transfer')} | {_p_text(r)} | {r['verdict']} | "
                f"{_seeds_text(r)} |"
            )
    compared = [r for r in rows if (r["method"], r["against"]) != (BASELINE, SCRATCH)]
    if compared:
        lines += [
            "",
            "## Each method against `none` and against the scratch reference",
            "",
            "Paired by seed: method - other. P(improvement): the probability that a run of the "
            "method scores above a run of the other (rliable's definition; over tasks for `all`). "
            "`all`: per seed, the mean normalized score over the tasks. `first visit` "
            "(tasks.repeat): a later visit of a task against the method's first visit of it, "
            "MEAL's measure of plasticity.",
        ]
        for group in groups:
            mine = [r for r in compared if (r["sequence"], r["algorithm"]) == group]
            if not mine:
                continue
            lines += [
                "",
                f"**`{group[0]}` ({group[1]})**",
                "",
                "| task | score | method | against | seeds | difference [95% CI] | normalized | "
                "P(improvement) | p (Holm) | verdict | seeds for 80% power |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in mine:
                poi = "-" if r.get("prob_improvement") is None else f"{r['prob_improvement']:.2f}"
                lines.append(
                    f"| {_task_text(r)} | {SCORE_NAMES[r['score']]} | {r['method']} | "
                    f"{r['against']} | {r['seeds']} | {_interval_text(r, 'diff')} | "
                    f"{_interval_text(r, 'norm_diff')} | {poi} | {_p_text(r)} | {r['verdict']} | "
                    f"{_seeds_text(r)} |"
                )
    if forgetting:
        lines += [
            "",
            "## Forgetting",
            "",
            "Per earlier task: the peak of its own greedy tests minus its last re-test "
            "(`eval_previous`); mean over seeds [95% bootstrap interval].",
            "",
            "| task | method | seeds | forgetting |",
            "|---|---|---|---|",
        ]
        for r in forgetting:
            shown = _interval_text(r, "forgetting")
            lines.append(f"| {_task_text(r)} | {r['method']} | {r['seeds']} | {shown} |")
    return lines

"""`knife report`'s paired tables (issue 16) on a hand-made MLflow store: the plasticity gap,
each method against `none` and the scratch reference, normalization, Holm, equivalence and
forgetting, against a hand computation."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats

from knife.platform.paired_tables import (
    EQUIVALENCE_MARGIN,
    FINAL_TESTS,
    TaskValues,
    answer,
    task_values,
)
from knife.platform.report import build_report
from knife.platform.tracking import TrialLogger

SEEDS = (0, 1, 2, 3)
STEPS = (0, 100, 200, 300)  # the task's own greedy tests, from its env step 0
NOISE = (0.0, 0.1, -0.1, 0.2)
KNIFE_NOISE = (0.01, -0.01, 0.02, -0.02)


def scratch_tests(s: int) -> list[float]:  # learns: 0, 2, 4, 6 (+ a per-seed offset)
    return [v + 0.5 * s for v in (0.0, 2.0, 4.0, 6.0)]


def none_tests(s: int) -> list[float]:  # learns far less on task 1 after task 0
    return [v + 0.5 * s + NOISE[s] for v in (1.0, 1.0, 1.0, 3.0)]


def knife_tests(s: int) -> list[float]:  # as a fresh network, up to a tiny noise
    return [v + KNIFE_NOISE[s] for v in scratch_tests(s)]


def _auc(values: list[float]) -> float:
    return float(np.trapezoid(values, STEPS) / (STEPS[-1] - STEPS[0]))


def _log_task(log: TrialLogger, i: int, values: list[float], start: int) -> None:
    for step, value in zip(STEPS, values, strict=True):
        log.log_metrics({f"task/{i}/test_return": value}, step=start + step)
    log.log_metrics(
        {
            f"task/{i}/final_test_return": values[-1],
            f"task/{i}/auc": _auc(values),
            f"task/{i}/start_env_steps": float(start),
        },
        step=start + STEPS[-1],
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    uri = f"sqlite:///{root}/mlflow.db"
    base = {"algorithm": "qmix", "knife.kind": "trial", "sequence": "ab"}
    names = {"task/0/name": "a", "task/1/name": "b"}
    for s in SEEDS:
        for method, tests in (("none", none_tests), ("knife", knife_tests)):
            tags = {**base, **names, "method": method, "seed": str(s)}
            with TrialLogger(uri, "paired", run_name=f"{method}-{s}", tags=tags) as log:
                _log_task(log, 0, [0.0, 5.0, 4.0, 4.0], 0)  # task 0: the shared prefix
                _log_task(log, 1, tests(s), 400)
                # The trainability probe at the switch into task 1 (env step 400), logged at
                # the end of the iteration that switched: past 400 when it went on after it.
                ratio = {"plasticity/at_switch/agent/probe_loss_ratio": 7.0 + s}
                log.log_metrics(ratio, step=400 + 25 * s)
                if method == "none":  # re-tests of task 0 after it ended: forgetting 5 - 3
                    for step in (500, 700):
                        log.log_metrics({"task/0/retest_return": 3.0}, step=step)
        tags = {**base, "method": "none", "seed": str(s), "task/0/name": "b"}
        tags.update({"knife.role": "scratch", "knife.scratch_task": "1"})
        with TrialLogger(uri, "paired", run_name=f"scratch-{s}-t1", tags=tags) as log:
            _log_task(log, 0, scratch_tests(s), 0)  # task 1 alone, as its task 0
            log.log_metrics({"learner_updates": 100.0 + 10 * s}, step=STEPS[-1])
    out = root / "out"
    result = build_report("paired", uri, out, reps=2000, log_to_mlflow=False, progress=False)
    return result, out


def _rows(out, name="paired.csv"):
    return list(csv.DictReader(open(out / name)))


def _row(rows, method, against, score):
    [row] = [r for r in rows if (r["method"], r["against"], r["score"]) == (method, against, score)]
    return row


def _final(values):
    return float(np.mean(values[-FINAL_TESTS:]))


def _paired_t(d):
    d = np.asarray(d)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return 2 * stats.t.sf(abs(t), len(d) - 1)


def test_gap_of_none_against_scratch_matches_a_hand_computation(report):
    _, out = report
    rows = _rows(out)
    gap = _row(rows, "none", "scratch", "final")
    d = [_final(none_tests(s)) - _final(scratch_tests(s)) for s in SEEDS]
    # final = mean of the last 3 tests: none 5/3 + 0.5 s + noise, scratch 4 + 0.5 s
    assert d == pytest.approx([5 / 3 - 4 + n for n in NOISE])
    assert float(gap["diff_mean"]) == pytest.approx(np.mean(d))
    assert int(gap["seeds"]) == 4 and gap["task"] == "1" and gap["task_name"] == "b"
    assert float(gap["diff_low"]) <= np.mean(d) <= float(gap["diff_high"])
    assert min(d) <= float(gap["diff_low"]) and float(gap["diff_high"]) <= max(d)
    # Normalized by the scratch references: 0 = mean first test (0.75), 1 = mean final (4.75)
    zero = np.mean([scratch_tests(s)[0] for s in SEEDS])
    one = np.mean([_final(scratch_tests(s)) for s in SEEDS])
    assert (zero, one) == pytest.approx((0.75, 4.75))
    assert float(gap["norm_diff_mean"]) == pytest.approx(np.mean(d) / (one - zero))
    assert float(gap["p"]) == pytest.approx(_paired_t(d))
    assert gap["verdict"] == "loss"
    # Forward transfer (MEAL): (AUC - AUC_scratch) / |AUC_scratch| per seed, then the mean.
    auc = _row(rows, "none", "scratch", "auc")
    ft = [
        (_auc(none_tests(s)) - _auc(scratch_tests(s))) / abs(_auc(scratch_tests(s))) for s in SEEDS
    ]
    assert float(auc["forward_transfer_mean"]) == pytest.approx(np.mean(ft))
    assert auc["verdict"] == "loss"
    # The gap plot's x: the learner updates a task's budget buys (the references' mean).
    assert float(gap["updates_per_task"]) == pytest.approx(115.0)
    png = (out / "plasticity_gap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_methods_are_paired_against_none_and_scratch_with_holm_over_the_report(report):
    result, out = report
    rows = _rows(out)
    # 2 scores x (none - scratch, knife - none, knife - scratch), task 1 only: task 0 is the
    # shared prefix, before any switch.
    assert len(rows) == 6 and {r["task"] for r in rows} == {"1"}
    better = _row(rows, "knife", "none", "final")
    d = [_final(knife_tests(s)) - _final(none_tests(s)) for s in SEEDS]
    assert float(better["diff_mean"]) == pytest.approx(np.mean(d))
    assert float(better["prob_improvement"]) == 1.0  # every knife run above every none run
    assert better["verdict"] == "better"
    # Holm over the 6 tests, by hand: sort, multiply by (m - rank), running max, cap at 1.
    p = np.array([float(r["p"]) for r in rows])
    order = np.argsort(p)
    by_hand = np.empty(6)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (6 - rank) * p[i]))
        by_hand[i] = running
    assert [float(r["p_holm"]) for r in rows] == pytest.approx(by_hand.tolist())
    # KNIFE against a fresh network: differences of +-0.02 (normalized +-0.005), within the
    # stated margin of 0.1 -> equivalent by two one-sided tests, not by interval overlap.
    same = _row(rows, "knife", "scratch", "final")
    assert abs(float(same["norm_diff_mean"])) < 0.01
    assert same["equivalent"] == "True" and same["verdict"] == "equivalent"
    md = (out / "report.md").read_text()
    first = md.index("## Is there plasticity loss here?")
    assert first < md.index("## Each method against `none`") < md.index("## Scores per method")
    assert "**`ab` (qmix)**: **Yes**: `none` learns worse than a fresh network on 1: b" in md
    assert "Holm-adjusted over the 6 tests" in md and f"+-{EQUIVALENCE_MARGIN}" in md
    assert "4 finished trial runs" not in md and "8 finished trial runs and 4 scratch" in md
    # The scratch references are never pooled with `none` in the per-method scores.
    none_1 = [r for r in result.rows if (r["method"], r["task"]) == ("none", "1")]
    assert [r["seeds"] for r in none_1] == [4]


def test_forgetting_and_raw_rows(report):
    _, out = report
    [row] = _rows(out, "forgetting.csv")  # only none re-tested task 0
    assert (row["method"], row["task"], row["seeds"]) == ("none", "0", "4")
    assert float(row["forgetting_mean"]) == pytest.approx(5.0 - 3.0)  # peak 5, last re-test 3
    raw = _rows(out, "runs.csv")
    scratch = [r for r in raw if r["role"] == "scratch"]
    assert len(raw) == 8 * 2 + 4 and len(scratch) == 4
    assert {r["task"] for r in scratch} == {"1"}  # filed under the task it references
    # The probe's ratio at the switch is filed under the task that switch ended.
    none_s2 = [r for r in raw if (r["role"], r["method"], r["seed"]) == ("trial", "none", "2")]
    assert [r["probe_agent_ratio_end"] for r in none_s2] == ["9.0", ""]
    # ... and in the summary, per method and task: the IQM of 7, 8, 9, 10 is mean(8, 9).
    summary = _rows(out, "summary.csv")
    none_0 = next(r for r in summary if (r["method"], r["task"]) == ("none", "0"))
    assert float(none_0["probe_agent_ratio_end_iqm"]) == pytest.approx(8.5)
    assert none_0["probe_mixer_ratio_end_iqm"] == ""  # never logged
    md = (out / "report.md").read_text()
    assert "| task | method | stagnant agent | stagnant mixer | probe agent | probe mixer |" in md
    assert "| 0: a | none | - | - | 8.500 | - |" in md
    s1 = next(r for r in scratch if r["seed"] == "1")
    assert float(s1["final_mean"]) == pytest.approx(_final(scratch_tests(1)))


def test_task_values_and_the_answer_without_enough_seeds():
    v = task_values(np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 6.0, 4.0]), 3.0, 2, np.array([1.0]))
    assert v == TaskValues(start=1.0, final=5.0, auc=3.0, forgetting=6.0 - 1.0)
    assert task_values(np.array([]), np.array([]), None) == TaskValues(None, None, None)
    row = {"task": "1", "task_name": "b", "score": "final", "seeds": 3}
    undecided = {**row, "verdict": "undetermined", "seeds_for_power_observed": 23}
    undecided["seeds_for_power_min_effect"] = 41
    text = answer([undecided])
    assert text.startswith("**Not determined with 3 seeds**")
    assert "needs up to 23 seeds" in text and "41 at a normalized effect" in text


def test_grid_points_besides_method_and_seed_are_groups_of_their_own(tmp_path):
    """Two values of a params axis (tag knife.point): each pairs its own runs by seed."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    base = {"algorithm": "qmix", "knife.kind": "trial", "sequence": "ab"}
    for point, lift in (("lr1", 1.0), ("lr2", 3.0)):
        for s in (0, 1):
            for method, extra in (("none", 0.0), ("knife", lift)):
                tags = {**base, "method": method, "seed": str(s), "knife.point": point}
                with TrialLogger(uri, "points", tags=tags) as log:
                    _log_task(log, 0, [0.0, 1.0, 1.0, 1.0], 0)
                    _log_task(log, 1, [v + extra + 0.1 * s for v in (0, 1, 2, 3)], 400)
    out = tmp_path / "out"
    # Logged to MLflow too: the point's name ("ab [lr1]") is cleaned into a metric name.
    result = build_report("points", uri, out, reps=500, progress=False)
    logged = MlflowClient(uri).get_run(result.mlflow_run_id)
    assert logged.info.status == "FINISHED"
    assert {k for k in logged.data.metrics if "task_1/knife" in k} == {
        "final_return_iqm/ab lr1/task_1/knife",
        "final_return_iqm/ab lr2/task_1/knife",
    }
    rows = [r for r in _rows(out) if r["score"] == "final"]
    got = {(r["sequence"], r["method"], r["against"], r["seeds"]) for r in rows}
    assert got == {("ab [lr1]", "knife", "none", "2"), ("ab [lr2]", "knife", "none", "2")}
    lifts = {r["sequence"]: float(r["diff_mean"]) for r in rows}
    assert lifts == pytest.approx({"ab [lr1]": 1.0, "ab [lr2]": 3.0})
    assert "Not paired" not in (out / "report.md").read_text()


def test_repeated_sequences_share_references_and_compare_visits(tmp_path):
    """tasks.repeat: a -> b -> a#2 -> b#2. One scratch reference of b serves both visits
    (knife.scratch_tasks = 1,3); each later visit is paired against the first visit."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    base = {"algorithm": "qmix", "knife.kind": "trial", "sequence": "abab"}
    names = {f"task/{i}/name": n for i, n in enumerate(("a", "b", "a#2", "b#2"))}
    visits = {0: [0, 2, 4, 4], 1: [0, 1, 2, 3], 2: [1, 2, 2, 2], 3: [0, 0, 1, 1]}
    for s in (0, 1, 2):
        tags = {**base, **names, "method": "none", "seed": str(s)}
        with TrialLogger(uri, "rep", tags=tags) as log:
            for i, tests in visits.items():
                _log_task(log, i, [v + 0.1 * s * i for v in tests], 400 * i)
        tags = {**base, "method": "scratch", "seed": str(s), "task/0/name": "b"}
        tags.update({"knife.role": "scratch", "knife.scratch_task": "1"})
        tags["knife.scratch_tasks"] = "1,3"
        with TrialLogger(uri, "rep", tags=tags) as log:
            _log_task(log, 0, [0.0, 2.0, 4.0, 6.0 + s], 0)
    out = tmp_path / "out"
    build_report("rep", uri, out, reps=500, log_to_mlflow=False, progress=False)
    rows = [r for r in _rows(out) if r["score"] == "final"]
    gaps = {r["task"]: r for r in rows if r["against"] == "scratch"}
    assert sorted(gaps) == ["1", "3"]  # both visits of b against the one reference
    for i, gap in gaps.items():
        d = [_final([v + 0.1 * s * int(i) for v in visits[int(i)]]) - _final([0, 2, 4, 6 + s])
             for s in (0, 1, 2)]  # fmt: skip
        assert float(gap["diff_mean"]) == pytest.approx(np.mean(d))
    later = {r["task"]: r for r in rows if r["against"] == "first visit"}
    assert sorted(later) == ["2", "3"] and later["3"]["task_name"] == "b#2"
    for i, j in (("2", 0), ("3", 1)):
        d = [
            _final([v + 0.1 * s * int(i) for v in visits[int(i)]])
            - _final([v + 0.1 * s * j for v in visits[j]])
            for s in (0, 1, 2)
        ]
        assert float(later[i]["diff_mean"]) == pytest.approx(np.mean(d))
    assert "| 3: b#2 | final | none | first visit | 3 |" in (out / "report.md").read_text()


def test_normalization_puts_0_at_the_random_policy_and_1_at_the_scratch_final():
    from knife.platform.paired_tables import SCRATCH, normalizers

    refs = {
        "0": TaskValues(5.0, 9.0, None, random=1.0),
        "1": TaskValues(5.0, 11.0, None, random=3.0),
    }
    assert normalizers({("s", "qmix"): {SCRATCH: {1: refs}}}) == {("s", "qmix", 1): (2.0, 10.0)}
    # Without a measured random policy: the references' first greedy test.
    old = {"0": TaskValues(4.0, 9.0, None), "1": TaskValues(6.0, 11.0, None)}
    assert normalizers({("s", "qmix"): {SCRATCH: {1: old}}}) == {("s", "qmix", 1): (5.0, 10.0)}
    # References that end no better than random: no normalization.
    flat = {
        "0": TaskValues(0.0, 1.0, None, random=2.0),
        "1": TaskValues(0.0, 1.0, None, random=2.0),
    }
    assert normalizers({("s", "qmix"): {SCRATCH: {1: flat}}}) == {}

"""`knife report` on a hand-made MLflow store (no Ray): numbers against a hand computation."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform import cli  # noqa: E402
from knife.platform.tracking import TrialLogger, resolve_tracking_uri  # noqa: E402

# Single-env runs: method -> seed -> greedy test curve [(env step, return), ...]
CURVES = {
    "none": {
        0: [(100, 0.0), (200, 2.0), (300, 4.0)],
        1: [(100, 1.0), (200, 1.0), (300, 1.0)],
        2: [(100, 0.0), (200, 4.0), (300, 6.0)],
        3: [(100, 2.0), (200, 3.0), (300, 10.0)],
    },
    "knife": {
        0: [(100, 5.0), (200, 5.0), (300, 5.0)],
        1: [(100, 5.0), (200, 7.0), (300, 7.0)],
        2: [(100, 5.0), (200, 5.0), (300, 5.0)],
        3: [(100, 5.0), (200, 5.0), (300, 5.0)],
    },
}
# Sequence runs: method -> seed -> per task (final test return, auc)
SEQ = {
    "redo": {0: [(8.0, 6.0), (1.0, 0.5)], 1: [(6.0, 5.0), (3.0, 2.5)]},
}
# Sequence runs' agent stagnant fraction: (env step, value); task 1 starts at step 100, so task
# 0 ends with the value at step 50 (the value logged at the switch, 100, is after it).
STAGNANT = {0: [(50, 0.2), (100, 0.9), (150, 0.3)], 1: [(50, 0.4), (100, 0.8), (150, 0.6)]}
EXPERIMENT = "handmade"


def _log_curve(log: TrialLogger, key: str, curve) -> None:
    for step, value in curve:
        log.log_metrics({key: value}, step=step)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    runs = tmp_path_factory.mktemp("report") / "runs"
    uri = resolve_tracking_uri(runs, "sqlite:///" + str(runs.resolve() / "mlflow.db"))
    base = {"algorithm": "qmix", "knife.kind": "trial", "code_version": "test"}
    for method, seeds in CURVES.items():
        for seed, curve in seeds.items():
            tags = {**base, "method": method, "seed": seed, "sequence": "none"}
            tags["env"] = "matrix:climbing"
            with TrialLogger(uri, EXPERIMENT, run_name=f"{method}-{seed}", tags=tags) as log:
                _log_curve(log, "test/return", curve)
                stagnant = [(s, 0.1 * seed + 0.01 * s / 100) for s, _ in curve]
                _log_curve(log, "plasticity/agent/stagnant_fraction", stagnant)
                _log_curve(log, "plasticity/mixer/stagnant_fraction", stagnant)
    for method, seeds in SEQ.items():
        for seed, tasks in seeds.items():
            tags = {**base, "method": method, "seed": seed, "sequence": "two"}
            tags.update({"env": "matrix:climbing", "task/0/name": "climb", "task/1/name": "pen"})
            with TrialLogger(uri, EXPERIMENT, run_name=f"{method}-{seed}", tags=tags) as log:
                for i, (final, auc) in enumerate(tasks):
                    log.log_metrics(
                        {
                            f"task/{i}/final_test_return": final,
                            f"task/{i}/auc": auc,
                            f"task/{i}/start_env_steps": 100.0 * i,
                        },
                        step=100 * (i + 1),
                    )
                    _log_curve(
                        log, f"task/{i}/test_return", [(100 * i, 0.0), (100 * i + 100, final)]
                    )
                _log_curve(log, "plasticity/agent/stagnant_fraction", STAGNANT[seed])
    # The same method under VDN: its own rows, not pooled with QMIX's.
    tags = {**base, "algorithm": "vdn", "method": "none", "seed": 0, "sequence": "none"}
    with TrialLogger(uri, EXPERIMENT, run_name="vdn-none-0", tags={**tags, "env": "x"}) as log:
        _log_curve(log, "test/return", [(100, -7.0), (200, -7.0)])
    # Not counted: an unfinished trial and an earlier report run.
    log = TrialLogger(uri, EXPERIMENT, tags={**base, "method": "none", "seed": "9"})
    log.start()
    log.log_metrics({"test/return": 1000.0}, step=100)  # still RUNNING
    with TrialLogger(uri, EXPERIMENT, tags={"knife.kind": "report"}) as rep:
        rep.log_metrics({"test/return": -1000.0}, step=1)
    return runs


def _iqm_by_hand(values):
    ordered = sorted(values)
    cut = len(ordered) // 4
    kept = ordered[cut : len(ordered) - cut]
    return sum(kept) / len(kept)


def _auc_by_hand(curve):
    pairs = zip(curve[:-1], curve[1:], strict=True)
    area = sum((s1 - s0) * (v0 + v1) / 2 for (s0, v0), (s1, v1) in pairs)
    return area / (curve[-1][0] - curve[0][0])


def test_report_tables_match_a_hand_computation(store, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    argv = ["report", EXPERIMENT, "--runs-dir", str(store), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "# Report: handmade" in printed and "logged as MLflow run" in printed
    rows = {
        (r["sequence"], r["task"], r["method"]): r
        for r in csv.DictReader(open(out / "summary.csv"))
        if r["algorithm"] == "qmix"
    }
    [vdn] = [r for r in csv.DictReader(open(out / "summary.csv")) if r["algorithm"] == "vdn"]
    assert (vdn["method"], vdn["seeds"], float(vdn["final_return_iqm"])) == ("none", "1", -7.0)

    # Single env: final = last test; AUC = trapezoid / span; 4 seeds each
    for method, seeds in CURVES.items():
        row = rows[("none", "0", method)]
        finals = [curve[-1][1] for curve in seeds.values()]
        aucs = [_auc_by_hand(curve) for curve in seeds.values()]
        assert int(row["seeds"]) == 4 and row["task_name"] == "matrix:climbing"
        assert float(row["final_return_iqm"]) == pytest.approx(_iqm_by_hand(finals))
        assert float(row["auc_iqm"]) == pytest.approx(_iqm_by_hand(aucs))
        assert min(finals) <= float(row["final_return_ci_low"]) <= float(row["final_return_iqm"])
        assert float(row["final_return_iqm"]) <= float(row["final_return_ci_high"]) <= max(finals)
        assert row["final_win_rate_iqm"] == ""  # no win in this env
    # none: finals [4, 1, 6, 10] -> middle two 4, 6 -> 5.0
    assert float(rows[("none", "0", "none")]["final_return_iqm"]) == 5.0
    # knife: every seed but one ends at 5 -> IQM 5 (the outlier is trimmed)
    assert float(rows[("none", "0", "knife")]["final_return_iqm"]) == 5.0

    # Sequence: per-task numbers from task/<i>/..., then `all` over both tasks
    redo = SEQ["redo"]
    for i in (0, 1):
        row = rows[("two", str(i), "redo")]
        finals = [tasks[i][0] for tasks in redo.values()]
        assert row["task_name"] == ("climb" if i == 0 else "pen")
        assert float(row["final_return_iqm"]) == pytest.approx(sum(finals) / 2)
        assert float(row["final_return_ci_low"]) == min(finals)
        assert float(row["final_return_ci_high"]) == max(finals)
    everything = rows[("two", "all", "redo")]
    finals = [f for tasks in redo.values() for f, _ in tasks]  # 8, 1, 6, 3
    assert float(everything["final_return_iqm"]) == pytest.approx(_iqm_by_hand(finals))  # 4.5
    assert float(everything["final_return_iqm"]) == 4.5
    assert len(rows) == 2 + 3  # (none, knife) on one env + redo x (task 0, task 1, all)

    # Stagnant fraction at each task's end: IQM over the two seeds (= their mean).
    assert float(rows[("two", "0", "redo")]["stagnant_agent_end_iqm"]) == pytest.approx(0.3)
    assert float(rows[("two", "1", "redo")]["stagnant_agent_end_iqm"]) == pytest.approx(0.45)
    assert rows[("two", "0", "redo")]["stagnant_mixer_end_iqm"] == ""  # never logged

    # runs.csv: the raw value behind every cell, one row per run and task.
    raw = list(csv.DictReader(open(out / "runs.csv")))
    assert len(raw) == 8 + 1 + 2 * 2  # single-env qmix, single-env vdn, 2 seeds x 2 tasks
    redo0 = [r for r in raw if r["method"] == "redo" and r["seed"] == "0"]
    assert [(r["task"], r["task_name"], float(r["final_return"])) for r in redo0] == [
        ("0", "climb", 8.0),
        ("1", "pen", 1.0),
    ]
    assert [float(r["stagnant_agent_end"]) for r in redo0] == [0.2, 0.3]
    assert [float(r["start_env_steps"]) for r in redo0] == [0.0, 100.0]

    # headline.csv: KNIFE against the best other method where a group has KNIFE. AUC: KNIFE's
    # runs 5, 6.5, 5, 5 against none's 2, 1, 3.5, 4.5 -> intervals apart, a win.
    head = list(csv.DictReader(open(out / "headline.csv")))
    assert [(h["sequence"], h["score"], h["other_method"], h["verdict"]) for h in head] == [
        ("none", "final_return", "none", "overlap"),
        ("none", "auc", "none", "win"),
    ]
    assert float(head[1]["knife_iqm"]) == 5.0 and float(head[1]["other_iqm"]) == 2.75

    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "learning_curves_none_qmix.png",
        "learning_curves_none_vdn.png",
        "learning_curves_two_qmix.png",
        "stagnant_fraction_none_qmix.png",
        "stagnant_fraction_none_vdn.png",
        "stagnant_fraction_two_qmix.png",
        "stagnation_vs_learning_two_qmix.png",
    ]
    md = (out / "report.md").read_text()
    assert "### Sequence `none`, algorithm `vdn`" in md
    assert "| 0: matrix:climbing | none | 4 | 5.000 [" in md
    assert "| 0: climb | redo | 0.300 | - |" in md
    assert "| 0: matrix:climbing | AUC | 5.000 [" in md and "| best other: none | 2.750 [" in md


def test_spearman_rank_correlation():
    from knife.platform.report import spearman

    assert spearman([(0.1, 5.0), (0.5, 3.0), (0.9, 1.0)]) == pytest.approx(-1.0)
    assert spearman([(0.1, 1.0), (0.2, 1.5), (0.9, 9.0), (0.5, 2.0)]) == pytest.approx(1.0)
    # ties take their mean rank: ranks x (0.5, 0.5, 2), y (0, 1, 2)
    assert spearman([(0.3, 1.0), (0.3, 2.0), (0.7, 3.0)]) == pytest.approx(0.8660254)
    assert spearman([(0.1, 1.0), (0.2, 2.0)]) is None  # too few points
    assert spearman([(0.5, 1.0), (0.5, 2.0), (0.5, 3.0)]) is None  # constant side


def test_report_run_is_logged_and_skipped_next_time(store, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "again"
    argv = ["report", EXPERIMENT, "--runs-dir", str(store), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    client = MlflowClient(tracking_uri="sqlite:///" + str(store.resolve() / "mlflow.db"))
    # In their own experiment, not among the trials (a hand-made one of the old layout stays
    # in EXPERIMENT and is skipped as a report all the same).
    exp = client.get_experiment_by_name(EXPERIMENT + "/report")
    reports = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("knife.kind") == "report" and r.info.status == "FINISHED"
    ]
    assert reports and all(r.data.tags["knife.reports_on"] == EXPERIMENT for r in reports)
    latest = max(reports, key=lambda r: r.info.start_time)
    arts = {a.path for a in client.list_artifacts(latest.info.run_id)}
    assert {"report.md", "summary.csv", "plots"} <= arts
    assert latest.data.metrics["final_return_iqm/none/task_0/none"] == 5.0


def test_report_bad_input(store, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "nothing"
    rc = cli.main(["report", "nope", "--runs-dir", str(store), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "experiment 'nope' not found" in err and EXPERIMENT in err
    assert not out.exists()
    assert cli.main(["report", EXPERIMENT, "--runs-dir", str(store), "--reps", "5"]) == 2
    for flag, value, says in (("--final-tests", "0", "at least 1"), ("--margin", "-1", "> 0")):
        argv = ["report", EXPERIMENT, "--runs-dir", str(store), "--out", str(out), flag, value]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"{flag}: must be" in err and says in err and not out.exists()
    empty = tmp_path / "empty_runs"
    empty.mkdir()
    shutil.copyfile(store / "mlflow.db", empty / "mlflow.db")
    from mlflow import MlflowClient

    MlflowClient("sqlite:///" + str(empty / "mlflow.db")).create_experiment("blank")
    assert cli.main(["report", "blank", "--runs-dir", str(empty), "--out", str(out)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def _row(task, method, iqm, low, high, sequence="s"):
    row = {"sequence": sequence, "algorithm": "qmix", "task": task, "task_name": f"t{task}"}
    row.update(method=method, final_return_iqm=iqm, final_return_ci_low=low)
    row.update(final_return_ci_high=high, auc_iqm=None, final_win_rate_iqm=None)
    return row


def test_headline_sets_knife_against_the_best_other_method_and_its_ablations():
    from knife.platform.headline import headline_markdown, headline_rows

    rows = [
        _row("0", "knife", 5.0, 4.5, 5.5),
        _row("0", "none", 3.0, 2.0, 4.0),  # best other; wholly below KNIFE -> win
        _row("0", "redo", 2.0, 1.0, 2.5),
        _row("0", "knife_no_freeze", 9.0, 8.0, 10.0),  # an ablation is not an "other method"
        _row("1", "knife", 1.0, 0.0, 2.0),
        _row("1", "none", 3.0, 2.5, 3.5),  # wholly above KNIFE -> loss
        _row("1", "redo", 4.0, 1.5, 6.0),  # best other, overlapping -> overlap (no verdict)
        _row("1", "knife_no_freeze", 1.0, 0.5, 1.5),
        _row("all", "knife", 3.0, 2.0, 4.0),
        _row("all", "none", 3.0, 2.5, 3.5),
        _row("all", "knife_no_freeze", 6.0, 4.5, 7.0),  # wholly above KNIFE -> loss
        _row("0", "none", 1.0, 0.0, 2.0, sequence="no_knife"),  # nothing to compare
    ]
    got = [
        (h["task"], h["against"], h["other_method"], h["verdict"], h["knife_rank"])
        for h in headline_rows(rows)
    ]
    assert got == [
        ("0", "best other", "none", "win", "1"),
        ("1", "best other", "redo", "overlap", "3"),
        ("all", "best other", "none", "overlap", "1"),  # equal IQM: KNIFE shares first place
        ("all", "ablation", "knife_no_freeze", "loss", ""),
    ]
    md = "\n".join(headline_markdown(headline_rows(rows)))
    assert "| 1: t1 | final return | 1.000 [0.000, 2.000] | best other: redo | 4.000 [1.500, " in md
    assert "| overlap | 3 of 3 |" in md

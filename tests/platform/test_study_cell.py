"""One cell of the study (issue 7) re-run at tiny scale: the study's own sweep file, cut down
to two methods (none, knife), one algorithm and two seeds with 60 env steps per task, goes
through the real `knife sweep` (embedded Ray, SQLite MLflow) and `knife report`, and comes out
with everything the committed results in docs/results/ have: their columns in their order, and
their tables (the numbers differ). Those results predate issue 16's paired tables, which the
report has added since (columns role, final_mean, forgetting; the paired sections)."""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_platform_sweep_e2e import knife_cmd, knife_env, write_sweep

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "tune_configs" / "study_matrix.yaml"
COMMITTED = ROOT / "docs" / "results" / "study_matrix"


def _table_headers(markdown: str) -> list[str]:
    """Section headings (sequence/algorithm made generic) and table header rows."""
    out = []
    for line in markdown.splitlines():
        if line.startswith(("## Sequence", "### Sequence")):
            out.append("## Sequence")
        elif line.startswith("| task |"):
            out.append(line)
    return out


@pytest.mark.e2e
@pytest.mark.own_ray
def test_one_study_cell_at_tiny_scale_has_the_committed_report_format(tmp_path):
    raw = yaml.safe_load(STUDY.read_text())
    raw["name"] = raw["mlflow"]["experiment"] = "study_cell"
    raw["base"]["algorithm"] = "qmix"
    raw["base"]["evaluation"]["interval"] = 20
    raw["base"]["plasticity"]["monitor"]["metrics_interval"] = 5
    raw["grid"].update(methods=["none", "knife"], seeds=[0, 1])
    del raw["grid"]["exclude"]  # no VDN here
    for task in raw["grid"]["sequences"]["matrix_payoffs"]["tasks"]:
        task["steps"] = 60
    sweep = write_sweep(tmp_path, raw)
    runs = tmp_path / "runs"
    run = subprocess.run(
        knife_cmd("sweep", str(sweep), "--runs-dir", str(runs), "--quiet"),
        env=knife_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "report"
    report = subprocess.run(
        knife_cmd("report", "study_cell", "--runs-dir", str(runs), "--out", str(out),
                  "--no-progress"),
        env=knife_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]

    for name in ("summary.csv", "runs.csv", "headline.csv"):
        ours = list(csv.DictReader(open(out / name)))
        committed = list(csv.DictReader(open(COMMITTED / name)))
        # Every committed column is still there, in the same order (new ones in between).
        columns = iter(ours[0])
        assert all(c in columns for c in committed[0]), (name, list(ours[0]), list(committed[0]))
    rows = list(csv.DictReader(open(out / "summary.csv")))
    # The cell: 4 tasks + `all` per method, both seeds in each, every score filled in.
    assert [(r["task"], r["method"]) for r in rows] == [
        (task, method) for task in ("0", "1", "2", "3", "all") for method in ("knife", "none")
    ]
    assert all(r["algorithm"] == "qmix" for r in rows)
    assert all(r["seeds"] == "2" and r["final_return_iqm"] != "" for r in rows)
    assert all(r["stagnant_agent_end_iqm"] != "" for r in rows if r["task"] != "all")
    raw_rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(raw_rows) == 2 * 2 * 4
    # The headline: KNIFE against `none` (the only other method) on every task and score.
    head = list(csv.DictReader(open(out / "headline.csv")))
    assert {(h["task"], h["score"]) for h in head} == {
        (task, score) for task in ("0", "1", "2", "3", "all") for score in ("final_return", "auc")
    }
    verdicts = {"win", "overlap", "loss"}  # `tie` before issue 16: overlap is no verdict
    assert all(h["other_method"] == "none" and h["verdict"] in verdicts for h in head)

    ours_md = (out / "report.md").read_text()
    committed_md = (COMMITTED / "report.md").read_text()
    # The end-of-task table gains the probe's columns where the probe ran (it runs at the
    # switch by default now; the committed study predates it).
    probe_header = "| task | method | stagnant agent | stagnant mixer | probe agent | probe mixer |"
    assert probe_header in _table_headers(ours_md)
    ours_headers = {
        "| task | method | agent | mixer |" if h == probe_header else h
        for h in _table_headers(ours_md)
    }
    assert set(_table_headers(committed_md)) <= ours_headers
    assert "## Each method against `none` and against the scratch reference" in ours_md
    ours_plots = {re.sub(r"_matrix_payoffs_\w+\.png", "", p.name) for p in out.glob("*.png")}
    committed_plots = {
        re.sub(r"_matrix_payoffs_\w+\.png", "", p.name) for p in COMMITTED.glob("*.png")
    }
    assert (
        ours_plots
        == committed_plots
        == {
            "learning_curves",
            "stagnant_fraction",
            "stagnation_vs_learning",
        }
    )

"""The study's headline, computed from `knife report`'s rows: KNIFE next to the best other
method and next to its own ablations, with a verdict read from the 95% intervals.

Per sequence, algorithm and task (and `all`), for each score:
* against the best other method: the non-KNIFE method (baseline or intervention; the KNIFE
  ablations are not "other methods") with the highest IQM;
* against each ablation (DESIGN 7), on the sequence as a whole (`all`; the one task of a
  single-env run).
Verdict, from KNIFE's side: `win` when KNIFE's interval lies wholly above the other's,
`loss` when wholly below, `overlap` when they overlap: no verdict (overlap is not a test;
the paired tables of knife.platform.paired_tables decide). The rank is KNIFE's place by IQM
among KNIFE and the non-ablation methods (1 = best).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from knife.platform.stats import format_interval

KNIFE = "knife"
HEADLINE_SCORES = ("final_return", "auc", "final_win_rate")
PARTS = ("iqm", "ci_low", "ci_high")
SCORE_NAMES = {"final_return": "final return", "auc": "AUC", "final_win_rate": "final win rate"}
COLUMNS = (
    "sequence",
    "algorithm",
    "task",
    "task_name",
    "score",
    "against",
    "other_method",
    "knife_iqm",
    "knife_ci_low",
    "knife_ci_high",
    "other_iqm",
    "other_ci_low",
    "other_ci_high",
    "verdict",
    "knife_rank",
    "methods_ranked",
)


def verdict(knife: Mapping[str, Any], other: Mapping[str, Any], score: str) -> str:
    if knife[f"{score}_ci_low"] > other[f"{score}_ci_high"]:
        return "win"
    if knife[f"{score}_ci_high"] < other[f"{score}_ci_low"]:
        return "loss"
    return "overlap"


def headline_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (sequence, algorithm, task, score, comparison); empty without KNIFE."""
    from knife.plasticity.interventions import KNIFE_ABLATIONS  # torch: only when reporting

    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:  # `rows` is already ordered task 0, 1, ..., all
        cells.setdefault((r["sequence"], r["algorithm"], r["task"]), []).append(r)
    out = []
    for (sequence, algorithm, task), cell in cells.items():
        knife = next((r for r in cell if r["method"] == KNIFE), None)
        if knife is None:
            continue
        # The ablations are compared on the whole sequence: its `all` row, or the only task
        # of a group that has none (a single env, or a one-task sequence).
        whole = task == "all" or (sequence, algorithm, "all") not in cells
        for score in HEADLINE_SCORES:
            if knife.get(f"{score}_iqm") is None:
                continue
            scored = [r for r in cell if r.get(f"{score}_iqm") is not None]
            others = [r for r in scored if r["method"] not in (KNIFE, *KNIFE_ABLATIONS)]
            compared = []
            if others:
                best = max(others, key=lambda r: r[f"{score}_iqm"])
                ahead = sum(r[f"{score}_iqm"] > knife[f"{score}_iqm"] for r in others)
                compared.append(("best other", best, f"{ahead + 1}", len(others) + 1))
            if whole:
                ablations = sorted((r for r in scored if r["method"] in KNIFE_ABLATIONS),
                                   key=lambda r: r["method"])  # fmt: skip
                compared += [("ablation", r, "", "") for r in ablations]
            for against, other, rank, ranked in compared:
                out.append(
                    {
                        "sequence": sequence,
                        "algorithm": algorithm,
                        "task": task,
                        "task_name": knife["task_name"],
                        "score": score,
                        "against": against,
                        "other_method": other["method"],
                        **{f"knife_{p}": knife[f"{score}_{p}"] for p in PARTS},
                        **{f"other_{p}": other[f"{score}_{p}"] for p in PARTS},
                        "verdict": verdict(knife, other, score),
                        "knife_rank": rank,
                        "methods_ranked": ranked,
                    }
                )
    return out


def write_headline_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def headline_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The table for one (sequence, algorithm) group; no lines when there is nothing to set
    KNIFE against."""
    if not rows:
        return []
    lines = [
        "KNIFE against the best other method (the KNIFE ablations excluded) and against its "
        "ablations. Verdict from KNIFE's side: win / loss when its 95% interval lies wholly "
        "above / below the other's; overlap is no verdict (the paired tables above decide). "
        "Rank: KNIFE's place by IQM among the non-ablation methods.",
        "",
        "| task | score | KNIFE | against | their IQM [95% CI] | verdict | KNIFE's rank |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        task = "all" if r["task"] == "all" else f"{r['task']}: {r['task_name']}"
        rank = f"{r['knife_rank']} of {r['methods_ranked']}" if r["knife_rank"] else ""
        lines.append(
            f"| {task} | {SCORE_NAMES[r['score']]} | {format_interval(r, 'knife')} | "
            f"{r['against']}: {r['other_method']} | {format_interval(r, 'other')} | "
            f"{r['verdict']} | {rank} |"
        )
    return lines

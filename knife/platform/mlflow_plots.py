"""Metric histories from MLflow and the plots built from them (trial artifacts, report).

Histories are read back from the store rather than kept in memory, so a trial restored
from a checkpoint (or the report, days later) plots everything that was logged. A restored
trial may log a step a second time; `history()` keeps the latest write of each step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knife.policies.metric_keys import START_ENV_STEPS, split_task_key
from knife.policies.registry import ALGORITHMS

# Every plasticity network of any registered algorithm (knife.policies.registry), in order.
NETWORKS = tuple(dict.fromkeys(n for spec in ALGORITHMS.values() for n in spec.networks))


@dataclass(frozen=True)
class Curve:
    """A line over env steps, with an optional interval band."""

    steps: np.ndarray
    center: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def task_boundaries(metrics: Mapping[str, float]) -> list[tuple[int, float]]:
    """[(task index, start env step), ...] from the `task/<i>/start_env_steps` metrics."""
    out = []
    for key, value in metrics.items():
        task = split_task_key(key)
        if task is not None and task[1] == START_ENV_STEPS:
            out.append((task[0], float(value)))
    return sorted(out)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a Ray worker or in CI
    import matplotlib.pyplot as plt

    return plt


def _palette(n: int) -> list[Any]:
    """n distinct colours: tab10 up to 10, else tab20's dark shades first, then its light."""
    plt = _pyplot()
    if n <= 10:
        return [plt.get_cmap("tab10")(k) for k in range(n)]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return [plt.get_cmap("tab20")(order[k % 20]) for k in range(n)]


def _draw(
    ax: Any,
    curves: Mapping[str, Curve | Sequence[Curve]],
    boundaries: Sequence[tuple[int, float]],
    names: Mapping[int, str] | None = None,
) -> None:
    """Each label is one line, or several segments (one per task) in one colour. Every label
    gets its own colour (a study has 11 methods; matplotlib's default cycle has 10), and
    `knife` is drawn thicker, on top."""
    palette = _palette(len(curves))
    for k, (label, value) in enumerate(curves.items()):
        segments = [value] if isinstance(value, Curve) else list(value)
        color = palette[k]
        knife = label.split(" (")[0] == "knife"  # labels may carry "(n=5)"
        first = True
        for curve in segments:
            if len(curve.steps) == 0:
                continue
            ax.plot(
                curve.steps,
                curve.center,
                label=label if first else None,
                color=color,
                linewidth=2.6 if knife else 1.6,
                zorder=3 if knife else 2,
                marker="." if len(curve.steps) < 30 else None,
            )
            first = False
            if curve.low is not None and curve.high is not None:
                ax.fill_between(curve.steps, curve.low, curve.high, alpha=0.2, color=color)
    for index, step in boundaries:
        if index > 0:  # the first task's start is the plot's left edge: name it, no line
            ax.axvline(step, color="0.4", linestyle="--", linewidth=0.9)
        text = (names or {}).get(index, f"task {index}")
        ax.annotate(
            text,
            xy=(step if index > 0 else 0.0, 1.0),
            xycoords=("data" if index > 0 else "axes fraction", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="0.3",
        )
    ax.set_xlabel("env steps")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # curves with points
        ax.legend(fontsize=8, loc="best")


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finish_panels(plt: Any, fig: Any, axes: Any, title: str, path: str | Path) -> Path:
    """A row of panels: one legend (on the last panel with lines), the title, the file."""
    with_points = [ax for ax in axes[0] if ax.get_legend_handles_labels()[0]]
    if with_points:
        with_points[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def learning_curve_plot(
    curves: Mapping[str, Curve | Sequence[Curve]],
    boundaries: Sequence[tuple[int, float]],
    path: str | Path,
    *,
    title: str,
    ylabel: str = "greedy test return",
    names: Mapping[int, str] | None = None,
) -> Path:
    """Lines (with bands where given) over env steps; dashed lines at task switches."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    _draw(ax, curves, boundaries, names)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)


def stagnant_plot(
    panels: Mapping[str, Mapping[str, Curve | Sequence[Curve]]],
    boundaries: Sequence[tuple[int, float]],
    path: str | Path,
    *,
    title: str,
    names: Mapping[int, str] | None = None,
) -> Path:
    """One panel per network (agent, mixer): stagnant fraction over env steps."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(11, 3.8), squeeze=False)
    for ax, (network, curves) in zip(axes[0], panels.items(), strict=False):
        _draw(ax, curves, boundaries, names)
        ax.set_title(f"{network}", fontsize=10)
        ax.set_ylabel("stagnant fraction")
        ax.set_ylim(-0.02, 1.02)
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def stagnation_scatter_plot(
    points: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """One panel per network: stagnant fraction at the end of a task (x) against the area
    under the test curve on the next task relative to that task's median (y), one point per
    run and switch, by method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(1, len(points)), figsize=(11, 4.2), squeeze=False)
    methods = sorted({m for per_net in points.values() for m in per_net})
    palette = _palette(len(methods))
    for ax, (network, by_method) in zip(axes[0], points.items(), strict=False):
        for k, method in enumerate(methods):
            xy = np.array(by_method.get(method, []), dtype=float).reshape(-1, 2)
            if len(xy):
                ax.scatter(xy[:, 0], xy[:, 1], s=14, color=palette[k], label=method, alpha=0.8)
        ax.set_title(network, fontsize=10)
        ax.set_xlabel("stagnant fraction at the end of the previous task")
        ax.set_ylabel("AUC on the new task - its median over runs")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    return _finish_panels(plt, fig, axes, title, path)


def gap_plot(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float, float]]]],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """One panel per score: the plasticity gap (y, with its interval) against the learner
    updates a task's budget buys (x, log scale), one line per series of grid points."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(11, 4.2), squeeze=False)
    names = sorted({name for series in panels.values() for name in series})
    palette = dict(zip(names, _palette(len(names)), strict=True))
    for ax, (score, series) in zip(axes[0], panels.items(), strict=False):
        for name, points in sorted(series.items()):
            xs, ys, lows, highs = np.array(sorted(points), dtype=float).T
            ax.errorbar(xs, ys, yerr=[ys - lows, highs - ys], marker="o", ms=4, capsize=3,
                        color=palette[name], label=name)  # fmt: skip
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # decade labels only
        ax.set_xlabel("learner updates per task (the scratch reference's)")
        ax.set_ylabel(f"gap, {score}: none - scratch (normalized)")
        ax.grid(alpha=0.3)
    return _finish_panels(plt, fig, axes, title, path)

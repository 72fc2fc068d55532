"""Aggregate scores across seeds: interquartile mean and stratified bootstrap intervals.

The estimators follow rliable (Agarwal et al. 2021): IQM = the 25%-trimmed mean over all
scores (scipy.stats.trim_mean, as rliable's `aggregate_iqm`), and a percentile interval
from a *stratified* bootstrap: runs are resampled with replacement within each task (the
stratum), the statistic is recomputed on every resample. rliable itself is not a dependency
here: its `arch<8` pin installs arch 7, which fails to import against pandas 3 (which mlflow
brings), so the few lines it would give are written out below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import trim_mean

CONFIDENCE = 0.95
REPS = 2000


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int


def format_interval(row: Mapping[str, Any], prefix: str) -> str:
    """`IQM [low, high]` from a table row's `<prefix>_iqm`, `_ci_low`, `_ci_high`; `-` if
    the row has no estimate."""
    value = row.get(f"{prefix}_iqm")
    if value is None:
        return "-"
    return f"{value:.3f} [{row[f'{prefix}_ci_low']:.3f}, {row[f'{prefix}_ci_high']:.3f}]"


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all scores (any shape)."""
    flat = np.asarray(scores, dtype=np.float64).ravel()
    return float(trim_mean(flat, 0.25))


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of each row of [reps, n] (vectorized trim_mean with scipy's cut rule)."""
    n = samples.shape[1]
    cut = int(0.25 * n)  # scipy.stats.trim_mean: int(proportiontocut * n) from each end
    ordered = np.sort(samples, axis=1)
    return ordered[:, cut : n - cut].mean(axis=1)


def stratified_bootstrap(
    scores: np.ndarray,
    *,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """IQM of scores [n_runs, n_tasks] with a percentile interval from resampling the runs
    of each task (column) independently. One column: a plain bootstrap over seeds."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    n_runs, n_tasks = scores.shape
    if n_runs == 0:
        raise ValueError("no scores to aggregate")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_runs, size=(reps, n_runs, n_tasks))
    resampled = np.take_along_axis(np.broadcast_to(scores, (reps, n_runs, n_tasks)), idx, axis=1)
    stats = _iqm_rows(resampled.reshape(reps, n_runs * n_tasks))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return Estimate(iqm(scores), float(low), float(high), n_runs)


def curve_bands(
    values: np.ndarray, *, reps: int = 500, confidence: float = CONFIDENCE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM and bootstrap interval at each point of [n_runs, n_points] curves."""
    values = np.asarray(values, dtype=np.float64)
    n_runs, n_points = values.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_runs, size=(reps, n_runs))
    center = np.empty(n_points)
    low = np.empty(n_points)
    high = np.empty(n_points)
    alpha = (1.0 - confidence) / 2.0
    for j in range(n_points):
        column = values[:, j]
        center[j] = iqm(column)
        stats = _iqm_rows(column[idx])
        low[j], high[j] = np.quantile(stats, [alpha, 1.0 - alpha])
    return center, low, high

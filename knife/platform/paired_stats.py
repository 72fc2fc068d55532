"""Paired comparisons of two methods over seeds (issue 16, statistics that can tell).

Every method of a seed starts from the same seed (and, with paired branches, from the same
checkpoint), so a comparison is made on the per-seed differences d_i = a_i - b_i:

- `paired_difference`: mean of d with a bootstrap interval (scipy.stats.bootstrap,
  percentile method, resampling seeds);
- `probability_of_improvement`: P(a > b) as rliable defines it (Agarwal et al. 2021): the
  Mann-Whitney U statistic over all pairs of runs, ties counting one half, averaged over
  tasks;
- `paired_p_value`: two-sided paired t-test of mean(d) = 0 (the exact sign test where the
  differences have no spread);
- `equivalence`: two one-sided paired t-tests (TOST) against a stated margin; "equivalent"
  only when both reject, which CI overlap never shows;
- `holm`: Holm-Bonferroni adjusted p-values over the comparisons a report makes (scipy has
  Benjamini-Hochberg but not Holm; it is five lines);
- `seeds_needed`: seeds for a paired two-sided t-test to reach a power (default 80%) at an
  effect size d = mean / sd of the differences, from the noncentral t distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 100_000


@dataclass(frozen=True)
class PairedDifference:
    mean: float
    low: float
    high: float
    n: int


def _diffs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired scores need two 1-D arrays of one length, got {a.shape}, {b.shape}"
        )
    if a.size < 2:
        raise ValueError(f"a paired comparison needs at least 2 seeds, got {a.size}")
    return a - b


def _constant(d: np.ndarray) -> bool:
    """Differences without spread (up to float rounding): tests on them divide by ~0."""
    return bool(np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())))


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    reps: int = 9999,
    seed: int = 0,
) -> PairedDifference:
    """Mean of a_i - b_i over seeds and its percentile bootstrap interval."""
    d = _diffs(a, b)
    if _constant(d):  # no spread: the interval is the point
        return PairedDifference(float(d[0]), float(d[0]), float(d[0]), d.size)
    res = stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=reps,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return PairedDifference(float(d.mean()), float(ci.low), float(ci.high), d.size)


def probability_of_improvement(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b): scores [n_runs, n_tasks] (or 1-D for one task); rliable's definition."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"both methods need the same tasks, got {a.shape[1]} and {b.shape[1]}")
    per_task = []
    for task in range(a.shape[1]):
        x, y = a[:, task][:, None], b[:, task][None, :]
        per_task.append(float(((x > y) + 0.5 * (x == y)).mean()))
    return float(np.mean(per_task))


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test of mean(a - b) = 0. Where the t statistic is undefined (the
    same difference on every seed, common with discrete returns), the exact two-sided sign
    test: p = 1 when all are 0, else 2 * 0.5^n (n seeds all on one side): 2 seeds never
    decide anything, 6 do at 0.05 before any correction."""
    d = _diffs(a, b)
    if _constant(d):
        return 1.0 if abs(d[0]) <= 1e-12 else min(1.0, 2.0 * 0.5**d.size)
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def equivalence(
    a: Sequence[float], b: Sequence[float], margin: float, *, alpha: float = ALPHA
) -> tuple[bool, float]:
    """TOST on the paired differences: (equivalent within +-margin, its p-value)."""
    if margin <= 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin!r}")
    d = _diffs(a, b)
    if _constant(d):  # the same difference every seed: both one-sided sign tests, 0.5^n
        p = 0.5**d.size if abs(d[0]) < margin else 1.0
        return p < alpha, p
    above = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(d, margin, alternative="less").pvalue
    p = float(max(above, below))
    return p < alpha, p


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def paired_power(n: int, effect: float, *, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t-test with n seeds at effect size d = mean / sd."""
    df = n - 1
    t_crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) * np.sqrt(n)
    return float(stats.nct.sf(t_crit, df, nc) + stats.nct.cdf(-t_crit, df, nc))


def seeds_needed(effect: float, *, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """Smallest number of seeds for `power` at effect size d; None for d = 0 (no seed
    count can detect a null effect) or beyond MAX_SEEDS."""
    if effect == 0 or not np.isfinite(effect):
        return None
    lo, hi = 2, 4
    while paired_power(hi, effect, alpha=alpha) < power:
        lo, hi = hi, hi * 2
        if hi > MAX_SEEDS:
            return None
    while lo < hi:  # power grows with n: bisect
        mid = (lo + hi) // 2
        if paired_power(mid, effect, alpha=alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def observed_effect(a: Sequence[float], b: Sequence[float]) -> float:
    """Paired effect size d = mean(a - b) / sd(a - b) (sd with ddof 1)."""
    d = _diffs(a, b)
    if _constant(d):
        return 0.0 if abs(d[0]) <= 1e-12 else float("inf") * np.sign(d[0])
    return float(d.mean() / d.std(ddof=1))

"""Metric stream (what is logged at which env step) and the report's estimators (no Ray)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import trim_mean

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform.metric_stream import MetricStream  # noqa: E402
from knife.platform.stats import curve_bands, iqm, stratified_bootstrap  # noqa: E402


def _it(env_steps, test_at, test_return, task_index=None, **extra):
    """One iteration as QMix.train() gives it: the flat metrics (the latest test repeated)."""
    out = {
        "env_steps": env_steps,
        "train/return": float(env_steps),
        "loss": 0.1,
        "test/at_env_steps": test_at,
        "test/return": test_return,
    }
    if task_index is not None:
        out["task_index"] = task_index
    out.update(extra)
    return out


def test_single_task_tests_logged_once_at_their_step():
    stream = MetricStream()
    writes = []
    for metrics, records in (
        (_it(100, 100, 1.0), [(100, {"test/return": 1.0})]),
        (_it(200, 100, 1.0), []),  # no new test: the repeated value is not logged again
        (_it(300, 300, 2.0), [(300, {"test/return": 2.0})]),
        (_it(400, 300, 2.0), []),
    ):
        writes.append(stream.split(metrics, records))
    tests = [(step, m["test/return"]) for w in writes for step, m in w if "test/return" in m]
    assert tests == [(100, 1.0), (300, 2.0)]
    train = [(step, m["train/return"]) for w in writes for step, m in w if "train/return" in m]
    assert train == [(100, 100.0), (200, 200.0), (300, 300.0), (400, 400.0)]
    # the env step of the latest test is the records' step, not a metric of its own
    assert not any("test/at_env_steps" in m for w in writes for _, m in w)


def test_task_sequence_curves_finals_and_states():
    stream = MetricStream()
    states0 = {"task/0/start_env_steps": 0}
    seq = [
        (
            _it(50, 50, 1.0, 0, **{"task/0/test_return": 1.0, **states0}),
            [(50, {"test/return": 1.0, "task/0/test_return": 1.0})],
        ),
        # the switch at 100: task 0's final test, then task 1's first test, same step
        (
            _it(
                100,
                100,
                -5.0,
                1,
                **{
                    "task/0/test_return": 3.0,
                    "task/0/final_test_return": 3.0,
                    "task/0/auc": 2.0,
                    **states0,
                    "task/1/test_return": -5.0,
                    "task/1/start_env_steps": 100,
                    "plasticity/at_switch/agent/stagnant_fraction": 0.3,
                },
            ),
            [
                (100, {"test/return": 3.0, "task/0/test_return": 3.0}),
                (100, {"test/return": -5.0, "task/1/test_return": -5.0}),
            ],
        ),
        (
            _it(
                150,
                150,
                4.0,
                1,
                **{
                    "task/0/test_return": 3.0,  # stale: task 0 is over, not on its curve
                    "task/0/final_test_return": 3.0,
                    "task/0/auc": 2.0,
                    **states0,
                    "task/0/retest_return": 2.5,
                    "task/1/test_return": 4.0,
                    "task/1/start_env_steps": 100,
                    "plasticity/at_switch/agent/stagnant_fraction": 0.3,
                },
            ),
            [(150, {"test/return": 4.0, "task/1/test_return": 4.0, "task/0/retest_return": 2.5})],
        ),
    ]
    points: dict[str, list] = {}
    for metrics, records in seq:
        for step, batch in stream.split(metrics, records):
            for key, value in batch.items():
                points.setdefault(key, []).append((step, value))
    assert points["task/0/test_return"] == [(50, 1.0), (100, 3.0)]
    assert points["task/1/test_return"] == [(100, -5.0), (150, 4.0)]
    # one point per step: at the switch, the next task's start wins the overall curve
    assert points["test/return"] == [(50, 1.0), (100, -5.0), (150, 4.0)]
    assert points["task/0/final_test_return"] == [(100, 3.0)]
    assert points["task/0/auc"] == [(100, 2.0)]
    assert points["task/1/start_env_steps"] == [(100, 100.0)]
    assert points["task_index"] == [(50, 0.0), (100, 1.0)]
    assert points["task/0/retest_return"] == [(150, 2.5)]
    assert points["plasticity/at_switch/agent/stagnant_fraction"] == [(100, 0.3)]

    # A restored stream carries on without writing a state again.
    clone = MetricStream()
    clone.load_state_dict(stream.state_dict())
    again = clone.split(*seq[-1][:1])
    assert all("task/0/final_test_return" not in batch for _, batch in again)
    assert all("test/return" not in batch for _, batch in again)


def test_stream_needs_env_steps_and_skips_non_finite():
    stream = MetricStream()
    with pytest.raises(ValueError, match="env_steps"):
        stream.split({"loss": 1.0})
    out = stream.split({"env_steps": 10, "loss": float("nan"), "x": None, "y": 2})
    assert out == [(10, {"env_steps": 10.0, "y": 2.0})]


def test_iqm_is_scipys_25_percent_trimmed_mean():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 5, 8, 13):
        x = rng.normal(size=n)
        assert iqm(x) == pytest.approx(trim_mean(x, 0.25))
    assert iqm([1.0, 2.0, 3.0, 10.0]) == 2.5  # the middle two of four


def test_bootstrap_interval_matches_exact_enumeration():
    """All 4^4 resamples of 4 seeds are equally likely: their IQMs give the exact bootstrap
    distribution; where its 2.5% / 97.5% quantiles sit inside a flat step, the Monte-Carlo
    percentile interval must land exactly on them."""
    x = np.array([1.0, 2.0, 3.0, 10.0])
    exact = np.sort([iqm(np.array(c)) for c in itertools.product(x, repeat=4)])
    cdf_values = {v: np.mean(exact <= v) for v in np.unique(exact)}
    lo_exact = min(v for v, c in cdf_values.items() if c >= 0.025)
    hi_exact = min(v for v, c in cdf_values.items() if c >= 0.975)
    # The quantiles sit well inside their steps (else the check below would be flaky).
    below_lo = max([c for v, c in cdf_values.items() if v < lo_exact], default=0.0)
    assert below_lo < 0.02 and cdf_values[lo_exact] > 0.03
    below_hi = max(c for v, c in cdf_values.items() if v < hi_exact)
    assert below_hi < 0.97 and cdf_values[hi_exact] > 0.98
    est = stratified_bootstrap(x, reps=4000, seed=3)
    assert est.value == 2.5 and est.n == 4
    assert (est.low, est.high) == (lo_exact, hi_exact)


def test_stratified_bootstrap_resamples_within_tasks():
    # Task columns are constant across runs: any within-task resample gives the same
    # matrix, so the interval collapses (a pooled resample would not).
    scores = np.array([[1.0, 10.0], [1.0, 10.0], [1.0, 10.0]])
    est = stratified_bootstrap(scores, reps=500)
    assert est.low == est.high == est.value == pytest.approx(iqm(scores))
    two = stratified_bootstrap(np.array([3.0, 5.0]), reps=2000)
    assert (two.value, two.low, two.high) == (4.0, 3.0, 5.0)


def test_curve_bands_shape_and_containment():
    values = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 4.0], [2.0, 3.0, 3.0], [3.0, 5.0, 1.0]])
    center, low, high = curve_bands(values, reps=300)
    assert center.shape == low.shape == high.shape == (3,)
    assert np.all(low <= center + 1e-12) and np.all(center <= high + 1e-12)
    assert center[0] == pytest.approx(iqm(values[:, 0]))

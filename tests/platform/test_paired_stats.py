"""Paired statistics on hand-made data match hand computations (issue 16)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from knife.platform.paired_stats import (
    equivalence,
    holm,
    observed_effect,
    paired_difference,
    paired_power,
    probability_of_improvement,
    seeds_needed,
)


def test_holm_matches_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_probability_of_improvement_matches_hand_count():
    # a=1 beats only 0; a=2 ties 2 twice (0.5 each) and beats 0; a=3 beats all: 6 of 9
    assert probability_of_improvement([1, 2, 3], [2, 2, 0]) == pytest.approx(6 / 9)
    two_tasks = probability_of_improvement(np.array([[1, 5], [2, 5]]), np.array([[0, 5], [3, 6]]))
    # task 0: 1 and 2 beat 0, not 3 (2 of 4); task 1: 5 ties 5 and loses to 6 (1 of 4)
    assert two_tasks == pytest.approx(np.mean([2 / 4, 1 / 4]))  # averaged over tasks


def test_paired_interval_is_a_bootstrap_of_the_seed_differences():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    b = a - np.array([0.4, 0.6, 0.5, 0.7, 0.3, 0.5, 0.6, 0.4])
    est = paired_difference(a, b, seed=1)
    assert est.mean == pytest.approx(0.5) and est.n == 8
    # A hand bootstrap of the 8 differences gives the same percentile interval.
    d = a - b
    rng = np.random.default_rng(0)
    means = d[rng.integers(0, 8, size=(20000, 8))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert est.low == pytest.approx(low, abs=0.02) and est.high == pytest.approx(high, abs=0.02)
    # Pairing removes the between-seed spread: an unpaired interval would span ~ +-2.
    assert est.high - est.low < 0.3
    same = paired_difference([1, 2, 3], [0, 1, 2])
    assert (same.mean, same.low, same.high) == (1.0, 1.0, 1.0)


def test_equivalence_uses_the_stated_margin_and_matches_a_hand_tost():
    a = np.array([1.00, 1.02, 0.99, 1.01, 0.98, 1.00])
    b = np.ones(6)
    ok, p = equivalence(a, b, margin=0.1)
    d = a - b
    se = d.std(ddof=1) / math.sqrt(6)
    from scipy import stats

    t_lower = (d.mean() + 0.1) / se  # H0: mean <= -margin
    t_upper = (d.mean() - 0.1) / se  # H0: mean >= +margin
    hand = max(stats.t.sf(t_lower, 5), stats.t.cdf(t_upper, 5))
    assert ok and p == pytest.approx(hand)
    assert not equivalence(a, b, margin=0.005)[0]  # a tighter margin: not shown equivalent
    assert not equivalence(a + 0.5, b, margin=0.1)[0]  # a real difference: not equivalent


def test_seeds_needed_matches_the_power_tables():
    # Two-sided paired t-test, alpha 0.05, power 0.8 (G*Power / Cohen's tables).
    assert seeds_needed(0.5) == 34
    assert seeds_needed(0.8) == 15
    assert seeds_needed(0.2) == 199
    # The audit's claim: with 5 seeds, 80% power needs d >= 1.7.
    assert seeds_needed(1.7) == 5 and paired_power(5, 1.6) < 0.8 <= paired_power(5, 1.7)
    assert seeds_needed(0.0) is None
    assert observed_effect([3, 5, 4], [1, 2, 2]) == pytest.approx(
        np.mean([2, 3, 2]) / np.std([2, 3, 2], ddof=1)
    )


def test_paired_p_value_is_a_two_sided_t_test_on_the_differences():
    from knife.platform.paired_stats import paired_p_value

    a, b = np.array([3.0, 5.0, 4.0, 6.0]), np.array([1.0, 2.0, 2.0, 3.0])
    d = a - b  # 2, 3, 2, 3: mean 2.5, sd 0.577 -> t = 2.5 / (0.577 / 2) = 8.66, 3 df
    t = d.mean() / (d.std(ddof=1) / math.sqrt(4))
    assert t == pytest.approx(8.660, abs=1e-3)
    from scipy import stats

    assert paired_p_value(a, b) == pytest.approx(2 * stats.t.sf(t, 3))
    assert paired_p_value([1, 2], [1, 2]) == 1.0  # no difference at all
    # The same nonzero difference on every seed: the t statistic is undefined; the exact
    # sign test gives 2 * 0.5^n (2 seeds: 0.5, 6 seeds: 1/32).
    assert paired_p_value([2, 3], [1, 2]) == 0.5
    assert paired_p_value(np.arange(6) + 1.0, np.arange(6)) == pytest.approx(1 / 32)
    # Equivalence of a spreadless difference inside the margin: both sign tests, 0.5^n.
    assert equivalence([1.01, 2.01], [1.0, 2.0], margin=0.1) == (False, 0.25)
    assert equivalence(np.arange(5) + 0.01, np.arange(5), margin=0.1) == (True, 0.5**5)

"""Aggregate metrics and stratified-bootstrap intervals on small hand-computed matrices."""

from __future__ import annotations

import numpy as np
import pytest

from valorl.eval.aggregate import (
    interval_estimate,
    iqm,
    mean,
    median,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
    stratified_bootstrap,
)

# 4 runs x 2 tasks
SCORES = np.array([[10.0, 80.0], [20.0, 90.0], [30.0, 100.0], [40.0, 150.0]])


def test_point_estimates_by_hand():
    """Per-task means 25 and 105: mean 65, median 65; IQM drops the lowest two (10, 20) and
    highest two (100, 150) of the 8 scores: mean(30, 40, 80, 90) = 60; optimality gap to 100:
    100 − mean(10, 20, 30, 40, 80, 90, 100, 100) = 100 − 58.75; to 50: 50 − 37.5."""
    assert float(mean(SCORES)) == 65.0
    assert float(median(SCORES)) == 65.0
    assert float(iqm(SCORES)) == 60.0
    assert float(optimality_gap(SCORES)) == pytest.approx(41.25)
    assert float(optimality_gap(SCORES, threshold=50.0)) == pytest.approx(50 - 37.5)


def test_metrics_reduce_the_last_two_axes():
    """A stack of matrices gives one value per matrix, equal to evaluating each alone."""
    stack = np.stack([SCORES, SCORES * 2, SCORES[::-1]])
    for metric in (mean, median, iqm, optimality_gap):
        np.testing.assert_allclose(metric(stack), [metric(m) for m in stack])


def test_stratified_bootstrap_resamples_within_tasks():
    """Each replicate column only holds scores of its own task, and runs are drawn with
    replacement (some replicate repeats a run)."""
    reps = stratified_bootstrap(SCORES, 200, seed=1)
    assert reps.shape == (200, 4, 2)
    assert set(np.unique(reps[:, :, 0])) <= set(SCORES[:, 0])
    assert set(np.unique(reps[:, :, 1])) <= set(SCORES[:, 1])
    assert any(len(np.unique(r[:, 0])) < 4 for r in reps)
    np.testing.assert_array_equal(reps, stratified_bootstrap(SCORES, 200, seed=1))


def test_interval_estimate_brackets_the_point_and_shrinks_with_more_runs():
    """The interval contains the point estimate; identical runs give a zero-width interval;
    more runs from the same distribution give a narrower interval."""
    point, low, high = interval_estimate(SCORES, iqm, reps=2000)
    assert low <= point <= high and low < high
    same = np.full((5, 3), 42.0)
    assert interval_estimate(same, iqm, reps=100) == (42.0, 42.0, 42.0)
    rng = np.random.default_rng(0)
    few = interval_estimate(rng.normal(50, 10, (5, 2)), mean, reps=2000)
    many = interval_estimate(rng.normal(50, 10, (100, 2)), mean, reps=2000)
    assert many[2] - many[1] < few[2] - few[1]


def test_probability_of_improvement_by_hand():
    """One task, X = (1, 3), Y = (2, 2): pairs (1,2) lose, (3,2) win → 0.5; ties count half."""
    assert probability_of_improvement(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 0.5
    assert probability_of_improvement(np.array([2.0]), np.array([2.0])) == 0.5
    x = np.array([[5.0, 0.0], [6.0, 0.0]])
    y = np.array([[1.0, 9.0], [2.0, 9.0]])
    assert probability_of_improvement(x, y) == 0.5  # task 1 always better, task 2 always worse


def test_performance_profile_by_hand():
    """Above 50: task 1 none of 4 runs, task 2 all 4 → 0.5; above 95: 0 and 2/4 → 0.25."""
    np.testing.assert_allclose(
        performance_profile(SCORES, [0.0, 50.0, 95.0, 200.0]), [1.0, 0.5, 0.25, 0.0]
    )


def test_one_dimensional_scores_are_one_task():
    assert interval_estimate(np.array([1.0, 2.0, 3.0, 4.0]), mean, reps=10)[0] == 2.5

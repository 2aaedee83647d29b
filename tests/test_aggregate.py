"""Aggregate metrics and stratified-bootstrap intervals on small hand-computed matrices."""

from __future__ import annotations

import numpy as np
import pytest

from valorl.eval.aggregate import (
    curve_interval,
    interval_estimate,
    iqm,
    mean,
    median,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_interval,
    profile_interval,
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


def test_curve_interval_matches_the_final_metric_and_resamples_whole_runs():
    """At every step the curve's point equals the metric on that step's matrix; a run that is
    constant over training gives the same interval at every step, since replicates resample
    whole runs with one set of indices for all steps."""
    rng = np.random.default_rng(3)
    curves = np.repeat(rng.normal(50, 20, (6, 2, 1)), 4, axis=2)  # (runs, tasks, steps)
    point, low, high = curve_interval(curves, iqm, reps=500, seed=2)
    assert point.shape == low.shape == high.shape == (4,)
    np.testing.assert_allclose(point, [iqm(curves[:, :, t]) for t in range(4)])
    np.testing.assert_allclose(low, low[0])
    np.testing.assert_allclose(high, high[0])
    final = interval_estimate(curves[:, :, -1], iqm, reps=500, seed=2)
    assert (point[-1], low[-1], high[-1]) == pytest.approx(final)


def test_profile_and_improvement_intervals_bracket_their_points():
    """Bands contain the point profile; P(X > Y) for runs that all beat the other's is 1 with a
    zero-width interval, and the interval of an overlapping pair brackets its point."""
    taus = np.array([0.0, 25.0, 50.0, 100.0])
    point, low, high = profile_interval(SCORES, taus, reps=500)
    np.testing.assert_array_equal(point, performance_profile(SCORES, taus))
    assert np.all(low <= point) and np.all(point <= high)
    assert probability_of_improvement_interval(SCORES + 1000, SCORES, reps=200) == (1.0, 1.0, 1.0)
    p, lo, hi = probability_of_improvement_interval(SCORES + 5, SCORES, reps=500)
    assert lo <= p <= hi and lo < hi


RLIABLE_REPS = 4000


@pytest.fixture(scope="module")
def rliable():
    """rliable 1.2 (a dev dependency; it needs pandas < 3)."""
    from rliable import library, metrics

    return library, metrics


def _score_dict() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "a": rng.normal(60, 25, (10, 3)),
        "b": np.clip(rng.normal(40, 30, (10, 3)), 0, None),
    }


def test_point_estimates_equal_rliables(rliable):
    """Every aggregate equals rliable's on the same score arrays (rliable's optimality gap
    threshold is its `gamma`), and so do probability of improvement and the profile."""
    library, metrics = rliable
    ours = {"mean": mean, "median": median, "iqm": iqm}
    theirs = {
        "mean": metrics.aggregate_mean,
        "median": metrics.aggregate_median,
        "iqm": metrics.aggregate_iqm,
    }
    taus = np.linspace(0, 150, 16)
    for scores in _score_dict().values():
        for name, metric in ours.items():
            assert float(metric(scores)) == pytest.approx(float(theirs[name](scores)), abs=1e-12)
        assert float(optimality_gap(scores)) == pytest.approx(
            float(metrics.aggregate_optimality_gap(scores, gamma=100.0)), abs=1e-12
        )
        np.testing.assert_allclose(
            performance_profile(scores, taus), library.score_distributions(scores, taus)
        )
    a, b = _score_dict().values()
    assert probability_of_improvement(a, b) == pytest.approx(
        float(metrics.probability_of_improvement(a, b)), abs=1e-12
    )


@pytest.mark.expensive  # 10 s of bootstraps; the point estimates equal rliable's in make test
@pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")  # inside rliable
def test_intervals_agree_with_rliables_within_bootstrap_noise(rliable):
    """The same intervals from independent bootstraps: endpoints agree to within a small
    fraction of the interval's width (the Monte-Carlo error of 4000 replicates)."""
    library, metrics = rliable
    scores = _score_dict()
    for name, ours, theirs in [
        ("iqm", iqm, metrics.aggregate_iqm),
        ("mean", mean, metrics.aggregate_mean),
        ("median", median, metrics.aggregate_median),
    ]:
        points, cis = library.get_interval_estimates(
            scores,
            lambda x, f=theirs: np.array([f(x)]),
            reps=RLIABLE_REPS,
            random_state=np.random.RandomState(0),
        )
        for key, matrix in scores.items():
            point, low, high = interval_estimate(matrix, ours, reps=RLIABLE_REPS, seed=1)
            width = high - low
            assert point == pytest.approx(points[key][0], abs=1e-12), name
            assert low == pytest.approx(cis[key][0, 0], abs=0.1 * width), (name, key)
            assert high == pytest.approx(cis[key][1, 0], abs=0.1 * width), (name, key)
    a, b = scores.values()
    poi_point, poi_cis = library.get_interval_estimates(
        {"a>b": (a, b)},
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps=RLIABLE_REPS,
        random_state=np.random.RandomState(0),
    )
    point, low, high = probability_of_improvement_interval(a, b, reps=RLIABLE_REPS, seed=1)
    assert point == pytest.approx(poi_point["a>b"][0], abs=1e-12)
    width = high - low
    assert low == pytest.approx(poi_cis["a>b"][0, 0], abs=0.1 * width)
    assert high == pytest.approx(poi_cis["a>b"][1, 0], abs=0.1 * width)

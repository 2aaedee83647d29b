"""Aggregate performance over runs and tasks, with stratified-bootstrap intervals.

Following "Deep RL at the Edge of the Statistical Precipice" (Agarwal et al., NeurIPS 2021)
and its library rliable: scores form a matrix of shape (runs, tasks), here normalised so that
100 is the reference best. Point estimates are computed on that matrix; intervals come from
the stratified bootstrap, which resamples runs with replacement independently within each task
(the tasks themselves are fixed), and take percentiles of the resampled estimates.

Every metric takes an array of shape (..., runs, tasks) and reduces the last two axes, so one
call evaluates all bootstrap replicates at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.stats

Metric = Callable[[np.ndarray], np.ndarray]


def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over tasks of the per-task mean score."""
    return scores.mean(axis=-2).mean(axis=-1)


def median(scores: np.ndarray) -> np.ndarray:
    """Median over tasks of the per-task mean score."""
    return np.median(scores.mean(axis=-2), axis=-1)


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of all run-task scores (25% trimmed from
    each end), robust to outlier runs yet more efficient than the median."""
    flat = scores.reshape(*scores.shape[:-2], -1)
    return scipy.stats.trim_mean(flat, proportiontocut=0.25, axis=-1)


def optimality_gap(scores: np.ndarray, threshold: float = 100.0) -> np.ndarray:
    """How far scores fall short of `threshold` on average, with scores above it counted as
    `threshold` (lower is better)."""
    return threshold - np.minimum(scores, threshold).mean(axis=(-2, -1))


METRICS: dict[str, Metric] = {
    "mean": mean,
    "median": median,
    "iqm": iqm,
    "optimality_gap": optimality_gap,
}


def stratified_bootstrap(scores: np.ndarray, reps: int, seed=0) -> np.ndarray:
    """`reps` resampled copies of a (runs, tasks) matrix, shape (reps, runs, tasks): runs are
    drawn with replacement separately for each task."""
    idx = _bootstrap_indices(scores.shape, reps, seed)
    return scores[idx, np.arange(scores.shape[1])]


def interval_estimate(
    scores: np.ndarray, metric: Metric, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(point estimate, low, high): the metric on the scores and a percentile interval over
    `reps` stratified-bootstrap replicates."""
    scores = _matrix(scores)
    point = float(metric(scores))
    low, high = _percentiles(metric(stratified_bootstrap(scores, reps, seed)), confidence)
    return point, float(low), float(high)


def curve_interval(
    scores: np.ndarray, metric: Metric, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A metric over training (a sample-efficiency curve) with a pointwise interval.

    `scores` has shape (runs, tasks, steps); returns (point, low, high), each of shape
    (steps,). A bootstrap replicate resamples whole runs (their full curves), as rliable does
    for three-dimensional score arrays.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 3:
        raise ValueError(f"scores must have shape (runs, tasks, steps), got {scores.shape}")
    by_step = np.moveaxis(scores, -1, 0)  # (steps, runs, tasks)
    idx = _bootstrap_indices(scores.shape[:2], reps, seed)
    replicates = metric(by_step[:, idx, np.arange(scores.shape[1])])  # (steps, reps)
    low, high = _percentiles(replicates.T, confidence)
    return metric(by_step), low, high


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y): for each task, the chance that a random run of X beats a random run of Y (ties
    count half; the Mann-Whitney U statistic over runs), averaged over tasks."""
    x, y = _matrix(scores_x), _matrix(scores_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"both need the same tasks: {x.shape[1]} vs {y.shape[1]}")
    return float(_improvement(x, y))


def probability_of_improvement_interval(
    scores_x: np.ndarray,
    scores_y: np.ndarray,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """P(X > Y) with a percentile interval: X's and Y's runs are resampled independently, each
    stratified by task (rliable's StratifiedIndependentBootstrap)."""
    point = probability_of_improvement(scores_x, scores_y)
    x, y = _matrix(scores_x), _matrix(scores_y)
    seed_x, seed_y = np.random.SeedSequence(seed).spawn(2)
    replicates = _improvement(
        stratified_bootstrap(x, reps, seed_x), stratified_bootstrap(y, reps, seed_y)
    )
    low, high = _percentiles(replicates, confidence)
    return point, float(low), float(high)


def performance_profile(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of runs scoring above each threshold τ, averaged over tasks (the run-score
    distribution of Agarwal et al., Sec. 4.1)."""
    return _profile(_matrix(scores), thresholds)


def profile_interval(
    scores: np.ndarray,
    thresholds: np.ndarray,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The performance profile with a pointwise stratified-bootstrap band: (point, low, high),
    each of shape (thresholds,)."""
    scores = _matrix(scores)
    replicates = _profile(stratified_bootstrap(scores, reps, seed), thresholds)
    low, high = _percentiles(replicates, confidence)
    return _profile(scores, thresholds), low, high


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) for score arrays of shape (..., runs_x, tasks) and (..., runs_y, tasks)."""
    diff = x[..., :, None, :] - y[..., None, :, :]  # (..., runs_x, runs_y, tasks)
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-3, -2, -1))


def _profile(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction above each threshold for scores of shape (..., runs, tasks): (..., T)."""
    tau = np.asarray(thresholds, np.float64)
    return (scores[..., None] > tau).mean(axis=(-3, -2))


def _bootstrap_indices(shape: tuple[int, int], reps: int, seed) -> np.ndarray:
    """Run indices of `reps` stratified resamples: shape (reps, runs, tasks)."""
    runs, tasks = shape
    return np.random.default_rng(seed).integers(0, runs, size=(reps, runs, tasks))


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis of `replicates`."""
    alpha = (1.0 - confidence) / 2
    return tuple(np.percentile(replicates, [100 * alpha, 100 * (1 - alpha)], axis=0))


def _matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]  # one task
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must have shape (runs, tasks), got {scores.shape}")
    return scores

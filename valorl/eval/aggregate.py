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


def stratified_bootstrap(scores: np.ndarray, reps: int, seed: int = 0) -> np.ndarray:
    """`reps` resampled copies of a (runs, tasks) matrix, shape (reps, runs, tasks): runs are
    drawn with replacement separately for each task."""
    runs, tasks = scores.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    return scores[idx, np.arange(tasks)]


def interval_estimate(
    scores: np.ndarray, metric: Metric, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(point estimate, low, high): the metric on the scores and a percentile interval over
    `reps` stratified-bootstrap replicates."""
    scores = _matrix(scores)
    point = float(metric(scores))
    replicates = metric(stratified_bootstrap(scores, reps, seed))
    alpha = (1.0 - confidence) / 2
    low, high = np.percentile(replicates, [100 * alpha, 100 * (1 - alpha)])
    return point, float(low), float(high)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y): for each task, the chance that a random run of X beats a random run of Y (ties
    count half; the Mann-Whitney U statistic over runs), averaged over tasks."""
    x, y = _matrix(scores_x), _matrix(scores_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"both need the same tasks: {x.shape[1]} vs {y.shape[1]}")
    diff = x[:, None, :] - y[None, :, :]  # (runs_x, runs_y, tasks)
    per_task = ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(0, 1))
    return float(per_task.mean())


def performance_profile(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of runs scoring above each threshold τ, averaged over tasks (the run-score
    distribution of Agarwal et al., Sec. 4.1)."""
    x = _matrix(scores)
    return np.array([(x > tau).mean(axis=0).mean() for tau in np.asarray(thresholds)])


def _matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]  # one task
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must have shape (runs, tasks), got {scores.shape}")
    return scores

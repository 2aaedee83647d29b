"""Summaries of per-seed scores."""

from __future__ import annotations

import numpy as np
import scipy.special


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean over seeds with a Student-t confidence interval: (mean, low, high).

    With one seed the interval is undefined and returned as NaN.
    """
    x = np.asarray(values, np.float64).ravel()
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    # Student's t quantile (scipy.special's, which imports in a fraction of scipy.stats' time)
    quantile = scipy.special.stdtrit(len(x) - 1, 0.5 + confidence / 2)
    half = quantile * x.std(ddof=1) / np.sqrt(len(x))
    return mean, mean - float(half), mean + float(half)

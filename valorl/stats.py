"""Summaries of per-seed scores."""

from __future__ import annotations

import numpy as np
import scipy.stats


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean over seeds with a Student-t confidence interval: (mean, low, high).

    With one seed the interval is undefined and returned as NaN.
    """
    x = np.asarray(values, np.float64).ravel()
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = scipy.stats.t.ppf(0.5 + confidence / 2, df=len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return mean, mean - float(half), mean + float(half)

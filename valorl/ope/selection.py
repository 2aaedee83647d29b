"""How well an estimator's values select policies, judged against their true values.

Off-policy evaluation is mostly used to pick which policies to deploy, so besides accuracy
valorl reports three selection metrics (as SCOPE-RL does, Kiyohara et al. 2023):

    Spearman ρ       rank correlation of estimated and true values (Paine et al. 2020)
    regret@k         best true value overall − best true value among the estimator's top k
    SharpeRatio@k    (best true value among the top k − behaviour policy's value)
                     / std of the true values among the top k

SharpeRatio@k (Kiyohara et al. 2023, "Towards Assessing and Benchmarking Risk-Return Tradeoff
of Off-Policy Evaluation") treats the top k as a portfolio deployed in online A/B tests: the
return over the behaviour policy, per unit of risk of deploying a poor policy among them. The
std is the population std over the k policies (the paper's 1/k form). Unlike the paper, the
behaviour policy is not added to the candidates (its value by each estimator is not defined
here), so SharpeRatio@k can be negative. With k = 1 or equal true values the std is 0 and
SharpeRatio@k is undefined (NaN).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.stats


def top_k(estimates: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest estimates (ties keep the earlier candidate first)."""
    return np.argsort(-np.asarray(estimates, np.float64), kind="stable")[:k]


def spearman(estimates: np.ndarray, true_values: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either side is constant."""
    estimates, true_values = np.asarray(estimates), np.asarray(true_values)
    if np.ptp(estimates) == 0 or np.ptp(true_values) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(scipy.stats.spearmanr(estimates, true_values).statistic)


def regret_at_k(estimates: np.ndarray, true_values: np.ndarray, k: int) -> float:
    """max_π J(π) − max_{π ∈ top-k(Ĵ)} J(π): 0 when the best policy is among the top k."""
    true_values = np.asarray(true_values, np.float64)
    return float(true_values.max() - true_values[top_k(estimates, k)].max())


def sharpe_ratio_at_k(
    estimates: np.ndarray, true_values: np.ndarray, k: int, behaviour_value: float
) -> float:
    """(best@k − J(π_b)) / std@k over the estimator's top k (Kiyohara et al. 2023)."""
    chosen = np.asarray(true_values, np.float64)[top_k(estimates, k)]
    std = chosen.std()
    if std == 0:
        return float("nan")
    return float((chosen.max() - behaviour_value) / std)


def selection_metrics(
    estimates: np.ndarray, true_values: np.ndarray, behaviour_value: float, ks: tuple[int, ...]
) -> dict[str, float]:
    """Spearman ρ, then regret@k and SharpeRatio@k for every k in `ks` up to the number of
    candidates (SharpeRatio@1 is left out: always undefined)."""
    metrics = {"spearman": spearman(estimates, true_values)}
    for k in sorted(k for k in set(ks) if k <= len(estimates)):
        metrics[f"regret@{k}"] = regret_at_k(estimates, true_values, k)
        if k > 1:
            metrics[f"sharpe@{k}"] = sharpe_ratio_at_k(estimates, true_values, k, behaviour_value)
    return metrics

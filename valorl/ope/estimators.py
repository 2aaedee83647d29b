"""Off-policy value estimators on logged episodes, with bootstrap intervals: pure numpy.

Episodes arrive padded to a common length T, one row each, with a boolean `valid` mask that
marks each row's real steps (a prefix):

    rewards[i, t]      r_t of episode i
    log_ratios[i, t]   log w_t = log π_e(a_t|s_t) − log π_b(a_t|s_t), the per-step importance
                       weight of the evaluated policy π_e against the behaviour π_b
    q[i, t]            Q̂(s_t, a_t), a model of the evaluated policy's action value
    v[i, t]            V̂(s_t) = E_{a~π_e}[Q̂(s_t, a)]

The cumulative weight is ρ_t = Π_{t'≤t} w_{t'}, computed as exp(Σ log w) so that long products
do not underflow before they must. After its last step an episode sits in an absorbing state
with reward 0 and weight 1 (padding is ignored), which is exact for episodes that terminated
or reached the environment's time limit. Weights are not clipped: clipping buys variance with
bias; the weighted (self-normalised) estimator is the biased, low-variance option offered.

Every estimator takes optional `counts`: how many times each episode is drawn, shape (n,) or
(resamples, n). The point estimate uses all ones; `bootstrap_interval` passes multinomial
counts, so resampled estimates run through exactly the code of the point estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def pad_episodes(values: np.ndarray, slices: list[slice]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `values` (one per transition) as (episodes, T, ...) padded with zeros, and the
    (episodes, T) mask of real steps; T is the longest episode."""
    values = np.asarray(values)
    lengths = [s.stop - s.start for s in slices]
    out = np.zeros((len(slices), max(lengths), *values.shape[1:]), values.dtype)
    valid = np.zeros((len(slices), max(lengths)), bool)
    for i, (sl, n) in enumerate(zip(slices, lengths, strict=True)):
        out[i, :n] = values[sl]
        valid[i, :n] = True
    return out, valid


def cumulative_log_weights(log_ratios: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """log ρ_t = Σ_{t'≤t} log w_{t'}, constant after each episode's end."""
    return np.cumsum(np.where(valid, log_ratios, 0.0), axis=1)


def direct_method(v0: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """V̂_DM = mean_i V̂(s_0^i): the model's value of each episode's start state (with FQE's
    Q̂ this is the FQE estimate of Le, Voloshin & Yue 2019)."""
    return _mean(np.asarray(v0, np.float64), counts)


def pdis(
    rewards: np.ndarray,
    log_ratios: np.ndarray,
    valid: np.ndarray,
    discount: float,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Per-decision importance sampling (Precup, Sutton & Singh 2000):

        V̂_PDIS = mean_i Σ_t γ^t ρ_t^i r_t^i.

    Unbiased when the behaviour log-probabilities are exact and the behaviour covers the
    evaluated policy's actions; its variance grows with the horizon.
    """
    rho = np.exp(cumulative_log_weights(log_ratios, valid))
    terms = np.where(valid, _discounts(rewards, discount) * rho * rewards, 0.0).sum(axis=1)
    return _mean(terms, counts)


def weighted_pdis(
    rewards: np.ndarray,
    log_ratios: np.ndarray,
    valid: np.ndarray,
    discount: float,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted per-decision importance sampling (Precup, Sutton & Singh 2000): each step's
    weights are normalised over episodes,

        V̂_WPDIS = Σ_t γ^t Σ_i ρ_t^i r_t^i / Σ_i ρ_t^i.

    Biased but consistent, bounded by the observed rewards, and equal to the on-policy average
    discounted return when π_e = π_b. Ended episodes keep their last weight (reward 0).
    """
    log_rho = cumulative_log_weights(log_ratios, valid)
    counts = np.ones(len(rewards)) if counts is None else np.asarray(counts, np.float64)
    with np.errstate(divide="ignore"):
        log_counts = np.log(counts)[..., None]  # −inf for episodes a resample leaves out
    shifted = log_rho + log_counts  # (..., n, T): log(c_i ρ_t^i)
    weights = np.exp(shifted - shifted.max(axis=-2, keepdims=True))
    step_values = (weights * np.where(valid, rewards, 0.0)).sum(axis=-2) / weights.sum(axis=-2)
    return (_discounts(rewards, discount)[0] * step_values).sum(axis=-1)


def doubly_robust(
    rewards: np.ndarray,
    log_ratios: np.ndarray,
    q: np.ndarray,
    v: np.ndarray,
    valid: np.ndarray,
    discount: float,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Doubly robust estimator (Jiang & Li 2016, Sec. 4; Thomas & Brunskill 2016), in its
    per-decision form with ρ_{−1} = 1:

        V̂_DR = mean_i Σ_t γ^t [ ρ_t r_t − (ρ_t Q̂(s_t, a_t) − ρ_{t−1} V̂(s_t)) ],

    which unrolls Jiang & Li's recursion V_DR = V̂(s_t) + w_t (r_t + γ V_DR' − Q̂(s_t, a_t)).
    Unbiased when the ratios are exact (whatever Q̂, as long as V̂ = E_{π_e} Q̂), and when Q̂ is
    the true (time-indexed) Q of π_e: written as V̂(s_0) + Σ_t γ^t ρ_t (r_t + γ V̂(s_{t+1}) −
    Q̂(s_t, a_t)), every correction then has mean zero given the history, whatever weights
    (functions of the history up to a_t) multiply it.
    """
    log_rho = cumulative_log_weights(log_ratios, valid)
    rho = np.exp(log_rho)
    rho_before = np.exp(np.pad(log_rho[:, :-1], ((0, 0), (1, 0))))
    step = rho * (rewards - q) + rho_before * v
    terms = np.where(valid, _discounts(rewards, discount) * step, 0.0).sum(axis=1)
    return _mean(terms, counts)


def effective_sample_size(log_ratios: np.ndarray, valid: np.ndarray) -> float:
    """(Σ_i ρ^i)² / Σ_i (ρ^i)² of the whole-episode weights (Kong 1992): about how many
    on-policy episodes the importance-weighted data are worth."""
    log_rho = cumulative_log_weights(log_ratios, valid)[:, -1]
    if not np.isfinite(log_rho.max()):
        return 0.0
    rho = np.exp(log_rho - log_rho.max())
    return float(rho.sum() ** 2 / (rho**2).sum())


def bootstrap_interval(
    estimator: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 64,
) -> tuple[float, float, float]:
    """(point, low, high): the estimate on all episodes and a percentile bootstrap interval
    over episodes (Efron & Tibshirani 1993), resampling whole episodes with replacement.

    `estimator(counts)` evaluates on episode multiplicities of shape (k, episodes); resamples go
    `chunk` at a time to bound memory. Resamples whose estimate is not finite are dropped. The
    interval is widened to contain the point estimate when a skewed, near-degenerate bootstrap
    distribution (one dominant importance weight) would leave it just outside.
    """
    point = float(estimator(np.ones(episodes)))
    rng = np.random.default_rng(seed)
    estimates = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = rng.multinomial(episodes, np.full(episodes, 1.0 / episodes), size=size)
        estimates.append(np.asarray(estimator(counts.astype(np.float64)), np.float64))
    values = np.concatenate(estimates)
    values = values[np.isfinite(values)]
    if not np.isfinite(point) or len(values) == 0:
        return point, float("nan"), float("nan")
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return point, float(min(low, point)), float(max(high, point))


def _discounts(rewards: np.ndarray, discount: float) -> np.ndarray:
    return (discount ** np.arange(rewards.shape[1], dtype=np.float64))[None, :]


def _mean(terms: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
    if counts is None:
        return np.asarray(terms.mean())
    counts = np.asarray(counts, np.float64)
    return counts @ terms / counts.sum(axis=-1)

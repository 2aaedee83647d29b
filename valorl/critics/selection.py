"""Choosing among sampled actions by a critic's scores: best-of-N and softmax selection.

One operator serves three methods. Q-chunking's best-of-N policy (Li, Zhou & Levine 2025,
"Reinforcement Learning with Action Chunking", Sec. 4.2) and Decoupled Q-chunking's extraction
(Li, Park & Levine 2025) take the argmax of Q over N samples of a behaviour-cloned flow policy;
V-GPS ("Steering Your Generalists", Nakamoto et al. 2024, Sec. 4, Eq. 2) re-ranks N samples
of a fixed generalist policy with an offline-RL critic, taking the argmax (β = 0) or sampling
from softmax(Q / β). Because the samples come from the policy, the critic only ranks actions
inside the data's support.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def select(scores: jax.Array, beta: float | jax.Array, key: jax.Array) -> jax.Array:
    """Indices into the last axis of `scores` (..., N): the argmax when `beta` is 0, otherwise
    a draw from softmax(scores / beta). Shape `scores.shape[:-1]`."""
    beta = jnp.asarray(beta, jnp.float32)
    best = jnp.argmax(scores, axis=-1)
    drawn = jax.random.categorical(key, scores / jnp.where(beta > 0, beta, 1.0), axis=-1)
    return jnp.where(beta > 0, drawn, best)


def choose(
    candidates: jax.Array, scores: jax.Array, beta: float | jax.Array, key: jax.Array
) -> jax.Array:
    """The selected candidate of each row: `candidates` (batch, N, ...) scored by `scores`
    (batch, N) -> (batch, ...)."""
    index = select(scores, beta, key)
    return jnp.take_along_axis(
        candidates, index.reshape(-1, 1, *([1] * (candidates.ndim - 2))), axis=1
    )[:, 0]

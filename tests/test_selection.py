"""Best-of-N and softmax selection among sampled actions (valorl.critics.selection)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from valorl.critics.selection import choose, select


def test_beta_zero_picks_the_highest_score():
    scores = jnp.array([[0.1, 3.0, -2.0, 2.9], [5.0, 1.0, 0.0, 4.0]])
    np.testing.assert_array_equal(select(scores, 0.0, jax.random.key(0)), [1, 0])
    candidates = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    np.testing.assert_array_equal(
        choose(candidates, scores, 0.0, jax.random.key(0)),
        candidates[jnp.arange(2), jnp.array([1, 0])],
    )


def test_softmax_selection_matches_its_probabilities():
    """With β = 0.5 the frequencies of 20,000 draws match softmax(Q / β) to within 0.01."""
    scores = jnp.array([0.0, 0.5, 1.0])
    keys = jax.random.split(jax.random.key(1), 20_000)
    drawn = jax.vmap(lambda k: select(scores, 0.5, k))(keys)
    frequencies = np.bincount(np.asarray(drawn), minlength=3) / 20_000
    expected = np.exp(np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(frequencies, expected / expected.sum(), atol=0.01)

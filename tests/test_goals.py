"""Goal relabelling: each source of goals by hand, the mixture's probabilities, and the
success rewards and masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valorl.data.dataset import Dataset
from valorl.data.goals import goal_table, sample_goal_batch, sample_goal_rows, with_goals
from valorl.errors import ValorlError


def dataset(lengths: list[int]) -> Dataset:
    """Trajectories of the given lengths; row i's observation is i."""
    n = sum(lengths)
    obs = np.arange(n + 1, dtype=np.float32)[:, None]
    timeouts = np.zeros(n, bool)
    timeouts[np.cumsum(lengths) - 1] = True
    return Dataset(
        observations=obs[:-1],
        actions=np.zeros((n, 1)),
        rewards=np.zeros(n),
        next_observations=obs[1:],
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
    )


def test_table_knows_each_rows_trajectory_end():
    table = goal_table(dataset([3, 4]))
    np.testing.assert_array_equal(table.last, [2, 2, 2, 6, 6, 6, 6])
    np.testing.assert_array_equal(table.features[:, 0], np.arange(7))
    with pytest.raises(ValorlError, match="goal features"):
        goal_table(dataset([3]), features=np.zeros((2, 1)))


def test_each_source_of_goals_by_hand():
    table = goal_table(dataset([3, 4]))
    rows = jnp.tile(jnp.arange(7), 200)
    key = jax.random.key(0)
    np.testing.assert_array_equal(sample_goal_rows(table, rows, key, 1.0, 0.0, 0.0), rows)
    future = np.asarray(sample_goal_rows(table, rows, key, 0.0, 1.0, 0.0))
    r = np.asarray(rows)
    last = np.asarray(table.last)[r]
    # strictly later in the same trajectory, except the last row, whose goal is itself
    assert ((future > r) & (future <= last) | (r == last) & (future == r)).all()
    # every later row of the trajectory is drawn (row 3 -> 4, 5, 6 uniformly)
    from_three = future[r == 3]
    assert set(from_three) == {4, 5, 6}
    assert np.abs(np.bincount(from_three)[4:] / len(from_three) - 1 / 3).max() < 0.15
    anywhere = np.asarray(sample_goal_rows(table, rows, key, 0.0, 0.0, 1.0))
    assert set(anywhere) == set(range(7))


def test_mixture_probabilities():
    n = 1000
    table = goal_table(dataset([n]))
    rows = jnp.full(20_000, 10)
    goals = np.asarray(sample_goal_rows(table, rows, jax.random.key(1)))
    # itself: p_cur, plus a random draw landing on it (0.3 / n)
    assert abs((goals == 10).mean() - (0.2 + 0.3 / n)) < 0.01
    # later in the trajectory: p_traj, plus random draws there (0.3 * 989 / 1000)
    assert abs((goals > 10).mean() - (0.5 + 0.3 * (n - 11) / n)) < 0.01
    with pytest.raises(ValorlError, match="sum to 1"):
        sample_goal_rows(table, rows, jax.random.key(1), 0.5, 0.5, 0.5)


def test_rewards_and_masks_follow_success():
    data = dataset([3, 4])
    table = goal_table(data)
    batch = data.to_batch()
    rows = jnp.arange(7)
    reached = with_goals(batch, table, rows, jax.random.key(0), 1.0, 0.0, 0.0)
    np.testing.assert_array_equal(reached.rewards, np.ones(7))
    np.testing.assert_array_equal(reached.masks, np.zeros(7))
    np.testing.assert_array_equal(reached.goals, reached.observations)
    later = with_goals(batch, table, rows, jax.random.key(0), 0.0, 1.0, 0.0, negative=True)
    expected = np.where(np.isin(np.arange(7), [2, 6]), 0.0, -1.0)  # last rows reach themselves
    np.testing.assert_array_equal(later.rewards, expected)
    np.testing.assert_array_equal(later.masks, -expected)


def test_sample_goal_batch_is_jittable():
    data = dataset([5, 5])
    table = goal_table(data)
    sample = jax.jit(lambda d, t, k: sample_goal_batch(d, t, k, 32))
    batch = sample(data.to_batch(), table, jax.random.key(2))
    assert batch.goals.shape == (32, 1) and batch.rewards.shape == (32,)
    # a goal equal to the row's own observation means success (rows are distinct here)
    success = (batch.goals[:, 0] == batch.observations[:, 0]).astype(np.float32)
    np.testing.assert_array_equal(batch.rewards, success)

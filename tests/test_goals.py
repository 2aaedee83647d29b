"""Goal relabelling: each source of goals by hand, the mixture's probabilities, the success
rewards and masks of one-step rows, and n-step windows and chunks that stop at the goal."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valorl.data.dataset import Dataset
from valorl.data.goals import GoalSampling, goal_table, sample_goal_rows, sample_goal_windows
from valorl.errors import ValorlError

ONLY_CURRENT = GoalSampling(p_cur=1.0, p_traj=0.0, p_rand=0.0)
ONLY_FUTURE = GoalSampling(p_cur=0.0, p_traj=1.0, p_rand=0.0)


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
    np.testing.assert_array_equal(sample_goal_rows(table, rows, key, ONLY_CURRENT), rows)
    future = np.asarray(sample_goal_rows(table, rows, key, ONLY_FUTURE))
    r = np.asarray(rows)
    last = np.asarray(table.last)[r]
    # strictly later in the same trajectory, except the last row, whose goal is itself
    assert ((future > r) & (future <= last) | (r == last) & (future == r)).all()
    # every later row of the trajectory is drawn (row 3 -> 4, 5, 6 uniformly)
    from_three = future[r == 3]
    assert set(from_three) == {4, 5, 6}
    assert np.abs(np.bincount(from_three)[4:] / len(from_three) - 1 / 3).max() < 0.15
    anywhere = np.asarray(
        sample_goal_rows(table, rows, key, GoalSampling(p_cur=0, p_traj=0, p_rand=1))
    )
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
        sample_goal_rows(table, rows, jax.random.key(1), GoalSampling(p_cur=0.5, p_traj=0.5))
    with pytest.raises(ValorlError, match="goal reward must be one of success, negative"):
        GoalSampling(reward="dense").check()


def test_the_actors_own_goals_come_from_the_future_of_each_row():
    """`actor_goals="future"` (OGBench's GCIQL): besides the value goal, each one-step row gets
    a later state of its trajectory for the actor (itself only at a trajectory's last row);
    the value goals and their rewards are unchanged."""
    data = dataset([3, 4])
    table, rows = goal_table(data), data.to_batch()
    sample = lambda sampling: sample_goal_windows(rows, table, jax.random.key(2), 2000, sampling)
    same, own = (
        sample(ONLY_CURRENT),
        sample(dataclasses.replace(ONLY_CURRENT, actor_goals="future")),
    )
    assert same.actor_goals is None
    np.testing.assert_array_equal(own.goals, same.goals)  # row i's observation is i
    np.testing.assert_array_equal(own.rewards, same.rewards)
    row, actor = np.asarray(own.observations[:, 0]), np.asarray(own.actor_goals[:, 0])
    last = np.asarray(table.last)[row.astype(int)]
    assert ((actor > row) & (actor <= last) | (row == last) & (actor == row)).all()
    assert set(actor[row == 3]) == {4, 5, 6}
    with pytest.raises(ValorlError, match="actor goals must be one of same, future"):
        GoalSampling(actor_goals="random").check()
    with pytest.raises(ValorlError, match="one-step rows only"):
        sample_goal_windows(
            rows, table, jax.random.key(2), 8, GoalSampling(actor_goals="future"), n=3
        )


def test_rewards_and_masks_follow_success():
    data = dataset([3, 4])
    table = goal_table(data)
    windows = jax.jit(sample_goal_windows, static_argnums=(3, 4))
    reached = windows(data.to_batch(), table, jax.random.key(0), 64, ONLY_CURRENT)
    np.testing.assert_array_equal(reached.rewards, np.ones(64))
    np.testing.assert_array_equal(reached.masks, np.zeros(64))
    np.testing.assert_array_equal(reached.goals, reached.observations)
    negative = GoalSampling(reward="negative", p_cur=0, p_traj=1, p_rand=0)
    later = windows(data.to_batch(), table, jax.random.key(0), 64, negative)
    row = np.asarray(later.observations[:, 0])
    expected = np.where(np.isin(row, [2, 6]), 0.0, -1.0)  # last rows reach themselves
    np.testing.assert_array_equal(later.rewards, expected)
    np.testing.assert_array_equal(later.masks, -expected)
    # a goal equal to the row's own observation means success (rows are distinct here)
    mixed = windows(data.to_batch(), table, jax.random.key(2), 64, GoalSampling())
    success = (mixed.goals[:, 0] == mixed.observations[:, 0]).astype(np.float32)
    np.testing.assert_array_equal(mixed.rewards, success)


def check_windows_by_hand(batch, ends, n, gamma, reward):
    """Each row's n-step sum, bootstrap and chunk validity, recomputed from its row and goal
    index (row i's observation is i) and the last rows of the trajectories (`ends`)."""
    for i, g, r, m, nxt, valid in zip(
        np.asarray(batch.observations[:, 0]).astype(int),
        np.asarray(batch.goals[:, 0]).astype(int),
        np.asarray(batch.rewards),
        np.asarray(batch.masks),
        np.asarray(batch.next_observations[:, 0]).astype(int),
        np.asarray(batch.valid),
        strict=True,
    ):
        end = ends[np.searchsorted(ends, i)]
        steps = min(n, end - i + 1)  # rows summed before the trajectory ends
        reached = 0 <= g - i < steps
        k = g - i + 1 if reached else steps  # rows summed
        if reward == "success":
            assert r == pytest.approx(gamma ** (g - i) if reached else 0.0)
        else:
            assert r == pytest.approx(-sum(gamma**j for j in range(k - 1 if reached else k)))
        # the dataset's terminals end a window but never zero its mask: only the goal does
        assert m == pytest.approx(0.0 if reached else gamma ** (k - 1))
        assert nxt == i + k  # the next observation of the k-th row
        np.testing.assert_array_equal(valid, np.arange(n) < steps)


@pytest.mark.parametrize("reward", ["success", "negative"])
def test_n_step_windows_stop_at_the_goal_by_hand(reward):
    """The goal k < n steps ahead pays γ^k (or the k −1s before it) and ends the sum there; the
    trajectory's end ends it too; a chunk's actions stay valid to the trajectory's end, past
    the goal."""
    lengths, n, gamma = [5, 7, 4], 4, 0.9
    data = dataset(lengths)
    data.terminals[4], data.timeouts[4] = True, False  # the first trajectory ends terminal
    ends = np.cumsum(lengths) - 1  # last row of each trajectory
    windows = jax.jit(sample_goal_windows, static_argnums=(3, 4, 5, 6, 7, 8))
    sampling = GoalSampling(reward=reward)
    batch = windows(
        data.to_batch(), goal_table(data), jax.random.key(3), 512, sampling, n, gamma, 1, True
    )
    check_windows_by_hand(batch, ends, n, gamma, reward)
    assert np.asarray(batch.actions).shape == (512, n, 1)
    assert (np.asarray(batch.masks) == 0).mean() > 0.3  # goals are reached within windows
    # several batches at once (agents that consume more than one per update): each alike
    several = windows(
        data.to_batch(), goal_table(data), jax.random.key(4), 64, sampling, n, gamma, 2, True
    )
    assert several.valid.shape == (2, 64, n) and several.goals.shape == (2, 64, 1)
    for b in range(2):
        one = jax.tree.map(lambda x, b=b: x[b], several)
        check_windows_by_hand(one, ends, n, gamma, reward)

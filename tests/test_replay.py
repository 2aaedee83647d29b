"""The device replay buffer and offline/online mixing: wrap-around and sampling by hand,
independence of seed-vmapped buffers, exact offline shares, and the share schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valorl.data import replay
from valorl.data.dataset import Batch
from valorl.data.replay import OfflineMix
from valorl.errors import ValorlError


def rows(rewards, obs_dim: int = 2) -> Batch:
    """Transitions whose every field holds the row's reward (easy to recognise)."""
    r = jnp.asarray(rewards, jnp.float32)
    return Batch(
        observations=jnp.repeat(r[:, None], obs_dim, axis=1),
        actions=r[:, None],
        rewards=r,
        next_observations=jnp.repeat(r[:, None], obs_dim, axis=1),
        masks=r,
        dones=r,
    )


def test_init_is_empty_and_shaped():
    buffer = replay.init(5, (2,), 1)
    assert buffer.capacity == 5
    assert buffer.data.observations.shape == (5, 2) and buffer.data.actions.shape == (5, 1)
    assert int(buffer.position) == 0 and int(buffer.size) == 0
    with pytest.raises(ValorlError, match="--buffer-size must be at least 1, got 0"):
        replay.init(0, (2,), 1)


def test_add_wraps_around_by_hand():
    """Rows fill in order; once full, the oldest are overwritten and position wraps."""
    buffer = replay.add(replay.init(5, (2,), 1), rows([1, 2, 3]))
    np.testing.assert_array_equal(buffer.data.rewards, [1, 2, 3, 0, 0])
    assert (int(buffer.position), int(buffer.size)) == (3, 3)
    buffer = replay.add(buffer, rows([4, 5, 6, 7]))
    np.testing.assert_array_equal(buffer.data.rewards, [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(buffer.data.observations[:, 1], [6, 7, 3, 4, 5])
    assert (int(buffer.position), int(buffer.size)) == (2, 5)


def test_add_with_count_ignores_padding():
    """Only the first `count` rows are stored; the padding after them is not."""
    buffer = replay.add(replay.init(5, (2,), 1), rows([1, 2, 9, 9]), count=2)
    np.testing.assert_array_equal(buffer.data.rewards, [1, 2, 0, 0, 0])
    assert (int(buffer.position), int(buffer.size)) == (2, 2)
    buffer = jax.jit(replay.add)(buffer, rows([3, 4, 9, 9]), jnp.int32(0))
    assert (int(buffer.position), int(buffer.size)) == (2, 2)


def test_adding_more_than_capacity_equals_adding_one_at_a_time():
    """Five rows into three slots keep the last three, where one-by-one adds put them."""
    at_once = replay.add(replay.init(3, (2,), 1), rows([1, 2, 3, 4, 5]))
    one_by_one = replay.init(3, (2,), 1)
    for r in [1, 2, 3, 4, 5]:
        one_by_one = replay.add(one_by_one, rows([r]))
    np.testing.assert_array_equal(at_once.data.rewards, [4, 5, 3])
    for a, b in zip(jax.tree.leaves(at_once), jax.tree.leaves(one_by_one), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sample_draws_only_filled_rows():
    """Sampling a buffer of capacity 100 holding 7 rows never returns an empty row, and
    returns every filled one; batch shapes follow num_batches."""
    buffer = replay.add(replay.init(100, (2,), 1), rows([1, 2, 3, 4, 5, 6, 7]))
    batch = replay.sample(buffer, jax.random.key(0), 2000)
    assert batch.rewards.shape == (2000,) and batch.observations.shape == (2000, 2)
    assert set(np.asarray(batch.rewards).tolist()) == {1, 2, 3, 4, 5, 6, 7}
    batches = replay.sample(buffer, jax.random.key(1), 16, num_batches=3)
    assert batches.observations.shape == (3, 16, 2)
    assert np.all(np.asarray(batches.rewards) >= 1)


def test_sample_recent_draws_the_newest_rows_across_the_wrap():
    """Capacity 8 after rows 1..11 holds 4..11 with 9, 10, 11 written last (wrapped to the
    front): a window of 3 draws exactly those, a window past the size every held row, and a
    half-filled buffer its newest rows."""
    buffer = replay.add(replay.init(8, (2,), 1), rows(np.arange(1, 12)))
    sample = jax.jit(replay.sample_recent, static_argnums=(2, 4))
    drawn = lambda b, window: set(
        np.asarray(sample(b, jax.random.key(0), 2000, window, 1).rewards).tolist()
    )
    assert drawn(buffer, 3) == {9, 10, 11}
    assert drawn(buffer, 100) == set(range(4, 12))
    assert drawn(replay.add(replay.init(8, (2,), 1), rows([1, 2, 3, 4, 5])), jnp.int32(2)) == {4, 5}
    assert sample(buffer, jax.random.key(1), 4, 3, 5).rewards.shape == (5, 4)


def test_vmapped_buffers_are_independent():
    """Three seeds' buffers under vmap: each gets its own rows, count, position and size, and
    samples only from itself."""
    seeds = 3
    buffers = jax.vmap(lambda _: replay.init(4, (2,), 1))(jnp.arange(seeds))
    marked = jax.vmap(lambda s: rows(jnp.full(3, s + 1.0)))(jnp.arange(seeds))
    buffers = jax.jit(jax.vmap(replay.add))(buffers, marked, jnp.array([1, 2, 3]))
    np.testing.assert_array_equal(buffers.size, [1, 2, 3])
    np.testing.assert_array_equal(buffers.position, [1, 2, 3])
    np.testing.assert_array_equal(buffers.data.rewards, [[1, 0, 0, 0], [2, 2, 0, 0], [3, 3, 3, 0]])
    keys = jax.random.split(jax.random.key(0), seeds)
    samples = jax.vmap(replay.sample, in_axes=(0, 0, None))(buffers, keys, 64)
    for s in range(seeds):
        np.testing.assert_array_equal(samples.rewards[s], np.full(64, s + 1.0))


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.3, 0.5, 0.77, 1.0])
def test_mixed_sample_draws_the_exact_offline_share(fraction):
    """Every batch has exactly round(f·B) offline rows (sentinel reward −1) and the rest from
    the buffer (reward +1), also with f traced under jit."""
    batch_size, n_batches = 20, 4
    offline = rows(-np.ones(50))
    buffer = replay.add(replay.init(30, (2,), 1), rows(np.ones(10)))
    mixed = jax.jit(replay.mixed_sample, static_argnums=(3, 5))(
        offline, buffer, jax.random.key(3), batch_size, jnp.float32(fraction), n_batches
    )
    assert mixed.observations.shape == (n_batches, batch_size, 2)
    offline_rows = (np.asarray(mixed.rewards) == -1).sum(axis=1)
    assert set(np.unique(np.asarray(mixed.rewards))) <= {-1.0, 1.0}
    np.testing.assert_array_equal(offline_rows, [round(fraction * batch_size)] * n_batches)
    # every field of a row comes from the same source
    np.testing.assert_array_equal(mixed.observations[..., 0], mixed.rewards)
    single = replay.mixed_sample(offline, buffer, jax.random.key(4), batch_size, fraction)
    assert (np.asarray(single.rewards) == -1).sum() == round(fraction * batch_size)


def test_offline_mix_schedules():
    """constant holds f; linear decays it to 0 at the end of the online phase; uniform is
    N / (N + n), the offline share of their union."""
    constant = OfflineMix(0.5)
    assert float(constant.fraction(0, 1)) == float(constant.fraction(900, 500)) == 0.5
    linear = OfflineMix(0.5, "linear", online_steps=1000)
    np.testing.assert_allclose(
        [float(linear.fraction(t, 1)) for t in (0, 250, 1000, 2000)], [0.5, 0.375, 0.0, 0.0]
    )
    uniform = OfflineMix("uniform", offline_size=300)
    np.testing.assert_allclose([float(uniform.fraction(0, n)) for n in (0, 100)], [1.0, 0.75])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ratio=1.5), "--offline-ratio must be a number in [0, 1] or 'uniform', got 1.5"),
        (dict(ratio="half"), "--offline-ratio must be a number in [0, 1] or 'uniform'"),
        (dict(ratio="uniform", schedule="linear"), "--offline-ratio uniform cannot be annealed"),
    ],
)
def test_offline_mix_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValorlError, match=message.replace("[", r"\[").replace("]", r"\]")):
        OfflineMix(**kwargs)

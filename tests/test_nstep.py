"""n-step transitions (valorl.data.nstep) and the sources that draw them: hand-computed sums,
masks and bootstrap observations; cut at episode ends, the end of a dataset and the newest row
of a replay buffer; one-step sources unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from valorl.agents import DQN, IQL
from valorl.data import replay
from valorl.data.dataset import Batch, sample_batch
from valorl.data.nstep import chunk_transitions, n_step_transitions, sample_n_step, whole_chunks
from valorl.data.replay import OfflineMix
from valorl.training.sources import (
    DATASET_ROWS,
    DatasetRows,
    Replay,
    ReplayInputs,
    dataset_source,
    replay_source,
)

GAMMA = 0.5


def rows(rewards, dones, masks, start: int = 0) -> Batch:
    """Transitions whose observation is its step index and next observation the index + 0.5
    (so a bootstrap row can be recognised), actions the index too."""
    t = np.arange(start, start + len(rewards), dtype=np.float32)
    return Batch(
        observations=jnp.asarray(t[:, None]),
        actions=jnp.asarray(t.astype(np.int32)),
        rewards=jnp.asarray(rewards, jnp.float32),
        next_observations=jnp.asarray(t[:, None] + 0.5),
        masks=jnp.asarray(masks, jnp.float32),
        dones=jnp.asarray(dones, jnp.float32),
    )


# A 4-row dataset: an episode of 3 steps ending in a termination at row 2, then row 3, the
# first step of an episode the data cuts off.
EPISODE = rows(rewards=[1.0, 2.0, 4.0, 8.0], dones=[0, 0, 1, 0], masks=[1, 1, 0, 1])
# Per start row with n = 3 (γ = 0.5), by hand:
#   0: rows 0,1,2 (K=3): 1 + 0.5·2 + 0.25·4 = 3,  mask 0.25·(1−1) = 0, bootstrap from row 2
#   1: rows 1,2 (the done at row 2 ends it, K=2): 2 + 0.5·4 = 4, mask 0, row 2
#   2: row 2 alone (it is the done, K=1): 4, mask 0, row 2
#   3: row 3 alone (rows 4, 5 do not exist, K=1): 8, mask 1·1 = 1, row 3
EXPECTED = {
    0: dict(reward=3.0, mask=0.0, next=2.5, done=1.0),
    1: dict(reward=4.0, mask=0.0, next=2.5, done=1.0),
    2: dict(reward=4.0, mask=0.0, next=2.5, done=1.0),
    3: dict(reward=8.0, mask=1.0, next=3.5, done=0.0),
}


def windows(data: Batch, starts: list[int], n: int) -> tuple[Batch, jax.Array]:
    size = data.rewards.shape[0]
    idx = np.asarray(starts)[:, None] + np.arange(n)
    steps = jax.tree.map(lambda x: x[np.minimum(idx, size - 1)], data)
    return steps, jnp.asarray(idx < size)


def test_n_step_transitions_by_hand():
    """Sums, masks γ^(K−1)·(1 − terminal), bootstrap observations and dones of a 4-row episode
    with a termination at row 2, n = 3, and the first row's observation and action kept."""
    steps, available = windows(EPISODE, [0, 1, 2, 3], 3)
    out = n_step_transitions(steps, available, GAMMA)
    for i, want in EXPECTED.items():
        assert float(out.rewards[i]) == want["reward"], i
        assert float(out.masks[i]) == want["mask"], i
        assert float(out.next_observations[i, 0]) == want["next"], i
        assert float(out.dones[i]) == want["done"], i
        assert float(out.observations[i, 0]) == i and int(out.actions[i]) == i
    assert out.returns_to_go is None


def test_n_step_without_an_episode_end_bootstraps_at_gamma_to_the_n():
    """With no done in the window, K = n: mask γ^(n−1) (so γ·mask = γ^n) and s' of row n−1;
    a truncation (done, mask 1) stops the sum but still bootstraps."""
    data = rows(rewards=[1.0, 1.0, 1.0, 1.0, 1.0], dones=[0, 0, 0, 1, 0], masks=[1, 1, 1, 1, 1])
    steps, available = windows(data, [0, 1, 2], 3)
    out = n_step_transitions(steps, available, GAMMA)
    np.testing.assert_allclose(out.rewards, [1.75, 1.75, 1.5])
    np.testing.assert_allclose(out.masks, [0.25, 0.25, 0.5])
    np.testing.assert_allclose(out.next_observations[:, 0], [2.5, 3.5, 3.5])


def test_one_step_transitions_are_the_rows():
    """n = 1 gives every row back unchanged (mask γ^0·m = m)."""
    steps, available = windows(EPISODE, [0, 1, 2, 3], 1)
    out = n_step_transitions(steps, available, GAMMA)
    for field in ("observations", "actions", "rewards", "next_observations", "masks", "dones"):
        np.testing.assert_array_equal(getattr(out, field), getattr(EPISODE, field))


def test_chunk_rows_keep_the_actions_and_mark_steps_past_the_episode_end():
    """An action chunk of length 3 is the n-step row of the table above with the 3 actions of
    its window and `valid` true up to the row that ends the episode (or the data) only."""
    steps, available = windows(EPISODE, [0, 1, 2, 3], 3)
    out = chunk_transitions(steps, available, GAMMA)
    np.testing.assert_array_equal(out.actions, [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]])
    want_valid = [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 0, 0]]
    np.testing.assert_array_equal(out.valid, np.asarray(want_valid, bool))
    for i, want in EXPECTED.items():
        assert float(out.rewards[i]) == want["reward"] and float(out.masks[i]) == want["mask"]
    drawn = sample_n_step(EPISODE, jax.random.key(0), 16, 3, GAMMA, num_batches=2, chunks=True)
    assert drawn.actions.shape == (2, 16, 3) and drawn.valid.shape == (2, 16, 3)


def test_a_chunk_target_is_whole_up_to_a_termination_but_not_across_a_truncation():
    """A critic learns from a chunk whose steps all lie in one episode or whose sum ended at a
    terminal state (EPISODE's rows 0-2, mask 0: nothing is backed up past row 2), and not from
    one that a truncation or the end of the data cuts (what it would have done is unknown)."""
    steps, available = windows(EPISODE, [0, 1, 2, 3], 3)
    np.testing.assert_array_equal(
        whole_chunks(chunk_transitions(steps, available, GAMMA)), [1, 1, 1, 0]
    )
    cut = rows(rewards=[1.0] * 5, dones=[0, 0, 1, 0, 0], masks=[1, 1, 1, 1, 1])  # truncated at 2
    steps, available = windows(cut, [0, 1, 2], 3)
    np.testing.assert_array_equal(
        whole_chunks(chunk_transitions(steps, available, GAMMA)), [1, 0, 0]
    )
    one_step = n_step_transitions(steps, available, GAMMA)
    np.testing.assert_array_equal(whole_chunks(one_step), [1, 1, 1])


def test_dataset_n_step_rows_match_the_hand_table():
    """`sample_n_step` draws the same start rows as `sample_batch` and gives each the n-step
    transition of the table above (the end of the data cuts row 3's window)."""
    key = jax.random.key(0)
    out = sample_n_step(EPISODE, key, 64, 3, GAMMA)
    one_step = sample_batch(EPISODE, key, 64)
    np.testing.assert_array_equal(out.observations, one_step.observations)
    starts = np.asarray(out.observations[:, 0]).astype(int)
    assert set(starts) == {0, 1, 2, 3}
    for i, start in enumerate(starts):
        assert float(out.rewards[i]) == EXPECTED[start]["reward"]
        assert float(out.masks[i]) == EXPECTED[start]["mask"]
    two = sample_n_step(EPISODE, key, 8, 3, GAMMA, num_batches=2)
    assert two.rewards.shape == (2, 8) and two.observations.shape == (2, 8, 1)


def test_replay_n_step_stops_at_the_newest_row():
    """A buffer of 5 rows after 7 steps of one endless episode (rows hold steps 5, 6, 2, 3, 4):
    a window never continues from the newest step (6) into the oldest (2)."""
    buffer = replay.init(5, (1,), 0, discrete=True)
    buffer = replay.add(buffer, rows([1.0] * 7, [0] * 7, [1] * 7))
    assert int(buffer.position) == 2 and int(buffer.size) == 5
    out = replay.sample_n_step(buffer, jax.random.key(1), 200, 3, GAMMA)
    steps_taken = {2: 3, 3: 3, 4: 3, 5: 2, 6: 1}  # K per start step
    starts = np.asarray(out.observations[:, 0]).astype(int)
    assert set(starts) == set(steps_taken)
    for i, start in enumerate(starts):
        k = steps_taken[start]
        assert float(out.rewards[i]) == sum(GAMMA**j for j in range(k))
        assert float(out.masks[i]) == GAMMA ** (k - 1)
        assert float(out.next_observations[i, 0]) == start + k - 1 + 0.5


def test_replay_n_step_with_environments_stepped_together():
    """Two environments adding a row each per step (rows: env 0 step 0, env 1 step 0, env 0
    step 1, …): with stride 2 a window follows its own environment, and env 1's episode ends
    at its step 1 while env 0's goes on."""
    t = np.arange(6, dtype=np.float32)
    data = Batch(
        observations=jnp.asarray(t[:, None]),
        actions=jnp.zeros(6, jnp.int32),
        rewards=jnp.asarray([1.0, 10.0, 2.0, 20.0, 4.0, 40.0]),
        next_observations=jnp.asarray(t[:, None] + 0.5),
        masks=jnp.asarray([1.0, 1.0, 1.0, 0.0, 1.0, 1.0]),
        dones=jnp.asarray([0.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
    )
    buffer = replay.add(replay.init(8, (1,), 0, discrete=True), data)
    out = replay.sample_n_step(buffer, jax.random.key(3), 100, 3, GAMMA, stride=2)
    # per start row: (sum, mask, bootstrap row)
    expected = {
        0: (1 + 0.5 * 2 + 0.25 * 4, 0.25, 4),  # env 0, steps 0-2
        1: (10 + 0.5 * 20, 0.0, 3),  # env 1, steps 0-1, terminated
        2: (2 + 0.5 * 4, 0.5, 4),  # env 0, steps 1-2 (newest)
        3: (20.0, 0.0, 3),
        4: (4.0, 1.0, 4),
        5: (40.0, 1.0, 5),
    }
    starts = np.asarray(out.observations[:, 0]).astype(int)
    assert set(starts) == set(expected)
    for i, start in enumerate(starts):
        reward, mask, row = expected[start]
        assert float(out.rewards[i]) == reward and float(out.masks[i]) == mask, start
        assert float(out.next_observations[i, 0]) == row + 0.5, start


def test_sources_are_chosen_from_the_agent():
    """One-step agents get today's sources (the same objects, so the same compiled chunks);
    an n-step agent gets n-step ones at its discount."""
    assert dataset_source(IQL()) is DATASET_ROWS
    assert dataset_source(DQN()) is DATASET_ROWS
    assert dataset_source(DQN(n_step=3, discount=0.9)) == DatasetRows(n_step=3, discount=0.9)
    mix = OfflineMix(0.5)
    assert replay_source(IQL(), mix) == Replay(mix)
    assert replay_source(DQN(n_step=3, discount=0.9), mix) == Replay(mix, 3, 0.9)
    assert replay_source(DQN(n_step=3, discount=0.9), None, num_envs=4).stride == 4


def test_mixed_n_step_replay_source():
    """A hybrid n-step source draws n-step rows from both the offline data and the buffer."""
    buffer = replay.add(replay.init(8, (1,), 0, discrete=True), rows([1.0] * 6, [0] * 6, [1] * 6))
    source = Replay(OfflineMix(0.5), n_step=3, discount=GAMMA)
    inputs = ReplayInputs(offline=EPISODE, env_step=jnp.int32(0))
    out = source.sample(buffer, inputs, jax.random.key(2), 16, 1)
    starts = np.asarray(out.observations[:8, 0]).astype(int)  # the offline half
    for i, start in enumerate(starts):
        assert float(out.rewards[i]) == EXPECTED[start]["reward"]
    online = np.asarray(out.rewards[8:])  # sums of 1 to 3 unit rewards
    assert set(online.tolist()) <= {1.0, 1.5, 1.75} and 1.75 in online.tolist()

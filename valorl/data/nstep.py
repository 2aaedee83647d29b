"""n-step transitions: the discounted sum of up to n rewards and the state to bootstrap from.

The n-step return G = r_0 + γ·r_1 + … + γ^(n−1)·r_(n−1) + γ^n·V(s_n) (Sutton & Barto 2018,
Sec. 7.1, Eq. 7.1) trades the bias of a one-step bootstrap for the variance of n sampled
rewards, and propagates a reward n steps back per update; it is one of Rainbow's components
(Hessel et al. 2018, Sec. 3, "Multi-step learning"). A sum is cut short at an episode's end
(terminal or truncated) and where the data stops (the end of a dataset, the newest row of a
replay buffer).

valorl writes an n-step transition as a one-step row, so that an agent's usual target
r + γ·mask·V(s') is the n-step target without the agent knowing n: with K ≤ n rewards summed,

    rewards            Σ_{k<K} γ^k r_k
    next_observations  s_K (the next observation of the K-th row)
    masks              γ^(K−1) · (1 − terminal_K)       (so γ·mask = γ^K at a non-terminal end)
    dones              whether the K-th row ends its episode

and the observation, action and return-to-go of the first row.

An action-chunk row (Q-chunking: Li, Zhou & Levine 2025, "Reinforcement Learning with Action
Chunking", Sec. 4) is the same n-step row with the n actions a_t, …, a_(t+n−1) kept, shape
(n, action_dim), and `valid` (n,): whether each step lies in the episode of the first. A
policy imitates the valid steps: steps past an episode's end hold whatever rows follow, so
they must be masked. A critic of the whole chunk learns from rows whose target is whole
(`whole_chunks`): its n steps lie in one episode, or its sum ended at a terminal state, after
which nothing is backed up and the chunk's later actions change nothing (Q-chunking's
reference keeps these rows, with mask 0; they are the rows that reach a sparse task's goal).
Windows cut by a truncation or by the end of the data are left out: what the chunk's later
actions would have done is unknown.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from valorl.data.dataset import Batch


def continuing_steps(steps: Batch, available: jax.Array) -> jax.Array:
    """(B, n) whether row k of each window continues its first row's episode: row k exists
    (`available`) and no row before it ended the episode (`dones`); column 0 is always taken."""
    dones = steps.dones.astype(bool)
    ended_before = jnp.cumsum(dones, axis=1) - dones > 0
    continues = available.astype(bool) & ~ended_before
    return jnp.cumprod(continues.at[:, 0].set(True), axis=1).astype(bool)


def n_step_transitions(steps: Batch, available: jax.Array, discount: float) -> Batch:
    """n-step transitions from windows of consecutive rows.

    `steps` holds, for each of B windows, n consecutive rows: every field of shape (B, n, ...),
    row k of a window the k-th transition after its first. `available` (B, n) says which rows
    exist as continuations of row 0 (False past the end of a dataset or the newest row of a
    replay buffer; column 0 is always taken). A window's sum stops after the first row that
    ends an episode (`dones`) or before the first unavailable row. Returns a Batch of B rows
    (see the module docstring).
    """
    taken = continuing_steps(steps, available)  # (B, n)
    count = taken.sum(axis=1)  # K ≥ 1
    n = available.shape[1]
    powers = jnp.asarray(discount, jnp.float32) ** jnp.arange(n, dtype=jnp.float32)
    rewards = jnp.sum(jnp.where(taken, steps.rewards * powers, 0.0), axis=1)
    last = count - 1

    def at_last(x: jax.Array) -> jax.Array:
        index = last.reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.take_along_axis(x, index, axis=1)[:, 0]

    first = lambda x: None if x is None else x[:, 0]
    return Batch(
        observations=first(steps.observations),
        actions=first(steps.actions),
        rewards=rewards.astype(steps.rewards.dtype),
        next_observations=at_last(steps.next_observations),
        masks=(powers[last] * at_last(steps.masks)).astype(steps.masks.dtype),
        dones=at_last(steps.dones),
        returns_to_go=first(steps.returns_to_go),
    )


def window_rows(start: jax.Array, n: int) -> jax.Array:
    """Rows start, start + 1, …, start + n − 1 of each start: shape (*start.shape, n)."""
    return start[..., None] + jnp.arange(n, dtype=start.dtype)


def chunk_transitions(steps: Batch, available: jax.Array, discount: float) -> Batch:
    """`n_step_transitions` with the window's n actions kept, (B, n, action_dim), and their
    validity (B, n) (see the module docstring)."""
    row = n_step_transitions(steps, available, discount)
    return row.replace(actions=steps.actions, valid=continuing_steps(steps, available))


def whole_chunks(batch: Batch) -> jax.Array:
    """(B,) 1.0 for the chunk rows whose h-step target is whole (see the module docstring): the
    last step is valid, or the sum ended at a terminal state (mask 0); all 1.0 for one-step
    rows."""
    if batch.valid is None:
        return jnp.ones_like(batch.rewards)
    return ((batch.valid[:, -1] > 0) | (batch.masks == 0)).astype(batch.rewards.dtype)


def sample_n_step(
    data: Batch,
    key: jax.Array,
    batch_size: int,
    n: int,
    discount: float,
    num_batches: int = 1,
    chunks: bool = False,
) -> Batch:
    """n-step transitions starting at rows drawn uniformly with replacement from `data` (the
    same draws as `sample_batch`), continuing into the rows that follow while they exist;
    shape `(batch_size, ...)`, or `(num_batches, batch_size, ...)`. With `chunks`, action
    chunks of length n (`chunk_transitions`)."""
    size = data.rewards.shape[0]
    shape = (batch_size,) if num_batches == 1 else (num_batches, batch_size)
    start = jax.random.randint(key, shape, 0, size)
    rows = window_rows(start, n)
    available = rows < size
    steps = jax.tree.map(lambda x: x[jnp.minimum(rows, size - 1)], data)
    return batched_transitions(steps, available, discount, num_batches, chunks)


def batched_transitions(
    steps: Batch, available: jax.Array, discount: float, num_batches: int, chunks: bool = False
) -> Batch:
    """`n_step_transitions` (or `chunk_transitions`) of windows with a leading batches axis
    when `num_batches` > 1."""
    transitions = chunk_transitions if chunks else n_step_transitions
    if num_batches == 1:
        return transitions(steps, available, discount)
    return jax.vmap(lambda s, a: transitions(s, a, discount))(steps, available)

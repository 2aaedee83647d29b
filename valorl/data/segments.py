"""Segments: runs of consecutive rows, for sequence models that read a trajectory's context.

A world-action model (JOWA, Cheng et al. 2024, Sec. 3.4: segments of 8 steps) learns from
`length` consecutive steps of one trajectory at a time: its world model predicts each step
from the ones before, and its TD target at step t reads the model's state at step t + 1 of the
same segment. A segment starts at a row drawn uniformly with replacement; its rows keep every
field, shape (B, length, ...), and `valid` (B, length) says which steps continue the first
step's episode (steps after an episode's end, or past the end of the data, hold whatever rows
follow and must be masked).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from valorl.data.dataset import Batch
from valorl.data.nstep import continuing_steps, window_rows


def sample_segments(
    data: Batch, key: jax.Array, batch_size: int, length: int, num_batches: int = 1
) -> Batch:
    """Segments of `length` rows of `data`, shape (batch_size, length, ...), or
    (num_batches, batch_size, length, ...), with `valid` (module docstring)."""
    size = data.rewards.shape[0]
    shape = (batch_size,) if num_batches == 1 else (num_batches, batch_size)
    start = jax.random.randint(key, shape, 0, size)
    rows = window_rows(start, length)
    steps = jax.tree.map(lambda x: x[jnp.minimum(rows, size - 1)], data)
    available = rows < size
    if num_batches == 1:
        valid = continuing_steps(steps, available)
    else:
        valid = jax.vmap(continuing_steps)(steps, available)
    return steps.replace(valid=valid)

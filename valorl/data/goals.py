"""Goal relabelling for goal-conditioned offline RL, sampled on the device.

Goal-conditioned datasets (OGBench's, for one) carry no rewards: each sampled row gets a goal,
and the reward says whether the row's state reaches it. The goal of row i is, as in OGBench's
`GCDataset` (Park et al., ICLR 2025, `impls/utils/datasets.py`) and the implementations built
on it (horizon-reduction, DQC):

- the row's own state, with probability `p_cur` (0.2);
- a state of the same trajectory after it, drawn uniformly from rows i+1 .. the trajectory's
  last row (the last row itself when i is last), with probability `p_traj` (0.5);
- a state drawn uniformly from the whole dataset, with probability `p_rand` (0.3).

A goal is reached exactly when its row is the sampled row (OGBench's index equality):
reward 1 and mask 0 there, reward 0 and mask 1 elsewhere (DQC's success indicator; OGBench's
`gc_negative` shifts this to 0 / −1, `negative=True` here). The goal is the row's observation, or
another representation of it (`features`, e.g. OGBench's oracle representation of the objects:
`valorl.zoo.ogbench_tasks.oracle_goals(name)`).

    data = load_dataset("cube-double-play-v0")
    table = goal_table(data)                    # or goal_table(data, oracle_goals(name))
    batch = sample_goal_batch(data.to_batch(), table, key, 256)   # inside jit / scan
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.data.dataset import Batch, Dataset
from valorl.errors import ValorlError


@flax.struct.dataclass
class GoalTable:
    """What goal sampling needs, on the device: every row's goal features and the index of
    the last row of its trajectory."""

    features: jax.Array
    """(N, *goal_shape) the goal each row stands for (its observation by default)."""
    last: jax.Array
    """(N,) int32: index of the last row of each row's trajectory."""


def goal_table(dataset: Dataset, features: np.ndarray | None = None) -> GoalTable:
    """The goal table of `dataset`, whose trajectories end where `dones` is set (and at its last
    row); `features` (one row per transition) replaces the observations as goals."""
    goals = dataset.observations if features is None else np.asarray(features)
    if len(goals) != len(dataset):
        raise ValorlError(f"goal features have {len(goals)} rows for {len(dataset)} transitions")
    last = np.empty(len(dataset), np.int32)
    for sl in dataset.episode_slices():
        last[sl] = sl.stop - 1
    return GoalTable(features=jnp.asarray(goals), last=jnp.asarray(last))


def sample_goal_rows(
    table: GoalTable,
    rows: jax.Array,
    key: jax.Array,
    p_cur: float = 0.2,
    p_traj: float = 0.5,
    p_rand: float = 0.3,
) -> jax.Array:
    """The goal row of each of `rows`: itself, a later row of its trajectory, or any row, with
    probabilities p_cur, p_traj, p_rand (which must sum to 1)."""
    if min(p_cur, p_traj, p_rand) < 0 or not np.isclose(p_cur + p_traj + p_rand, 1.0):
        raise ValorlError(
            f"goal probabilities must be non-negative and sum to 1, got "
            f"p_cur={p_cur}, p_traj={p_traj}, p_rand={p_rand}"
        )
    pick, future, anywhere = jax.random.split(key, 3)
    last = table.last[rows]
    first_future = jnp.minimum(rows + 1, last)
    later = jax.random.randint(future, rows.shape, first_future, last + 1)
    random_rows = jax.random.randint(anywhere, rows.shape, 0, table.last.shape[0])
    u = jax.random.uniform(pick, rows.shape)
    return jnp.where(u < p_cur, rows, jnp.where(u < p_cur + p_traj, later, random_rows))


def with_goals(
    batch: Batch,
    table: GoalTable,
    rows: jax.Array,
    key: jax.Array,
    p_cur: float = 0.2,
    p_traj: float = 0.5,
    p_rand: float = 0.3,
    negative: bool = False,
) -> Batch:
    """`batch` (dataset rows `rows`) with relabelled goals, success rewards and masks."""
    goal_rows = sample_goal_rows(table, rows, key, p_cur, p_traj, p_rand)
    success = (goal_rows == rows).astype(jnp.float32)
    return batch.replace(
        goals=table.features[goal_rows],
        rewards=success - 1.0 if negative else success,
        masks=1.0 - success,
    )


def sample_goal_batch(
    data: Batch,
    table: GoalTable,
    key: jax.Array,
    batch_size: int,
    p_cur: float = 0.2,
    p_traj: float = 0.5,
    p_rand: float = 0.3,
    negative: bool = False,
) -> Batch:
    """`batch_size` rows of `data` (a dataset's `to_batch()`) drawn uniformly, with goals."""
    draw, relabel = jax.random.split(key)
    rows = jax.random.randint(draw, (batch_size,), 0, data.rewards.shape[0])
    batch = jax.tree.map(lambda x: x[rows], data)
    return with_goals(batch, table, rows, relabel, p_cur, p_traj, p_rand, negative)

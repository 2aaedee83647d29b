"""Goal relabelling for goal-conditioned offline RL, sampled on the device.

Goal-conditioned datasets (OGBench's, for one) carry no rewards: each sampled row gets a goal,
and the reward says whether the row's state reaches it. The goal of row i is, as in OGBench's
`GCDataset` (Park et al., ICLR 2025, `impls/utils/datasets.py`) and the implementations built
on it (horizon-reduction, DQC):

- the row's own state, with probability `p_cur` (0.2);
- a state of the same trajectory after it, drawn uniformly from rows i+1 .. the trajectory's
  last row (the last row itself when i is last), with probability `p_traj` (0.5);
- a state drawn uniformly from the whole dataset, with probability `p_rand` (0.3).

A goal is reached exactly when its row is the sampled row (OGBench's index equality): reward 1
and mask 0 there, reward 0 and mask 1 elsewhere (DQC's success indicator; OGBench's
`gc_negative` shifts this to 0 / −1, `reward="negative"` here). The goal is the row's
observation, or another representation of it (`features`, e.g. OGBench's oracle
representation of the objects: `valorl.data.ogbench.oracle_goals`).

Windows of n rows (n-step returns, action chunks: `valorl.data.nstep`) stop at the goal: a goal
k < n rows ahead pays γ^k and ends the sum there (DQC's backup "clipped at the goal"), while the
chunk's actions stay valid up to the trajectory's end. One goal per row serves every network,
unless `actor_goals="future"` gives the actor a second one, a later state of the row's
trajectory drawn uniformly, as OGBench's GCIQL and GCIVL do (one-step rows; IQL's family reads
it). Two differences from the references: OGBench draws its value goals' future offsets
geometrically (valorl and DQC uniformly), and the last h − 1 rows
of each trajectory are drawn too (DQC never draws them: 2.4% of the rows of OGBench's 1001-step
trajectories at h = 25); a chunk critic learns from those whose window reaches the goal before
the trajectory's end (`nstep.whole_chunks`), and the policy imitates their steps up to it.

    data = load_dataset("cube-double-play-v0")
    table = goal_table(data)                    # or goal_table(data, oracle_goals(data))
    batch = sample_goal_windows(data.to_batch(), table, key, 256, GoalSampling())  # in jit
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.data import ogbench
from valorl.data.dataset import Batch, Dataset
from valorl.data.nstep import batched_transitions, continuing_steps, window_rows
from valorl.errors import ValorlError

REPRESENTATIONS = ("observation", "oracle")
REWARDS = ("success", "negative")
ACTOR_GOALS = ("same", "future")


@dataclasses.dataclass(frozen=True)
class GoalSampling:
    """How a goal-conditioned run relabels its rows (recorded in its config)."""

    representation: str = "observation"
    """"observation": goals are states as observed; "oracle": OGBench's oracle representation
    of the objects (`valorl.data.ogbench.oracle_goals`), as DQC's `*-oraclerep` runs."""
    reward: str = "success"
    """"success": 1 at the goal, 0 elsewhere (DQC); "negative": 0 and −1 (OGBench's GCIQL)."""
    p_cur: float = 0.2
    p_traj: float = 0.5
    p_rand: float = 0.3
    actor_goals: str = "same"
    """"same": the actor learns with the row's goal; "future": with a goal of its own, a later
    state of the row's trajectory drawn uniformly (OGBench's GCIQL and GCIVL: actor goals from
    the future only), for agents that read it (`Agent.separate_actor_goals`)."""

    def value_range(self, discount: float) -> tuple[float, float]:
        """The range of goal-conditioned values at `discount`: [0, 1] with success rewards,
        [−1 / (1 − γ), 0] with negative ones."""
        return (0.0, 1.0) if self.reward == "success" else (-1.0 / (1.0 - discount), 0.0)

    def check(self) -> GoalSampling:
        """This sampling, or ValorlError naming what is wrong."""
        if self.representation not in REPRESENTATIONS:
            raise ValorlError(
                f"goal representation must be one of {', '.join(REPRESENTATIONS)}, "
                f"got {self.representation!r}"
            )
        if self.reward not in REWARDS:
            raise ValorlError(
                f"goal reward must be one of {', '.join(REWARDS)}, got {self.reward!r}"
            )
        if self.actor_goals not in ACTOR_GOALS:
            raise ValorlError(
                f"actor goals must be one of {', '.join(ACTOR_GOALS)}, got {self.actor_goals!r}"
            )
        probabilities = (self.p_cur, self.p_traj, self.p_rand)
        if min(probabilities) < 0 or not np.isclose(sum(probabilities), 1.0):
            raise ValorlError(
                f"goal probabilities must be non-negative and sum to 1, got "
                f"p_cur={self.p_cur}, p_traj={self.p_traj}, p_rand={self.p_rand}"
            )
        return self


@flax.struct.dataclass
class GoalTable:
    """What goal sampling needs, on the device: every row's goal features and the index of
    the last row of its trajectory."""

    features: jax.Array
    """(N, *goal_shape) the goal each row stands for (its observation by default)."""
    last: jax.Array
    """(N,) int32: index of the last row of each row's trajectory."""


def goal_features(dataset: Dataset, sampling: GoalSampling) -> np.ndarray:
    """Every row's goal features in `sampling`'s representation, (N, goal_dim) float32."""
    if len(dataset.obs_shape) != 1:
        raise ValorlError(
            f"goal-conditioned training appends goals to flat observations; "
            f"{dataset.info.name!r} has observations of shape {dataset.obs_shape}"
        )
    if sampling.check().representation == "oracle":
        return ogbench.oracle_goals(dataset)
    return dataset.observations.astype(np.float32)


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


def later_rows(table: GoalTable, rows: jax.Array, key: jax.Array) -> jax.Array:
    """A row of each of `rows`' trajectory after it, drawn uniformly (the last row itself when
    it is last)."""
    last = table.last[rows]
    return jax.random.randint(key, rows.shape, jnp.minimum(rows + 1, last), last + 1)


def sample_goal_rows(
    table: GoalTable,
    rows: jax.Array,
    key: jax.Array,
    sampling: GoalSampling = GoalSampling(),
) -> jax.Array:
    """The goal row of each of `rows`: itself, a later row of its trajectory, or any row, with
    the probabilities of `sampling`."""
    p_cur, p_traj = sampling.check().p_cur, sampling.p_traj
    pick, future, anywhere = jax.random.split(key, 3)
    later = later_rows(table, rows, future)
    random_rows = jax.random.randint(anywhere, rows.shape, 0, table.last.shape[0])
    u = jax.random.uniform(pick, rows.shape)
    return jnp.where(u < p_cur, rows, jnp.where(u < p_cur + p_traj, later, random_rows))


def sample_goal_windows(
    data: Batch,
    table: GoalTable,
    key: jax.Array,
    batch_size: int,
    sampling: GoalSampling = GoalSampling(),
    n: int = 1,
    discount: float = 1.0,
    num_batches: int = 1,
    chunks: bool = False,
) -> Batch:
    """Rows of `data` (a dataset's `to_batch()`) drawn uniformly with replacement, each with a
    goal (`Batch.goals`) and that goal's rewards and masks: one-step rows, or with n > 1
    n-step rows (their actions kept as chunks with `chunks`) whose sums stop at the goal.
    One-step rows also get the actor's own goal (`Batch.actor_goals`) when `sampling` asks.
    Shape `(batch_size, ...)`, or `(num_batches, batch_size, ...)`."""
    size = data.rewards.shape[0]
    shape = (batch_size,) if num_batches == 1 else (num_batches, batch_size)
    draw, relabel = jax.random.split(key)
    start = jax.random.randint(draw, shape, 0, size)
    goal_rows = sample_goal_rows(table, start, relabel, sampling)
    negative = 1.0 if sampling.reward == "negative" else 0.0
    if n == 1:  # the row itself, every field kept (next actions too)
        success = (start == goal_rows).astype(jnp.float32)
        row = jax.tree.map(lambda x: x[start], data)
        actor_goals = None
        if sampling.actor_goals == "future":
            actor_rows = later_rows(table, start, jax.random.fold_in(key, 1))
            actor_goals = table.features[actor_rows]
        return row.replace(
            rewards=(success - negative).astype(row.rewards.dtype),
            masks=(1.0 - success).astype(row.masks.dtype),
            goals=table.features[goal_rows],
            actor_goals=actor_goals,
        )
    if sampling.actor_goals != "same":
        raise ValorlError("separate actor goals are drawn for one-step rows only")
    rows = window_rows(start, n)
    available = rows < size
    steps = jax.tree.map(lambda x: x[jnp.minimum(rows, size - 1)], data)
    success = rows == goal_rows[..., None]
    reward = success.astype(jnp.float32) - negative
    at_goal = steps.replace(
        rewards=reward.astype(steps.rewards.dtype),
        masks=(1.0 - success).astype(steps.masks.dtype),
        dones=(steps.dones.astype(bool) | success).astype(steps.dones.dtype),
    )
    out = batched_transitions(at_goal, available, discount, num_batches, chunks)
    if chunks:  # a chunk's actions are valid to its trajectory's end, past the goal
        valid = continuing_steps if num_batches == 1 else jax.vmap(continuing_steps)
        out = out.replace(valid=valid(steps, available))
    return out.replace(goals=table.features[goal_rows])

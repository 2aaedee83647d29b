"""Where training batches come from: one small interface, implemented by each kind of data.

A `BatchSource` draws one seed's batch inside compiled code from two inputs: its per-seed
state (a replay buffer; nothing for a fixed dataset) and its shared inputs (the same for every
seed: a dataset on the device, the step of a schedule). The fused chunk (fused.py) calls
`sample` once per update inside `lax.scan` and `vmap`s over seeds, so a source is a frozen,
hashable dataclass of static settings whose methods are pure functions of JAX arrays.

Sources here: `DatasetRows` (rows of a fixed dataset), `GoalRows` (the same with relabelled
goals appended to the observations) and `Replay` (a replay buffer, mixed with offline rows in
the hybrid modes), each one-step or n-step (`valorl.data.nstep`); `dataset_source(agent)` and
`replay_source(agent, mix)` pick the one an agent learns from.
A new kind of data (model-generated rows in a model buffer, h-step sequences, relabelled
goals) is a new source: its state carries what it needs between chunks, and the loop only
passes it along.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.agents.base import Agent
from valorl.data import replay
from valorl.data.dataset import Batch, Dataset, sample_batch
from valorl.data.goals import (
    GoalSampling,
    GoalTable,
    goal_features,
    goal_table,
    sample_goal_windows,
)
from valorl.data.nstep import sample_n_step
from valorl.data.replay import OfflineMix, ReplayBuffer
from valorl.data.segments import sample_segments
from valorl.data.transforms import Normalizer
from valorl.models import Rollouts


class BatchSource(Protocol):
    def sample(
        self, state: Any, shared: Any, key: jax.Array, batch_size: int, num_batches: int
    ) -> Batch:
        """A batch of `(batch_size, ...)` rows, or `(num_batches, batch_size, ...)`."""
        ...


@dataclasses.dataclass(frozen=True)
class DatasetRows:
    """Rows drawn uniformly with replacement from a dataset on the device (`shared`); with
    `n_step` > 1, n-step transitions at `discount` starting at those rows, with their n
    actions kept when `chunks` (`valorl.data.nstep`)."""

    n_step: int = 1
    discount: float = 1.0
    """The discount of the n-step sums (unused for one-step rows)."""
    chunks: bool = False
    """Keep the n actions of each row: action chunks for agents with `chunk_length` n."""
    segment_length: int = 1
    """More than 1: segments of this many consecutive raw rows instead (`valorl.data.segments`),
    for agents with that `segment_length`."""

    def sample(self, state: None, shared: Batch, key, batch_size: int, num_batches: int) -> Batch:
        if self.segment_length > 1:
            return sample_segments(shared, key, batch_size, self.segment_length, num_batches)
        if self.n_step == 1:
            return sample_batch(shared, key, batch_size, num_batches)
        return sample_n_step(
            shared, key, batch_size, self.n_step, self.discount, num_batches, self.chunks
        )


DATASET_ROWS = DatasetRows()
"""One-step rows of a dataset: the source of every one-step agent (and of FQE, behaviour
models)."""


@flax.struct.dataclass
class GoalData:
    """What every seed's goal source shares: the dataset's rows and their goal table."""

    rows: Batch
    table: GoalTable


@dataclasses.dataclass(frozen=True)
class GoalRows:
    """Dataset rows with relabelled goals (`valorl.data.goals`), each goal appended to the row's
    observation and next observation: the agent learns π(a | s, g) and Q(s, g, a) without
    knowing it, as OGBench's goal-conditioned agents concatenate [s, g] at their inputs. With
    separate actor goals, `actor_observations` is [s, actor goal]."""

    sampling: GoalSampling
    n_step: int = 1
    discount: float = 1.0
    chunks: bool = False

    def sample(self, state: None, shared: GoalData, key, batch_size: int, num_batches: int):
        batch = sample_goal_windows(
            shared.rows,
            shared.table,
            key,
            batch_size,
            self.sampling,
            self.n_step,
            self.discount,
            num_batches,
            self.chunks,
        )
        with_goal = lambda obs, goals: jnp.concatenate([obs, goals.astype(obs.dtype)], axis=-1)
        actor = batch.actor_goals
        return batch.replace(
            observations=with_goal(batch.observations, batch.goals),
            next_observations=with_goal(batch.next_observations, batch.goals),
            actor_observations=None if actor is None else with_goal(batch.observations, actor),
            goals=None,
            actor_goals=None,
        )


@flax.struct.dataclass
class ReplayInputs:
    """What every seed's replay source shares: the offline rows of the hybrid modes (None
    online) and the environment step, for annealed mixing schedules."""

    offline: Batch | None
    env_step: jax.Array


@dataclasses.dataclass(frozen=True)
class Replay:
    """Rows of a seed's replay buffer (its state), with a share of offline rows per `mix`
    (RLPD's symmetric sampling, IQL's uniform union; see `valorl.data.replay.OfflineMix`)."""

    mix: OfflineMix | None = None
    n_step: int = 1
    """n of n-step transitions (`valorl.data.nstep`); 1: one-step rows."""
    discount: float = 1.0
    """The discount of the n-step sums (unused for one-step rows)."""
    stride: int = 1
    """Rows between one environment's consecutive steps in the buffer: the number of
    environments adding a row each per step (n-step rows only)."""

    def sample(
        self, state: ReplayBuffer, shared: ReplayInputs, key, batch_size: int, num_batches: int
    ) -> Batch:
        if self.mix is None:
            if self.n_step == 1:
                return replay.sample(state, key, batch_size, num_batches)
            return replay.sample_n_step(
                state, key, batch_size, self.n_step, self.discount, num_batches, self.stride
            )
        fraction = jnp.where(state.size > 0, self.mix.fraction(shared.env_step, state.size), 1.0)
        return replay.mixed_sample(
            shared.offline,
            state,
            key,
            batch_size,
            fraction,
            num_batches,
            n_step=self.n_step,
            discount=self.discount,
            stride=self.stride,
        )


@dataclasses.dataclass(frozen=True)
class ModelMix:
    """`real_rows` rows from a source of real data, then the rest of the batch from a model
    buffer of imagined rows (model-based agents: `valorl.agents.model_based`). The state is the
    pair (the real source's state, the model buffer); the shared inputs are the real source's."""

    real: BatchSource
    real_rows: int
    rollouts: Rollouts | None = None
    """Online (the shared inputs are `ReplayInputs`): imagined rows come from the rounds kept at
    the current rollout length (`Rollouts.kept_rows`). None: from the whole model buffer."""

    def sample(
        self, state: tuple[Any, ReplayBuffer], shared: Any, key, batch_size: int, num_batches: int
    ) -> Batch:
        real_state, model_buffer = state
        key_real, key_model = jax.random.split(key)
        real = self.real.sample(real_state, shared, key_real, self.real_rows, num_batches)
        n = batch_size - self.real_rows
        if self.rollouts is None:
            imagined = replay.sample(model_buffer, key_model, n, num_batches)
        else:
            window = self.rollouts.kept_rows(shared.env_step)
            imagined = replay.sample_recent(model_buffer, key_model, n, window, num_batches)
        axis = 0 if num_batches == 1 else 1
        return jax.tree.map(
            lambda a, b: jnp.concatenate([a, b.astype(a.dtype)], axis=axis), real, imagined
        )


def dataset_source(agent: Agent, goals: GoalSampling | None = None) -> DatasetRows | GoalRows:
    """The dataset source for `agent`: one-step rows, n-step transitions at its discount
    when it learns from them (`agent.return_steps` > 1), action chunks of its
    `chunk_length` with their returns, or segments of its `segment_length`; with `goals`, the
    same with relabelled goals."""
    if agent.segment_length > 1:
        rows = DatasetRows(segment_length=agent.segment_length)
    elif agent.chunk_length > 1:
        rows = DatasetRows(agent.chunk_length, float(agent.discount), chunks=True)
    elif agent.return_steps == 1:
        rows = DATASET_ROWS
    else:
        rows = DatasetRows(n_step=agent.return_steps, discount=float(agent.discount))
    if goals is None:
        return rows
    return GoalRows(goals, rows.n_step, rows.discount, rows.chunks)


def replay_source(agent: Agent, mix: OfflineMix | None = None, num_envs: int = 1) -> Replay:
    """The replay source for `agent` (with an offline `mix` in the hybrid modes): one-step
    rows, or n-step transitions at its discount (`agent.return_steps` > 1) from a buffer that
    `num_envs` environments fill together, one row each per step in a fixed order."""
    if agent.return_steps == 1:
        return Replay(mix)
    return Replay(mix, n_step=agent.return_steps, discount=float(agent.discount), stride=num_envs)


def dataset_rows(agent: Agent, data: Dataset, normalizer: Normalizer) -> Batch:
    """The dataset on the device in the agent's units, with Monte-Carlo returns-to-go at the
    agent's discount (scaled like the rewards) for agents that declare `needs_returns_to_go`,
    and the next rows' actions for those that declare `needs_next_actions`.

    Compact (uint8) observations stay uint8 on the device unless the agent standardises them:
    a MinAtar dataset then takes a quarter of float32's memory, and networks convert a batch's
    rows at their input."""
    discount = agent.discount if agent.needs_returns_to_go else None
    compact = data.observations.dtype == np.uint8 and not agent.normalize_observations
    rows = data.to_batch(discount=discount, next_actions=agent.needs_next_actions)
    return normalizer.batch(rows, observations=not compact)


def goal_data(agent: Agent, data: Dataset, normalizer: Normalizer, goals: GoalSampling) -> GoalData:
    """`dataset_rows` and the goal table of a goal-conditioned run, each in agent units: the
    run's normalizer covers [s, g], the observation's features first (`with_goal_features`)."""
    obs_dim = data.obs_shape[-1]
    part = lambda lo, hi: normalizer.replace(
        obs_mean=normalizer.obs_mean[lo:hi], obs_std=normalizer.obs_std[lo:hi]
    )
    rows = dataset_rows(agent, data, part(0, obs_dim))
    features = part(obs_dim, None).observations(jnp.asarray(goal_features(data, goals)))
    return GoalData(rows, goal_table(data, features))

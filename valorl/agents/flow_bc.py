"""Flow-matching behaviour cloning, over single actions or chunks of h actions.

The policy is a velocity field trained by flow matching on the dataset's actions
(`valorl.nets.flow`; Lipman et al. 2023, Eq. 23) and sampled by `flow_steps` Euler steps from
Gaussian noise, clipped to [-1, 1]. It is the behaviour model of FQL (Park, Li & Levine 2025,
Eq. 3, "BC flow"), of Q-chunking's best-of-N policy (Li, Zhou & Levine 2025, Sec. 4.2) and of
the "BFN" baseline (h = 1, N = 1). With `horizon` h > 1 it clones chunks of h actions
(flattened to h·|A| numbers, steps past an episode's end masked out of the loss) and acts
open-loop for h steps.

The functions here are the flow-BC pieces FQL, QC and DQC share: the masked loss, the sampler
and best-of-N extraction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from valorl.agents.base import (
    AgentBase,
    Metrics,
    NetState,
    Params,
    Spec,
    adam,
    apply,
    create_train_state,
    grad_step,
    prefix,
)
from valorl.config import require_at_least_one
from valorl.critics.selection import choose
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.errors import ValorlError
from valorl.nets.flow import VelocityField, euler_sample, flow_matching_loss


class FlowBCState(flax.struct.PyTreeNode):
    actor: NetState
    """The velocity field v(s, x_t, t)."""


def flat_actions(batch: Batch) -> jax.Array:
    """The batch's actions as (batch, h·|A|): a chunk (batch, h, |A|) flattened step-major."""
    return flat_chunks(batch.actions)


def flat_chunks(actions: jax.Array) -> jax.Array:
    """Chunks (batch, h, |A|) as a chunk critic reads them, (batch, h·|A|) step-major; one-step
    actions unchanged (the inverse of `as_chunks`)."""
    return actions.reshape(actions.shape[0], -1) if actions.ndim == 3 else actions


def step_weights(batch: Batch, action_dim: int) -> jax.Array:
    """(batch, h·|A|) weights of the flattened actions: 1 where the chunk step lies in the
    episode of the first (`batch.valid`), 0 past its end; all 1 for one-step batches."""
    if batch.valid is None:
        return jnp.ones_like(batch.actions)
    return jnp.repeat(batch.valid.astype(jnp.float32), action_dim, axis=-1)


def as_chunks(flat: jax.Array, horizon: int) -> jax.Array:
    """(batch, h·|A|) -> (batch, h, |A|) for h > 1; one-step actions unchanged."""
    return flat if horizon == 1 else flat.reshape(flat.shape[0], horizon, -1)


def flow_bc_loss(
    actor: NetState, params: Params, batch: Batch, key: jax.Array
) -> tuple[jax.Array, Metrics]:
    """Flow matching on the dataset's actions (or chunks), averaged over the valid steps."""
    actions = flat_actions(batch)
    velocity = lambda s, x, t: apply(actor, params, s, x, t)
    errors = flow_matching_loss(velocity, batch.observations, actions, key)
    weights = step_weights(batch, actions.shape[-1] // _steps(batch))
    loss = (errors * weights).sum() / jnp.maximum(weights.sum(), 1.0)
    return loss, {"flow_mse": loss}


def create_flow(
    key: jax.Array,
    obs_shape: tuple[int, ...],
    dims: int,
    hidden_dims,
    lr: float,
    layer_norm: bool = False,
    obs_features: int | None = None,
) -> NetState:
    """A velocity field over `dims` numbers (an action or a flattened chunk), with Adam, that
    reads the first `obs_features` features of an observation (None: all)."""
    obs, x, t = jnp.zeros((1, *obs_shape)), jnp.zeros((1, dims)), jnp.zeros((1, 1))
    velocity = VelocityField(hidden_dims, dims, layer_norm, obs_features=obs_features)
    return create_train_state(velocity, key, (obs, x, t), adam(lr))


def flow_actions(
    actor: NetState, params: Params, observations: jax.Array, noise: jax.Array, steps: int
) -> jax.Array:
    """Actions (or flattened chunks) of the flow policy from `noise`, clipped to [-1, 1]."""
    velocity = lambda s, x, t: apply(actor, params, s, x, t)
    return jnp.clip(euler_sample(velocity, observations, noise, steps), -1.0, 1.0)


def best_of_n(
    actor: NetState,
    obs: jax.Array,
    key: jax.Array,
    samples: int,
    flow_steps: int,
    score: Callable[[jax.Array, jax.Array], jax.Array],
) -> jax.Array:
    """The highest-scoring of `samples` flow samples at each observation, (batch, h·|A|):
    `score(observations, flattened chunks)` rates the (batch·N) candidates (Q-chunking's and
    Decoupled Q-chunking's policy extraction, through `valorl.critics.selection`)."""
    batch, dims = obs.shape[0], actor.input_shapes[1][-1]
    repeated = jnp.repeat(obs, samples, axis=0)
    noise = jax.random.normal(key, (batch * samples, dims))
    candidates = flow_actions(actor, actor.params, repeated, noise, flow_steps)
    scores = score(repeated, candidates).reshape(batch, samples)
    return choose(candidates.reshape(batch, samples, dims), scores, 0.0, key)


def _steps(batch: Batch) -> int:
    return 1 if batch.actions.ndim == 2 else batch.actions.shape[1]


def check_horizon(horizon: int) -> None:
    if horizon < 1:
        raise ValorlError(f"--horizon must be at least 1, got {horizon}")


class HorizonChunks:
    """An agent that learns from and acts in chunks of its `horizon` actions."""

    horizon: int

    @property
    def chunk_length(self) -> int:
        return self.horizon

    @property
    def action_chunk(self) -> int:
        return self.horizon


@dataclasses.dataclass(frozen=True)
class FlowBC(HorizonChunks, AgentBase):
    """Behaviour cloning with a flow-matching policy (a chunk of `horizon` actions per call)."""

    name: ClassVar[str] = "flow_bc"

    horizon: int = 1
    """h: actions per chunk, cloned together and executed open-loop (1: one action)."""
    flow_steps: int = 10
    """Euler steps from noise to an action (FQL's and QC's 10)."""
    lr: float = 3e-4
    """Learning rate."""
    hidden_dims: tuple[int, ...] = (256, 256, 256, 256)
    """Hidden layer sizes of the velocity field (FQL's are 4x512)."""
    batch_size: int = 256
    """Rows (chunks) per gradient step."""
    discount: float = 0.99
    """Unused by the loss; sets the chunk rows' return sums, as for the other chunk agents."""
    normalize_observations: bool = False
    """Standardise observations with dataset statistics (FQL does not)."""
    reward_normalization: RewardNormalization = "none"
    """Unused by behaviour cloning."""

    def __post_init__(self) -> None:
        check_horizon(self.horizon)
        require_at_least_one(self, "flow_steps")

    def init(self, key: jax.Array, spec: Spec) -> FlowBCState:
        dims = spec.action_dim * self.horizon
        actor = create_flow(key, spec.obs_shape, dims, self.hidden_dims, self.lr)
        return FlowBCState(actor=actor)

    def update(self, state: FlowBCState, batch: Batch, key: jax.Array):
        actor, metrics = grad_step(state.actor, lambda p: flow_bc_loss(state.actor, p, batch, key))
        return state.replace(actor=actor), prefix("actor", metrics)

    def act(
        self, state: FlowBCState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        """A sample of the flow policy: a flow has no mode to act with, so `deterministic`
        acts the same, with the noise drawn from `key` (evaluation passes its own keys)."""
        del deterministic
        dims = state.actor.input_shapes[1][-1]
        noise = jax.random.normal(key, (obs.shape[0], dims))
        actions = flow_actions(state.actor, state.actor.params, obs, noise, self.flow_steps)
        return as_chunks(actions, self.horizon)

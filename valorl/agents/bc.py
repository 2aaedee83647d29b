"""Behaviour cloning: regress the dataset's actions (Pomerleau 1991).

A deterministic tanh policy trained by mean squared error, as the BC baseline of TD3+BC
(Fujimoto & Gu 2021) and CORL. It learns the average behaviour in the data, so on
mixed-quality data it is the bar that offline RL must clear.
"""

from __future__ import annotations

import dataclasses
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
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.nets import DeterministicPolicy


class BCState(flax.struct.PyTreeNode):
    actor: NetState


@dataclasses.dataclass(frozen=True)
class BC(AgentBase):
    """Behaviour cloning with a deterministic policy and a squared-error loss."""

    name: ClassVar[str] = "bc"

    lr: float = 3e-4
    """Learning rate."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes."""
    batch_size: int = 256
    """Transitions per gradient step."""
    normalize_observations: bool = True
    """Standardise observations with dataset statistics."""
    reward_normalization: RewardNormalization = "none"
    """Unused by BC; kept so every agent has the same data settings."""

    def init(self, key: jax.Array, spec: Spec) -> BCState:
        actor = create_train_state(
            DeterministicPolicy(self.hidden_dims, spec.action_dim),
            key,
            (jnp.zeros((1, *spec.obs_shape)),),
            adam(self.lr),
        )
        return BCState(actor=actor)

    def loss(self, params: Params, state: BCState, batch: Batch) -> tuple[jax.Array, Metrics]:
        actions = apply(state.actor, params, batch.observations)
        return ((actions - batch.actions) ** 2).mean(), {}

    def update(self, state: BCState, batch: Batch, key: jax.Array) -> tuple[BCState, Metrics]:
        del key
        actor, metrics = grad_step(state.actor, lambda p: self.loss(p, state, batch))
        return state.replace(actor=actor), prefix("actor", metrics)

    def act(
        self, state: BCState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        del key, deterministic  # a deterministic policy
        return apply(state.actor, state.actor.params, obs)

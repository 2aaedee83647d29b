"""Behaviour cloning: regress the dataset's actions (Pomerleau 1991).

A deterministic tanh policy trained by mean squared error, as the BC baseline of TD3+BC
(Fujimoto & Gu 2021) and CORL. It learns the average behaviour in the data, so on
mixed-quality data it is the bar that offline RL must clear.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from valorl.agents.base import (
    Metrics,
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


@dataclasses.dataclass(frozen=True)
class BC:
    """Behaviour cloning with a deterministic policy and a squared-error loss."""

    name: ClassVar[str] = "bc"
    batches_per_update: ClassVar[int] = 1

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

    def init(self, key: jax.Array, spec: Spec) -> TrainState:
        return create_train_state(
            DeterministicPolicy(self.hidden_dims, spec.action_dim),
            key,
            (jnp.zeros((1, *spec.obs_shape)),),
            adam(self.lr),
        )

    def loss(self, params: Params, state: TrainState, batch: Batch) -> tuple[jax.Array, Metrics]:
        actions = apply(state, params, batch.observations)
        return ((actions - batch.actions) ** 2).mean(), {}

    def update(self, state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
        del key
        state, metrics = grad_step(state, lambda p: self.loss(p, state, batch))
        return state, prefix("actor", metrics)

    def act(
        self, state: TrainState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        del key, deterministic  # a deterministic policy
        return apply(state, state.params, obs)

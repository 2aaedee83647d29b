"""Behaviour cloning for discrete actions, registered as "bc_discrete": a categorical policy
trained by cross-entropy on the dataset's actions (maximum likelihood, as the BC baselines of
offline discrete-action benchmarks: Agarwal et al. 2020; Kumar et al. 2020, Sec. 6.3).

It learns the behaviour policy's action distribution, the bar offline RL must clear on data
of mixed quality. `act` takes the most probable action (deterministic) or samples π(·|s).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from valorl.agents.base import AgentBase, Metrics, Params, Spec, adam, grad_step, prefix
from valorl.agents.bc import BCState
from valorl.agents.discrete import create_policy, policy_act, weighted_cross_entropy
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization


@dataclasses.dataclass(frozen=True)
class DiscreteBC(AgentBase):
    """Behaviour cloning with a categorical policy and the cross-entropy loss."""

    name: ClassVar[str] = "bc_discrete"
    discrete: ClassVar[bool] = True

    lr: float = 3e-4
    """Learning rate."""
    hidden_dims: tuple[int, ...] = (128,)
    """Dense layers after the torso (frames: one conv layer first)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    normalize_observations: bool = False
    """Standardise observations with dataset statistics."""
    reward_normalization: RewardNormalization = "none"
    """Unused by BC; kept so every agent has the same data settings."""

    def init(self, key: jax.Array, spec: Spec) -> BCState:
        return BCState(actor=create_policy(key, spec, self.hidden_dims, adam(self.lr), self.name))

    def loss(self, params: Params, state: BCState, batch: Batch) -> tuple[jax.Array, Metrics]:
        return weighted_cross_entropy(state.actor, params, batch.observations, batch.actions)

    def update(self, state: BCState, batch: Batch, key: jax.Array) -> tuple[BCState, Metrics]:
        del key
        actor, metrics = grad_step(state.actor, lambda p: self.loss(p, state, batch))
        return state.replace(actor=actor), prefix("actor", metrics)

    def act(
        self, state: BCState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        return policy_act(state.actor, obs, key, deterministic)

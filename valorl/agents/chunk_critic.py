"""The critic of action-chunking agents: Q(s, a_t, …, a_(t+h−1)) learned from h-step returns.

Q-chunking (Li, Zhou & Levine 2025, "Reinforcement Learning with Action Chunking", Eq. 5)
runs a critic on the state and a whole chunk of h actions, backing up
    y = Σ_(k<h) γ^k r_(t+k) + γ^h · Q̄(s_(t+h), a'_(t+h : t+2h)),   a' ~ π(s_(t+h)),
an unbiased h-step target because the actions in it are the ones the chunk took (the "-n"
baselines with one action and an h-step return are biased off-policy). Chunk rows
(`valorl.data.nstep`) carry the sum and the bootstrap; a chunk cut by a truncation or the end
of the data is left out of the loss, one that ends at a terminal state is kept with its sum up
to there (`nstep.whole_chunks`), as the reference code does. With h = 1
this is a one-step critic, and the agent is a `CriticAgent` that diagnostics, OPE and
steering can read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from valorl.agents.base import CriticAgentBase, Metrics, NetState, Params, Spec, apply
from valorl.agents.flow_bc import HorizonChunks, flat_actions
from valorl.data.dataset import Batch
from valorl.data.nstep import whole_chunks


class ChunkCriticBase(HorizonChunks, CriticAgentBase):
    """A Q-ensemble over chunks of `horizon` actions (flattened), trained by `td_loss`."""

    horizon: int
    discount: float

    @property
    def has_critic(self) -> bool:  # a one-step Q(s, a) only when chunks are single actions
        return self.horizon == 1

    @property
    def critic_chunk(self) -> int:
        return self.horizon

    def create_critic(self, key: jax.Array, spec: Spec) -> NetState:
        return super().create_critic(
            key, dataclasses.replace(spec, action_dim=spec.action_dim * self.horizon)
        )

    def chunk_values(self, critic: NetState, params: Params, obs: jax.Array, chunks: jax.Array):
        """Q of every member at flattened chunks (batch, h·|A|): (members, batch)."""
        return self.critic.value(apply(critic, params, obs, chunks))

    def td_loss(
        self,
        params: Params,
        state: Any,
        batch: Batch,
        next_chunks: jax.Array,
        key: jax.Array,
    ) -> tuple[jax.Array, Metrics]:
        """The h-step TD loss at the batch's chunks towards the target critic's value of
        `next_chunks` (flattened) at the bootstrap states, members reduced by the ensemble's
        rule (FQL and QC: the mean)."""
        next_values = self.chunk_values(
            state.critic, state.target_critic, batch.next_observations, next_chunks
        )
        target = batch.rewards + self.discount * batch.masks * self.ensemble.reduce(
            next_values, key
        )
        outputs = apply(state.critic, params, batch.observations, flat_actions(batch))
        loss = self.critic.loss(outputs, jax.lax.stop_gradient(target))  # (members, batch)
        weights = whole_chunks(batch)
        loss = (loss * weights).sum(axis=-1) / jnp.maximum(weights.sum(), 1.0)
        return loss.sum(), {"q_mean": self.critic.value(outputs).mean()}

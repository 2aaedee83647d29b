"""Q-chunking with a best-of-N policy (Li, Zhou & Levine, "Reinforcement Learning with Action
Chunking", NeurIPS 2025, arXiv:2507.07969, Sec. 4.2, "QC").

A chunk critic (`agents.chunk_critic`, Eq. 5) and a flow policy cloned from the dataset's
chunks (`flow_bc`) with no policy-improvement loss at all: the policy is implicit,
    π(s) = argmax over a_1..a_N ~ flow(s) of mean_i Q_i(s, a_j),
N samples of the behaviour flow re-ranked by the current critic, for acting and for the next
chunk in the target alike (the expected-max Q operator of the paper's Eq. 6). The samples
keep the policy on the data's support, so the critic is never queried far from it. The
selection is the library's one best-of-N operator (`valorl.critics.selection`), which
V-GPS steering also uses.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.struct
import jax

from valorl.agents.base import (
    Metrics,
    NetState,
    Params,
    Spec,
    grad_step,
    polyak,
    prefix,
)
from valorl.agents.chunk_critic import ChunkCriticBase
from valorl.agents.flow_bc import as_chunks, best_of_n, check_horizon, create_flow, flow_bc_loss
from valorl.config import require_at_least_one
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization


class QCState(flax.struct.PyTreeNode):
    actor: NetState
    """The behaviour flow's velocity field, sampled N times per decision."""
    critic: NetState
    target_critic: Params


@dataclasses.dataclass(frozen=True)
class QC(ChunkCriticBase):
    """A chunk critic and the argmax over N samples of a behaviour-cloned flow policy."""

    name: ClassVar[str] = "qc"

    horizon: int = 5
    """h: actions per chunk, valued together and executed open-loop (the paper's 5)."""
    samples: int = 32
    """N: flow samples per decision, for acting and for the target (the paper's 32)."""
    flow_steps: int = 10
    """Euler steps from noise to a chunk."""
    discount: float = 0.99
    """Discount factor γ."""
    tau: float = 0.005
    """Polyak rate of the target critic."""
    actor_lr: float = 3e-4
    """Learning rate of the flow."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden layer sizes of the flow and the critics (the paper's 4x512)."""
    critic: CriticHead = Scalar()
    """How Q is represented and trained."""
    ensemble: QEnsemble = QEnsemble(
        q_reduce="mean", layer_norm=True, norm_after_activation=True, activation="gelu"
    )
    """Q-ensemble: two GELU networks with LayerNorm; targets and the argmax use their mean."""
    batch_size: int = 256
    """Rows (chunks) per gradient step."""
    normalize_observations: bool = False
    """Standardise observations (the reference does not)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none in the paper."""

    def __post_init__(self) -> None:
        check_horizon(self.horizon)
        require_at_least_one(self, "samples")

    def init(self, key: jax.Array, spec: Spec) -> QCState:
        key_actor, key_critic = jax.random.split(key)
        dims = spec.action_dim * self.horizon
        actor = create_flow(key_actor, spec.obs_shape, dims, self.hidden_dims, self.actor_lr)
        critic = self.create_critic(key_critic, spec)
        return QCState(actor=actor, critic=critic, target_critic=critic.params)

    def best_of_n(self, state: QCState, obs: jax.Array, key: jax.Array) -> jax.Array:
        """The highest-valued of N flow samples at each observation: (batch, h·|A|)."""

        def mean_q(obs: jax.Array, chunks: jax.Array) -> jax.Array:
            return self.chunk_values(state.critic, state.critic.params, obs, chunks).mean(0)

        return best_of_n(state.actor, obs, key, self.samples, self.flow_steps, mean_q)

    def update(self, state: QCState, batch: Batch, key: jax.Array) -> tuple[QCState, Metrics]:
        key_next, key_reduce, key_flow = jax.random.split(key, 3)
        next_chunks = jax.lax.stop_gradient(
            self.best_of_n(state, batch.next_observations, key_next)
        )
        critic, critic_metrics = grad_step(
            state.critic, lambda p: self.td_loss(p, state, batch, next_chunks, key_reduce)
        )
        actor, actor_metrics = grad_step(
            state.actor, lambda p: flow_bc_loss(state.actor, p, batch, key_flow)
        )
        state = state.replace(
            actor=actor,
            critic=critic,
            target_critic=polyak(critic.params, state.target_critic, self.tau),
        )
        return state, {**prefix("critic", critic_metrics), **prefix("actor", actor_metrics)}

    def act(
        self, state: QCState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        """The best of N flow samples (`deterministic` is ignored: the samples are drawn from
        `key` either way)."""
        del deterministic
        return as_chunks(self.best_of_n(state, obs, key), self.horizon)

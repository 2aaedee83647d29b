"""Flow Q-Learning (Park, Li & Levine, "Flow Q-Learning", ICML 2025, arXiv:2502.02538), and
QC-FQL, its action-chunking form (Li, Zhou & Levine 2025, "Reinforcement Learning with Action
Chunking", Sec. 4.2).

Three networks (Sec. 4, Algorithm 1):
    BC flow      v(s, x_t, t), flow matching on the dataset's actions (`flow_bc`; Eq. 3)
    one-step     μ(s, z), z ~ N(0, I): the policy that acts and is improved, trained by
                 L(μ) = α · ‖μ(s, z) − flow(s, z)‖² − Q(s, μ(s, z))        (Eq. 8)
                 where flow(s, z) integrates the BC flow from the same noise (stop-gradient):
                 distillation keeps μ on the data's support without backpropagating through
                 the ODE, and −Q improves it
    critic       an ensemble of 2 with LayerNorm, y = r + γ·mask·mean_i Q̄_i(s', μ(s', z'))

With `horizon` h > 1 every policy outputs a chunk of h actions and the critic is a chunk critic
(`agents.chunk_critic`): QC-FQL. With `n_step` n > 1 and h = 1 the critic learns from
uncorrected n-step returns with one action: the "FQL-n" baseline of the QC paper.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from valorl.agents.base import (
    Metrics,
    NetState,
    Params,
    Spec,
    adam,
    apply,
    create_train_state,
    grad_step,
    polyak,
    prefix,
)
from valorl.agents.chunk_critic import ChunkCriticBase
from valorl.agents.flow_bc import as_chunks, check_horizon, create_flow, flow_actions, flow_bc_loss
from valorl.config import require_at_least_one
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.errors import ValorlError
from valorl.nets.flow import OneStepPolicy


class FQLState(flax.struct.PyTreeNode):
    actor: NetState
    """The one-step policy μ(s, z), which acts."""
    flow: NetState
    """The BC flow's velocity field."""
    critic: NetState
    target_critic: Params


@dataclasses.dataclass(frozen=True)
class FQL(ChunkCriticBase):
    """A one-step policy distilled from a BC flow and trained against Q (chunks with h > 1)."""

    name: ClassVar[str] = "fql"

    alpha: float = 10.0
    """α of the distillation term (Eq. 8): the reference uses 300 on cube and scene, 1000 on
    puzzle, 10 on antmaze; the QC paper runs FQL, FQL-n and QC-FQL at 100."""
    horizon: int = 1
    """h: actions per chunk (1: FQL; 5: QC-FQL)."""
    n_step: int = 1
    """n of uncorrected n-step returns with single actions (FQL-n); needs horizon 1."""
    flow_steps: int = 10
    """Euler steps of the BC flow when it is distilled."""
    normalize_q_loss: bool = False
    """Divide the Q term by mean|Q| (stop-gradient), which FQL's README advises on new tasks."""
    discount: float = 0.99
    """Discount factor γ."""
    tau: float = 0.005
    """Polyak rate of the target critic."""
    actor_lr: float = 3e-4
    """Learning rate of the one-step policy and the BC flow."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden layer sizes of every network (the paper's 4x512)."""
    critic: CriticHead = Scalar()
    """How Q is represented and trained."""
    ensemble: QEnsemble = QEnsemble(
        q_reduce="mean", layer_norm=True, norm_after_activation=True, activation="gelu"
    )
    """Q-ensemble: two GELU networks with LayerNorm, targets the mean of the two (FQL's)."""
    batch_size: int = 256
    """Rows (chunks) per gradient step."""
    normalize_observations: bool = False
    """Standardise observations (FQL does not)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none in the paper."""

    def __post_init__(self) -> None:
        check_horizon(self.horizon)
        require_at_least_one(self, "n_step")
        if self.n_step > 1 and self.horizon > 1:
            raise ValorlError(
                "--n-step needs --horizon 1: a chunk critic already learns from h-step returns"
            )

    @property
    def return_steps(self) -> int:
        return self.n_step

    def init(self, key: jax.Array, spec: Spec) -> FQLState:
        key_actor, key_flow, key_critic = jax.random.split(key, 3)
        dims = spec.action_dim * self.horizon
        obs, x = jnp.zeros((1, *spec.obs_shape)), jnp.zeros((1, dims))
        actor = create_train_state(
            OneStepPolicy(self.hidden_dims, dims), key_actor, (obs, x), adam(self.actor_lr)
        )
        flow = create_flow(key_flow, spec.obs_shape, dims, self.hidden_dims, self.actor_lr)
        critic = self.create_critic(key_critic, spec)
        return FQLState(actor=actor, flow=flow, critic=critic, target_critic=critic.params)

    def one_step(self, state: FQLState, params: Params, obs: jax.Array, noise: jax.Array):
        """μ(s, z) clipped to [-1, 1]: flattened chunks (batch, h·|A|)."""
        return jnp.clip(apply(state.actor, params, obs, noise), -1.0, 1.0)

    def actor_loss(
        self, params: Params, state: FQLState, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        dims = state.flow.input_shapes[1][-1]
        noise = jax.random.normal(key, (batch.observations.shape[0], dims))
        target = flow_actions(
            state.flow, state.flow.params, batch.observations, noise, self.flow_steps
        )
        raw = apply(state.actor, params, batch.observations, noise)
        distill = ((raw - jax.lax.stop_gradient(target)) ** 2).mean()
        actions = jnp.clip(raw, -1.0, 1.0)
        q = self.chunk_values(state.critic, state.critic.params, batch.observations, actions)
        q = q.mean(axis=0)
        q_loss = -q.mean()
        if self.normalize_q_loss:
            q_loss = q_loss / jax.lax.stop_gradient(jnp.abs(q).mean())
        loss = self.alpha * distill + q_loss
        return loss, {"distill_loss": distill, "q_loss": q_loss, "q": q.mean()}

    def update(self, state: FQLState, batch: Batch, key: jax.Array) -> tuple[FQLState, Metrics]:
        key_next, key_reduce, key_flow, key_actor = jax.random.split(key, 4)
        dims = state.flow.input_shapes[1][-1]
        next_noise = jax.random.normal(key_next, (batch.observations.shape[0], dims))
        next_chunks = self.one_step(state, state.actor.params, batch.next_observations, next_noise)
        critic, critic_metrics = grad_step(
            state.critic, lambda p: self.td_loss(p, state, batch, next_chunks, key_reduce)
        )
        flow, flow_metrics = grad_step(
            state.flow, lambda p: flow_bc_loss(state.flow, p, batch, key_flow)
        )
        # the actor sees the critic and flow from before this step: with every cross-network
        # gradient stopped, the three steps are the reference's one step on the summed loss
        actor, actor_metrics = grad_step(
            state.actor, lambda p: self.actor_loss(p, state, batch, key_actor)
        )
        state = state.replace(
            actor=actor,
            critic=critic,
            flow=flow,
            target_critic=polyak(critic.params, state.target_critic, self.tau),
        )
        metrics = {**prefix("critic", critic_metrics), **prefix("flow", flow_metrics)}
        return state, {**metrics, **prefix("actor", actor_metrics)}

    def act(
        self, state: FQLState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        """μ(s, z) with fresh noise z: FQL acts with the one-step policy's sample whether or
        not it evaluates (`deterministic` is ignored)."""
        del deterministic
        dims = state.flow.input_shapes[1][-1]
        noise = jax.random.normal(key, (obs.shape[0], dims))
        return as_chunks(self.one_step(state, state.actor.params, obs, noise), self.horizon)

"""Decoupled Q-chunking (Li, Park & Levine, "Decoupled Q-Chunking", arXiv:2512.10926, 2025).

Q-chunking's critic backs values up h steps at once, which long-horizon tasks need, but its
policy must then commit to h actions open-loop. DQC decouples the two (Sec. 4): a critic over
long chunks of h actions, and a policy and "action critic" over the first h_a < h of them.

    chunk critic    Q_h(s, a_0:h) → r_0:h + γ^h·V(s_h)            (TD on dataset chunks)
    action critic   Q_ha(s, a_0:h_a) distilled from Q_h(s, a_0:h) by an upper expectile κ_d
                    over the dataset's completions of each partial chunk: ≈ the best value
                    reachable after a_0:h_a (the "optimistic backup", Eq. 6)
    value           V(s) ← the κ_b-quantile of the target Q_ha(s, a_0:h_a) over dataset chunks
                    (an implicit maximisation over actions, as IQL's expectile; Eq. 7)
    policy          flow BC over h_a-chunks; acting takes the best of N samples by Q_ha and
                    runs its h_a actions open-loop before re-planning

For goal reaching the values are probabilities: the `bce` critic head (sigmoid values,
cross-entropy losses), with success rewards; the distillation and quantile losses then act
on logits, as in the reference code. Any one-output head works (`mse` for returns).
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
from valorl.agents.flow_bc import (
    as_chunks,
    best_of_n,
    check_horizon,
    create_flow,
    flat_actions,
    flow_bc_loss,
)
from valorl.config import require_at_least_one
from valorl.critics import Bernoulli, CriticHead, QEnsemble
from valorl.data.dataset import Batch
from valorl.data.nstep import whole_chunks
from valorl.data.transforms import RewardNormalization
from valorl.errors import ValorlError
from valorl.nets import StateValue


class DQCState(flax.struct.PyTreeNode):
    actor: NetState
    """The flow over h_a-chunks."""
    critic: NetState
    """The chunk critic Q_h."""
    action_critic: NetState
    """The distilled critic Q_ha over the policy's chunks."""
    target_action_critic: Params
    value: NetState
    """V(s), as the head's raw output (a logit for `bce`)."""


@dataclasses.dataclass(frozen=True)
class DQC(ChunkCriticBase):
    """A long-chunk critic, a short-chunk critic distilled from it optimistically, a quantile
    value, and best-of-N extraction from a flow policy over short chunks."""

    name: ClassVar[str] = "dqc"

    horizon: int = 25
    """h: actions per chunk of the chunk critic (the paper's 25)."""
    action_horizon: int = 5
    """h_a: actions per chunk of the policy and the action critic (the paper's 5)."""
    distill_expectile: float = 0.8
    """κ_d of the optimistic distillation (the reference uses 0.5-0.8 by domain)."""
    value_quantile: float = 0.9
    """κ_b of the implicit value backup (the reference uses 0.5-0.93 by domain)."""
    samples: int = 32
    """N: flow samples per decision."""
    flow_steps: int = 10
    """Euler steps from noise to a chunk."""
    discount: float = 0.99
    """Discount factor γ (the paper's goal-reaching runs use 0.999 with h = 25)."""
    tau: float = 0.005
    """Polyak rate of the action critic's target."""
    actor_lr: float = 3e-4
    """Learning rate of the flow."""
    critic_lr: float = 3e-4
    """Learning rate of both critics and the value."""
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden layer sizes of every network (the paper's are 4x1024)."""
    actor_layer_norm: bool = True
    """LayerNorm in the flow's hidden layers (the reference's `actor_layer_norm`)."""
    actor_sees_goal: bool = False
    """Condition the flow on the goal of goal-conditioned data. Off, as the reference: the flow
    clones the behaviour over all goals, and the goal enters through Q_ha's choice among its
    samples."""
    critic: CriticHead = Bernoulli()
    """A one-output head: bce (values are success probabilities), mse or huber."""
    ensemble: QEnsemble = QEnsemble(layer_norm=True, norm_after_activation=True, activation="gelu")
    """Two LayerNorm GELU networks per critic, LayerNorm after each activation as in the
    reference; min over them, as the reference's cube runs (its puzzle and humanoid runs:
    `--q-reduce mean`). The value is one network built the same way."""
    batch_size: int = 256
    """Rows (chunks) per gradient step (the paper's 4096)."""
    normalize_observations: bool = False
    """Standardise observations (the reference does not)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none (success rewards are probabilities' targets)."""

    def __post_init__(self) -> None:
        check_horizon(self.horizon)
        if not 1 <= self.action_horizon <= self.horizon:
            raise ValorlError(
                f"--action-horizon must be between 1 and --horizon ({self.horizon}), "
                f"got {self.action_horizon}"
            )
        if self.critic.out_dim != 1 or self.critic.distributional:
            raise ValorlError(
                f"dqc needs a one-output critic head (bce, mse, huber), not {self.critic.name}"
            )
        for flag, value in (
            ("--distill-expectile", self.distill_expectile),
            ("--value-quantile", self.value_quantile),
        ):
            if not 0.0 < value < 1.0:
                raise ValorlError(f"{flag} must be between 0 and 1, got {value}")
        require_at_least_one(self, "samples")

    @property
    def action_chunk(self) -> int:
        return self.action_horizon

    def init(self, key: jax.Array, spec: Spec) -> DQCState:
        key_actor, key_critic, key_action, key_value = jax.random.split(key, 4)
        dims = spec.action_dim * self.action_horizon
        obs = jnp.zeros((1, *spec.obs_shape))
        goal_free = spec.obs_shape[0] - spec.goal_dim if spec.goal_dim else None
        actor = create_flow(
            key_actor,
            spec.obs_shape,
            dims,
            self.hidden_dims,
            self.actor_lr,
            self.actor_layer_norm,
            None if self.actor_sees_goal else goal_free,
        )
        action_critic = create_train_state(
            self.ensemble.network(self.hidden_dims, 1),
            key_action,
            (obs, jnp.zeros((1, dims))),
            adam(self.critic_lr),
        )
        value_net = StateValue(
            self.hidden_dims,
            self.ensemble.layer_norm,
            self.ensemble.norm_after_activation,
            self.ensemble.activation,
        )
        value = create_train_state(value_net, key_value, (obs,), adam(self.critic_lr))
        return DQCState(
            actor=actor,
            critic=self.create_critic(key_critic, spec),
            action_critic=action_critic,
            target_action_critic=action_critic.params,
            value=value,
        )

    def partial(self, batch: Batch) -> Batch:
        """The batch's chunks cut to their first h_a actions (one-step rows as they are)."""
        if batch.valid is None:
            return batch
        return batch.replace(
            actions=batch.actions[:, : self.action_horizon],
            valid=batch.valid[:, : self.action_horizon],
        )

    def chunk_critic_loss(
        self, params: Params, state: DQCState, batch: Batch
    ) -> tuple[jax.Array, Metrics]:
        """TD over the dataset's h-chunks towards r + γ^h·V(s_h)."""
        next_v = self.critic.value(
            apply(state.value, state.value.params, batch.next_observations)[..., None]
        )
        target = jax.lax.stop_gradient(batch.rewards + self.discount * batch.masks * next_v)
        outputs = apply(state.critic, params, batch.observations, flat_actions(batch))
        loss = self.critic.loss(outputs, target) * whole_chunks(batch)
        return loss.mean(axis=-1).sum(), {"q_mean": self.critic.value(outputs).mean()}

    def action_critic_loss(
        self, params: Params, state: DQCState, batch: Batch
    ) -> tuple[jax.Array, Metrics]:
        """Upper-expectile distillation of Q_h(s, a_0:h) into Q_ha(s, a_0:h_a), member by
        member (member i of Q_ha from member i of Q_h, as the reference)."""
        chunk_q = self.chunk_values(
            state.critic, state.critic.params, batch.observations, flat_actions(batch)
        )
        target = jax.lax.stop_gradient(chunk_q)  # (members, B)
        short = flat_actions(self.partial(batch))
        outputs = apply(state.action_critic, params, batch.observations, short)
        below = target >= self.critic.value(outputs)  # the target lies above the estimate
        weight = jnp.where(below, self.distill_expectile, 1.0 - self.distill_expectile)
        loss = weight * self.critic.loss(outputs, target) * whole_chunks(batch)
        return loss.mean(axis=-1).sum(), {"q_mean": self.critic.value(outputs).mean()}

    def value_loss(
        self, params: Params, state: DQCState, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """The κ_b-quantile (pinball) loss of V against the target Q_ha, on raw outputs (logits
        for bce). Members are reduced as values (probabilities), then mapped back to an output,
        as the reference's `mean` aggregation does."""
        short = flat_actions(self.partial(batch))
        raw = apply(state.action_critic, state.target_action_critic, batch.observations, short)
        reduced = self.ensemble.reduce(self.critic.value(raw), key)
        target = jax.lax.stop_gradient(self.critic.output(reduced))
        v = apply(state.value, params, batch.observations)
        u = target - v
        weight = jnp.where(u < 0, 1.0 - self.value_quantile, self.value_quantile)
        loss = (weight * jnp.abs(u) * whole_chunks(batch)).mean()
        return loss, {"v_mean": self.critic.value(v[..., None]).mean()}

    def score(self, state: DQCState, key: jax.Array):
        """Q_ha of flattened h_a-chunks, members reduced by the ensemble's rule on raw outputs
        (logits for bce) before they become values, as the reference's best-of-N does."""

        def q(obs: jax.Array, chunks: jax.Array) -> jax.Array:
            outputs = apply(state.action_critic, state.action_critic.params, obs, chunks)
            return self.critic.value(self.ensemble.reduce(outputs, key))

        return q

    def update(self, state: DQCState, batch: Batch, key: jax.Array) -> tuple[DQCState, Metrics]:
        # every loss sees the networks from before this step: with the cross-network gradients
        # stopped, the four steps are the reference's one step on the summed losses
        key_value, key_flow = jax.random.split(key)
        critic, critic_metrics = grad_step(
            state.critic, lambda p: self.chunk_critic_loss(p, state, batch)
        )
        action_critic, action_metrics = grad_step(
            state.action_critic, lambda p: self.action_critic_loss(p, state, batch)
        )
        value, value_metrics = grad_step(
            state.value, lambda p: self.value_loss(p, state, batch, key_value)
        )
        actor, actor_metrics = grad_step(
            state.actor, lambda p: flow_bc_loss(state.actor, p, self.partial(batch), key_flow)
        )
        state = state.replace(
            critic=critic,
            action_critic=action_critic,
            target_action_critic=polyak(action_critic.params, state.target_action_critic, self.tau),
            value=value,
            actor=actor,
        )
        metrics = {**prefix("critic", critic_metrics), **prefix("action_critic", action_metrics)}
        return state, {
            **metrics,
            **prefix("value", value_metrics),
            **prefix("actor", actor_metrics),
        }

    def act(
        self, state: DQCState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        """The best of N flow samples of an h_a-chunk by Q_ha (`deterministic` is ignored)."""
        del deterministic
        key_samples, key_reduce = jax.random.split(key)
        chunks = best_of_n(
            state.actor,
            obs,
            key_samples,
            self.samples,
            self.flow_steps,
            self.score(state, key_reduce),
        )
        return as_chunks(chunks, self.action_horizon)

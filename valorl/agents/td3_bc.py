"""TD3+BC (Fujimoto & Gu, "A Minimalist Approach to Offline RL", NeurIPS 2021, arXiv:2106.06860).

TD3 (Fujimoto et al. 2018) with one added term: the actor maximises λ·Q(s, π(s)) while staying
close to the dataset action, with λ normalised by the critic's scale (Eq. 3–4):

    π = argmax_π E[ λ·Q(s, π(s)) − (π(s) − a)² ],   λ = α / mean|Q(s, π(s))|

and observations are standardised with dataset statistics (Sec. 5). The critic is TD3's:
clipped double-Q targets with target-policy smoothing noise. The actor and both targets move
once every `policy_freq` critic steps, so one `update` consumes `policy_freq` batches.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from valorl.agents.base import (
    CriticAgentBase,
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
from valorl.agents.steps import critic_steps
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.errors import ValorlError
from valorl.losses import td3_bc_actor_loss
from valorl.nets import DeterministicPolicy


class TD3BCState(flax.struct.PyTreeNode):
    actor: NetState
    critic: NetState
    target_actor: Params
    target_critic: Params


@dataclasses.dataclass(frozen=True)
class TD3BC(CriticAgentBase):
    """TD3 with a behaviour-cloning term in the actor loss and normalised observations."""

    name: ClassVar[str] = "td3_bc"

    alpha: float = 2.5
    """α in λ = α / mean|Q|: larger trusts the critic more, smaller imitates more."""
    discount: float = 0.99
    """Discount factor γ."""
    tau: float = 0.005
    """Polyak rate of the target networks."""
    policy_noise: float = 0.2
    """Std of the smoothing noise on target actions (actions in [-1, 1])."""
    noise_clip: float = 0.5
    """Clip on that noise."""
    policy_freq: int = 2
    """Critic steps per actor and target step."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise `act` adds when not deterministic."""
    actor_lr: float = 3e-4
    """Actor learning rate."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of actor and critics."""
    critic: CriticHead = Scalar()
    """How Q is represented and trained: mse, huber, bce, hl-gauss, two-hot, c51, quantile, gaussian
    (`valorl.critics.heads`)."""
    ensemble: QEnsemble = QEnsemble()
    """Q-ensemble: size, how members combine in targets (TD3: min of two), layers."""
    distributional_backup: bool = False
    """Train a c51/quantile/gaussian critic towards the backed-up next-state distribution of the
    member the reduction picks, instead of towards a scalar target."""
    batch_size: int = 256
    """Transitions per gradient step."""
    normalize_observations: bool = True
    """Standardise observations with dataset statistics (the paper does)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none in the paper."""

    def __post_init__(self) -> None:
        if self.distributional_backup and not self.critic.distributional:
            raise ValorlError(
                f"--distributional-backup needs a distributional critic (c51, "
                f"quantile, gaussian), not {self.critic.name}"
            )
        if self.distributional_backup and not self.ensemble.picks_a_member:
            raise ValorlError(
                f"--distributional-backup needs --q-reduce min or subset-min, not "
                f"{self.ensemble.q_reduce}"
            )

    @property
    def batches_per_update(self) -> int:
        return self.policy_freq

    def init(self, key: jax.Array, spec: Spec) -> TD3BCState:
        key_actor, key_critic = jax.random.split(key)
        actor = create_train_state(
            DeterministicPolicy(self.hidden_dims, spec.action_dim),
            key_actor,
            (jnp.zeros((1, *spec.obs_shape)),),
            adam(self.actor_lr),
        )
        critic = self.create_critic(key_critic, spec)
        return TD3BCState(
            actor=actor, critic=critic, target_actor=actor.params, target_critic=critic.params
        )

    def critic_loss(
        self, params: Params, state: TD3BCState, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        key_noise, key_reduce = jax.random.split(key)
        noise = jnp.clip(
            self.policy_noise * jax.random.normal(key_noise, batch.actions.shape),
            -self.noise_clip,
            self.noise_clip,
        )
        next_actions = apply(state.actor, state.target_actor, batch.next_observations)
        next_actions = jnp.clip(next_actions + noise, -1.0, 1.0)
        next_outputs = apply(
            state.critic, state.target_critic, batch.next_observations, next_actions
        )
        next_values = self.critic.value(next_outputs)
        discounts = self.discount * batch.masks
        outputs = apply(state.critic, params, batch.observations, batch.actions)
        if self.distributional_backup:
            member = self.ensemble.select(next_values, key_reduce)
            chosen = next_outputs[member, jnp.arange(member.shape[0])]
            target = self.critic.backup(chosen, batch.rewards, discounts)
            loss = self.critic.backup_loss(outputs, target)
        else:
            target = batch.rewards + discounts * self.ensemble.reduce(next_values, key_reduce)
            loss = self.critic.loss(outputs, target)
        return loss.mean(axis=-1).sum(), {"q_mean": self.critic.value(outputs).mean()}

    def actor_loss(
        self, params: Params, state: TD3BCState, batch: Batch
    ) -> tuple[jax.Array, Metrics]:
        actions = apply(state.actor, params, batch.observations)
        outputs = apply(state.critic, state.critic.params, batch.observations, actions)
        q = self.critic.value(outputs)[0]  # TD3 follows the first critic
        loss, lmbda = td3_bc_actor_loss(q, actions, batch.actions, self.alpha)
        return loss, {"lambda": lmbda, "bc_mse": ((actions - batch.actions) ** 2).mean()}

    def critic_step(
        self, state: TD3BCState, batch: Batch, key: jax.Array
    ) -> tuple[TD3BCState, Metrics]:
        critic, metrics = grad_step(state.critic, lambda p: self.critic_loss(p, state, batch, key))
        return state.replace(critic=critic), metrics

    def update(self, state: TD3BCState, batch: Batch, key: jax.Array) -> tuple[TD3BCState, Metrics]:
        state, critic_metrics, last = critic_steps(
            self.critic_step, state, batch, key, self.policy_freq
        )
        actor, actor_metrics = grad_step(state.actor, lambda p: self.actor_loss(p, state, last))
        state = state.replace(
            actor=actor,
            target_actor=polyak(actor.params, state.target_actor, self.tau),
            target_critic=polyak(state.critic.params, state.target_critic, self.tau),
        )
        return state, {**prefix("critic", critic_metrics), **prefix("actor", actor_metrics)}

    def act(
        self, state: TD3BCState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        actions = apply(state.actor, state.actor.params, obs)
        if deterministic:
            return actions
        noise = self.exploration_noise * jax.random.normal(key, actions.shape)
        return jnp.clip(actions + noise, -1.0, 1.0)

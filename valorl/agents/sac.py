"""Soft Actor-Critic (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018,
arXiv:1812.05905).

Maximum-entropy RL: the policy maximises E[Σ_t r_t + α·H(π(·|s_t))]. Three losses, each the
paper's, with a' ~ π(·|s') and a ~ π(·|s) reparameterised as a = tanh(μ + σ·ε) (Eq. 8–9 and
App. C for the tanh correction of log π):

    soft Q, every ensemble member i                                          (Eq. 5, with
        J_Q = E[ ℓ(Q_i(s, a), y) ],  y = r + γ·m·( Q̂'(s', a') − α·log π(a'|s') )  Eq. 3 inside)
    policy                                                                       (Eq. 7/9)
        J_π = E[ α·log π(a|s) − Q̂(s, a) ]
    temperature, target entropy H̄ = −|A|                                           (Eq. 18)
        J(α) = E[ −α·log π(a|s) − α·H̄ ] = α·(H − H̄),  H = −E[log π(a|s)]

Q̂' is the target ensemble's reduction (the paper: min of two target critics; REDQ/RLPD: min
of a random subset of 2 of 10, `--q-reduce subset-min --num-qs 10 --layer-norm true`), and ℓ
the critic head's loss (the paper: squared error). The actor follows Q̂ at its own actions:
the same reduction with `actor_q="reduce"` (the paper's min of two), or the ensemble mean with
`actor_q="mean"` (REDQ and RLPD's choice for large ensembles).

One `update` takes `utd` critic steps, each on its own batch and each followed by a Polyak
step of the target critic, then one actor step and one temperature step on the last batch:
the update-to-data structure of REDQ (Chen et al. 2021) and RLPD (Ball et al. 2023). With
`utd = 1` it is the paper's SAC. Defaults are the paper's (Table 1 of arXiv:1812.05905).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import flax.struct
import jax
import jax.numpy as jnp

from valorl.agents.base import (
    LRSchedule,
    Metrics,
    NetState,
    Params,
    Spec,
    apply,
    create_train_state,
    grad_step,
    polyak,
    prefix,
    scheduled_adam,
)
from valorl.agents.entropy import MaxEntropyAgentBase, init_temperature
from valorl.agents.steps import critic_steps
from valorl.config import require_at_least_one, require_positive
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.nets import TanhGaussianPolicy, tanh_gaussian_sample


class SACState(flax.struct.PyTreeNode):
    actor: NetState
    critic: NetState
    target_critic: Params
    temperature: NetState


@dataclasses.dataclass(frozen=True)
class SAC(MaxEntropyAgentBase):
    """Soft Actor-Critic: twin soft Q critics, tanh-Gaussian actor, learned temperature."""

    name: ClassVar[str] = "sac"
    utd_is_hyperparameter: ClassVar[bool] = True

    discount: float = 0.99
    """Discount factor γ."""
    tau: float = 0.005
    """Polyak rate of the target critic (one step after every critic step)."""
    utd: int = 1
    """Update-to-data ratio: critic steps (batches) per update, then one actor and temperature
    step; online, one update follows each environment step (RLPD uses 20, REDQ 20)."""
    init_temperature: float = 1.0
    """Initial entropy temperature α."""
    target_entropy: float | None = None
    """Target entropy H̄ of the temperature loss; unset: −action_dim (the paper's)."""
    backup_entropy: bool = True
    """Subtract α·log π(a'|s') in the critic target (the soft value of Eq. 3)."""
    actor_q: Literal["reduce", "mean"] = "reduce"
    """Q the actor maximises: the ensemble's reduction (SAC: min of two) or its mean (RLPD)."""
    actor_lr: float = 3e-4
    """Actor learning rate."""
    actor_lr_schedule: LRSchedule = "constant"
    """The actor's learning rate held (SAC's) or decayed to zero over training by a cosine
    (OfflineRL-Kit's offline model-based agents)."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    temperature_lr: float = 3e-4
    """Learning rate of log α."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of actor and critics."""
    policy_log_std_min: float = -20.0
    """Lower clip of the actor's log σ (RLPD's −20; OfflineRL-Kit's model-based agents: −5)."""
    critic: CriticHead = Scalar()
    """How Q is represented and trained: mse, huber, bce, hl-gauss, two-hot, c51, quantile, gaussian
    (`valorl.critics.heads`)."""
    ensemble: QEnsemble = QEnsemble()
    """Q-ensemble: size, how members combine in targets (SAC: min of two), layers."""
    batch_size: int = 256
    """Transitions per critic step."""
    normalize_observations: bool = False
    """Standardise observations with dataset statistics (only where there is a dataset)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none in the paper."""

    def __post_init__(self) -> None:
        require_at_least_one(self, "utd")
        require_positive(self, "init_temperature")

    @property
    def batches_per_update(self) -> int:
        return self.utd

    def init(self, key: jax.Array, spec: Spec) -> SACState:
        key_actor, key_critic, key_temperature = jax.random.split(key, 3)
        actor = create_train_state(
            TanhGaussianPolicy(
                self.hidden_dims, spec.action_dim, log_std_min=self.policy_log_std_min
            ),
            key_actor,
            (jnp.zeros((1, *spec.obs_shape)),),
            scheduled_adam(self.actor_lr, self.actor_lr_schedule, spec.total_updates),
        )
        critic = self.create_critic(key_critic, spec)
        temperature = init_temperature(self.init_temperature, self.temperature_lr, key_temperature)
        return SACState(
            actor=actor, critic=critic, target_critic=critic.params, temperature=temperature
        )

    def critic_target(
        self, state: SACState, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """y = r + γ·m·(Q̂'(s', a') − α·log π(a'|s')) with a' ~ π(·|s') (Eq. 3 and 5), and
        what a subclass's target logs (nothing here)."""
        key_next, key_reduce = jax.random.split(key)
        mean, log_std = apply(state.actor, state.actor.params, batch.next_observations)
        next_actions, next_log_prob = tanh_gaussian_sample(key_next, mean, log_std)
        next_outputs = apply(
            state.critic, state.target_critic, batch.next_observations, next_actions
        )
        next_value = self.ensemble.reduce(self.critic.value(next_outputs), key_reduce)
        if self.backup_entropy:
            next_value = next_value - self.alpha(state) * next_log_prob
        return batch.rewards + self.discount * batch.masks * next_value, {}

    def critic_loss(
        self, params: Params, state: SACState, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        target, metrics = self.critic_target(state, batch, key)
        outputs = apply(state.critic, params, batch.observations, batch.actions)
        loss = self.critic.loss(outputs, jax.lax.stop_gradient(target)).mean(axis=-1).sum()
        return loss, {"q_mean": self.critic.value(outputs).mean(), **metrics}

    def q_for_actor(self, values: jax.Array, key: jax.Array) -> jax.Array:
        """The ensemble's reduction, or its mean with `actor_q="mean"` (REDQ, RLPD)."""
        if self.actor_q == "mean":
            return values.mean(axis=0)
        return super().q_for_actor(values, key)

    def critic_step(
        self, state: SACState, batch: Batch, key: jax.Array
    ) -> tuple[SACState, Metrics]:
        """One critic step, then one Polyak step of the target critic."""
        critic, metrics = grad_step(state.critic, lambda p: self.critic_loss(p, state, batch, key))
        target = polyak(critic.params, state.target_critic, self.tau)
        return state.replace(critic=critic, target_critic=target), metrics

    def update(self, state: SACState, batch: Batch, key: jax.Array) -> tuple[SACState, Metrics]:
        key_critic, key_actor = jax.random.split(key)
        state, critic_metrics, last = critic_steps(
            self.critic_step, state, batch, key_critic, self.utd
        )
        actor, temperature, metrics = self.actor_step(state, last, key_actor)
        state = state.replace(actor=actor, temperature=temperature)
        return state, {**prefix("critic", critic_metrics), **metrics}

"""DSAC-T: Distributional Soft Actor-Critic with Three Refinements (Duan, Wang, Xiao, Gao, Li,
Guan, Li & Chen, IEEE TPAMI 2025, arXiv:2310.05858).

The critic models the soft return as a Gaussian Z(s, a) ~ N(Q(s, a), σ(s, a)²) (valorl's
`Gaussian` head: outputs Q and log σ). With a' ~ π̄(·|s') from the target policy and α the
entropy temperature, the three refinements of DSAC are:

1. expected value substitution: the target of the mean uses the expected next value, not a
   sampled return,  y_Q = r + γ·m·(Q̄'(s', a') − α·log π̄(a'|s'));
2. twin value distributions: of two target distributions, the one with the smaller mean is
   used, for Q̄' and for the sampled return Z' (a draw from that member, with the standard
   normal clipped to ±3 as in the reference code),  y_z = r + γ·m·(Z' − α·log π̄(a'|s'));
3. variance-based critic gradient adjustment: the sampled target is clipped around the current
   mean, y_b = Q + clip(y_z − Q, −ξ·b, ξ·b), and the gradient is scaled by ω = b² + ε, where
   b is a moving average (rate τ_b) of the batch-mean σ. Per member, the gradient is

       ∇L = ω·E[ −(y_Q − Q)/(σ² + ε)·∇Q − ((y_b − Q)² − σ²)/(σ³ + ε)·∇σ ]

   (σ, Q stop-gradient inside the coefficients), the gradient of the Gaussian negative
   log-likelihood of y_Q (for the mean) and y_b (for σ), with ε keeping it bounded as σ → 0.

The actor and temperature are SAC's: E[α·log π(ã|s) − min_i Q_i(s, ã)] and the entropy target
−|A|. The actor, the temperature and the targets (critics and policy, Polyak rate τ) move once
every `delay_update` critic steps, so one `update` consumes that many batches. Defaults are the
reference code's MuJoCo settings (Jingliang-Duan/DSAC-v2, DSAC-T version).

With more than two critics, the twin rule follows the ensemble's reduction: min or subset-min
pick the member with the smallest mean; other reductions (mean, pessimistic, quantile) reduce
the members' sampled returns the same way as their means. With another critic head than
`gaussian`, refinements 1–2 still shape the (scalar) target and the head's own loss trains
towards y_Q: DSAC-T degenerates to SAC with expected-value targets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

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
from valorl.agents.entropy import MaxEntropyAgentBase, init_temperature
from valorl.agents.steps import critic_steps
from valorl.config import require_at_least_one, require_positive
from valorl.critics import CriticHead, Gaussian, QEnsemble
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.nets import TanhGaussianPolicy, tanh_gaussian_sample

NOISE_CLIP = 3.0
"""The standard normal of a sampled return is clipped to ±3 (reference code)."""


def dsac_t_targets(
    q: jax.Array,
    rewards: jax.Array,
    discounts: jax.Array,
    next_value: jax.Array,
    next_sample: jax.Array,
    next_entropy: jax.Array,
    bound: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(y_Q, y_b): the mean's target from the expected next value (refinement 1) and the
    sampled return's target clipped to Q ± bound (refinement 3), bound = ξ·b.

    `next_entropy` is α·log π̄(a'|s'); `q` the current mean (members, B) or (B,)."""
    y_q = rewards + discounts * (next_value - next_entropy)
    y_z = rewards + discounts * (next_sample - next_entropy)
    y_b = q + jnp.clip(y_z - q, -bound, bound)
    return jax.lax.stop_gradient(y_q), jax.lax.stop_gradient(y_b)


def dsac_t_critic_loss(
    mean: jax.Array,
    std: jax.Array,
    y_q: jax.Array,
    y_b: jax.Array,
    std_average: jax.Array,
    epsilon: float,
) -> jax.Array:
    """Per-member loss (members,) whose gradient in (mean, std) is DSAC-T's adjusted gradient
    (refinement 3, see the module docstring), for mean, std, y_q, y_b of shape (members, B)
    and the moving average b of shape (members,).

    Its value is E[((y_Q − Q)² + (y_b − Q)²) / 2σ² + log σ], the Gaussian negative
    log-likelihood that the adjusted gradient descends (without ω and ε), so that the reported
    loss measures the fit rather than the step size.
    """
    sg = jax.lax.stop_gradient
    omega = sg(std_average) ** 2 + epsilon
    mean_d, std_d = sg(mean), sg(std)
    surrogate = (
        -sg(y_q - mean) / (std_d**2 + epsilon) * mean
        - sg(((y_b - mean_d) ** 2 - std_d**2) / (std_d**3 + epsilon)) * std
    )
    nll = ((y_q - mean_d) ** 2 + (y_b - mean_d) ** 2) / (2.0 * std_d**2) + jnp.log(std_d)
    return (sg(nll) + omega[:, None] * (surrogate - sg(surrogate))).mean(axis=-1)


HUBER_DELTA = 50.0
"""δ of the Huber terms of the 2025 reference loss (`dsac_t_critic_loss_2025`)."""


def dsac_t_critic_loss_2025(
    mean: jax.Array,
    std: jax.Array,
    y_q: jax.Array,
    y_b: jax.Array,
    std_average: jax.Array,
    epsilon: float,
) -> jax.Array:
    """The critic loss of the reference code since Jingliang-Duan/DSAC-v2 commit c5105eb (Jul
    2025, "Optimize Q-loss calculation for complex tasks"), per member (members,): with
    σ̂ = sg(σ) and the weight ρ = clip(b² / (σ̂² + ε), 0.1, 10),

        E[ρ·(huber_δ(Q − y_Q) + σ·(σ̂² − huber_δ(sg(Q) − y_b)) / (σ̂ + ε))],  δ = 50,

    so the mean regresses on y_Q (Huber) and σ moves until σ² = huber(Q − y_b), about
    (Q − y_b)²/2, where the paper's gradient (`dsac_t_critic_loss`) drives σ² to (Q − y_b)²
    with a step that grows with b. Shapes as `dsac_t_critic_loss`."""
    sg = jax.lax.stop_gradient
    std_d = sg(std)
    ratio = jnp.clip(sg(std_average)[:, None] ** 2 / (std_d**2 + epsilon), 0.1, 10.0)
    spread = std * (std_d**2 - _huber(sg(mean) - y_b)) / (std_d + epsilon)
    return (ratio * (_huber(mean - y_q) + spread)).mean(axis=-1)


def _huber(x: jax.Array) -> jax.Array:
    """PyTorch's huber_loss: x²/2 within δ, δ·(|x| − δ/2) beyond."""
    absolute = jnp.abs(x)
    return jnp.where(absolute < HUBER_DELTA, 0.5 * x**2, HUBER_DELTA * (absolute - HUBER_DELTA / 2))


class DSACTState(flax.struct.PyTreeNode):
    actor: NetState
    critic: NetState
    target_actor: Params
    target_critic: Params
    temperature: NetState
    std_average: jax.Array
    """b per member (members,): moving average of the batch-mean σ; negative before the first
    update, which sets it to that batch's mean (as the reference code does)."""


@dataclasses.dataclass(frozen=True)
class DSACT(MaxEntropyAgentBase):
    """DSAC-T: Gaussian return distributions, twin critics, adjusted critic gradients."""

    name: ClassVar[str] = "dsac_t"

    discount: float = 0.99
    """Discount factor γ."""
    tau: float = 0.005
    """Polyak rate of the target critics and policy (reference: 0.005)."""
    tau_b: float = 0.005
    """Rate τ_b of the moving average b of σ (reference: τ)."""
    clip_xi: float = 3.0
    """ξ: the sampled return's target is clipped to Q ± ξ·b (reference: 3)."""
    epsilon: float = 0.1
    """ε in the gradient scale ω = b² + ε and in its denominators (reference: 0.1)."""
    delay_update: int = 2
    """Critic steps per actor, temperature and target step (reference: 2)."""
    loss_version: Literal["paper", "reference-2025"] = "paper"
    """The Gaussian critic's loss: the paper's adjusted gradient (TPAMI 2025, Eq. in the module
    docstring), or the reference code's since July 2025 (Huber terms, a clipped b²/σ² weight;
    `dsac_t_critic_loss_2025`)."""
    init_temperature: float = math.e
    """Initial entropy temperature α (reference: log α = 1)."""
    target_entropy: float | None = None
    """Target entropy of the temperature loss; unset: −action_dim (reference)."""
    actor_lr: float = 1e-4
    """Actor learning rate (reference: 1e-4)."""
    critic_lr: float = 1e-4
    """Critic learning rate (reference: 1e-4)."""
    temperature_lr: float = 3e-4
    """Learning rate of log α (reference: 3e-4)."""
    policy_log_std_max: float = 0.5
    """Upper clip of the policy's log σ (reference: 0.5; lower clip −20)."""
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    """Hidden layer sizes of actor and critics (reference: 3 × 256, with GELU; here ReLU)."""
    critic: CriticHead = Gaussian()
    """How Q is represented and trained: gaussian (DSAC-T); other heads train towards y_Q."""
    ensemble: QEnsemble = QEnsemble()
    """Q-ensemble: size, how members combine in targets and for the actor (DSAC-T: min of two)."""
    batch_size: int = 256
    """Transitions per critic step (reference: 256)."""
    normalize_observations: bool = False
    """Standardise observations with dataset statistics (only where there is a dataset)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none in the reference's MuJoCo runs."""

    def __post_init__(self) -> None:
        require_at_least_one(self, "delay_update")
        require_positive(self, "init_temperature", "epsilon", "clip_xi")

    @property
    def batches_per_update(self) -> int:
        return self.delay_update

    def init(self, key: jax.Array, spec: Spec) -> DSACTState:
        key_actor, key_critic, key_temperature = jax.random.split(key, 3)
        actor = create_train_state(
            TanhGaussianPolicy(
                self.hidden_dims, spec.action_dim, log_std_max=self.policy_log_std_max
            ),
            key_actor,
            (jnp.zeros((1, *spec.obs_shape)),),
            adam(self.actor_lr),
        )
        critic = self.create_critic(key_critic, spec)
        temperature = init_temperature(self.init_temperature, self.temperature_lr, key_temperature)
        return DSACTState(
            actor=actor,
            critic=critic,
            target_actor=actor.params,
            target_critic=critic.params,
            temperature=temperature,
            std_average=-jnp.ones(self.ensemble.num_qs),
        )

    def next_value_and_sample(
        self, next_outputs: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Twin rule (refinement 2) on target outputs (members, B, 2): the reduced mean Q̄'
        and a return Z' drawn from the member it picks, both (B,)."""
        key_noise, key_reduce = jax.random.split(key)
        mean, log_std = self.critic.mean_log_std(next_outputs)
        noise = jnp.clip(jax.random.normal(key_noise, mean.shape), -NOISE_CLIP, NOISE_CLIP)
        samples = mean + noise * jnp.exp(log_std)
        value = self.ensemble.reduce(mean, key_reduce)
        if not self.ensemble.picks_a_member:
            return value, self.ensemble.reduce(samples, key_reduce)
        member = self.ensemble.select(mean, key_reduce)
        return value, samples[member, jnp.arange(member.shape[0])]

    def critic_loss(
        self, params: Params, state: DSACTState, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        key_next, key_value = jax.random.split(key)
        mean, log_std = apply(state.actor, state.target_actor, batch.next_observations)
        next_actions, next_log_prob = tanh_gaussian_sample(key_next, mean, log_std)
        next_entropy = self.alpha(state) * next_log_prob
        next_outputs = apply(
            state.critic, state.target_critic, batch.next_observations, next_actions
        )
        discounts = self.discount * batch.masks
        outputs = apply(state.critic, params, batch.observations, batch.actions)
        if not isinstance(self.critic, Gaussian):
            next_value = self.ensemble.reduce(self.critic.value(next_outputs), key_value)
            target = batch.rewards + discounts * (next_value - next_entropy)
            loss = self.critic.loss(outputs, jax.lax.stop_gradient(target)).mean(axis=-1)
            return loss.sum(), {
                "q_mean": self.critic.value(outputs).mean(),
                "std_average": state.std_average,
            }
        next_value, next_sample = self.next_value_and_sample(next_outputs, key_value)
        q, log_sigma = self.critic.mean_log_std(outputs)
        sigma = jnp.exp(log_sigma)
        batch_std = jax.lax.stop_gradient(sigma).mean(axis=-1)
        b = jnp.where(
            state.std_average < 0,
            batch_std,
            (1.0 - self.tau_b) * state.std_average + self.tau_b * batch_std,
        )
        y_q, y_b = dsac_t_targets(
            jax.lax.stop_gradient(q),
            batch.rewards,
            discounts,
            next_value,
            next_sample,
            next_entropy,
            self.clip_xi * b[:, None],
        )
        critic_loss = dsac_t_critic_loss if self.critic_loss == "paper" else dsac_t_critic_loss_2025
        loss = critic_loss(q, sigma, y_q, y_b, b, self.epsilon)
        return loss.sum(), {"q_mean": q.mean(), "q_std": sigma.mean(), "std_average": b}

    def critic_step(
        self, state: DSACTState, batch: Batch, key: jax.Array
    ) -> tuple[DSACTState, Metrics]:
        """One critic step, which also moves the moving average b of σ."""
        critic, metrics = grad_step(state.critic, lambda p: self.critic_loss(p, state, batch, key))
        std_average = metrics.pop("std_average")
        return state.replace(critic=critic, std_average=std_average), metrics

    def update(self, state: DSACTState, batch: Batch, key: jax.Array) -> tuple[DSACTState, Metrics]:
        key_critic, key_actor = jax.random.split(key)
        state, critic_metrics, last = critic_steps(
            self.critic_step, state, batch, key_critic, self.delay_update
        )
        actor, temperature, metrics = self.actor_step(state, last, key_actor)
        state = state.replace(
            actor=actor,
            temperature=temperature,
            target_actor=polyak(actor.params, state.target_actor, self.tau),
            target_critic=polyak(state.critic.params, state.target_critic, self.tau),
        )
        return state, {**prefix("critic", critic_metrics), **metrics}

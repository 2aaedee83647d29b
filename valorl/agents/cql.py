"""Conservative Q-Learning (Kumar, Zhou, Tucker & Levine, NeurIPS 2020, arXiv:2006.04779).

CQL(H) on a SAC backbone, for continuous actions. Each ensemble member i is trained by its TD
loss plus α times the gap between a soft maximum of Q over all actions and Q at the data
(Eq. 4 with the entropy regulariser R(μ) = H(μ)):

    L_Q = ℓ(Q_i(s, a), y) + α · E_s[ log ∫ exp Q_i(s, ã) dã − E_{a~D}[Q_i(s, a)] ]
    y   = r + γ·m·Q̂'(s', a'),  a' ~ π(·|s')    (− α_ent·log π(a'|s') with `backup_entropy`)

The log-integral is estimated by importance sampling, as in the reference code (App. F): N
actions uniform on [−1, 1]^d, N from π(·|s) and N from π(·|s'), all evaluated at s, each
weighted by its proposal density (`valorl.losses.cql_logsumexp`). With `cql_lagrange` the
weight becomes α·α' with α' ≥ 0 learned by dual gradient ascent so that the gap settles at
`cql_target_action_gap` (the Lagrangian variant of App. F). The actor and the temperature
are SAC's: E[α_ent·log π(ã|s) − Q̂(s, ã)] and the entropy target −|A|.

Q̂ is the ensemble's reduction (the paper: min of two) and ℓ the critic head's loss against
the scalar target (the paper: squared error). For a non-scalar head the conservative gap acts
on the head's expected value, `head.value(outputs)`: a histogram or distributional critic is
pushed down (in mean) at out-of-data actions and up at the data, and its shape is learned only
through its own TD loss.

As in the reference code, every part is updated from the same parameters at once: the actor
against the critic before its step, the critic with the proposals of the actor before its
step. Defaults follow the JAX reference implementation (young-geng/JaxCQL), which reproduces
the paper's D4RL locomotion results.
"""

from __future__ import annotations

import dataclasses
import math
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
from valorl.agents.entropy import MaxEntropyAgentBase, Temperature, init_temperature
from valorl.config import require_at_least_one, require_positive
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.losses import cql_logsumexp
from valorl.nets import TanhGaussianPolicy, tanh_gaussian_sample


class CQLState(flax.struct.PyTreeNode):
    actor: NetState
    critic: NetState
    target_critic: Params
    temperature: NetState
    lagrange: NetState | None = None
    """α' of the Lagrangian variant; None (an empty subtree) without it."""


class Proposals(flax.struct.PyTreeNode):
    """The actions at which CQL's soft maximum looks, for a batch of B states."""

    random: jax.Array
    """(B, N, d) uniform on [−1, 1]^d."""
    policy: jax.Array
    """(B, 2N, d): N from π(·|s'), then N from π(·|s)."""
    log_probs: jax.Array
    """(B, 2N) log-densities of `policy` under the distributions they came from."""


@dataclasses.dataclass(frozen=True)
class CQL(MaxEntropyAgentBase):
    """Conservative Q-Learning: SAC whose critics are pushed down away from the data."""

    name: ClassVar[str] = "cql"

    cql_alpha: float = 5.0
    """α, the weight of the conservative gap (Eq. 4): 5 for D4RL locomotion (the reference
    code's and JaxCQL's min_q_weight; CORL uses 10)."""
    cql_n_actions: int = 10
    """N, actions sampled per state from each proposal (reference: 10)."""
    cql_importance_sample: bool = True
    """Weight proposals by their densities (reference: on); off: a plain log-sum-exp over the
    proposals and the data action, as the reference's alternative."""
    cql_temp: float = 1.0
    """Temperature T of the log-sum-exp (reference: 1)."""
    cql_lagrange: bool = False
    """Learn the weight α' ≥ 0 on the gap by dual ascent (reference: off for locomotion)."""
    cql_target_action_gap: float = 1.0
    """Gap τ the Lagrangian variant aims at (JaxCQL: 1; Cal-QL uses 0.8 on AntMaze)."""
    lagrange_init: float = math.e
    """Initial α' of the Lagrangian variant (JaxCQL: log α' = 1)."""
    cql_max_target_backup: bool = False
    """Back up the maximum of Q̂' over N actions from π(·|s') instead of one (JaxCQL: off)."""
    backup_entropy: bool = False
    """Subtract α_ent·log π(a'|s') in the TD target (JaxCQL: off)."""
    init_temperature: float = 1.0
    """Initial entropy temperature α_ent (JaxCQL: log α = 0)."""
    target_entropy: float | None = None
    """Target entropy of the temperature loss; unset: −action_dim (JaxCQL and SAC)."""
    discount: float = 0.99
    """Discount factor γ."""
    tau: float = 0.005
    """Polyak rate of the target critic."""
    actor_lr: float = 3e-4
    """Actor learning rate (JaxCQL: 3e-4; the original code and CORL use 3e-5 or 1e-4)."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    temperature_lr: float = 3e-4
    """Learning rate of log α_ent (JaxCQL: the actor's)."""
    lagrange_lr: float = 3e-4
    """Learning rate of log α' (JaxCQL: the critic's)."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of actor and critics (JaxCQL: 256-256)."""
    critic: CriticHead = Scalar()
    """How Q is represented and trained: mse, huber, bce, hl-gauss, two-hot, c51, quantile, gaussian
    (`valorl.critics.heads`)."""
    ensemble: QEnsemble = QEnsemble()
    """Q-ensemble: size, how members combine in targets and for the actor (CQL: min of two)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    normalize_observations: bool = False
    """Standardise observations with dataset statistics (JaxCQL does not)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none in JaxCQL's locomotion runs."""

    def __post_init__(self) -> None:
        require_at_least_one(self, "cql_n_actions")
        require_positive(self, "cql_temp", "init_temperature", "lagrange_init")

    def init(self, key: jax.Array, spec: Spec) -> CQLState:
        key_actor, key_critic, key_temperature, key_lagrange = jax.random.split(key, 4)
        actor = create_train_state(
            TanhGaussianPolicy(self.hidden_dims, spec.action_dim),
            key_actor,
            (jnp.zeros((1, *spec.obs_shape)),),
            adam(self.actor_lr),
        )
        critic = self.create_critic(key_critic, spec)
        temperature = init_temperature(self.init_temperature, self.temperature_lr, key_temperature)
        lagrange = None
        if self.cql_lagrange:
            lagrange = create_train_state(
                Temperature(self.lagrange_init), key_lagrange, (), adam(self.lagrange_lr)
            )
        return CQLState(
            actor=actor,
            critic=critic,
            target_critic=critic.params,
            temperature=temperature,
            lagrange=lagrange,
        )

    # ---- pieces ---------------------------------------------------------------------------

    def sample_actions(
        self, state: CQLState, obs: jax.Array, key: jax.Array, n: int
    ) -> tuple[jax.Array, jax.Array]:
        """n actions per state from the current policy: (B, n, d) and their log π (B, n)."""
        mean, log_std = apply(state.actor, state.actor.params, obs)
        repeat = lambda x: jnp.repeat(x[:, None], n, axis=1)
        return tanh_gaussian_sample(key, repeat(mean), repeat(log_std))

    def q_at(self, critic: NetState, params: Params, obs: jax.Array, actions: jax.Array):
        """Expected Q of every member at M actions per state: obs (B, o), actions (B, M, d)
        -> (members, B, M)."""
        b, m, d = actions.shape
        obs = jnp.repeat(obs[:, None], m, axis=1).reshape(b * m, -1)
        outputs = apply(critic, params, obs, actions.reshape(b * m, d))
        return self.critic.value(outputs).reshape(-1, b, m)

    def proposals(self, state: CQLState, batch: Batch, key: jax.Array) -> Proposals:
        key_random, key_next, key_current = jax.random.split(key, 3)
        n, d = self.cql_n_actions, batch.actions.shape[-1]
        random = jax.random.uniform(key_random, (len(batch), n, d), minval=-1.0, maxval=1.0)
        next_actions, next_log_probs = self.sample_actions(
            state, batch.next_observations, key_next, n
        )
        actions, log_probs = self.sample_actions(state, batch.observations, key_current, n)
        return Proposals(
            random=random,
            policy=jnp.concatenate([next_actions, actions], axis=1),
            log_probs=jnp.concatenate([next_log_probs, log_probs], axis=1),
        )

    def td_target(
        self, state: CQLState, batch: Batch, alpha: jax.Array, key: jax.Array
    ) -> jax.Array:
        key_sample, key_reduce = jax.random.split(key)
        n = self.cql_n_actions if self.cql_max_target_backup else 1
        actions, log_probs = self.sample_actions(state, batch.next_observations, key_sample, n)
        values = self.q_at(state.critic, state.target_critic, batch.next_observations, actions)
        next_q = self.ensemble.reduce(values, key_reduce)  # (B, n)
        best = jnp.argmax(next_q, axis=-1)[:, None]  # the max backup; n = 1: the only one
        next_q = jnp.take_along_axis(next_q, best, axis=-1)[:, 0]
        if self.backup_entropy:
            next_q = next_q - alpha * jnp.take_along_axis(log_probs, best, axis=-1)[:, 0]
        return jax.lax.stop_gradient(batch.rewards + self.discount * batch.masks * next_q)

    def bound_policy_values(self, q_policy: jax.Array, batch: Batch) -> jax.Array:
        """Q at the policy's proposals as the gap sees them: unchanged in CQL (Cal-QL bounds
        them from below)."""
        return q_policy

    def conservative_gap(
        self,
        q_data: jax.Array,
        q_random: jax.Array,
        q_policy: jax.Array,
        log_probs: jax.Array,
        batch: Batch,
    ) -> jax.Array:
        """E_s[soft max of Q over actions − Q(s, a)] per member (Eq. 4's bracket): q_data
        (members, B), q_random (members, B, N), q_policy (members, B, 2N), log_probs (B, 2N)
        -> (members,)."""
        q_policy = self.bound_policy_values(q_policy, batch)
        if self.cql_importance_sample:
            soft_max = cql_logsumexp(
                q_random, q_policy, log_probs, batch.actions.shape[-1], self.cql_temp
            )
        else:
            every = jnp.concatenate([q_random, q_data[..., None], q_policy], axis=-1)
            soft_max = self.cql_temp * jax.scipy.special.logsumexp(every / self.cql_temp, -1)
        return (soft_max - q_data).mean(axis=-1)

    # ---- losses ---------------------------------------------------------------------------

    def critic_loss(
        self,
        params: Params,
        state: CQLState,
        batch: Batch,
        target: jax.Array,
        proposals: Proposals,
        alpha_prime: jax.Array | None,
    ) -> tuple[jax.Array, Metrics]:
        outputs = apply(state.critic, params, batch.observations, batch.actions)
        td = self.critic.loss(outputs, target).mean(axis=-1)  # (members,)
        q_data = self.critic.value(outputs)
        q_random = self.q_at(state.critic, params, batch.observations, proposals.random)
        q_policy = self.q_at(state.critic, params, batch.observations, proposals.policy)
        gap = self.conservative_gap(q_data, q_random, q_policy, proposals.log_probs, batch)
        if alpha_prime is None:
            penalty = self.cql_alpha * gap
        else:
            penalty = alpha_prime * self.cql_alpha * (gap - self.cql_target_action_gap)
        return (td + penalty).sum(), {
            "td_loss": td.sum(),
            "cql_gap": gap.mean(),
            "q_mean": q_data.mean(),
            "q_policy": q_policy.mean(),
            "q_random": q_random.mean(),
            **self.bound_metrics(q_policy, batch),
        }

    def bound_metrics(self, q_policy: jax.Array, batch: Batch) -> Metrics:
        """Metrics about `bound_policy_values`: none in CQL."""
        return {}

    def update(self, state: CQLState, batch: Batch, key: jax.Array) -> tuple[CQLState, Metrics]:
        key_actor, key_target, key_proposals = jax.random.split(key, 3)
        actor, temperature, policy_metrics = self.actor_step(state, batch, key_actor)
        target = self.td_target(state, batch, self.alpha(state), key_target)
        proposals = jax.lax.stop_gradient(self.proposals(state, batch, key_proposals))
        alpha_prime = None
        if state.lagrange is not None:
            alpha_prime = jnp.clip(apply(state.lagrange, state.lagrange.params), 0.0, 1e6)
        critic, critic_metrics = grad_step(
            state.critic,
            lambda p: self.critic_loss(p, state, batch, target, proposals, alpha_prime),
        )
        metrics = {**prefix("critic", critic_metrics), **policy_metrics}
        lagrange = state.lagrange
        if lagrange is not None:
            excess = self.cql_alpha * (critic_metrics["cql_gap"] - self.cql_target_action_gap)
            lagrange, lagrange_metrics = grad_step(
                lagrange,
                lambda p: (
                    -jnp.clip(apply(lagrange, p), 0.0, 1e6) * jax.lax.stop_gradient(excess),
                    {"alpha_prime": alpha_prime},
                ),
            )
            metrics |= prefix("lagrange", lagrange_metrics)
        state = state.replace(
            actor=actor,
            critic=critic,
            target_critic=polyak(critic.params, state.target_critic, self.tau),
            temperature=temperature,
            lagrange=lagrange,
        )
        return state, metrics

"""DQN (Mnih et al., Nature 2015) with Double-DQN targets (van Hasselt, Guez & Silver, AAAI
2016) and n-step returns (Sutton & Barto 2018, Sec. 7.1; Hessel et al. 2018, "Rainbow").

The Q-network maps an observation to a value for every action and is regressed onto

    y = R + γ·m·Q̂_target(s', argmax_a Q_online(s', a))            (van Hasselt et al., Eq. 4)

the online network choosing the next action, the target network (a copy refreshed every
`target_update_every` updates) valuing it. With `n_step` > 1 every batch row is an n-step
transition (`valorl.data.nstep`): R sums up to n discounted rewards and m = γ^(K−1)·(1 − term),
so the same line is the n-step target. Every critic head trains through the head interface:
scalar heads (mse, huber, hl-gauss, two-hot) regress `head.loss(Q(s, a), y)`; distributional
ones (c51: Bellemare et al. 2017; quantile: QR-DQN, Dabney et al. 2018) are trained towards
`head.backup` of the next-state distribution at the Double-DQN action. With several ensemble
members the greedy action follows the members' mean, the target's value the ensemble's
reduction (its chosen member for a distributional backup).

Exploration is epsilon-greedy with ε decayed linearly over environment steps; `act` with
`deterministic` is greedy, without it epsilon-greedy at the final ε. With `exploration
softmax` it instead samples softmax(Q(s, ·)/temperature), as Young, Ramesh, Kirsch &
Schmidhuber (ICML 2023) explore in every agent they compare; `double_q false` gives the plain
DQN target max_a Q̂_target(s', a) (Mnih et al. 2015), theirs. A subclass may weight each row's
loss (`q_step`'s `weights`: rollouts from a model, `valorl.agents.model_dqn`).

Defaults are Young & Tian's MinAtar DQN (2019, Sec. 4): batch 32, γ 0.99, learning rate
2.5e-4, target copy every 1000 updates, ε 1.0 -> 0.1 over the first 100k steps, one-step
returns, the Huber loss, one 128-unit layer after the torso. They optimised with RMSprop
(ρ 0.95, ε 0.01); we use Adam at the same learning rate, as the JAX DQN baselines valorl is
compared against do (PureJaxRL's and CleanRL's JAX DQN: Adam at 2.5e-4), with Adam's ε raised
to 1.5e-4 (Rainbow's, Hessel et al. 2018, Table 1): a small ε lets the first steps on rarely
seen sparse rewards be very large, which RMSprop's ε of 0.01 also prevented.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import flax.struct
import jax
import jax.numpy as jnp
import optax

from valorl.agents.base import (
    Metrics,
    NetState,
    Params,
    Spec,
    adam,
    grad_step,
    periodic_copy,
    prefix,
)
from valorl.agents.discrete import (
    DiscreteCriticAgentBase,
    at_actions,
    epsilon_greedy,
    greedy_actions,
    linear_epsilon,
    softmax_actions,
)
from valorl.config import require_at_least_one, require_positive
from valorl.critics import CriticHead, Huber, QEnsemble
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.errors import ValorlError


class DQNState(flax.struct.PyTreeNode):
    critic: NetState
    target_critic: Params

    @property
    def actor(self) -> NetState:
        """The policy's network: the online Q-network (the policy is greedy in it)."""
        return self.critic


@dataclasses.dataclass(frozen=True)
class DQN(DiscreteCriticAgentBase):
    """Double DQN with n-step returns, any critic head, epsilon-greedy exploration.

    Subclasses add a term to the critic loss through `penalty` (discrete CQL)."""

    name: ClassVar[str] = "dqn"

    n_step: int = 1
    """n of n-step returns (Young & Tian: 1; Rainbow: 3)."""
    discount: float = 0.99
    """Discount factor γ."""
    target_update_every: int = 1000
    """Updates between copies of the online network into the target network."""
    eps_start: float = 1.0
    """ε of epsilon-greedy exploration at the first environment step."""
    eps_end: float = 0.1
    """ε after the decay; also the ε of non-deterministic `act`."""
    eps_decay_steps: int = 100_000
    """Environment steps over which ε decays linearly from eps-start to eps-end."""
    critic_lr: float = 2.5e-4
    """Q-network learning rate (Adam)."""
    adam_eps: float = 1.5e-4
    """ε of Adam (Rainbow's 1.5e-4; see the module docstring)."""
    hidden_dims: tuple[int, ...] = (128,)
    """Dense layers after the torso (frames: one conv layer first; Young & Tian: 128)."""
    critic: CriticHead = Huber()
    """How Q is represented and trained: mse, huber, bce, hl-gauss, two-hot, c51, quantile, gaussian
    (`valorl.critics.heads`)."""
    ensemble: QEnsemble = QEnsemble(num_qs=1)
    """Q-ensemble: size (DQN: one), how members combine in targets, layers."""
    batch_size: int = 32
    """Transitions per gradient step."""
    normalize_observations: bool = False
    """Standardise observations with dataset statistics (DQN does not)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling (none: MinAtar rewards are small integers)."""
    exploration: Literal["epsilon", "softmax"] = "epsilon"
    """How the agent explores: epsilon-greedy (the ε schedule above) or a sample of
    softmax(Q/temperature) (Young et al. 2023)."""
    temperature: float = 1.0
    """Temperature of softmax exploration."""
    double_q: bool = True
    """Double-DQN targets (the online network picks the next action); false: max over the
    target network (Mnih et al. 2015)."""

    def __post_init__(self) -> None:
        require_at_least_one(self, "n_step", "target_update_every")
        for name in ("eps_start", "eps_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValorlError(
                    f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}"
                )
        require_positive(self, "temperature")
        if self.eps_decay_steps < 0:
            raise ValorlError(f"--eps-decay-steps must be at least 0, got {self.eps_decay_steps}")
        distributional = self.critic.distributional
        if distributional and self.ensemble.num_qs > 1 and not self.ensemble.picks_a_member:
            raise ValorlError(
                f"a {self.critic.name} critic with several Q-networks needs --q-reduce min or "
                f"subset-min (its backup follows one member), not {self.ensemble.q_reduce}"
            )

    @property
    def return_steps(self) -> int:
        return self.n_step

    def critic_optimizer(self) -> optax.GradientTransformation:
        return adam(self.critic_lr, eps=self.adam_eps)

    def init(self, key: jax.Array, spec: Spec) -> DQNState:
        critic = self.create_critic(key, spec)
        return DQNState(critic=critic, target_critic=critic.params)

    # ---- the target ---------------------------------------------------------------------

    def td_target(self, state: DQNState, batch: Batch, key: jax.Array) -> jax.Array:
        """The Double-DQN target (or DQN's, `double_q` false), stop-gradient: a scalar per
        sample (B,), or for a distributional head the backed-up next-state distribution (B, ...)."""
        next_obs = batch.next_observations
        chooser = state.critic.params if self.double_q else state.target_critic
        best = greedy_actions(self.critic.value(self.all_outputs(state.critic, chooser, next_obs)))
        next_outputs = self.critic_outputs(state.critic, state.target_critic, next_obs, best)
        next_values = self.critic.value(next_outputs)  # (members, B)
        discounts = self.discount * batch.masks
        if self.critic.distributional:
            member = (
                self.ensemble.select(next_values, key)
                if self.ensemble.picks_a_member
                else jnp.zeros(next_values.shape[1:], jnp.int32)
            )
            chosen = next_outputs[member, jnp.arange(member.shape[0])]
            target = self.critic.backup(chosen, batch.rewards, discounts)
        else:
            target = batch.rewards + discounts * self.ensemble.reduce(next_values, key)
        return jax.lax.stop_gradient(target)

    def td_loss(
        self, outputs: jax.Array, target: jax.Array, weights: jax.Array | None = None
    ) -> jax.Array:
        """The head's loss at the data's actions, (members, B, D) -> (members,): the mean over
        rows, each row's loss multiplied by its weight (B,) when given."""
        if self.critic.distributional:
            loss = self.critic.backup_loss(outputs, target)
        else:
            loss = self.critic.loss(outputs, target)
        return (loss if weights is None else loss * weights).mean(axis=-1)

    # ---- the loss -----------------------------------------------------------------------

    def penalty(self, q_all: jax.Array, batch: Batch) -> tuple[jax.Array, Metrics]:
        """A term added to each member's loss, from every action's value q_all
        (members, B, num_actions): none in DQN."""
        del q_all, batch
        return jnp.zeros(()), {}

    def critic_loss(
        self,
        params: Params,
        state: DQNState,
        batch: Batch,
        target: jax.Array,
        weights: jax.Array | None = None,
    ) -> tuple[jax.Array, Metrics]:
        outputs = self.all_outputs(state.critic, params, batch.observations)
        at_data = at_actions(outputs, batch.actions)
        td = self.td_loss(at_data, target, weights)
        penalty, metrics = self.penalty(self.critic.value(outputs), batch)
        return (td + penalty).sum(), {
            "td_loss": td.sum(),
            "q_mean": self.critic.value(at_data).mean(),
            **metrics,
        }

    def update(self, state: DQNState, batch: Batch, key: jax.Array) -> tuple[DQNState, Metrics]:
        return self.q_step(state, batch, key)

    def q_step(
        self, state: Any, batch: Batch, key: jax.Array, weights: jax.Array | None = None
    ) -> tuple[Any, Metrics]:
        """One gradient step of the Q-network on `batch` (rows weighted by `weights` (B,) when
        given) and the periodic target copy: DQN's whole update."""
        target = self.td_target(state, batch, key)
        critic, metrics = grad_step(
            state.critic, lambda p: self.critic_loss(p, state, batch, target, weights)
        )
        target_critic = periodic_copy(
            critic.params, state.target_critic, critic.step, self.target_update_every
        )
        return state.replace(critic=critic, target_critic=target_critic), prefix("critic", metrics)

    # ---- acting -------------------------------------------------------------------------

    def epsilon(self, env_step: jax.Array) -> jax.Array:
        """ε at environment step `env_step`."""
        return linear_epsilon(env_step, self.eps_start, self.eps_end, self.eps_decay_steps)

    def act(
        self, state: DQNState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        q_all = self.all_q_values(state, obs)
        greedy = greedy_actions(q_all)
        if deterministic:
            return greedy
        if self.exploration == "softmax":
            return softmax_actions(key, q_all, self.temperature)
        return epsilon_greedy(key, greedy, q_all.shape[-1], self.eps_end)

    def explore(
        self, state: DQNState, obs: jax.Array, key: jax.Array, env_step: jax.Array
    ) -> jax.Array:
        """Epsilon-greedy with ε on the linear schedule at `env_step`, or softmax(Q/T)."""
        q_all = self.all_q_values(state, obs)
        if self.exploration == "softmax":
            return softmax_actions(key, q_all, self.temperature)
        return epsilon_greedy(key, greedy_actions(q_all), q_all.shape[-1], self.epsilon(env_step))

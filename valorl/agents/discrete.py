"""What the discrete-action agents share: Q(s, ·) critics, greedy and epsilon-greedy acting,
and categorical policies trained by (weighted) cross-entropy.

A discrete critic's network reads the observation alone and returns the head's outputs for
every action at once, (members, batch, num_actions, out_dim) (`QEnsemble.discrete_network`,
on a CNN torso for frames), as DQN's does (Mnih et al. 2015). Q(s, a) at the data's integer
actions is read off it, so `q_values(state, obs, actions)` keeps the `CriticAgent` contract
(members, batch) that value diagnostics and off-policy evaluation read, and the continuous
agents' losses written with `critic_outputs` (IQL's) work unchanged on it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from valorl.agents.base import (
    CriticAgentBase,
    Metrics,
    NetState,
    Params,
    Spec,
    adam,
    apply,
    create_train_state,
)
from valorl.errors import ValorlError
from valorl.nets import CategoricalPolicy, categorical_log_prob, obs_rank


def require_discrete(name: str, spec: Spec) -> int:
    """The number of actions of `spec`; a one-line ValorlError for a continuous action space."""
    if spec.num_actions is None:
        raise ValorlError(
            f"{name} needs a discrete action space, but this one is continuous "
            f"({spec.action_dim} numbers per action)"
        )
    return spec.num_actions


def at_actions(outputs: jax.Array, actions: jax.Array) -> jax.Array:
    """Outputs at integer actions: (members, ..., num_actions, D) and (...) -> (members, ..., D)."""
    index = actions.astype(jnp.int32)[None, ..., None, None]
    index = jnp.broadcast_to(index, (*outputs.shape[:-2], 1, 1))
    return jnp.take_along_axis(outputs, index, axis=-2)[..., 0, :]


def greedy_actions(values: jax.Array) -> jax.Array:
    """argmax over actions of the members' mean value: (members, ..., num_actions) -> (...)
    int32. The mean is the ensemble's estimate of Q; with one member it is that member."""
    return jnp.argmax(values.mean(axis=0), axis=-1).astype(jnp.int32)


def linear_epsilon(step: jax.Array, start: float, end: float, decay_steps: int) -> jax.Array:
    """ε after `step` environment steps: `start` decayed linearly to `end` over `decay_steps`
    steps, then held (the schedule of Mnih et al. 2015 and Young & Tian 2019)."""
    fraction = jnp.clip(jnp.asarray(step, jnp.float32) / max(decay_steps, 1), 0.0, 1.0)
    return start + fraction * (end - start)


def epsilon_greedy(
    key: jax.Array, greedy: jax.Array, num_actions: int, epsilon: float | jax.Array
) -> jax.Array:
    """Each action replaced, with probability ε, by one drawn uniformly from all actions."""
    key_coin, key_action = jax.random.split(key)
    random = jax.random.randint(key_action, greedy.shape, 0, num_actions, jnp.int32)
    explore = jax.random.uniform(key_coin, greedy.shape) < epsilon
    return jnp.where(explore, random, greedy).astype(jnp.int32)


def softmax_actions(key: jax.Array, values: jax.Array, temperature: float) -> jax.Array:
    """A sample of softmax(Q/temperature) over actions, Q the members' mean:
    (members, ..., num_actions) -> (...) int32 (the exploration of Young et al., ICML 2023)."""
    logits = values.mean(axis=0) / temperature
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class DiscreteCriticAgentBase(CriticAgentBase):
    """`CriticAgentBase` for a discrete action space: the Q-ensemble maps an observation to the
    head's outputs for every action (`all_outputs`); Q at given actions is read off them."""

    discrete: ClassVar[bool] = True

    def critic_optimizer(self) -> optax.GradientTransformation:
        """The Q-ensemble's optimiser: Adam at `critic_lr`."""
        return adam(self.critic_lr)

    def create_critic(self, key: jax.Array, spec: Spec) -> NetState:
        """The Q-ensemble's train state: a torso (CNN for frames, else an MLP of `hidden_dims`)
        and the head's outputs for each of `spec.num_actions` actions, per member."""
        num_actions = require_discrete(self.name, spec)
        network = self.ensemble.discrete_network(
            self.hidden_dims, num_actions, self.critic.out_dim, obs_rank(spec.obs_shape)
        )
        return create_train_state(
            network, key, (jnp.zeros((1, *spec.obs_shape)),), self.critic_optimizer()
        )

    def all_outputs(self, critic: NetState, params: Params, obs: jax.Array) -> jax.Array:
        """The head's outputs for every action: (members, batch, num_actions, out_dim)."""
        return apply(critic, params, obs)

    def critic_outputs(
        self, critic: NetState, params: Params, obs: jax.Array, actions: jax.Array
    ) -> jax.Array:
        """The head's outputs at integer actions (batch,): (members, batch, out_dim)."""
        return at_actions(self.all_outputs(critic, params, obs), actions)

    def all_q_values(self, state: Any, obs: jax.Array) -> jax.Array:
        """Q(s, a) of every member and action, (members, batch, num_actions), in the same units
        as `q_values` (which is this at the given actions)."""
        return self.critic.value(self.all_outputs(state.critic, state.critic.params, obs))

    def greedy(self, state: Any, obs: jax.Array) -> jax.Array:
        """argmax_a of the members' mean Q(s, a): (batch,) int32."""
        return greedy_actions(self.all_q_values(state, obs))


# ---- categorical policies (discrete BC, discrete IQL) ---------------------------------------


def create_policy(
    key: jax.Array,
    spec: Spec,
    hidden_dims: tuple[int, ...],
    tx: optax.GradientTransformation,
    name: str,
) -> NetState:
    """A categorical policy's train state: logits over `spec.num_actions` actions on a torso."""
    num_actions = require_discrete(name, spec)
    module = CategoricalPolicy(hidden_dims, num_actions, obs_rank(spec.obs_shape))
    return create_train_state(module, key, (jnp.zeros((1, *spec.obs_shape)),), tx)


def weighted_cross_entropy(
    actor: NetState,
    params: Params,
    obs: jax.Array,
    actions: jax.Array,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, Metrics]:
    """−mean(w · log π(a|s)) over the batch (w = 1: behaviour cloning's cross-entropy; IQL's
    advantage weights: its Eq. 7), with the policy's accuracy on the data's actions and its
    mean entropy."""
    logits = apply(actor, params, obs)
    log_prob = categorical_log_prob(logits, actions)
    weighted = log_prob if weights is None else weights * log_prob
    probs = jax.nn.softmax(logits, axis=-1)
    entropy = -jnp.sum(probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return -weighted.mean(), {
        "accuracy": (jnp.argmax(logits, axis=-1) == actions).mean(),
        "entropy": entropy.mean(),
    }


def policy_act(actor: NetState, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """The most probable action (deterministic) or a sample of π(·|s): int32 of shape (batch,)."""
    logits = apply(actor, actor.params, obs)
    if deterministic:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)

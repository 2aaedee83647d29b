"""A tiny discrete agent for tests of the data, training and OPE layers (the real discrete
agents live in valorl/agents/): a linear softmax policy over `spec.num_actions` actions,
trained by cross-entropy on the batch's integer actions (behaviour cloning).

`act` returns the argmax (deterministic) or a sample of the softmax; `explore` is the
contract's default. It declares `discrete = True` and is registered under NAME by
`registered(monkeypatch)`, so runs of it resume and load like any agent's.
`collect_cartpole` writes the discrete data these tests train on, with Minari's own
DataCollector.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import flax.struct
import gymnasium as gym
import jax
import jax.numpy as jnp
import minari
import numpy as np
import optax

from valorl.agents import AGENTS
from valorl.agents.base import (
    AgentBase,
    NetState,
    Spec,
    adam,
    apply,
    create_train_state,
    grad_step,
    prefix,
)

NAME = "tiny_discrete"


class Logits(nn.Module):
    num_actions: int

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        return nn.Dense(self.num_actions)(obs)


class TinyState(flax.struct.PyTreeNode):
    actor: NetState


@dataclasses.dataclass(frozen=True)
class TinyDiscrete(AgentBase):
    """Softmax behaviour cloning with a linear policy."""

    name: ClassVar[str] = NAME
    discrete: ClassVar[bool] = True

    lr: float = 1e-2
    batch_size: int = 32
    normalize_observations: bool = False
    reward_normalization: str = "none"

    def init(self, key: jax.Array, spec: Spec) -> TinyState:
        assert spec.num_actions is not None and spec.action_dim == 0
        module = Logits(spec.num_actions)
        obs = jnp.zeros((1, *spec.obs_shape))
        return TinyState(actor=create_train_state(module, key, (obs,), adam(self.lr)))

    def update(self, state: TinyState, batch, key):
        del key
        assert batch.actions.dtype == jnp.int32 and batch.actions.ndim == 1

        def loss(params):
            logits = apply(state.actor, params, batch.observations)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.actions)
            return ce.mean(), {}

        actor, metrics = grad_step(state.actor, loss)
        return state.replace(actor=actor), prefix("actor", metrics)

    def logits(self, state: TinyState, obs: jax.Array) -> jax.Array:
        return apply(state.actor, state.actor.params, obs)

    def act(self, state: TinyState, obs, key, deterministic: bool = True) -> jax.Array:
        logits = self.logits(state, obs)
        if deterministic:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, logits).astype(jnp.int32)


def registered(monkeypatch) -> TinyDiscrete:
    """TinyDiscrete registered under its name for one test (runs rebuild agents by name)."""
    monkeypatch.setitem(AGENTS, NAME, TinyDiscrete)
    return TinyDiscrete()


def collect_cartpole(dataset_id: str, episodes: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Random CartPole episodes recorded by Minari's DataCollector as `dataset_id` (under the
    test's Minari root); returns each episode's actions."""
    env = minari.DataCollector(gym.make("CartPole-v1"), data_format="hdf5")
    env.action_space.seed(seed)
    actions = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        taken, done = [], False
        while not done:
            action = env.action_space.sample()
            _, _, terminated, truncated, _ = env.step(action)
            taken.append(action)
            done = terminated or truncated
        actions.append(np.array(taken))
    env.create_dataset(
        dataset_id=dataset_id,
        eval_env="CartPole-v1",
        algorithm_name="random",
        author="valorl",
        author_email="valorl@example.com",
        code_permalink="https://example.com/valorl",
        description="random CartPole-v1 episodes",
    )
    env.close()
    return actions

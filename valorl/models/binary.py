"""A one-step model of an environment with binary observations: the "simple model" of Young,
Ramesh, Kirsch & Schmidhuber, "The Benefits of Model-Based Generalization in Reinforcement
Learning" (ICML 2023, Sec. 5).

Three networks read the observation (flattened, as numbers) and the one-hot action:

    next observation   independent Bernoulli logits, one per bit      p(s' | s, a)
    reward             the mean of a Gaussian of fixed σ = 1          p(r | s, a)
    continuation       one Bernoulli logit for "the episode goes on"  p(1 − terminal | s, a)

trained together by the negative log-likelihood of replayed transitions

    NLL = −Σ_i log p(s'_i | s, a)·(1 − terminal) − log N(r; μ(s, a), 1) − log p(1 − terminal | s, a)

averaged over the batch. The next observation of a terminal transition is not modelled (a
terminal step needs only its reward and termination right), as in the authors' code
(kenjyoung/Model_Generalization_Code_supplement, train_simple_model_DQN.py).

Sampling: the next observation is drawn bit by bit with P(bit = 1) = sigmoid(logit), the
distribution the NLL trains. The authors' code instead calls `jax.random.bernoulli(key, logit)`,
which reads the logit as a probability (P(1) = clip(logit, 0, 1)); for a confident model both
give the same bits, and valorl keeps the sampling consistent with the loss. The reward of an
imagined step is the predicted mean and its continuation the predicted probability, which the
agent uses to weight and discount what follows (`valorl.agents.model_dqn`).

Observations of any shape are flattened in and reshaped out; they are treated as bits whatever
their dtype (uint8 frames, bool, or floats in {0, 1}).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from valorl.data.dataset import Batch
from valorl.nets.mlp import MLP

Metrics = dict[str, jax.Array]
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class BinaryDynamics(nn.Module):
    """The three networks: (obs (B, D), one-hot action (B, A)) -> next-bit logits (B, D),
    reward mean (B,), continuation logit (B,)."""

    hidden_dims: tuple[int, ...]
    obs_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array):
        x = jnp.concatenate([obs, action], axis=-1)
        net = lambda out, name: MLP(self.hidden_dims, out, activation=nn.elu, name=name)(x)
        logits = net(self.obs_dim, "next_obs")
        reward = net(1, "reward")[..., 0]
        continuation = net(1, "continuation")[..., 0]
        return logits, reward, continuation


class BinaryModelState(TrainState):
    """The networks' parameters and optimiser, and the number of actions they read."""

    num_actions: int = flax.struct.field(pytree_node=False, default=0)


class Prediction(flax.struct.PyTreeNode):
    next_obs_logits: jax.Array
    """(B, *obs_shape) Bernoulli logits of the next observation's bits."""
    reward: jax.Array
    """(B,) mean of the reward."""
    continuation_logit: jax.Array
    """(B,) logit of the probability that the episode goes on."""


@dataclasses.dataclass(frozen=True)
class BinaryModel:
    """Hyperparameters of the simple model (the paper's: three 200-unit ELU layers per
    network, Adam)."""

    model_hidden_dims: tuple[int, ...] = (200, 200, 200)
    """Hidden layers of each of the model's three networks (ELU)."""
    model_lr: float = 2e-4
    """The model's step size (Adam)."""
    model_adam_eps: float = 1e-5
    """ε of the model's Adam."""

    def init(
        self, key: jax.Array, obs_shape: tuple[int, ...], num_actions: int
    ) -> BinaryModelState:
        obs_dim = math.prod(obs_shape)
        module = BinaryDynamics(tuple(self.model_hidden_dims), obs_dim)
        params = module.init(key, jnp.zeros((1, obs_dim)), jnp.zeros((1, num_actions)))["params"]
        tx = optax.adam(self.model_lr, eps=self.model_adam_eps)
        return BinaryModelState.create(
            apply_fn=module.apply, params=params, tx=tx, num_actions=num_actions
        )

    def predict(
        self, state: BinaryModelState, params, obs: jax.Array, actions: jax.Array
    ) -> Prediction:
        """The model's distributions at observations (B, *obs_shape) and integer actions (B,)."""
        flat = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        one_hot = jax.nn.one_hot(actions, state.num_actions)
        logits, reward, continuation = state.apply_fn({"params": params}, flat, one_hot)
        return Prediction(logits.reshape(obs.shape), reward, continuation)

    def nll(self, state: BinaryModelState, params, batch: Batch) -> tuple[jax.Array, Metrics]:
        """The batch mean of the three negative log-likelihoods (module docstring)."""
        p = self.predict(state, params, batch.observations, batch.actions)
        bits = batch.next_observations.reshape(p.next_obs_logits.shape).astype(jnp.float32)
        per_bit = optax.sigmoid_binary_cross_entropy(p.next_obs_logits, bits)
        obs_nll = per_bit.reshape(bits.shape[0], -1).sum(-1) * batch.masks
        reward_nll = 0.5 * (batch.rewards - p.reward) ** 2 + HALF_LOG_2PI
        continuation_nll = optax.sigmoid_binary_cross_entropy(p.continuation_logit, batch.masks)
        loss = (obs_nll + reward_nll + continuation_nll).mean()
        return loss, {
            "loss": loss,
            "obs_nll": obs_nll.mean(),
            "reward_nll": reward_nll.mean(),
            "continuation_nll": continuation_nll.mean(),
        }

    def update(self, state: BinaryModelState, batch: Batch) -> tuple[BinaryModelState, Metrics]:
        """One Adam step on the NLL of `batch`."""
        grads, metrics = jax.grad(lambda p: self.nll(state, p, batch), has_aux=True)(state.params)
        return state.apply_gradients(grads=grads), metrics

    def sample(
        self, state: BinaryModelState, key: jax.Array, obs: jax.Array, actions: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One imagined step: next observations (bits drawn from sigmoid(logits), in `obs`'s
        dtype and shape), predicted reward means and continuation probabilities (B,)."""
        p = self.predict(state, state.params, obs, actions)
        bits = jax.random.bernoulli(key, jax.nn.sigmoid(p.next_obs_logits))
        return bits.astype(obs.dtype), p.reward, jax.nn.sigmoid(p.continuation_logit)

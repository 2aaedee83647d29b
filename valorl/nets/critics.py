"""Value networks: V(s), Q(s, a), and ensembles of them with the member axis first."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from valorl.nets.mlp import ACTIVATIONS, MLP, Activation, default_init
from valorl.nets.spectral import COLLECTION
from valorl.nets.torsos import Torso


class StateValue(nn.Module):
    """V(s) -> shape (batch,)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = False
    norm_after_activation: bool = False
    activation: Activation = "relu"

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return MLP(
            self.hidden_dims,
            1,
            activation=ACTIVATIONS[self.activation],
            layer_norm=self.layer_norm,
            norm_after_activation=self.norm_after_activation,
        )(observations)[..., 0]


class StateActionValue(nn.Module):
    """Q(s, a) as raw outputs of shape (batch, out_dim), read by a critic head."""

    hidden_dims: Sequence[int]
    out_dim: int = 1
    layer_norm: bool = False
    spectral_norm: bool = False
    activation: Activation = "relu"
    norm_after_activation: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return MLP(
            self.hidden_dims,
            self.out_dim,
            activation=ACTIVATIONS[self.activation],
            layer_norm=self.layer_norm,
            norm_after_activation=self.norm_after_activation,
            spectral_norm=self.spectral_norm,
        )(inputs)


class ActionValues(nn.Module):
    """Q(s, ·) for a discrete action space: raw outputs of shape (batch, num_actions, out_dim),
    one head's worth (`out_dim`) per action, read by a critic head; the observation goes
    through a `Torso` (a CNN for frames). One forward pass gives every action's value, as in
    DQN (Mnih et al. 2015)."""

    hidden_dims: Sequence[int]
    num_actions: int
    out_dim: int = 1
    obs_rank: int = 1
    layer_norm: bool = False
    spectral_norm: bool = False
    activation: Activation = "relu"
    norm_after_activation: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        features = Torso(
            self.hidden_dims,
            self.obs_rank,
            layer_norm=self.layer_norm,
            spectral_norm=self.spectral_norm,
            activation=self.activation,
            norm_after_activation=self.norm_after_activation,
        )(observations)
        outputs = nn.Dense(self.num_actions * self.out_dim, kernel_init=default_init())(features)
        return outputs.reshape(*outputs.shape[:-1], self.num_actions, self.out_dim)


class TorsoValue(nn.Module):
    """V(s) -> shape (batch,) on a `Torso`: the state value of agents whose observations may
    be frames (discrete IQL)."""

    hidden_dims: Sequence[int]
    obs_rank: int = 1

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        features = Torso(self.hidden_dims, self.obs_rank)(observations)
        return nn.Dense(1, kernel_init=default_init())(features)[..., 0]


class Ensemble(nn.Module):
    """`num` independently initialised copies of `net`, evaluated on the same inputs.

    Parameters carry a leading member axis and outputs gain a leading axis of size `num`: one
    batched computation instead of `num` separate networks.
    """

    net: nn.Module
    num: int = 2

    @nn.compact
    def __call__(self, *args: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            lambda module, *a: module(*a),
            variable_axes={"params": 0, COLLECTION: 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num,
        )
        return ensemble(self.net, *args)

"""Torsos: the features a discrete-action network reads an observation through.

Which torso a network uses follows from the rank of one observation:

    rank 3 (H, W, C)   frames, as MinAtar's 10x10xC boolean images: the network of Young &
                       Tian (2019, "MinAtar", Sec. 4): one convolution of 16 filters, 3x3,
                       stride 1, no padding, ReLU, flattened, then the dense layers
                       `hidden_dims` (theirs: one of 128 units), ReLU after each
    any other rank     vectors (CartPole's 4 numbers), flattened: an MLP of `hidden_dims`

Inputs are cast to float32 first: frames are stored compactly (uint8 or bool) and only the
network sees them as numbers. Leading batch axes of any number pass through.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from valorl.errors import ValorlError
from valorl.nets.mlp import ACTIVATIONS, MLP, Activation, default_init

FRAME_RANK = 3
"""Rank of an observation the convolutional torso reads (height, width, channels)."""


class Torso(nn.Module):
    """Features of observations whose trailing `obs_rank` axes are one observation."""

    hidden_dims: Sequence[int]
    obs_rank: int = 1
    conv_features: int = 16
    """Filters of the convolution of the frame torso (Young & Tian: 16)."""
    layer_norm: bool = False
    spectral_norm: bool = False
    activation: Activation = "relu"
    """Nonlinearity of the dense layers (the convolution keeps ReLU, as Young & Tian's)."""
    norm_after_activation: bool = False
    """LayerNorm after the activation instead of before (`MLP`)."""

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        x = observations.astype(jnp.float32)
        if self.obs_rank == FRAME_RANK:
            x = nn.relu(Conv3x3(self.conv_features)(x))
        batch_axes = x.shape[: observations.ndim - self.obs_rank]
        x = x.reshape(*batch_axes, -1)
        return MLP(
            self.hidden_dims,
            activation=ACTIVATIONS[self.activation],
            layer_norm=self.layer_norm,
            norm_after_activation=self.norm_after_activation,
            spectral_norm=self.spectral_norm,
        )(x)


class Conv3x3(nn.Module):
    """A 3x3 convolution, stride 1, no padding, computed as one matrix product over the 3x3
    patches (im2col): the same function and parameters (`kernel` (3, 3, C, F), `bias`) as
    `nn.Conv(F, (3, 3), padding="VALID")`, and on CPU 2-3x faster to train through than XLA's
    convolution for MinAtar's small frames (BENCHMARKS.md)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", default_init(), (3, 3, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        height, width = x.shape[-3] - 2, x.shape[-2] - 2
        patches = jnp.concatenate(
            [x[..., i : i + height, j : j + width, :] for i in range(3) for j in range(3)], -1
        )  # (..., H-2, W-2, 9C) in the kernel's (i, j, c) order
        return patches @ kernel.reshape(9 * channels, self.features) + bias


def obs_rank(obs_shape: tuple[int, ...]) -> int:
    """The rank a `Torso` is built for, from one observation's shape; a one-line ValorlError
    for a scalar observation."""
    if len(obs_shape) == 0:
        raise ValorlError("observations must have at least one axis, got scalars")
    return len(obs_shape)

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
from valorl.nets.mlp import MLP, default_init

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

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        x = observations.astype(jnp.float32)
        if self.obs_rank == FRAME_RANK:
            x = nn.Conv(
                self.conv_features,
                (3, 3),
                strides=(1, 1),
                padding="VALID",
                kernel_init=default_init(),
            )(x)
            x = nn.relu(x)
        batch_axes = x.shape[: observations.ndim - self.obs_rank]
        x = x.reshape(*batch_axes, -1)
        return MLP(self.hidden_dims, layer_norm=self.layer_norm, spectral_norm=self.spectral_norm)(
            x
        )


def obs_rank(obs_shape: tuple[int, ...]) -> int:
    """The rank a `Torso` is built for, from one observation's shape; a one-line ValorlError
    for a scalar observation."""
    if len(obs_shape) == 0:
        raise ValorlError("observations must have at least one axis, got scalars")
    return len(obs_shape)

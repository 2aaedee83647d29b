"""The multilayer perceptron every network in valorl is built from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import flax.linen as nn
import jax

from valorl.nets.spectral import SpectralDense

Activation = Literal["relu", "elu", "gelu"]
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
}
"""Hidden-layer nonlinearities a critic can be built with, by name (ReLU, valorl's default;
ELU, Clevert et al. 2016, the Q-networks of Young et al. 2023; GELU, Hendrycks & Gimpel
2016, every network of FQL and Q-chunking)."""


def default_init(scale: float = 1.0):
    """Glorot-uniform scaled by `scale`, as in the FQL/OGBench reference code.

    Not orthogonal (the IQL/RLPD reference code's choice): orthogonal initialisation calls
    LAPACK's QR, and with jaxlib 0.10.2 a jitted, seed-vmapped init of several networks that
    each do a QR deadlocks the XLA CPU runtime (3+ seeds at width 256). `test_fused.py`
    guards against this.
    """
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class MLP(nn.Module):
    """Dense layers with an activation after each hidden layer (and after the last if asked)."""

    hidden_dims: Sequence[int]
    output_dim: int | None = None
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    layer_norm: bool = False
    norm_after_activation: bool = False
    """Where LayerNorm sits in a hidden layer: Dense → LayerNorm → activation (off, as RLPD's
    code) or Dense → activation → LayerNorm (on, as the code of FQL, Q-chunking, DQC and
    CORL's ReBRAC)."""
    spectral_norm: bool = False
    """Spectrally normalise the hidden layers (not the output layer)."""
    output_scale: float = 1.0
    """Orthogonal scale of the output layer (small values start a policy near zero)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden_layer = SpectralDense if self.spectral_norm else nn.Dense
        for width in self.hidden_dims:
            x = hidden_layer(width, kernel_init=default_init())(x)
            if self.layer_norm and not self.norm_after_activation:
                x = nn.LayerNorm()(x)
            x = self.activation(x)
            if self.layer_norm and self.norm_after_activation:
                x = nn.LayerNorm()(x)
        if self.output_dim is not None:
            x = nn.Dense(self.output_dim, kernel_init=default_init(self.output_scale))(x)
        return x

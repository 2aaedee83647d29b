"""Spectral normalisation (Miyato et al. 2018): a dense layer whose kernel is divided by an
estimate of its largest singular value, bounding the layer's Lipschitz constant by about 1.

The estimate uses a persistent vector u (collection "spectral", not a parameter) and one step
of power iteration: v = W u / |W u|, u' = Wᵀ v / |Wᵀ v|, σ = vᵀ W u' (gradients flow through
W only). The forward pass never changes u; the library advances it once per gradient step
(`valorl.agents.base.grad_step`), so σ tracks the kernel as training moves it.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = "spectral"


def _normalize(x: jax.Array) -> jax.Array:
    return x / (jnp.linalg.norm(x) + 1e-12)


class SpectralDense(nn.Module):
    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        u = self.variable(
            COLLECTION,
            "u",
            lambda: _normalize(jax.random.normal(self.make_rng("params"), (self.features,))),
        )
        v = jax.lax.stop_gradient(_normalize(kernel @ u.value))
        u_next = jax.lax.stop_gradient(_normalize(kernel.T @ v))
        if self.is_mutable_collection(COLLECTION) and not self.is_initializing():
            u.value = u_next
        sigma = v @ kernel @ u_next
        return x @ (kernel / sigma) + bias

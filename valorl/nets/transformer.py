"""A small causal transformer (GPT-style) over token sequences, with a task embedding.

The backbone of JOWA's world-action model (Cheng et al. 2024, Sec. 3.2): token embeddings plus
learned position embeddings plus a task (game) embedding added to every token, pre-LayerNorm
blocks of causal self-attention and an MLP (Radford et al. 2019, GPT-2), a final LayerNorm.
Position t attends to positions ≤ t only, so a prediction at t never depends on a later token.

With `decode` the same parameters step one token at a time through a key/value cache (the
"cache" collection: `init` with full-length tokens makes it, each call with one token per row
appends to it), so generating a sequence costs one position per token instead of a full pass.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Block(nn.Module):
    """Pre-LN residual block: x + attention(LN(x)), then x + MLP(LN(x))."""

    width: int
    heads: int
    mlp_ratio: int = 4
    decode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=self.width, decode=self.decode
        )(h, h, mask=mask)
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.mlp_ratio * self.width)(h)
        return x + nn.Dense(self.width)(nn.gelu(h))


class CausalTransformer(nn.Module):
    """tokens (B, T) int, tasks (B,) int -> hidden states (B, T, width)."""

    vocab_size: int
    num_tasks: int
    max_length: int
    width: int = 128
    depth: int = 4
    heads: int = 4
    decode: bool = False
    """Step through a key/value cache, one token per row and call (module docstring)."""

    @nn.compact
    def __call__(self, tokens: jax.Array, tasks: jax.Array) -> jax.Array:
        x = nn.Embed(self.vocab_size, self.width, name="tokens")(tokens)
        positions = self.param(
            "positions", nn.initializers.normal(0.02), (self.max_length, self.width)
        )
        x = (
            x
            + self.position_embeddings(positions, tokens.shape[-1])
            + nn.Embed(self.num_tasks, self.width, name="tasks")(tasks)[..., None, :]
        )
        # a cached step attends to every filled slot of its cache (flax masks the rest)
        mask = None if self.decode else nn.make_causal_mask(tokens)
        for _ in range(self.depth):
            x = Block(self.width, self.heads, decode=self.decode)(x, mask)
        return nn.LayerNorm()(x)

    def position_embeddings(self, positions: jax.Array, length: int) -> jax.Array:
        """The first `length` rows, or in a cached step the row of the next position."""
        if not self.decode:
            return positions[:length]
        initialised = self.has_variable("cache", "position")
        position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
        if not initialised:  # `init` with the full-length tokens
            return positions[:length]
        rows = jax.lax.dynamic_slice_in_dim(positions, position.value, length)
        position.value = position.value + length
        return rows

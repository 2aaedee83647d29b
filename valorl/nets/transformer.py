"""A small causal transformer (GPT-style) over token sequences, with a task embedding.

The backbone of JOWA's world-action model (Cheng et al. 2024, Sec. 3.2): token embeddings plus
learned position embeddings plus a task (game) embedding added to every token, pre-LayerNorm
blocks of causal self-attention and an MLP (Radford et al. 2019, GPT-2), a final LayerNorm.
Position t attends to positions ≤ t only, so a prediction at t never depends on a later token.
"""

from __future__ import annotations

import flax.linen as nn
import jax


class Block(nn.Module):
    """Pre-LN residual block: x + attention(LN(x)), then x + MLP(LN(x))."""

    width: int
    heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.width)(
            h, h, mask=mask
        )
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

    @nn.compact
    def __call__(self, tokens: jax.Array, tasks: jax.Array) -> jax.Array:
        length = tokens.shape[-1]
        x = nn.Embed(self.vocab_size, self.width, name="tokens")(tokens)
        positions = self.param(
            "positions", nn.initializers.normal(0.02), (self.max_length, self.width)
        )
        x = (
            x
            + positions[:length]
            + nn.Embed(self.num_tasks, self.width, name="tasks")(tasks)[..., None, :]
        )
        mask = nn.make_causal_mask(tokens)
        for _ in range(self.depth):
            x = Block(self.width, self.heads)(x, mask)
        return nn.LayerNorm()(x)

"""A small decoder-only transformer with a key-value cache, for sampling one token at a time.

The same module is the language model (outputs = vocabulary logits) and the value model of
value-guided decoding (outputs = 1, a scalar V(prefix) at every position, initialised to zero
as in VAS, Han et al. 2024, Sec. 4). Pre-LayerNorm GPT-2 blocks (Radford et al. 2019).

Prompts are left-padded so that every row's prompt ends in the same column; a position's
embedding is its index among the row's real tokens (so padding never shifts it) and padded
keys are masked. The cache is explicit, a tuple of per-layer (keys, values) arrays of shape
(batch, heads, max_length, head_width): a call with `cache` writes its tokens' keys and values
at columns [index, index + T) and attends over the whole cache up to each query's column, so a
prompt is encoded in one call and each new token in another, and the result equals one pass
over the whole sequence (tests/test_lm_model.py).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from valorl.lm.tokenizer import PAD


class LayerCache(NamedTuple):
    keys: jax.Array  # (B, heads, L, head_width)
    values: jax.Array


Cache = tuple[LayerCache, ...]


class CachedSelfAttention(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        key_valid: jax.Array,
        cache: LayerCache | None,
        index: jax.Array | int,
    ) -> tuple[jax.Array, LayerCache | None]:
        batch, length, _ = x.shape
        head_width = self.width // self.heads

        def project(name: str) -> jax.Array:
            y = nn.Dense(self.width, name=name)(x).reshape(batch, length, self.heads, head_width)
            return y.transpose(0, 2, 1, 3)  # (B, heads, T, head_width)

        q, k, v = project("query"), project("key"), project("value")
        if cache is None:
            keys, values, query_columns = k, v, jnp.arange(length)
        else:
            at = (0, 0, index, 0)
            keys = jax.lax.dynamic_update_slice(cache.keys, k.astype(cache.keys.dtype), at)
            values = jax.lax.dynamic_update_slice(cache.values, v.astype(cache.values.dtype), at)
            query_columns = index + jnp.arange(length)
            cache = LayerCache(keys, values)
        key_columns = jnp.arange(keys.shape[2])
        causal = key_columns[None, :] <= query_columns[:, None]  # (T, L)
        allowed = causal[None, None] & key_valid[:, None, None, :]  # (B, 1, T, L)
        scores = jnp.einsum("bhtd,bhld->bhtl", q, keys) / jnp.sqrt(head_width)
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        attended = jnp.einsum("bhtl,bhld->bhtd", jax.nn.softmax(scores, axis=-1), values)
        attended = attended.transpose(0, 2, 1, 3).reshape(batch, length, self.width)
        return nn.Dense(self.width, name="out")(attended), cache


class DecoderBlock(nn.Module):
    width: int
    heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x, key_valid, cache, index):
        h, cache = CachedSelfAttention(self.width, self.heads)(
            nn.LayerNorm()(x), key_valid, cache, index
        )
        x = x + h
        h = nn.Dense(self.mlp_ratio * self.width)(nn.LayerNorm()(x))
        return x + nn.Dense(self.width)(nn.gelu(h)), cache


class DecoderLM(nn.Module):
    """tokens (B, T), positions (B, T), key_valid (B, T or cache length) -> outputs (B, T, O).

    `outputs` None: vocabulary logits; 1: a value head with zero-initialised weights."""

    vocab_size: int
    max_length: int
    width: int = 64
    depth: int = 2
    heads: int = 4
    outputs: int | None = None

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        key_valid: jax.Array,
        cache: Cache | None = None,
        index: jax.Array | int = 0,
    ) -> tuple[jax.Array, Cache | None]:
        table = self.param("positions", nn.initializers.normal(0.02), (self.max_length, self.width))
        x = nn.Embed(self.vocab_size, self.width, name="tokens")(tokens) + table[positions]
        layers = []
        for depth in range(self.depth):
            x, layer = DecoderBlock(self.width, self.heads)(
                x, key_valid, None if cache is None else cache[depth], index
            )
            layers.append(layer)
        x = nn.LayerNorm()(x)
        if self.outputs is None:
            out = nn.Dense(self.vocab_size, name="logits")(x)
        else:
            out = nn.Dense(self.outputs, kernel_init=nn.initializers.zeros, name="value")(x)
        return out, None if cache is None else tuple(layers)

    def empty_cache(self, batch: int, dtype=jnp.float32) -> Cache:
        shape = (batch, self.heads, self.max_length, self.width // self.heads)
        return tuple(
            LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(self.depth)
        )


def positions_of(valid: jax.Array) -> jax.Array:
    """A token's index among its row's real tokens (`valid`); padding counts as position 0."""
    return jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0)


def forward(model: DecoderLM, params, tokens: jax.Array) -> jax.Array:
    """One uncached pass over whole sequences: outputs (B, T, O). PAD on either side of a row's
    tokens is masked as a key."""
    valid = tokens != PAD
    out, _ = model.apply(params, tokens, positions_of(valid), valid)
    return out


def policy_logits(logits: jax.Array) -> jax.Array:
    """The policy's logits: PAD is never a token the policy emits (it only fills rows), so its
    logit is pushed far below the others (finite, so a masked log-probability times 0 is 0)."""
    return logits.astype(jnp.float32).at[..., PAD].set(-1e9)


def token_logprobs(model: DecoderLM, params, tokens: jax.Array) -> jax.Array:
    """log π(tokens[:, t] | tokens[:, <t]) for t ≥ 1: (B, T − 1), teacher-forced in one pass."""
    logits = forward(model, params, tokens)[:, :-1]
    logp = jax.nn.log_softmax(policy_logits(logits), axis=-1)
    return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]

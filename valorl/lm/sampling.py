"""Batched sampling with a key-value cache: temperature, top-k, a stop token, and an optional
guide that reshapes every step's logits (value-guided decoding, valorl/lm/decoding.py).

The prompt is encoded in one call, then each new token costs one call over a single column; the
whole generation is one `lax.scan`, so it compiles once per shape and runs under `vmap` across
seeds. Rows stop independently at EOS: later columns hold PAD and are masked.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from valorl.errors import ValorlError
from valorl.lm.model import DecoderLM, policy_logits, positions_of
from valorl.lm.tokenizer import EOS, PAD


class Generation(NamedTuple):
    tokens: jax.Array
    """(B, N) int32 generated tokens; PAD after a row's EOS."""
    mask: jax.Array
    """(B, N) float32: 1 for generated tokens, the EOS included."""
    logprobs: jax.Array
    """(B, N) log π(token) under the model's own distribution at temperature 1 (0 where
    masked): what the sampler's policy was before any temperature, top-k or guide."""


class Guide(Protocol):
    """Reshapes the logits of every sampling step; carries its own state (e.g. a value
    model's cache). A pytree, so that it passes through `jit`."""

    def start(self, prompts: jax.Array) -> Any: ...

    def adjust(self, state: Any, logits: jax.Array, key: jax.Array) -> jax.Array: ...

    def advance(self, state: Any, tokens: jax.Array, alive: jax.Array) -> Any: ...


def filter_top_k(logits: jax.Array, top_k: int) -> jax.Array:
    """Logits outside each row's k largest set to −inf (top_k 0: unchanged)."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def choose(logits: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
    """Sample from softmax(top-k(logits) / temperature); temperature 0 is greedy."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = filter_top_k(logits, top_k) / temperature
    return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)


def generate(
    model: DecoderLM,
    params: Any,
    prompts: jax.Array,
    key: jax.Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    guide: Guide | None = None,
) -> Generation:
    """Continue every left-padded prompt (B, P) by up to `max_new_tokens` tokens."""
    batch, prompt_length = prompts.shape
    if prompt_length + max_new_tokens > model.max_length:
        raise ValorlError(
            f"prompts of {prompt_length} tokens plus {max_new_tokens} new ones exceed the "
            f"model's context of {model.max_length}"
        )
    valid = jnp.zeros((batch, model.max_length), bool)
    valid = valid.at[:, :prompt_length].set(prompts != PAD)
    positions = positions_of(valid[:, :prompt_length])
    logits, cache = model.apply(
        params, prompts, positions, valid, cache=model.empty_cache(batch), index=0
    )
    guide_state = None if guide is None else guide.start(prompts)

    def step(carry, inputs):
        cache, valid, logits, position, done, guide_state = carry
        column, key = inputs
        raw = policy_logits(logits)
        logits = (
            raw if guide is None else guide.adjust(guide_state, raw, jax.random.fold_in(key, 1))
        )
        token = choose(logits, key, temperature, top_k)
        alive = ~done
        token = jnp.where(alive, token, PAD)
        logprob = jnp.take_along_axis(jax.nn.log_softmax(raw), token[:, None], axis=-1)[:, 0]
        if guide is not None:
            guide_state = guide.advance(guide_state, token, alive)
        valid = valid.at[:, column].set(alive)
        position = position + 1
        out, cache = model.apply(
            params, token[:, None], position[:, None], valid, cache=cache, index=column
        )
        carry = (cache, valid, out[:, -1], position, done | (token == EOS), guide_state)
        return carry, (token, alive.astype(jnp.float32), jnp.where(alive, logprob, 0.0))

    carry = (
        cache,
        valid,
        logits[:, -1],
        positions[:, -1],
        jnp.zeros(batch, bool),
        guide_state,
    )
    columns = prompt_length + jnp.arange(max_new_tokens)
    _, (tokens, mask, logprobs) = jax.lax.scan(
        step, carry, (columns, jax.random.split(key, max_new_tokens))
    )
    return Generation(tokens.T, mask.T, logprobs.T)

"""The small decoder and its sampler: the cache changes nothing, padding changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valorl.errors import ValorlError
from valorl.lm.model import DecoderLM, forward, policy_logits, token_logprobs
from valorl.lm.sampling import choose, filter_top_k, generate
from valorl.lm.tokenizer import EOS, PAD, CharTokenizer

TOKENIZER = CharTokenizer()
MODEL = DecoderLM(TOKENIZER.vocab_size, max_length=16, width=16, depth=2, heads=2)
# compiled once each: run eagerly, every layer's operations would compile one by one
APPLY = jax.jit(MODEL.apply)
FORWARD = jax.jit(forward, static_argnums=0)
GENERATE = jax.jit(generate, static_argnums=(0, 4, 5, 6))
TOKEN_LOGPROBS = jax.jit(token_logprobs, static_argnums=0)


@pytest.fixture(scope="module")
def params():
    tokens = jnp.zeros((1, 4), jnp.int32)
    params = jax.jit(MODEL.init)(jax.random.key(0), tokens, tokens, tokens == 0)
    # larger weights than the initialisation's, so that sampled tokens vary and EOS occurs
    return jax.tree.map(lambda x: 3 * x, params)


def test_prefill_then_steps_equal_one_pass(params):
    tokens = jnp.asarray(TOKENIZER.encode_batch(["12+3=45", "7*8=65"]))
    full = FORWARD(MODEL, params, tokens)
    split = 4
    valid = jnp.zeros((2, MODEL.max_length), bool).at[:, : tokens.shape[1]].set(tokens != PAD)
    positions = jnp.maximum(jnp.cumsum(tokens != PAD, axis=-1) - 1, 0)
    out, cache = APPLY(
        params, tokens[:, :split], positions[:, :split], valid, MODEL.empty_cache(2), 0
    )
    outs = [out]
    for column in range(split, tokens.shape[1]):
        out, cache = APPLY(
            params,
            tokens[:, column : column + 1],
            positions[:, column : column + 1],
            valid,
            cache,
            column,
        )
        outs.append(out)
    real = np.asarray(tokens != PAD)  # a padding column's query attends to nothing: no output
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1)[real], full[real], atol=1e-5)


def test_left_padding_changes_nothing(params):
    """Up to float32 rounding relative to the logits' size (about 20 here): attention sums over
    more, masked, positions in a different order (an AMD EPYC machine differs by 1.3e-5)."""
    short = jnp.asarray(TOKENIZER.encode_batch(["12+3="]))
    padded = jnp.asarray(TOKENIZER.encode_batch(["12+3="], length=9))
    np.testing.assert_allclose(
        FORWARD(MODEL, params, short)[0, -1],
        FORWARD(MODEL, params, padded)[0, -1],
        atol=1e-5,
        rtol=1e-5,
    )


def test_token_logprobs_are_the_log_softmax_of_the_next_token(params):
    tokens = jnp.asarray(TOKENIZER.encode_batch(["12+3=", "1+1="]))
    logits = FORWARD(MODEL, params, tokens)
    expected = jax.nn.log_softmax(policy_logits(logits[1, 2]))[tokens[1, 3]]
    np.testing.assert_allclose(TOKEN_LOGPROBS(MODEL, params, tokens)[1, 2], expected, atol=1e-6)


def uncached_generate(params, prompts, key, steps, temperature, top_k):
    """The reference: the whole sequence re-encoded for every new token (right-padded to one
    width so that it compiles once; PAD keys are masked and later columns are causal)."""
    batch, length = prompts.shape
    tokens = jnp.concatenate([prompts, jnp.full((batch, steps), PAD, jnp.int32)], axis=1)
    logits_at = jax.jit(lambda tokens, column: forward(MODEL, params, tokens)[:, column])
    done = jnp.zeros(batch, bool)
    out, logps = [], []
    for t, key_t in enumerate(jax.random.split(key, steps)):
        logits = policy_logits(logits_at(tokens, length + t - 1))
        token = jnp.where(done, PAD, choose(logits, key_t, temperature, top_k))
        logp = jax.nn.log_softmax(logits)[jnp.arange(batch), token]
        logps.append(jnp.where(done, 0.0, logp))
        out.append(token)
        done = done | (token == EOS)
        tokens = tokens.at[:, length + t].set(token)
    return jnp.stack(out, 1), jnp.stack(logps, 1)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 3)])
def test_cached_sampling_equals_uncached_sampling(params, temperature, top_k):
    prompts = jnp.asarray(TOKENIZER.encode_batch(["12+3=", "9*9=", "s321=", "1+1="]))
    key = jax.random.key(3)
    sampled = GENERATE(MODEL, params, prompts, key, 8, temperature, top_k)
    tokens, logps = uncached_generate(params, prompts, key, 8, temperature, top_k)
    np.testing.assert_array_equal(sampled.tokens, tokens)
    np.testing.assert_allclose(sampled.logprobs, logps, atol=1e-5)


def test_rows_stop_at_eos(params):
    prompts = jnp.asarray(TOKENIZER.encode_batch(["12+3="] * 32))
    sampled = GENERATE(MODEL, params, prompts, jax.random.key(1), 10)
    tokens, mask = np.asarray(sampled.tokens), np.asarray(sampled.mask)
    stopped = 0
    for row, row_mask in zip(tokens, mask, strict=True):
        ends = np.flatnonzero(row == EOS)
        if len(ends):
            stopped += 1
            assert (row[ends[0] + 1 :] == PAD).all() and (row_mask[ends[0] + 1 :] == 0).all()
            assert (row_mask[: ends[0] + 1] == 1).all()
        else:
            assert (row_mask == 1).all()
    assert 0 < stopped < 32


def test_top_k_keeps_the_k_largest_logits():
    logits = jnp.array([[0.0, 3.0, 1.0, 2.0]])
    assert np.isinf(filter_top_k(logits, 2)).tolist() == [[True, False, True, False]]
    draws = jax.vmap(lambda k: choose(logits, k, 1.0, 1))(jax.random.split(jax.random.key(0), 20))
    assert (draws == 1).all()


def test_a_generation_longer_than_the_context_is_refused(params):
    prompts = jnp.asarray(TOKENIZER.encode_batch(["12+3="]))
    with pytest.raises(ValorlError, match="exceed the model's context of 16"):
        GENERATE(MODEL, params, prompts, jax.random.key(0), 12)

"""Value-guided decoding: β = 0 is plain sampling, a value that prefers a token gets it, the
value cache is the uncached pass, and the selections pick what their scores say.

Compilation is most of the time here, so the tests share a few jitted programs and shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valorl.errors import ValorlError
from valorl.lm.decoding import (
    ValueGuide,
    best_of_n,
    final_values,
    pick_best,
    sample_candidates,
    step_level_q,
    take_candidates,
    value_guided_generate,
)
from valorl.lm.model import DecoderLM, forward, policy_logits, positions_of
from valorl.lm.sampling import Generation, generate
from valorl.lm.tokenizer import EOS, PAD, CharTokenizer

TOKENIZER = CharTokenizer()
VOCAB = TOKENIZER.vocab_size
POLICY = DecoderLM(VOCAB, max_length=16, width=16, depth=2, heads=2)
VALUE = DecoderLM(VOCAB, max_length=16, width=16, depth=2, heads=2, outputs=1)
FAVOURED = TOKENIZER.encode("7")[0]
PROMPTS = jnp.asarray(TOKENIZER.encode_batch(["12+3=", "9*9=", "s321=", "1+1="] * 2))
NEW = 6

GENERATE = jax.jit(generate, static_argnums=(0, 4, 5, 6))
GUIDED = jax.jit(value_guided_generate, static_argnums=(0, 2, 6, 8, 9))
FORWARD = jax.jit(forward, static_argnums=0)
FINAL_VALUES = jax.jit(final_values, static_argnums=0)


def init(model, seed):
    tokens = jnp.zeros((1, 4), jnp.int32)
    return jax.jit(model.init)(jax.random.key(seed), tokens, tokens, tokens == 0)


@pytest.fixture(scope="module")
def policy_params():
    # the initialisation's small weights: a flat policy, sampled tokens vary, EOS occurs
    return init(POLICY, 0)


@pytest.fixture(scope="module")
def value_params():
    """A random value model: the zero-initialised head replaced by a random one."""
    params = init(VALUE, 1)
    head = jax.random.normal(jax.random.key(2), (16, 1))
    return {"params": {**params["params"], "value": {"kernel": head, "bias": jnp.ones(1)}}}


@pytest.fixture(scope="module")
def token_value_params():
    """A value model whose output at a column depends only on that column's token and is
    largest, by a margin, for FAVOURED: the blocks are zeroed (the residual stream carries the
    token embedding alone), positions are zeroed, and the head reads the direction of
    FAVOURED's normalised embedding, so V(prefix + a) is the correlation of a's embedding with
    FAVOURED's."""
    params = init(VALUE, 3)["params"]
    params = {
        name: jax.tree.map(jnp.zeros_like, tree) if name.startswith("DecoderBlock") else tree
        for name, tree in params.items()
    }
    embedding = jax.random.normal(jax.random.key(4), (VOCAB, 16))
    params["tokens"] = {"embedding": embedding}
    params["positions"] = jnp.zeros_like(params["positions"])
    favoured = embedding[FAVOURED]
    normalised = (favoured - favoured.mean()) / favoured.std()
    params["value"] = {"kernel": normalised[:, None] / 16, "bias": jnp.zeros(1)}
    return {"params": params}


def token_values(params) -> np.ndarray:
    """V of every token id under `token_value_params`, (VOCAB,)."""
    return np.asarray(FORWARD(VALUE, params, jnp.arange(VOCAB)[None])[0, :, 0])


def test_the_token_value_prefers_the_favoured_token(token_value_params):
    values = token_values(token_value_params)
    assert values[FAVOURED] == pytest.approx(1.0, abs=1e-3)
    assert np.delete(values, FAVOURED).max() < 0.9


def test_beta_zero_is_plain_top_k_sampling(policy_params, value_params):
    key = jax.random.key(5)
    plain = GENERATE(POLICY, policy_params, PROMPTS, key, NEW, 1.0, 3)
    guided = GUIDED(POLICY, policy_params, VALUE, value_params, PROMPTS, key, NEW, 0.0, 3, 1.0)
    np.testing.assert_array_equal(guided.tokens, plain.tokens)
    np.testing.assert_array_equal(guided.mask, plain.mask)
    np.testing.assert_allclose(guided.logprobs, plain.logprobs, atol=1e-6)
    assert (plain.mask == 0).any() and len(np.unique(plain.tokens)) > 3  # not degenerate


def test_guided_tokens_stay_among_the_policys_top_k(policy_params, token_value_params):
    k = 3
    guided = GUIDED(
        POLICY,
        policy_params,
        VALUE,
        token_value_params,
        PROMPTS,
        jax.random.key(7),
        NEW,
        1e3,
        k,
        1.0,
    )
    sequences = jnp.concatenate([PROMPTS, guided.tokens], axis=1)
    logits = policy_logits(FORWARD(POLICY, policy_params, sequences))  # PAD never emitted
    logits = logits[:, PROMPTS.shape[1] - 1 : -1]
    top = np.asarray(jax.lax.top_k(logits, k)[1])  # (B, N, k)
    tokens, mask = np.asarray(guided.tokens), np.asarray(guided.mask) > 0
    in_top = (top == tokens[..., None]).any(-1)
    favoured_in_top = (top == FAVOURED).any(-1)
    assert in_top[mask].all()
    # where the favoured token is a candidate it wins; elsewhere the policy's top-k holds
    assert (tokens[mask & favoured_in_top] == FAVOURED).all()
    assert (mask & favoured_in_top).any() and (mask & ~favoured_in_top).any()


def test_a_large_beta_picks_the_favoured_token_every_step(policy_params, token_value_params):
    @jax.jit
    def sample(beta):  # β traced: one compilation for both
        guide = ValueGuide(VALUE, token_value_params, beta, VOCAB)
        return generate(POLICY, policy_params, PROMPTS, jax.random.key(6), NEW, guide=guide)

    guided = sample(1e3)
    assert (guided.tokens == FAVOURED).all() and (guided.mask == 1).all()
    assert (sample(0.0).tokens == FAVOURED).mean() < 0.3  # the policy alone rarely writes it


def test_the_value_cache_after_advance_equals_one_pass(value_params):
    guide = ValueGuide(VALUE, value_params, beta=1.0, top_k=4)
    d = TOKENIZER.encode("0123456789")
    # rows stop at different steps; what follows a row's EOS is never written
    steps = jnp.asarray(
        [[d[4], d[5], d[6]], [d[7], EOS, d[3]], [d[8], d[9], EOS], d[:3]] * 2, jnp.int32
    )
    candidates = jnp.asarray([[2, 3], [4, 5], [6, 7], [8, 9]] * 2, jnp.int32)

    @jax.jit
    def run(value_params):
        guide_ = guide.replace(value_params=value_params)
        state = guide_.start(PROMPTS)
        alive = jnp.ones(len(PROMPTS), bool)
        written = []
        for t in range(steps.shape[1]):
            token = jnp.where(alive, steps[:, t], PAD)
            state = guide_.advance(state, token, alive)
            written.append(token)
            alive = alive & (token != EOS)
        return state, jnp.stack(written, 1), alive, guide_.candidate_values(state, candidates)

    state, written, alive, values = run(value_params)
    sequences = jnp.concatenate([PROMPTS, written], axis=1)
    width = sequences.shape[1]
    assert int(state.column) == width
    valid = sequences != PAD
    np.testing.assert_array_equal(state.valid[:, :width], valid)
    full_valid = jnp.zeros((len(PROMPTS), VALUE.max_length), bool).at[:, :width].set(valid)
    _, cache = jax.jit(VALUE.apply)(
        value_params, sequences, positions_of(valid), full_valid, VALUE.empty_cache(8), 0
    )
    real = np.asarray(valid)
    for mine, theirs in zip(state.cache, cache, strict=True):
        for a, b in zip(mine, theirs, strict=True):  # (B, heads, L, d): compare real columns
            a = np.moveaxis(np.asarray(a[:, :, :width]), 2, 1)
            b = np.moveaxis(np.asarray(b[:, :, :width]), 2, 1)
            np.testing.assert_allclose(a[real], b[real], atol=1e-5)
    # a candidate's value is V of the prefix plus the candidate, as an uncached pass reads it
    live = np.asarray(alive)
    assert live.any() and not live.all()
    for j in range(candidates.shape[1]):
        extended = jnp.concatenate([sequences, candidates[:, j : j + 1]], axis=1)
        expected = FORWARD(VALUE, value_params, extended)[:, -1, 0]
        np.testing.assert_allclose(values[live, j], expected[live], atol=1e-5)


def test_pick_best_takes_the_highest_score_and_the_first_of_ties():
    scores = jnp.array([0.1, 0.7, 0.3, 0.5, 0.5, 0.2, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(pick_best(scores, 3), [1, 0, 0])
    with pytest.raises(ValorlError, match="not B·n"):
        pick_best(scores, 2)


def test_best_of_n_gathers_the_chosen_rows():
    n = 3
    tokens = jnp.arange(6 * 2, dtype=jnp.int32).reshape(6, 2)
    candidates = Generation(tokens, jnp.ones((6, 2)), -tokens.astype(jnp.float32))
    chosen = best_of_n(candidates, jnp.array([0.0, 2.0, 1.0, 5.0, 5.0, 4.0]), n)
    np.testing.assert_array_equal(chosen.tokens, tokens[jnp.array([1, 3])])
    np.testing.assert_array_equal(chosen.logprobs, -tokens[jnp.array([1, 3])])
    same = take_candidates(candidates, jnp.array([1, 0]), n)
    np.testing.assert_array_equal(same.tokens, chosen.tokens)


def test_final_values_read_the_last_valid_token(value_params):
    prompts = PROMPTS[:3]
    tokens = jnp.asarray([[4, 5, EOS, PAD], [6, 7, 8, 9], [EOS, PAD, PAD, PAD]])
    mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], jnp.float32)
    values = FINAL_VALUES(VALUE, value_params, prompts, tokens, mask)
    outputs = FORWARD(VALUE, value_params, jnp.concatenate([prompts, tokens], axis=1))[..., 0]
    p = prompts.shape[1]
    expected = [outputs[0, p + 2], outputs[1, p + 3], outputs[2, p]]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert len(np.unique(np.asarray(values))) == 3


def test_best_of_n_by_value_is_the_argmax_of_the_candidates_values(policy_params, value_params):
    key, n = jax.random.key(8), 2
    prompts = PROMPTS[: len(PROMPTS) // n]

    @jax.jit
    def run(policy_params, value_params):  # one compilation for the three
        candidates = sample_candidates(POLICY, policy_params, prompts, key, n, NEW)
        repeated = jnp.repeat(prompts, n, axis=0)
        scores = final_values(VALUE, value_params, repeated, candidates.tokens, candidates.mask)
        chosen = best_of_n(candidates, scores, n)
        return candidates, scores, chosen

    candidates, scores, chosen = run(policy_params, value_params)
    assert candidates.tokens.shape == (len(prompts) * n, NEW)
    assert len(np.unique(np.asarray(scores))) == len(scores)  # the candidates differ
    best = np.asarray(scores).reshape(len(prompts), n).argmax(1)
    rows = np.arange(len(prompts)) * n + best
    for field, expected in zip(chosen, candidates, strict=True):
        np.testing.assert_array_equal(field, np.asarray(expected)[rows])


def test_step_level_q_keeps_the_continuation_the_value_prefers(policy_params, token_value_params):
    m, step, new = 32, 2, 7  # three full steps (the scan) and a last one of 1 token
    run = jax.jit(step_level_q, static_argnums=(0, 2, 6, 7, 8))
    key = jax.random.key(10)
    chosen = run(POLICY, policy_params, VALUE, token_value_params, PROMPTS, key, m, step, new)
    tokens, mask = np.asarray(chosen.tokens), np.asarray(chosen.mask)
    assert tokens.shape == (len(PROMPTS), new)
    for row, row_mask in zip(tokens, mask, strict=True):  # PAD and mask 0 after EOS
        ends = np.flatnonzero(row == EOS)
        stop = ends[0] + 1 if len(ends) else len(row)
        assert (row_mask[:stop] == 1).all() and (row_mask[stop:] == 0).all()
        assert (row[stop:] == PAD).all()
    # the first step exactly: of the candidates, the first whose last token has the top value
    prefix = jnp.concatenate([jnp.full((len(PROMPTS), new - step), PAD), PROMPTS], axis=1)
    first = jax.random.split(key, 4)[0]
    candidates = GENERATE(POLICY, policy_params, jnp.repeat(prefix, m, 0), first, step, 1.0, 0)
    last = np.asarray(candidates.mask).sum(1).astype(int) - 1
    ends = np.asarray(candidates.tokens)[np.arange(len(last)), last]
    best = token_values(token_value_params)[ends].reshape(len(PROMPTS), m).argmax(1)
    expected = np.asarray(candidates.tokens)[np.arange(len(PROMPTS)) * m + best]
    np.testing.assert_array_equal(tokens[:, :step], expected)
    # every step: steps end in the favoured token far more often than the policy writes it
    step_ends = tokens[:, [1, 3, 5, 6]][mask[:, [1, 3, 5, 6]] > 0]
    plain_rate = (ends == FAVOURED).mean()  # the first step's candidates: the policy's own
    assert (step_ends == FAVOURED).mean() > max(0.5, 5 * plain_rate)


def test_contexts_too_short_are_refused(policy_params, value_params):
    short = DecoderLM(VOCAB, max_length=8, width=16, depth=2, heads=2, outputs=1)
    with pytest.raises(ValorlError, match="value model's context of 8"):
        value_guided_generate(
            POLICY, policy_params, short, value_params, PROMPTS, jax.random.key(0), 5, 1.0
        )
    with pytest.raises(ValorlError, match="policy's context of 16"):
        step_level_q(
            POLICY, policy_params, VALUE, value_params, PROMPTS, jax.random.key(0), 2, 2, 12
        )
    with pytest.raises(ValorlError, match="top_k >= 1"):
        ValueGuide(VALUE, value_params, 1.0, 0).start(PROMPTS)

"""Value-guided decoding: a learned value steers a frozen language model without changing it.

Three ways to spend a value model V at decoding time, from the finest grain to the coarsest:

- `ValueGuide` (Value Augmented Sampling, Han et al. 2024, arXiv:2405.06639): every token is
  drawn from the policy's top-k candidates with logits shifted by β·V(prefix + candidate), a
  `Guide` for `valorl.lm.sampling.generate`;
- `step_level_q`: M sampled continuations of a few tokens each, the one with the highest V
  kept, repeated until the answer ends (V as a step-level Q-value, as in step-level verifiers;
  Lightman et al. 2023, "Let's Verify Step by Step");
- `best_of_n`: N complete answers, the one with the highest score kept, the score being V of
  the complete answer (a learned verifier, the fair comparison) or the task's verifier itself
  (the ceiling no learned value can beat; Cobbe et al. 2021, "Training Verifiers to Solve Math
  Word Problems").

Value convention. V reads a left-padded sequence and its output at a column is V of the prefix
up to and including that column's token: V(prompt) at the prompt's last column, V(prompt +
y_1..y_t) at y_t's column. Where the prefix ends in EOS, V estimates the verifier's reward of
that answer; elsewhere the expected final reward of the frozen policy's own completions.

Everything here is a pure function of arrays with fixed shapes: `jax.jit` it with the models,
counts and lengths static.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from valorl.errors import ValorlError
from valorl.lm.model import Cache, DecoderLM, forward, positions_of
from valorl.lm.sampling import Generation, generate
from valorl.lm.tokenizer import EOS, PAD


class ValueGuideState(NamedTuple):
    """The value model's own view of the sequence being generated."""

    cache: Cache
    """The value model's key-value cache, prompt and chosen tokens written."""
    valid: jax.Array
    """(B, value max_length) bool: which cached keys are real tokens."""
    position: jax.Array
    """(B,) int32: the position of the last written token (as in `generate`)."""
    column: jax.Array
    """() int32: the column the next token goes to."""


class ValueGuide(flax.struct.PyTreeNode):
    """Value Augmented Sampling (Han et al. 2024, Eq. 4, with their top-k approximation of
    Sec. 4): the next token is drawn from

        π_β(a | s) ∝ π(a | s) · exp(β · V(s, a)),   a among the k most likely tokens under π,

    where V(s, a) is the value model's output at the candidate's column, V(prefix + a). Logits
    of the k candidates become logits + β·(V − mean_k V) and every other token's −inf; the
    mean changes no probability and keeps the logits on the policy's scale. `generate`'s
    temperature then divides the shifted logits as usual, so it scales β·V too; pass
    `top_k=0` (or the same k) to `generate`. β = 0 is plain top-k sampling, token for token.

    The value model keeps its own cache, prefilled by `start` exactly as `generate` prefills
    the policy's, so a step costs two single-column value calls: one for the k candidates in
    one batched call, one in `advance` to write the chosen token (the protocol's `adjust`
    returns no state, so the candidate's keys cannot be kept). The value model's context must
    hold the prompt and every new token: give it the policy's max_length.

    `beta` is a pytree leaf, so a sweep over β neither recompiles nor needs a new guide type
    (it may even be vmapped); `top_k` is static (VAS uses 20, Transfer-Q 10).
    """

    value_model: DecoderLM = flax.struct.field(pytree_node=False)
    value_params: Any
    beta: float | jax.Array = 1.0
    top_k: int = flax.struct.field(pytree_node=False, default=20)

    def start(self, prompts: jax.Array) -> ValueGuideState:
        """Encode the left-padded prompts (B, P) into the value model's cache."""
        batch, prompt_length = prompts.shape
        if self.top_k < 1:
            raise ValorlError(f"value-guided sampling needs top_k >= 1, got {self.top_k}")
        if prompt_length >= self.value_model.max_length:
            raise ValorlError(
                f"prompts of {prompt_length} tokens leave no room in the value model's "
                f"context of {self.value_model.max_length}"
            )
        valid = jnp.zeros((batch, self.value_model.max_length), bool)
        valid = valid.at[:, :prompt_length].set(prompts != PAD)
        positions = positions_of(valid[:, :prompt_length])
        _, cache = self.value_model.apply(
            self.value_params,
            prompts,
            positions,
            valid,
            cache=self.value_model.empty_cache(batch),
            index=0,
        )
        return ValueGuideState(cache, valid, positions[:, -1], jnp.asarray(prompt_length))

    def candidate_values(self, state: ValueGuideState, candidates: jax.Array) -> jax.Array:
        """V(prefix + candidate) for candidates (B, k) token ids: (B, k), in one batched
        call of one new column.

        The candidates are vmapped with the cache shared rather than tiled k times along the
        batch by hand: the call stays the one `advance` makes, and XLA materialises the k
        written copies of the cache only inside it (a tiled cache would hold them as well),
        then drops them, since only the outputs are kept."""
        valid = state.valid.at[:, state.column].set(True)
        position = (state.position + 1)[:, None]

        def value_of(token: jax.Array) -> jax.Array:
            out, _ = self.value_model.apply(
                self.value_params,
                token[:, None],
                position,
                valid,
                cache=state.cache,
                index=state.column,
            )
            return out[:, 0, 0].astype(jnp.float32)

        return jax.vmap(value_of, in_axes=1, out_axes=1)(candidates)

    def adjust(self, state: ValueGuideState, logits: jax.Array, key: jax.Array) -> jax.Array:
        """The policy's logits (B, vocab) -> the VAS logits: top-k shifted by β·(V − mean),
        −inf elsewhere. `key` is unused (the guide is deterministic)."""
        del key
        k = min(self.top_k, logits.shape[-1])
        top_logits, candidates = jax.lax.top_k(logits, k)
        values = self.candidate_values(state, candidates)
        shifted = top_logits + self.beta * (values - values.mean(axis=-1, keepdims=True))
        out = jnp.full_like(logits, -jnp.inf)
        return out.at[jnp.arange(logits.shape[0])[:, None], candidates].set(shifted)

    def advance(
        self, state: ValueGuideState, tokens: jax.Array, alive: jax.Array
    ) -> ValueGuideState:
        """Write the chosen tokens (B,) into the value cache; rows no longer `alive` get a
        masked key, as in `generate`."""
        valid = state.valid.at[:, state.column].set(alive)
        position = state.position + 1
        _, cache = self.value_model.apply(
            self.value_params,
            tokens[:, None],
            position[:, None],
            valid,
            cache=state.cache,
            index=state.column,
        )
        return ValueGuideState(cache, valid, position, state.column + 1)


def value_guided_generate(
    model: DecoderLM,
    params: Any,
    value_model: DecoderLM,
    value_params: Any,
    prompts: jax.Array,
    key: jax.Array,
    max_new_tokens: int,
    beta: float | jax.Array,
    top_k: int = 20,
    temperature: float = 1.0,
) -> Generation:
    """VAS decoding (`ValueGuide`) with both contexts checked: `generate` with the guide and
    no further top-k. The returned logprobs are the policy's own, before the guide."""
    _check_context(value_model, prompts.shape[1] + max_new_tokens, "value model")
    guide = ValueGuide(value_model, value_params, beta, top_k)
    return generate(model, params, prompts, key, max_new_tokens, temperature, 0, guide)


def sample_candidates(
    model: DecoderLM,
    params: Any,
    prompts: jax.Array,
    key: jax.Array,
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
) -> Generation:
    """n answers per left-padded prompt (B, P): a Generation of B·n rows, row-major (prompt
    i's candidates are rows i·n .. i·n + n − 1; its prompts are `jnp.repeat(prompts, n, 0)`)."""
    if n < 1:
        raise ValorlError(f"need at least one candidate per prompt, got n={n}")
    repeated = jnp.repeat(prompts, n, axis=0)
    return generate(model, params, repeated, key, max_new_tokens, temperature, top_k)


def final_values(
    value_model: DecoderLM,
    value_params: Any,
    prompts: jax.Array,
    tokens: jax.Array,
    mask: jax.Array,
) -> jax.Array:
    """V at each completion's last valid token: (B,) from prompts (B, P), tokens and mask
    (B, N), in one uncached pass over prompt + completion. For a completion ending in EOS this
    is the learned verifier's estimate of its reward; a completion cut at the length cap is
    read at its last token, and an empty one (mask all 0) at the prompt's last column."""
    _check_context(value_model, prompts.shape[1] + tokens.shape[1], "value model")
    sequences = jnp.concatenate([prompts, tokens], axis=1)
    values = forward(value_model, value_params, sequences)[..., 0].astype(jnp.float32)
    last = prompts.shape[1] + jnp.sum(mask > 0, axis=1) - 1
    return jnp.take_along_axis(values, last[:, None], axis=1)[:, 0]


def pick_best(scores: jax.Array, n: int) -> jax.Array:
    """The index in [0, n) of each prompt's highest-scoring candidate: scores (B·n,) row-major
    -> (B,) int32; ties go to the first candidate."""
    if scores.ndim != 1 or scores.shape[0] % n:
        raise ValorlError(f"scores of shape {scores.shape} are not B·n with n={n}")
    return jnp.argmax(scores.reshape(-1, n), axis=1).astype(jnp.int32)


def take_candidates(candidates: Generation, index: jax.Array, n: int) -> Generation:
    """Row i·n + index[i] of every field of a row-major Generation of B·n rows: (B, N)."""
    rows = jnp.arange(index.shape[0]) * n + index
    return Generation(*(field[rows] for field in candidates))


def best_of_n(candidates: Generation, scores: jax.Array, n: int) -> Generation:
    """Best-of-n selection: each prompt's candidate with the highest score (ties to the first).

    `scores` (B·n,) is `final_values` of the candidates (the learned verifier: the fair
    comparison with guided decoding) or the task's rewards of them (`valorl.lm.tasks.rewards`:
    the ceiling). Scoring the same candidates both ways compares the two without sampling
    noise."""
    return take_candidates(candidates, pick_best(scores, n), n)


def step_level_q(
    model: DecoderLM,
    params: Any,
    value_model: DecoderLM,
    value_params: Any,
    prompts: jax.Array,
    key: jax.Array,
    num_candidates: int,
    step_tokens: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
) -> Generation:
    """Step-level Q decoding: at every step, sample `num_candidates` (M) continuations of
    `step_tokens` tokens (fewer where one ends at EOS) per row from the policy, score each by V
    at its last token, V(prefix + continuation) — the Q-value of the step, as a step-level
    verifier scores reasoning steps (Lightman et al. 2023) — and append the best (ties to the
    first). Steps repeat until every row has ended or `max_new_tokens` (N) are written; the last
    step is shorter when `step_tokens` does not divide N. M = 1 is plain sampling.

    Prompts and chosen steps live in one left-padded array of P + N columns, and each step
    re-runs `generate` on it for the M copies of every row: there is no cache across steps.
    Cost per step: the policy encodes B·M sequences of up to P + N columns and samples
    `step_tokens` tokens for each, and the value model makes one uncached pass over B·M
    sequences of P + N columns; ⌈N / step_tokens⌉ steps in all, the ones after every row has
    ended skipped. Re-encoding is cheap for the short prompts of these tasks and keeps every
    shape fixed: one trace for the full steps (a `lax.scan`), one more for a shorter last step.

    Step s samples its candidates with `jax.random.split(key, steps)[s]`, steps = ⌈N /
    step_tokens⌉, from the M copies of each row (`jnp.repeat(prefix, M, 0)`, row-major).
    Returns a Generation (B, N): the chosen tokens, PAD after EOS, their mask, and their log π
    under the policy at temperature 1.
    """
    batch, prompt_length = prompts.shape
    for name, count in (
        ("num_candidates", num_candidates),
        ("step_tokens", step_tokens),
        ("max_new_tokens", max_new_tokens),
    ):
        if count < 1:
            raise ValorlError(f"step-level Q decoding needs {name} >= 1, got {count}")
    width = prompt_length + max_new_tokens
    _check_context(model, width, "policy")
    _check_context(value_model, width, "value model")

    def make_step(length: int):
        def step(carry, key):
            sequences, done = carry
            # the first `length` columns are PAD while fewer than N tokens are written
            prefix = sequences[:, length:]

            def sample(_) -> Generation:
                repeated = jnp.repeat(prefix, num_candidates, axis=0)
                candidates = generate(model, params, repeated, key, length, temperature, top_k)
                scores = final_values(
                    value_model, value_params, repeated, candidates.tokens, candidates.mask
                )
                return best_of_n(candidates, scores, num_candidates)

            def skip(_) -> Generation:
                zeros = jnp.zeros((batch, length), jnp.float32)
                return Generation(jnp.full((batch, length), PAD, jnp.int32), zeros, zeros)

            chosen = jax.lax.cond(done.all(), skip, sample, None)
            alive = ~done[:, None]
            tokens = jnp.where(alive, chosen.tokens, PAD)
            mask = jnp.where(alive, chosen.mask, 0.0)
            logprobs = jnp.where(alive, chosen.logprobs, 0.0)
            sequences = jnp.concatenate([prefix, tokens], axis=1)
            done = done | (tokens == EOS).any(axis=1)
            return (sequences, done), Generation(tokens, mask, logprobs)

        return step

    full_steps, rest = divmod(max_new_tokens, step_tokens)
    keys = jax.random.split(key, full_steps + (rest > 0))
    sequences = jnp.concatenate(
        [jnp.full((batch, max_new_tokens), PAD, jnp.int32), prompts.astype(jnp.int32)], axis=1
    )
    carry = (sequences, jnp.zeros(batch, bool))
    pieces = []
    if full_steps:
        carry, chunks = jax.lax.scan(make_step(step_tokens), carry, keys[:full_steps])
        # (steps, B, step_tokens) -> (B, steps · step_tokens)
        pieces.append(Generation(*(x.transpose(1, 0, 2).reshape(batch, -1) for x in chunks)))
    if rest:
        _, chunk = make_step(rest)(carry, keys[-1])
        pieces.append(chunk)
    return Generation(*(jnp.concatenate(fields, axis=1) for fields in zip(*pieces, strict=True)))


def _check_context(model: DecoderLM, length: int, name: str) -> None:
    if length > model.max_length:
        raise ValorlError(
            f"sequences of {length} tokens exceed the {name}'s context of {model.max_length}"
        )

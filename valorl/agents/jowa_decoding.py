"""JOWA's learned world model as an environment, stepped token by token through a cache.

Planning (`valorl.agents.jowa_planning`) and imagined rollouts (JOWA's data synthesis when
fine-tuning) advance the model the same way (Cheng et al. 2024, Sec. 3.5): from the tokens fed
so far, an action token gives the reward's sign and termination (read at the action token, as
they are trained), then the next frame is generated one token at a time, each fed back, and Q
is read at the frame's last token. The backbone runs in decode mode (`CausalTransformer.decode`):
a token costs one position through a key/value cache instead of a pass over the whole sequence,
which is what makes search and imagination affordable (JOWA's `kv_caching`).

Every function works on B rows in lockstep (one cache slot per row and token).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from valorl.agents.base import Params

INVALID = -1e9
"""Value given to actions a game does not have, so that no maximum or soft maximum picks them."""


class Cursor(flax.struct.PyTreeNode):
    """Where B rows stand in the model: their cache, and the hidden state at the last token."""

    cache: Any
    hidden: jax.Array
    """(B, W): the backbone's output at the last token fed."""
    games: jax.Array
    """(B,): each row's game (its task embedding is added at every token)."""


class Rollout(flax.struct.PyTreeNode):
    """A policy's L steps in the model from B real frames; step 0's frame is the given one."""

    frames: jax.Array
    """(B, L, T) frame tokens."""
    actions: jax.Array
    """(B, L) actions taken."""
    rewards: jax.Array
    """(B, L) predicted expected reward signs (0 at the last step, which is not stepped)."""
    dones: jax.Array
    """(B, L) predicted terminations (False at the last step)."""
    alive: jax.Array
    """(B, L) steps before any predicted termination (the row's episode still runs)."""


@dataclasses.dataclass(frozen=True)
class Decoder:
    """The agent's model in decode mode with fixed parameters."""

    agent: Any
    """The JOWA agent (its critic, vocabulary and context)."""
    module: Any
    """Its `WorldActionModel` with `decode=True`."""
    params: Params

    @classmethod
    def of(cls, agent: Any, state: Any) -> Decoder:
        module = state.model.apply_fn.__self__.clone(decode=True)
        return cls(agent, module, jax.lax.stop_gradient(state.model.params))

    def start(self, frames: jax.Array, games: jax.Array) -> Cursor:
        """Rows whose cache holds frame tokens (B, T) of games (B,), at the frame's last token."""
        rows = frames.shape[0]
        tokens = jnp.zeros((rows, self.module.max_length), jnp.int32)
        shapes = jax.eval_shape(
            lambda: self.module.init(jax.random.key(0), tokens, games, method="hidden")
        )
        cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
        cursor = Cursor(cache, jnp.zeros((rows, self.module.width)), games)
        return self.feed_all(cursor, frames)

    def feed(self, cursor: Cursor, tokens: jax.Array) -> Cursor:
        """One token per row (B,) appended; the hidden state moves to it."""
        hidden, variables = self.module.apply(
            {"params": self.params, "cache": cursor.cache},
            tokens[:, None],
            cursor.games,
            method="hidden",
            mutable=["cache"],
        )
        return cursor.replace(cache=variables["cache"], hidden=hidden[:, 0])

    def feed_all(self, cursor: Cursor, tokens: jax.Array) -> Cursor:
        """Tokens (B, n) appended in order."""

        def one(cursor, token):
            return self.feed(cursor, token), None

        return jax.lax.scan(one, cursor, tokens.T)[0]

    def call(self, method: str, hidden: jax.Array) -> Any:
        return self.module.apply({"params": self.params}, hidden, method=method)

    def q(self, cursor: Cursor, valid: jax.Array) -> jax.Array:
        """The ensemble-mean Q-values (B, A) at the cursor, invalid actions (B, A) at INVALID."""
        values = self.agent.critic.value(self.call("q", cursor.hidden)).mean(axis=0)
        return jnp.where(valid, values, INVALID)

    def step(
        self, cursor: Cursor, actions: jax.Array, key: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array, Cursor]:
        """Actions (B,) taken at a frame's last token: the expected reward sign (B,), whether
        the episode ends (B,, termination more likely than not), the next frame's tokens
        (B, T; the most likely, or sampled with `key`) and the cursor at its last token."""
        cursor = self.feed(cursor, self.agent.vocab_size + actions.astype(jnp.int32))
        _, reward_logits, done_logits = self.call("world", cursor.hidden)
        probs = jax.nn.softmax(reward_logits)
        reward = probs[:, 2] - probs[:, 0]
        done = jax.nn.softmax(done_logits)[:, 1] > 0.5
        tokens_per_frame = self.module.max_length // self.agent.context - 1
        keys = None if key is None else jax.random.split(key, tokens_per_frame)

        def next_token(cursor, key_j):
            logits, _, _ = self.call("world", cursor.hidden)
            if key_j is None:
                token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            else:
                token = jax.random.categorical(key_j, logits).astype(jnp.int32)
            return self.feed(cursor, token), token

        cursor, frame = jax.lax.scan(next_token, cursor, keys, length=tokens_per_frame)
        return reward, done, frame.T, cursor

    def rollout(
        self,
        frames: jax.Array,
        games: jax.Array,
        valid: jax.Array,
        epsilon: float,
        key: jax.Array,
    ) -> Rollout:
        """`agent.context` steps of ε-greedy in Q over the valid actions (B, A) from frames
        (B, T), the next frames sampled from the model: JOWA's imagination (reference code,
        `JOWA.imagine`) with its ε-greedy policy; its other policy, beam search, would cost
        `plan_width`·`plan_depth` model steps per imagined step."""
        steps = self.agent.context

        def act(cursor, key):
            greedy = jnp.argmax(self.q(cursor, valid), axis=-1)
            k_explore, k_random = jax.random.split(key)
            uniform = jax.random.categorical(k_random, jnp.where(valid, 0.0, INVALID))
            explore = jax.random.uniform(k_explore, greedy.shape) < epsilon
            return jnp.where(explore, uniform, greedy)

        def one(carry, key):
            cursor, frame, alive = carry
            k_act, k_model = jax.random.split(key)
            action = act(cursor, k_act)
            reward, done, next_frame, cursor = self.step(cursor, action, k_model)
            return (cursor, next_frame, alive & ~done), (frame, action, reward, done, alive)

        k_steps, k_last = jax.random.split(key)
        start = (self.start(frames, games), frames, jnp.ones(frames.shape[0], bool))
        (cursor, frame, alive), out = jax.lax.scan(one, start, jax.random.split(k_steps, steps - 1))
        # the last step's action only: stepping it would run past the model's context
        never = jnp.zeros_like(alive)
        last = (frame, act(cursor, k_last), jnp.zeros_like(out[2][0]), never, alive)
        joined = [
            jnp.moveaxis(jnp.concatenate([x, y[None]]), 0, 1)
            for x, y in zip(out, last, strict=True)
        ]
        return Rollout(*joined)

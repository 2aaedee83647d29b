"""Beam search in a learned world model, scored by Q: JOWA's planner at decision time.

Cheng et al. 2024 (JOWA, Sec. 3.5 and App. C): from the current state, keep `width` paths; at
each of `depth` steps every path's last state is stepped by the world model (its predicted
reward and termination, and the next frame generated token by token), each path is extended by
its best actions under Q, and the `width` extensions with the highest
Σ_t γ^t r̂_t + γ^d·Q(s_d, a) are kept. The leaves are scored
Σ_{t<H} γ^t r̂_t + γ^H·max_a Q(s_H, a) (0 after a predicted termination) and the first action of
the best path is played, correcting Q's errors with the model's short-horizon predictions.
`depth` 0 is greedy in Q.

`beam_search` is written against two functions of a node (any pytree of fixed shape), so it can
be checked on a hand-made model; `plan` applies it to the JOWA agent, whose node is a cursor in
its model stepped through a key/value cache (`valorl.agents.jowa_decoding`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from valorl.agents.jowa_decoding import INVALID, Decoder


def beam_search(
    root: Any,
    q_fn: Callable[[Any], jax.Array],
    step_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array, Any]],
    width: int,
    depth: int,
    discount: float,
) -> jax.Array:
    """The first action of the best path (module docstring). `q_fn(node)` returns the values
    of every action (A,), invalid ones at or below −1e9; `step_fn(node, action)` returns the
    predicted reward, whether the episode ends, and the next node."""
    q_root = q_fn(root)
    if depth == 0:
        return jnp.argmax(q_root)
    k, num_actions = width, q_root.shape[-1]
    padded = jnp.concatenate([q_root, jnp.full(max(k - num_actions, 0), INVALID)])  # width > A
    first_q, first = jax.lax.top_k(padded, k)
    first = jnp.minimum(first, num_actions - 1)
    nodes = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x)[None], k, axis=0), root)
    actions, first_valid = first, first_q > INVALID / 2
    score = jnp.where(first_valid, 0.0, INVALID)
    alive = first_valid
    for d in range(depth):
        reward, done, nodes = jax.vmap(step_fn)(nodes, actions)
        score = score + jnp.where(alive, discount**d * reward, 0.0)
        alive = alive & ~done
        q_next = jax.vmap(q_fn)(nodes)  # (k, A)
        valid = q_next > INVALID / 2
        bootstrap = jnp.where(alive[:, None], discount ** (d + 1) * q_next, 0.0)
        children = jnp.where(valid, score[:, None] + bootstrap, INVALID)
        if d == depth - 1:
            return first[jnp.argmax(children.max(axis=-1))]
        # a finished path keeps one child, so that it is not counted k times
        later = jnp.arange(children.shape[-1]) > jnp.argmax(valid, -1)[:, None]
        children = jnp.where(~alive[:, None] & later, INVALID, children)
        _, flat = jax.lax.top_k(children.reshape(-1), k)
        parent, actions = flat // children.shape[-1], flat % children.shape[-1]
        picked = children.reshape(-1)[flat] > INVALID / 2  # fewer candidates than beams
        nodes = jax.tree.map(lambda x, rows=parent: x[rows], nodes)
        score = jnp.where(picked, score[parent], INVALID)
        alive, first = alive[parent] & picked, first[parent]
    raise AssertionError("unreachable")


def plan(agent, state, frames: jax.Array, games: jax.Array, valid: jax.Array) -> jax.Array:
    """JOWA's action for each row of frame tokens (B, T), games (B,), valid actions (B, A)."""
    tokens_per_frame = frames.shape[-1]
    per_step = tokens_per_frame + 1  # a frame and its action
    if tokens_per_frame + agent.plan_depth * per_step > agent.context * per_step:
        raise ValueError("plan_depth must be below the agent's context")
    decoder = Decoder.of(agent, state)

    def one(frame, game, valid_actions):
        def q_fn(cursor):
            return decoder.q(cursor, valid_actions[None])[0]

        def step_fn(cursor, action):
            reward, done, _, cursor = decoder.step(cursor, action[None])
            return reward[0], done[0], cursor

        root = decoder.start(frame[None], game[None])
        return beam_search(root, q_fn, step_fn, agent.plan_width, agent.plan_depth, agent.discount)

    return jax.vmap(one)(frames, games, valid)

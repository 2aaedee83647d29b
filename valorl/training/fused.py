"""Many updates in one compiled call, for many seeds at once.

`scan_updates` runs `n` agent updates inside `lax.scan`, drawing each batch on the device from a
`BatchSource` (sources.py), and `over_seeds` compiles it for every seed in parallel with
`vmap`: agent states, keys and the source's per-seed state carry a leading seed axis; the
source's shared inputs (a dataset on the device) are the same for every seed. One call
replaces `n × seeds` Python-dispatched steps, which is where valorl's speed comes from.
`update_chunk(agent, n)` is the offline case (batches drawn from a dataset, n-step transitions
for agents that learn from them: `sources.dataset_source`); the environment
phase builds its own chunk the same way (interaction.py).

With one seed the chunk is compiled without `vmap` (the seed axis is dropped and restored
around it): the same computation, without batching rules on every operation.

Compiled functions are kept in bounded caches (`COMPILED`), so repeated calls never recompile
and a process that trains many different agents (a sweep) does not grow without limit;
`free_compiled()` empties them and JAX's own caches between unrelated runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from valorl.agents.base import Agent, Metrics, Spec
from valorl.data.goals import GoalSampling
from valorl.training.sources import BatchSource, dataset_source

ChunkFn = Callable[..., tuple[Any, ...]]
CACHE_SIZE = 32
"""Compiled functions kept per builder: enough for every chunk size and agent of one run."""
COMPILED: list[Any] = []
"""Every bounded cache of compiled functions (see `compiled_cache`)."""


def compiled_cache(builder: Callable) -> Callable:
    """`functools.lru_cache` of `CACHE_SIZE` entries, registered for `free_compiled`."""
    cached = functools.lru_cache(maxsize=CACHE_SIZE)(builder)
    COMPILED.append(cached)
    return cached


def free_compiled() -> None:
    """Forget every compiled function (valorl's caches and JAX's): between sweep groups."""
    for cache in COMPILED:
        cache.cache_clear()
    jax.clear_caches()


def scan_updates(
    agent: Agent,
    source: BatchSource,
    num_updates: int,
    state: Any,
    key: jax.Array,
    source_state: Any,
    shared: Any,
) -> tuple[Any, jax.Array, Metrics]:
    """`num_updates` updates of one seed; returns the new state, the advanced key and the
    metrics averaged over the chunk."""

    def body(carry, _):
        state, key = carry
        key, key_batch, key_update = jax.random.split(key, 3)
        batch = source.sample(
            source_state, shared, key_batch, agent.batch_size, agent.batches_per_update
        )
        state, metrics = agent.update(state, batch, key_update)
        return (state, key), metrics

    (state, key), metrics = jax.lax.scan(body, (state, key), length=num_updates)
    return state, key, jax.tree.map(jnp.mean, metrics)


def over_seeds(fn: Callable, in_axes: tuple, num_seeds: int, donate: tuple[int, ...]) -> ChunkFn:
    """jit(vmap(fn)) over a leading seed axis of the arguments whose `in_axes` is 0 (outputs
    all carry it); with one seed, jit(fn) between dropping and restoring that axis."""
    if num_seeds > 1:
        return jax.jit(jax.vmap(fn, in_axes=in_axes), donate_argnums=donate)

    def single(*args):
        args = [a if axis is None else _index0(a) for a, axis in zip(args, in_axes, strict=True)]
        return jax.tree.map(lambda x: x[None], fn(*args))

    return jax.jit(single, donate_argnums=donate)


def _index0(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[0], tree)


def update_chunk(
    agent: Agent, num_updates: int, num_seeds: int = 2, goals: GoalSampling | None = None
) -> ChunkFn:
    """`(states, keys, data) -> (states, keys, metrics)`: `num_updates` updates on batches
    drawn from a dataset on the device (`sources.dataset_rows`; with `goals`, relabelled
    goal-conditioned rows from `sources.goal_data`), every seed at once, seed axis first;
    states and keys are donated (their buffers are reused for the outputs). `num_seeds` > 1
    vmaps; 1 drops the seed axis inside."""
    return _dataset_chunk(agent, num_updates, num_seeds > 1, goals)


@compiled_cache
def _dataset_chunk(
    agent: Agent, num_updates: int, vmapped: bool, goals: GoalSampling | None
) -> ChunkFn:
    def one_seed(state, key, data):
        return scan_updates(agent, source, num_updates, state, key, None, data)

    source = dataset_source(agent, goals)
    return over_seeds(one_seed, (0, 0, None), 2 if vmapped else 1, donate=(0, 1))


@compiled_cache
def init_seeds(agent: Agent, spec: Spec) -> Callable[[jax.Array], Any]:
    """jit(vmap(agent.init)) over a vector of keys."""
    return jax.jit(jax.vmap(lambda key: agent.init(key, spec)))


def seed_keys(seeds: list[int]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-seed keys for (initialisation, training, evaluation), each with a seed axis.

    Seed `s` gets the same keys whichever other seeds it trains with, so a seed trained in a
    group of five reproduces the same seed trained alone.
    """
    keys = jnp.stack([jax.random.split(jax.random.key(s), 3) for s in seeds])
    return keys[:, 0], keys[:, 1], keys[:, 2]

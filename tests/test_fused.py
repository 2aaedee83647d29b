"""The fused trainer: cached compiled chunks, per-seed keys, chunk metrics, and a regression guard
for an XLA CPU deadlock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import TINY, synthetic_dataset

from valorl.agents import Spec, make_agent
from valorl.training.fused import init_seeds, seed_keys, update_chunk

SPEC = Spec((3,), 2, total_updates=100)  # the same as test_agents_contract: compiled once


def fresh(tree):
    return jax.tree.map(lambda x: x.copy(), tree)


def key_data(keys) -> np.ndarray:
    return np.asarray(jax.random.key_data(keys))


DEADLOCK_GUARD = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp

    from valorl.agents import Spec, make_agent
    from valorl.data.dataset import Batch
    from valorl.training.fused import init_seeds, seed_keys, update_chunk

    agent = make_agent("iql")  # default width 256
    init_keys, train_keys, _ = seed_keys([0, 1, 2])
    states = init_seeds(agent, Spec((17,), 6))(init_keys)
    jax.block_until_ready(states)
    k = jax.random.split(jax.random.key(0), 4)
    data = Batch(
        observations=jax.random.normal(k[0], (512, 17)),
        actions=jax.random.uniform(k[1], (512, 6), minval=-1.0, maxval=1.0),
        rewards=jax.random.normal(k[2], (512,)),
        next_observations=jax.random.normal(k[3], (512, 17)),
        masks=jnp.ones(512),
        dones=jnp.zeros(512),
    )
    states, keys, metrics = update_chunk(agent, 10)(states, train_keys, data)
    jax.block_until_ready((states, keys, metrics))
    assert all(bool(jnp.isfinite(v).all()) for v in metrics.values())
    print("ok")
    """
)


@pytest.mark.expensive  # 28 s at full width; guards a jaxlib 0.10.2 deadlock (see nets/mlp.py)
def test_multi_seed_init_at_full_width_does_not_deadlock():
    """Regression guard: with jaxlib 0.10.2, a jitted seed-vmapped init of several networks using
    orthogonal (LAPACK QR) initialisation hung the XLA CPU runtime for 3+ seeds at width 256.
    Run that workload in a subprocess so that a hang fails this test instead of stalling CI."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", DEADLOCK_GUARD],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("3-seed IQL init + update at width 256 did not finish in 120 s (deadlock?)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_update_chunk_is_cached_per_agent_and_size():
    """update_chunk returns the same compiled function for equal agents and sizes (so repeated
    calls never recompile), and a different one when either differs."""
    agent = make_agent("bc", **TINY["bc"])
    twin = make_agent("bc", **TINY["bc"])
    assert twin is not agent and twin == agent
    assert update_chunk(agent, 3) is update_chunk(twin, 3)
    assert update_chunk(agent, 3) is not update_chunk(agent, 4)
    assert update_chunk(agent, 3) is not update_chunk(make_agent("bc", **TINY["bc"], lr=1e-3), 3)


def test_init_seeds_is_cached_per_agent_and_spec():
    """init_seeds is cached on (agent, spec) by value."""
    agent = make_agent("iql", **TINY["iql"])
    assert init_seeds(agent, SPEC) is init_seeds(
        make_agent("iql", **TINY["iql"]), Spec((3,), 2, 100)
    )
    assert init_seeds(agent, SPEC) is not init_seeds(agent, Spec((3,), 2, 101))
    assert init_seeds(agent, SPEC) is not init_seeds(
        make_agent("iql", **TINY["iql"], beta=1.0), SPEC
    )


def test_seed_keys_are_distinct_per_seed_and_purpose():
    """Every (seed, purpose) pair gets its own key: init, training and evaluation never share
    randomness, and neither do seeds."""
    keys = seed_keys([0, 1, 2])
    assert len(keys) == 3
    for k in keys:
        assert k.shape == (3,)
        assert jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)
    rows = np.concatenate([key_data(k) for k in keys])
    assert len({tuple(r) for r in rows}) == 9


def test_seed_keys_do_not_depend_on_the_group():
    """A seed gets the same keys alone, first, or anywhere in a group, so runs with different
    seed counts reproduce each other seed by seed."""
    alone = seed_keys([1])
    for group, index in (([0, 1, 2], 1), ([1, 7], 0), ([5, 4, 1], 2)):
        together = seed_keys(group)
        for a, g in zip(alone, together, strict=True):
            np.testing.assert_array_equal(key_data(a[0]), key_data(g[index]))


@pytest.fixture(scope="module")
def bc_group():
    """BC (TINY), seeds 0-2 initialised, with the data of test_agents_contract."""
    agent = make_agent("bc", **TINY["bc"])
    init_keys, train_keys, _ = seed_keys([0, 1, 2])
    data = synthetic_dataset(obs_dim=3, action_dim=2).to_batch()
    return agent, init_seeds(agent, SPEC)(init_keys), train_keys, data


def test_chunk_metrics_are_averages_over_the_chunk(bc_group):
    """A chunk of K updates reports, for each seed, the mean of its K per-update metrics."""
    agent, states0, keys0, data = bc_group
    _, _, chunk_metrics = update_chunk(agent, 3)(fresh(states0), fresh(keys0), data)
    states, keys, per_update = fresh(states0), fresh(keys0), []
    for _ in range(3):
        states, keys, m = update_chunk(agent, 1)(states, keys, data)
        per_update.append(m)
    assert set(chunk_metrics) == {"actor/loss", "actor/grad_norm"}
    for name, value in chunk_metrics.items():
        assert value.shape == (3,)
        steps = np.array([np.asarray(m[name]) for m in per_update])  # (K, seeds)
        assert not np.allclose(steps[0], steps[-1])  # the metric moves, so the mean is checked
        assert not np.allclose(steps[:, 0], steps[:, 1])  # and differs between seeds
        np.testing.assert_allclose(np.asarray(value), steps.mean(axis=0), rtol=1e-5)


def test_chunk_donates_its_inputs_and_keeps_compiling_once(bc_group):
    """The states and keys passed in are donated (their buffers reused), and calling a cached
    chunk again with same-shaped inputs does not recompile."""
    agent, states0, keys0, data = bc_group
    fn = update_chunk(agent, 3)
    states, keys = fresh(states0), fresh(keys0)
    out_states, out_keys, _ = fn(states, keys, data)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(states))
    assert keys.is_deleted()
    size = fn._cache_size()
    fn(out_states, out_keys, data)
    assert fn._cache_size() == size

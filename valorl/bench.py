"""Training throughput on synthetic data: how many gradient steps per second valorl sustains.

Measured after compilation, over several fused calls, with the data already on the device,
so the number is the speed of the update itself. Synthetic data has D4RL Hopper-like shapes
by default (observation 17, action 6). The result names the device it ran on (JAX's default
device: a GPU when JAX's CUDA plugin is installed and `JAX_PLATFORMS` allows it).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

from valorl.agents import Spec, make_agent
from valorl.data.dataset import Batch
from valorl.training.fused import init_seeds, seed_keys, update_chunk


def synthetic_batch(size: int, obs_dim: int, action_dim: int, seed: int = 0) -> Batch:
    keys = jax.random.split(jax.random.key(seed), 6)
    return Batch(
        observations=jax.random.normal(keys[0], (size, obs_dim)),
        actions=jax.random.uniform(keys[1], (size, action_dim), minval=-1.0, maxval=1.0),
        rewards=jax.random.normal(keys[2], (size,)),
        next_observations=jax.random.normal(keys[3], (size, obs_dim)),
        masks=(jax.random.uniform(keys[4], (size,)) > 0.01).astype(jnp.float32),
        dones=jnp.zeros((size,)),
        returns_to_go=10.0 * jax.random.normal(keys[5], (size,)),  # for Cal-QL
    )


def device_name() -> str:
    """JAX's default device as `platform:kind`, e.g. `cpu:cpu` or `gpu:NVIDIA H200`."""
    device = jax.devices()[0]
    return f"{device.platform}:{getattr(device, 'device_kind', '')}"


def throughput(
    agent: str = "iql",
    *,
    hidden_dims: tuple[int, ...] = (256, 256),
    batch_size: int = 256,
    seeds: int = 1,
    steps_per_call: int = 1000,
    calls: int = 5,
    obs_dim: int = 17,
    action_dim: int = 6,
    dataset_size: int = 100_000,
) -> dict[str, Any]:
    """Gradient steps per second, summed over seeds, after compilation."""
    model = make_agent(agent, hidden_dims=hidden_dims, batch_size=batch_size)
    updates = max(1, steps_per_call // model.batches_per_update)
    steps = updates * model.batches_per_update
    data = synthetic_batch(dataset_size, obs_dim, action_dim)
    init_keys, train_keys, _ = seed_keys(list(range(seeds)))
    spec = Spec(obs_shape=(obs_dim,), action_dim=action_dim, total_updates=updates * (calls + 1))
    states = init_seeds(model, spec)(init_keys)
    chunk = update_chunk(model, updates, seeds)
    start = time.perf_counter()
    states, keys, metrics = chunk(states, train_keys, data)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(calls):
        states, keys, metrics = chunk(states, keys, data)
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - start
    total = steps * calls * seeds / elapsed
    return {
        "agent": model.name,
        "hidden_dims": list(hidden_dims),
        "batch_size": batch_size,
        "seeds": seeds,
        "updates_per_s": round(total, 1),
        "updates_per_s_per_seed": round(total / seeds, 1),
        "steps_per_call": steps,
        "calls": calls,
        "compile_s": round(compile_s - elapsed / calls, 2),
        "device": device_name(),
        "jax": jax.__version__,
    }


def env_throughput(
    agent: str = "dqn",
    env: str = "Breakout-MinAtar",
    *,
    seeds: int = 1,
    num_envs: int = 1,
    host_loop: bool = False,
    steps_per_chunk: int = 5000,
    chunks: int = 3,
    utd: float | None = None,
    random_actions: bool = False,
    **hyperparameters: Any,
) -> dict[str, Any]:
    """Environment steps and gradient steps per second of online training in `env`, through
    the real run loop (compiled, or `host_loop`), summed over seeds.

    Runs `chunks + 1` logged chunks of `steps_per_chunk` environment steps per seed, with no
    random warm-up and no evaluation, in a temporary run directory; the first chunk (which
    compiles) is left out of the rates. `random_actions` makes every step a warm-up step
    (uniform random actions, no updates): the cost of stepping and storing alone."""
    import json
    import tempfile

    from valorl.training.online import train_online

    with tempfile.TemporaryDirectory() as tmp:
        train_online(
            agent,
            env=env,
            online_steps=steps_per_chunk * (chunks + 1),
            start_steps=steps_per_chunk * (chunks + 1) if random_actions else 0,
            log_every=steps_per_chunk,
            eval_every=steps_per_chunk * (chunks + 1),
            eval_episodes=0,
            seeds=seeds,
            num_envs=num_envs,
            host_loop=host_loop,
            utd=utd,
            out=f"{tmp}/run",
            progress=False,
            **hyperparameters,
        )
        with open(f"{tmp}/run/metrics.jsonl") as f:
            records = [json.loads(line) for line in f][1:]
        with open(f"{tmp}/run/config.json") as f:
            config = json.load(f)
    wall = sum(r["wall_s"] for r in records)
    env_steps = steps_per_chunk * len(records) * seeds
    updates = sum(r["updates_per_s"] * r["wall_s"] for r in records)
    return {
        "agent": agent,
        "env": env,
        "loop": "host" if host_loop else "compiled",
        "random_actions": random_actions,
        "seeds": seeds,
        "num_envs": num_envs,
        "utd": config["schedule"]["utd"],
        "batch_size": config["agent"]["hyperparameters"].get("batch_size"),
        "env_steps_per_s": round(env_steps / wall, 1),
        "updates_per_s": round(updates / wall, 1),
        "timed_env_steps": env_steps,
        "device": device_name(),
        "jax": jax.__version__,
    }

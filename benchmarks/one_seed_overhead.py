"""valorl's fused IQL update against a bare jitted IQL update of the same shape (issue #13).

The bare update is written here from the paper (Kostrikov et al. 2021, arXiv:2110.06169) with
the networks, losses, update order and optimisers of `valorl.agents.iql.IQL`: 2×256 ReLU MLPs
with the same initialisation, a tanh-mean Gaussian actor with a state-independent log-std, twin
Q-networks as one `nn.vmap`ped ensemble reduced by min, expectile value loss, TD critic onto
V(s'), AWR actor with exp(β·A) clipped at 100, Polyak target critic, Adam everywhere and a
cosine-decayed actor learning rate. It differs from valorl only in what valorl adds around the
maths: per-step metrics (each loss, three gradient norms, value/critic/advantage/weight means,
the actor's BC error) averaged over the chunk, the `NetState` wrapper, and donated buffers.

Both sample their batches inside `lax.scan` with `jax.random.randint` from 100k synthetic rows
on the device (`valorl.bench.synthetic_batch`). Variants are timed in interleaved rounds (one
call of each per round), so load on a shared machine hits them alike; ratios are medians of
per-round ratios.

    python benchmarks/one_seed_overhead.py            # 1 seed: bare, valorl, valorl vmapped
    python benchmarks/one_seed_overhead.py --seeds5   # adds bare vs valorl at 5 seeds
    python benchmarks/one_seed_overhead.py --hlo      # op counts of the compiled chunks
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from valorl.agents import Spec, make_agent
from valorl.bench import device_name, synthetic_batch
from valorl.training.fused import init_seeds, seed_keys, update_chunk

OBS, ACT, BATCH, ROWS, HIDDEN = 17, 6, 256, 100_000, (256, 256)
EXPECTILE, BETA, MAX_WEIGHT, DISCOUNT, TAU, LR = 0.7, 3.0, 100.0, 0.99, 0.005, 3e-4
TOTAL_UPDATES = 1_000_000
"""Length of the actor's cosine schedule, the same for both sides."""

INIT = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


class Mlp(nn.Module):
    out: int

    @nn.compact
    def __call__(self, x):
        for width in HIDDEN:
            x = nn.relu(nn.Dense(width, kernel_init=INIT)(x))
        return nn.Dense(self.out, kernel_init=INIT)(x)


class Actor(nn.Module):
    @nn.compact
    def __call__(self, obs):
        mean = jnp.tanh(Mlp(ACT)(obs))
        log_std = jnp.clip(self.param("log_std", nn.initializers.zeros, (ACT,)), -5.0, 2.0)
        return mean, log_std


class Value(nn.Module):
    @nn.compact
    def __call__(self, obs):
        return Mlp(1)(obs)[..., 0]


class TwinQ(nn.Module):
    @nn.compact
    def __call__(self, obs, act):
        twin = nn.vmap(
            Mlp,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            axis_size=2,
        )
        return twin(1)(jnp.concatenate([obs, act], -1))[..., 0]


def bare_init(key: jax.Array) -> dict[str, Any]:
    k_actor, k_q, k_v = jax.random.split(key, 3)
    obs, act = jnp.zeros((1, OBS)), jnp.zeros((1, ACT))
    actor_tx = optax.adam(optax.cosine_decay_schedule(LR, TOTAL_UPDATES))
    actor = TrainState.create(
        apply_fn=Actor().apply, params=Actor().init(k_actor, obs)["params"], tx=actor_tx
    )
    q = TrainState.create(
        apply_fn=TwinQ().apply, params=TwinQ().init(k_q, obs, act)["params"], tx=optax.adam(LR)
    )
    v = TrainState.create(
        apply_fn=Value().apply, params=Value().init(k_v, obs)["params"], tx=optax.adam(LR)
    )
    return {"actor": actor, "q": q, "target_q": q.params, "v": v}


def bare_update(state: dict[str, Any], obs, act, rew, next_obs, mask) -> tuple[dict, jax.Array]:
    """One IQL update in valorl's order (value, actor, critic, target); returns the summed
    losses as its only output."""
    actor, q, v = state["actor"], state["q"], state["v"]
    target_q = q.apply_fn({"params": state["target_q"]}, obs, act).min(0)

    def value_loss(p):
        diff = target_q - v.apply_fn({"params": p}, obs)
        return (jnp.where(diff > 0, EXPECTILE, 1 - EXPECTILE) * diff**2).mean()

    v_loss, grads = jax.value_and_grad(value_loss)(v.params)
    v = v.apply_gradients(grads=grads)

    weights = jnp.minimum(
        jnp.exp(BETA * (target_q - v.apply_fn({"params": v.params}, obs))), MAX_WEIGHT
    )

    def actor_loss(p):
        mean, log_std = actor.apply_fn({"params": p}, obs)
        z = (act - mean) * jnp.exp(-log_std)
        log_prob = jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)
        return -(weights * log_prob).mean()

    a_loss, grads = jax.value_and_grad(actor_loss)(actor.params)
    actor = actor.apply_gradients(grads=grads)

    target = rew + DISCOUNT * mask * v.apply_fn({"params": v.params}, next_obs)

    def critic_loss(p):
        return ((q.apply_fn({"params": p}, obs, act) - target) ** 2).mean(-1).sum()

    q_loss, grads = jax.value_and_grad(critic_loss)(q.params)
    q = q.apply_gradients(grads=grads)
    target_params = optax.incremental_update(q.params, state["target_q"], TAU)
    new = {"actor": actor, "q": q, "target_q": target_params, "v": v}
    return new, v_loss + a_loss + q_loss


def bare_chunk(num_updates: int) -> Callable:
    """`(state, key, data) -> (state, key, mean loss)`: `num_updates` bare updates in a scan."""

    def chunk(state, key, data):
        def body(carry, _):
            state, key = carry
            key, key_batch = jax.random.split(key)
            idx = jax.random.randint(key_batch, (BATCH,), 0, data.rewards.shape[0])
            state, loss = bare_update(
                state,
                data.observations[idx],
                data.actions[idx],
                data.rewards[idx],
                data.next_observations[idx],
                data.masks[idx],
            )
            return (state, key), loss

        (state, key), losses = jax.lax.scan(body, (state, key), length=num_updates)
        return state, key, losses.mean()

    return chunk


class Variant:
    """A compiled chunk with its arguments, called in place (its outputs feed the next call)."""

    def __init__(self, name: str, seeds: int, fn: Callable, state, key, data):
        self.name, self.seeds, self.fn = name, seeds, fn
        self.state, self.key, self.data = state, key, data
        self.times: list[float] = []

    def call(self) -> float:
        start = time.perf_counter()
        self.state, self.key, out = self.fn(self.state, self.key, self.data)
        jax.block_until_ready(out)
        return time.perf_counter() - start

    def lowered(self):
        return self.fn.lower(self.state, self.key, self.data)


def variants(updates: int, with_five: bool) -> list[Variant]:
    data = synthetic_batch(ROWS, OBS, ACT)
    iql = make_agent("iql", hidden_dims=HIDDEN, batch_size=BATCH)
    spec = Spec(obs_shape=(OBS,), action_dim=ACT, total_updates=TOTAL_UPDATES)
    out = []
    for seeds in (1, 5) if with_five else (1,):
        init_keys, train_keys, _ = seed_keys(list(range(seeds)))
        if seeds == 1:
            bare_state = jax.jit(bare_init)(init_keys[0])
            bare = jax.jit(bare_chunk(updates))
            out.append(Variant("bare", 1, bare, bare_state, train_keys[0], data))
        else:
            bare_state = jax.jit(jax.vmap(bare_init))(init_keys)
            bare = jax.jit(jax.vmap(bare_chunk(updates), in_axes=(0, 0, None)))
            out.append(Variant("bare, vmapped", seeds, bare, bare_state, train_keys, data))
        valorl_runs = [("valorl", seeds)] if seeds > 1 else [("valorl", 1), ("valorl, vmap", 2)]
        for name, compiled_for in valorl_runs:
            init_keys, train_keys, _ = seed_keys(list(range(seeds)))  # fresh: both are donated
            states = init_seeds(iql, spec)(init_keys)
            chunk = update_chunk(iql, updates, compiled_for)
            out.append(Variant(name, seeds, chunk, states, train_keys, data))
    return out


def hlo_counts(variant: Variant) -> collections.Counter:
    """Instructions of the compiled chunk by opcode (the scan body included)."""
    text = variant.lowered().compile().as_text()
    ops = re.findall(r"= \S+ (\w[\w-]*)\(", text)
    return collections.Counter(ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000, help="updates per compiled call")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per 1-seed variant")
    parser.add_argument("--seeds5", action="store_true", help="also time 5 seeds")
    parser.add_argument("--rounds5", type=int, default=3, help="timed calls per 5-seed variant")
    parser.add_argument("--hlo", action="store_true", help="print compiled op counts and exit")
    args = parser.parse_args()
    runs = variants(args.updates, args.seeds5)
    if args.hlo:
        counts = {v.name + f" ({v.seeds} seed)": hlo_counts(v) for v in runs}
        ops = sorted(
            set().union(*counts.values()), key=lambda op: -max(c[op] for c in counts.values())
        )
        print("| op | " + " | ".join(counts) + " |")
        print("|---|" + "---:|" * len(counts))
        for op in ["TOTAL", *ops]:
            cells = [sum(c.values()) if op == "TOTAL" else c[op] for c in counts.values()]
            print(f"| {op} | " + " | ".join(map(str, cells)) + " |")
        return
    for v in runs:
        start = time.perf_counter()
        v.call()
        print(f"compiled {v.name} ({v.seeds} seed): {time.perf_counter() - start:.1f} s")
    for seeds, rounds in ((1, args.rounds), (5, args.rounds5)):
        group = [v for v in runs if v.seeds == seeds]
        for r in range(rounds if group else 0):
            for v in group:
                v.times.append(v.call())
            rates = ", ".join(f"{v.name}: {args.updates * seeds / v.times[-1]:.1f}" for v in group)
            print(f"{seeds} seed(s), round {r + 1}: {rates}", flush=True)
    print(
        f"\ndevice {device_name()}, jax {jax.__version__}, {args.updates} updates per call, "
        "interleaved rounds; updates/s summed over seeds (median over rounds)\n"
    )
    print("| seeds | variant | rounds | updates/s | vs bare (median of per-round ratios) |")
    print("|---:|---|---:|---:|---:|")
    for v in runs:
        bare = next(b for b in runs if b.seeds == v.seeds and b.name.startswith("bare"))
        rate = statistics.median(args.updates * v.seeds / t for t in v.times)
        ratio = statistics.median(b / t for b, t in zip(bare.times, v.times, strict=True))
        print(f"| {v.seeds} | {v.name} | {len(v.times)} | {rate:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()

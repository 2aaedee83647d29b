"""The environment phase inside the compiled loop: JAX environments stepped in `lax.scan`.

For a JAX environment (valorl.envs.jax_env) the whole interaction runs on the device: one
jitted call per chunk scans over iterations, and each iteration

    steps every seed's `num_envs` environments K = `env_steps_per_call` times (actions from
    `agent.explore`, or uniform random during the first `start_steps`), adding each step's
    transitions to the seed's replay buffer, then runs K·num_envs·utd gradient steps,

with seeds `vmap`ped. Nothing returns to Python between environment steps, so small problems
run at the speed of the hardware rather than of the interpreter (BENCHMARKS.md compares this
with the host loop stepping the same environment, `--host-loop`).

Environment steps count transitions of one seed: an iteration adds K·num_envs of them. The
environments' states, their current observations and the running episode returns are part of
the checkpoint (`EnvCarry`), so unlike the host loop a resumed run continues the very
episodes it stopped in, and equals an uninterrupted run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.agents import Agent
from valorl.data import replay
from valorl.data.dataset import Batch
from valorl.envs.jax_env import JaxEnv, episode_returns, reset_many, step_many
from valorl.training.fused import compiled_cache, over_seeds, scan_updates
from valorl.training.sources import ReplayInputs, replay_source

if TYPE_CHECKING:
    from valorl.training.loop import Loop


@flax.struct.dataclass
class EnvCarry:
    """One seed's environments between calls: their states, the observations they wait on,
    and the return of each one's current episode."""

    env_states: Any
    obs: jax.Array
    episode_return: jax.Array


@flax.struct.dataclass
class Episodes:
    """Episodes finished in a chunk, summed over environments (per seed)."""

    count: jax.Array
    return_sum: jax.Array


ENV_RESETS = 0xE5E7
"""Tag of the key stream that resets a seed's environments at the start of its online phase."""


def initial_carry(env: JaxEnv, seeds: tuple[int, ...], num_envs: int) -> EnvCarry:
    """Every seed's `num_envs` environments freshly reset: a seed-stacked `EnvCarry` (call
    under `jax.jit`, or `jax.eval_shape` for its shapes)."""

    def one(seed):
        key = jax.random.fold_in(jax.random.key(seed), ENV_RESETS)
        obs, states = reset_many(env, key, num_envs)
        return EnvCarry(states, obs, jnp.zeros(num_envs))

    return jax.vmap(one)(jnp.asarray(seeds, jnp.uint32))


class CompiledEvaluator:
    """Evaluation rounds in a JAX environment: every seed's deterministic policy on `episodes`
    episodes, in one compiled call (the counterpart of the host `Evaluator`)."""

    def __init__(self, env: JaxEnv, episodes: int):
        self.env, self.episodes = env, episodes

    def round(self, agent: Agent, states: Any, eval_keys: jax.Array, round_index: int):
        """Returns of this round's episodes, shape (seeds, episodes)."""
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, round_index)
        run = evaluation_returns(agent, self.env, self.episodes, keys.shape[0])
        return np.asarray(run(states, keys), np.float64)


def jax_environment_phase(loop: Loop) -> None:
    """Interact and learn until the run's last environment step, in compiled chunks."""
    plan, agent, interaction = loop.plan, loop.plan.agent, loop.plan.interaction
    env, progress = plan.jax_env.for_training(), loop.online
    per_iteration = interaction.env_steps_per_call * interaction.num_envs
    updates = plan.updates_per_iteration
    cadence = plan.schedule.phase(online=True)
    seeds = len(plan.seeds)
    while progress.env_step < cadence.steps:
        first = progress.env_step
        end = cadence.chunk_end(first)
        warm = max(0, min(end, interaction.start_steps) - first) // per_iteration
        learning = (end - first) // per_iteration - warm
        start = time.perf_counter()
        metrics, done, total_updates = [], [], 0
        for iterations, uniform in ((warm, True), (learning, False)):
            if not iterations:
                continue
            n = 0 if uniform else updates
            fn = env_chunk(
                agent,
                env,
                interaction.num_envs,
                iterations,
                interaction.env_steps_per_call,
                n,
                uniform,
                seeds,
            )
            loop.states, loop.keys, progress.buffers, progress.env_carry, m, episodes = fn(
                loop.states,
                loop.keys,
                progress.buffers,
                progress.env_carry,
                jnp.int32(progress.env_step),
            )
            progress.env_step += iterations * per_iteration
            done.append(episodes)
            if n:
                metrics.append((iterations, m))
                total_updates += iterations * n * agent.batches_per_update
        metrics, done = jax.device_get((metrics, done))
        elapsed = time.perf_counter() - start
        loop.step = plan.schedule.offline_steps + progress.env_step
        record: dict[str, Any] = {
            "step": loop.step,
            "phase": "online",
            "env_step": progress.env_step,
            "wall_s": round(elapsed, 4),
            "env_steps_per_s": round((end - first) * seeds / elapsed, 1),
            "updates_per_s": round(total_updates * seeds / elapsed, 1),
        }
        if metrics:
            weights = np.array([w for w, _ in metrics], np.float64)
            for name in metrics[0][1]:
                values = np.stack([np.asarray(m[name]) for _, m in metrics])
                record[name] = np.average(values, axis=0, weights=weights).tolist()
        count = sum(np.asarray(d.count) for d in done)
        total = sum(np.asarray(d.return_sum) for d in done)
        record["rollout/episode_return"] = [
            float(t / c) if c else None for t, c in zip(total, count, strict=True)
        ]
        rate = f"{(end - first) * seeds / elapsed:,.0f} env steps/s"
        loop.end_chunk(record, cadence, first, progress.env_step, rate)


@compiled_cache
def env_chunk(
    agent: Agent,
    env: JaxEnv,
    num_envs: int,
    iterations: int,
    steps_per_iteration: int,
    updates_per_iteration: int,
    uniform: bool,
    num_seeds: int,
):
    """jit(vmap over seeds): `(states, keys, buffers, carry, env_step) -> (states, keys,
    buffers, carry, metrics, episodes)`; states, keys, buffers and carry are donated.

    Each of `iterations` iterations takes `steps_per_iteration` steps of each seed's
    `num_envs` environments (uniform random actions when `uniform`) and then
    `updates_per_iteration` updates. The environments' rows interleave in the replay buffer,
    so n-step rows follow a stride of `num_envs`."""
    source = replay_source(agent, None, num_envs)

    def env_step(carry, _):
        state, key, buffer, envs, step, episodes = carry
        key, act_key, step_key = jax.random.split(key, 3)
        if uniform:
            actions = jax.random.randint(act_key, envs.obs.shape[:1], 0, env.num_actions)
        else:
            actions = agent.explore(state, envs.obs, act_key, step)
        t, obs, env_states = step_many(env, step_key, envs.env_states, envs.obs, actions)
        done = t.terminated | t.truncated
        returns = envs.episode_return + t.rewards
        episodes = Episodes(
            episodes.count + done.sum(), episodes.return_sum + jnp.where(done, returns, 0.0).sum()
        )
        rows = Batch(
            observations=t.observations,
            actions=t.actions,
            rewards=t.rewards,
            next_observations=t.next_observations,
            masks=1.0 - t.terminated.astype(jnp.float32),
            dones=done.astype(jnp.float32),
        )
        envs = EnvCarry(env_states, obs, jnp.where(done, 0.0, returns))
        step = step + actions.shape[0]
        return (state, key, replay.add(buffer, rows), envs, step, episodes), None

    def iteration(carry, _):
        carry, _ = jax.lax.scan(env_step, carry, length=steps_per_iteration)
        if not updates_per_iteration:
            return carry, {}
        state, key, buffer, envs, step, episodes = carry
        inputs = ReplayInputs(offline=None, env_step=step)
        state, key, metrics = scan_updates(
            agent, source, updates_per_iteration, state, key, buffer, inputs
        )
        return (state, key, buffer, envs, step, episodes), metrics

    def chunk(state, key, buffer, envs, step):
        episodes = Episodes(jnp.zeros((), jnp.int32), jnp.zeros(()))
        carry = (state, key, buffer, envs, step, episodes)
        carry, metrics = jax.lax.scan(iteration, carry, length=iterations)
        state, key, buffer, envs, _, episodes = carry
        return state, key, buffer, envs, jax.tree.map(jnp.mean, metrics), episodes

    return over_seeds(chunk, (0, 0, 0, 0, None), num_seeds, donate=(0, 1, 2, 3))


@compiled_cache
def evaluation_returns(agent: Agent, env: JaxEnv, episodes: int, num_seeds: int):
    """jit(vmap over seeds): `(states, keys) -> (seeds, episodes)` undiscounted returns of each
    seed's deterministic policy, all episodes run in parallel inside one compiled call."""

    def one_seed(state, key):
        policy = lambda obs, k: agent.act(state, obs, k, True)
        return episode_returns(env, policy, key, episodes)

    return jax.jit(jax.vmap(one_seed))

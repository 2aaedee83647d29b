"""The environment phase of a run: Gymnasium environments stepped on the host.

Each seed has its own environment on the host and its own replay buffer on the device (a
`ReplayBuffer` pytree with a leading seed axis). Per environment step one jitted, seed-vmapped
call picks every seed's action: uniform random for the first `start_steps` steps (then no
updates either, as in RLPD and SAC's reference code; uniform integers in [0, n) in a
`Discrete(n)` space), afterwards the agent's exploration action, `agent.explore(state, obs, key,
env_step)` (a sample of its stochastic policy unless the agent says otherwise, as DQN's
epsilon-greedy schedule does). The host steps the environments. After every K = `env_steps_per_call`
environment steps one jitted call adds the K transitions to the buffers and runs K·`utd`
gradient steps (batches) in one `lax.scan`, for all seeds at once. K = 1 (the default) is the
papers' order exactly: act, step, store, `utd` updates. A larger K takes the same number of
updates per environment step with K times fewer update calls, but the policy then acts for K
steps on parameters up to K updates old.

Bootstrapping: a termination is stored with mask 0, a truncation (time limit) with mask 1, and
the stored next observation is always the real last observation of the episode; the
environment is reset after the transition is stored. Agents that declare
`needs_returns_to_go` (Cal-QL) get each transition's discounted Monte-Carlo return: their
transitions wait on the host until the episode ends, and are then stored with
`Dataset.returns_to_go`'s convention (a truncated episode continues with a geometric tail at its
mean reward).

Exploration keys and episode reset seeds are functions of the seed and the step or episode
count, so a resumed run continues them. The environments' internal state cannot be saved: an
environment whose episode had just ended at the checkpoint (its last stored transition ends an
episode) restarts the episode that followed, with the same reset seed, so a run checkpointed at
episode boundaries resumes exactly as it would have continued; one interrupted mid-episode
starts a new episode (the next reset seed). An agent that needs returns-to-go stores an
episode's transitions only when it ends, so its interrupted episode is replayed from its start
(with the same seed).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from valorl.agents import Agent
from valorl.data import replay
from valorl.data.dataset import Batch, Dataset
from valorl.data.replay import OfflineMix
from valorl.data.sources import make_env
from valorl.data.transforms import Normalizer
from valorl.envs.host import register_gymnasium_ids
from valorl.training.fused import compiled_cache, over_seeds, scan_updates
from valorl.training.model_based import imagine_from_replay, refit_on_replay
from valorl.training.sources import ModelMix, ReplayInputs, replay_source

if TYPE_CHECKING:
    from valorl.training.loop import Loop
    from valorl.training.plan import RunPlan

TRAIN_EPISODES = 0x7E11
"""Tag of the stream of training-episode reset seeds (evaluation uses another stream)."""
EXPLORATION = 0xE4B1
"""Tag of the exploration keys (random warm-up actions, policy samples)."""


def environment_phase(loop: Loop) -> None:
    """Interact and learn until the run's last environment step (resuming where `loop` is)."""
    envs = [host_env(loop.plan, loop.env) for _ in loop.plan.seeds]
    try:
        _interact(loop, envs)
    finally:
        for e in envs:
            e.close()


def _interact(loop: Loop, envs: list[gym.Env]) -> None:
    plan, agent, interaction = loop.plan, loop.plan.agent, loop.plan.interaction
    seeds, cadence = list(plan.seeds), plan.schedule.phase(online=True)
    k = interaction.env_steps_per_call
    rtg = agent.needs_returns_to_go
    discount = agent.discount if rtg else None
    discrete = plan.num_actions is not None
    stager = Stager(len(seeds), plan.obs_shape, plan.action_dim, k, discount, discrete)
    explore_keys = jnp.stack([jax.random.fold_in(jax.random.key(s), EXPLORATION) for s in seeds])
    progress = loop.online
    reset = lambda i: _reset(envs[i], seeds[i], progress.episodes, i)
    progress.episodes -= _at_episode_start(progress.buffers)  # replay the episode just begun
    obs = np.stack([reset(i) for i in range(len(envs))]).astype(np.float32)
    episode_return = np.zeros(len(seeds))
    filled = np.array(jax.device_get(progress.buffers.size), np.int64)
    updates_per_call = plan.updates_per_iteration
    offline_steps = plan.schedule.offline_steps
    while progress.env_step < cadence.steps:
        first_env_step = progress.env_step
        end = cadence.chunk_end(first_env_step)
        start = time.perf_counter()
        call_metrics, updates, finished = [], 0, [[] for _ in seeds]
        model_metrics: list[dict[str, Any]] = []
        while progress.env_step < end:
            warm = progress.env_step < interaction.start_steps
            refit = agent.model_based and progress.env_step % agent.rollouts.rollout_every == 0
            if refit and not warm:
                model_metrics.append(_refresh_models(loop, progress))
            act = explore(agent, warm, plan.num_actions)
            for _ in range(k):
                actions = np.asarray(
                    act(loop.states, loop.normalizer, obs, explore_keys, progress.env_step)
                )
                for i, e in enumerate(envs):
                    action = int(actions[i]) if discrete else actions[i]
                    next_obs, reward, terminated, truncated, _ = e.step(action)
                    stager.record(i, obs[i], actions[i], reward, next_obs, terminated, truncated)
                    episode_return[i] += reward
                    if terminated or truncated:
                        finished[i].append(episode_return[i])
                        episode_return[i] = 0.0
                        next_obs = reset(i)
                    obs[i] = next_obs
                progress.env_step += 1
            staged, counts = stager.take()
            filled += counts
            # An empty buffer (a returns-to-go agent's first episode) has nothing to sample:
            # wait for it, unless offline data fills the batches meanwhile.
            empty = loop.mix is None and filled.min() == 0
            n = 0 if warm or empty else updates_per_call
            chunk = online_chunk(agent, n, loop.mix, len(seeds))
            loop.states, loop.keys, progress.buffers, loop.model_buffers, metrics = chunk(
                loop.states,
                loop.keys,
                progress.buffers,
                staged,
                counts,
                loop.normalizer,
                loop.offline,
                jnp.int32(progress.env_step),
                loop.model_buffers,
            )
            if n:
                call_metrics.append(metrics)
                updates += n * agent.batches_per_update
        elapsed = time.perf_counter() - start
        loop.step = offline_steps + progress.env_step
        steps_done = progress.env_step - first_env_step
        record: dict[str, Any] = {
            "step": loop.step,
            "phase": "online",
            "env_step": progress.env_step,
            "wall_s": round(elapsed, 4),
            "env_steps_per_s": round(steps_done / elapsed, 1),
            "updates_per_s": round(updates * len(seeds) / elapsed, 1),
        }
        for logged in (call_metrics, model_metrics):
            if logged:
                stacked = jax.device_get(logged)
                for name in stacked[0]:
                    values = np.mean([np.asarray(m[name]) for m in stacked], axis=0)
                    record[name] = values.tolist()
        for name in ("time/model_fit_s", "time/rollouts_s"):  # totals of the chunk
            if model_metrics:
                record[name] = round(sum(m[name] for m in model_metrics), 4)
        record["rollout/episode_return"] = [float(np.mean(f)) if f else None for f in finished]
        rate = f"{steps_done / elapsed:,.0f} env steps/s"
        loop.end_chunk(record, cadence, first_env_step, progress.env_step, rate)


def _refresh_models(loop: Loop, progress: Any) -> dict[str, Any]:
    """Refit every seed's model on its replay buffer, then imagine a round of rollouts (MBPO's
    model step, every `rollout_every` environment steps); returns their metrics and wall-clock
    seconds (`time/model_fit_s`, `time/rollouts_s`)."""
    agent, seeds, step = loop.plan.agent, len(loop.plan.seeds), jnp.int32(progress.env_step)
    start = time.perf_counter()
    loop.states, fitted = refit_on_replay(agent, seeds)(
        loop.states, loop.keys, progress.buffers, step
    )
    jax.block_until_ready(loop.states)
    fitted_at = time.perf_counter()
    imagine = imagine_from_replay(agent, seeds, loop.plan.data["env_id"])
    loop.model_buffers, imagined = imagine(
        loop.states, loop.keys, progress.buffers, loop.model_buffers, loop.normalizer, step
    )
    jax.block_until_ready(loop.model_buffers)
    seconds = {
        "time/model_fit_s": fitted_at - start,
        "time/rollouts_s": time.perf_counter() - fitted_at,
    }
    return {**fitted, **imagined, **seconds}


def host_env(plan: RunPlan, env_id: str | None) -> gym.Env:
    """A seed's environment on the host: the run's Gymnasium environment, or its JAX
    environment (`--host-loop`) with the sticky actions the run recorded, in its training form
    as the compiled loop steps it (the gridworlds without their time limit)."""
    jax_env = plan.jax_env
    if jax_env is not None:
        register_gymnasium_ids((jax_env.id,))  # a gridworld of a size not registered on import
        return gym.make(jax_env.id, sticky_actions=jax_env.sticky_actions, training=True)
    return make_env(plan.info, env_id)


def _at_episode_start(buffers: Any) -> np.ndarray:
    """(seeds,) 1 where the newest stored transition ended an episode: the environment had been
    reset (one more episode counted) and had not stepped yet when the buffers were saved."""
    dones, position, size = jax.device_get((buffers.data.dones, buffers.position, buffers.size))
    last = (np.asarray(position) - 1) % dones.shape[1]
    done = np.asarray(dones)[np.arange(len(last)), last] > 0
    return (done & (np.asarray(size) > 0)).astype(np.int64)


def _reset(env: gym.Env, seed: int, episodes: np.ndarray, i: int) -> np.ndarray:
    obs, _ = env.reset(seed=train_episode_seed(seed, int(episodes[i])))
    episodes[i] += 1
    return obs


# ---- compiled pieces ---------------------------------------------------------------------------


@compiled_cache
def online_chunk(agent: Agent, num_updates: int, mix: OfflineMix | None, num_seeds: int):
    """jit(vmap): `(states, keys, buffers, staged, counts, normalizer, offline, env_step,
    model_buffers) -> (states, keys, buffers, model_buffers, metrics)`, seed axis first on the
    first five and on the model buffers; states, keys and buffers are donated. Stores the
    staged transitions (environment units), then runs `num_updates` agent updates on batches
    from the buffer, mixed with `offline` rows per `mix`, or for a model-based agent with rows
    of its model buffer (None for other agents)."""
    source = replay_source(agent, mix)
    if agent.model_based:
        source = ModelMix(real=source, real_rows=agent.real_rows, rollouts=agent.rollouts)

    def chunk(state, key, buffer, staged, count, normalizer, offline, env_step, model_buffer):
        buffer = replay.add(buffer, normalizer.batch(staged), count)
        if num_updates == 0:
            return state, key, buffer, model_buffer, {}
        inputs = ReplayInputs(offline=offline, env_step=env_step)
        source_state = buffer if model_buffer is None else (buffer, model_buffer)
        state, key, metrics = scan_updates(
            agent, source, num_updates, state, key, source_state, inputs
        )
        return state, key, buffer, model_buffer, metrics

    in_axes = (0, 0, 0, 0, 0, None, None, None, 0)
    return over_seeds(chunk, in_axes, num_seeds, donate=(0, 1, 2, 8))


@compiled_cache
def explore(agent: Agent, uniform: bool, num_actions: int | None = None):
    """jit(vmap): `(states, normalizer, obs, keys, env_step) -> env actions (seeds, A)`, or
    integers `(seeds,)` in a `Discrete(num_actions)` space: each seed's exploration action
    (`agent.explore`), or uniform random actions over the action box (over the integers in
    [0, num_actions)). The key of a step is the seed's exploration key folded with the step,
    so a resumed run draws what an uninterrupted one would have at the same step."""

    def one_seed(state, normalizer: Normalizer, obs, key, env_step):
        key = jax.random.fold_in(key, env_step)
        if uniform and num_actions is not None:
            return jax.random.randint(key, (), 0, num_actions, jnp.int32)
        if uniform:
            unit = jax.random.uniform(key, normalizer.action_low.shape, minval=-1.0, maxval=1.0)
        else:
            unit = agent.explore(state, normalizer.observations(obs)[None], key, env_step)[0]
        return normalizer.actions_to_env(unit)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, 0, 0, None)))


# ---- the host side -----------------------------------------------------------------------------


def train_episode_seed(seed: int, episode: int) -> int:
    """Reset seed of training episode `episode` of seed `seed`."""
    return int(np.random.SeedSequence([seed, TRAIN_EPISODES, episode]).generate_state(1)[0])


class Stager:
    """Transitions on the host, waiting to be added to the device buffers.

    Normally every transition is ready at once. With a `discount` (agents that need
    returns-to-go) an episode's transitions wait until it ends, and are then released with
    their discounted Monte-Carlo returns. `discrete` actions are kept as int32 of shape (),
    continuous ones as float32 rows of `action_dim`.
    """

    def __init__(
        self,
        num_seeds: int,
        obs_shape,
        action_dim: int,
        block: int,
        discount: float | None,
        discrete: bool = False,
    ):
        self.obs_shape, self.action_dim, self.block = tuple(obs_shape), action_dim, block
        self.discount, self.discrete = discount, discrete
        self.action_shape, self.action_dtype = (
            ((), np.int32) if discrete else ((action_dim,), np.float32)
        )
        self.ready: list[list[tuple]] = [[] for _ in range(num_seeds)]
        self.episode: list[list[tuple]] = [[] for _ in range(num_seeds)]

    def record(self, i, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Keep one transition of seed `i` (copies: the caller reuses its arrays)."""
        row = (
            np.array(obs, np.float32),
            np.array(action, self.action_dtype),
            float(reward),
            np.array(next_obs, np.float32),
            bool(terminated),
            bool(terminated or truncated),
        )
        if self.discount is None:
            self.ready[i].append(row)
            return
        self.episode[i].append(row)
        if row[5]:
            rows, self.episode[i] = self.episode[i], []
            returns = _returns_to_go(rows, self.discount)
            self.ready[i].extend((*r, g) for r, g in zip(rows, returns, strict=True))

    def take(self) -> tuple[Batch, np.ndarray]:
        """Every ready transition as a `Batch` of shape (seeds, rows, ...) padded to a fixed
        size (the block, or a power of two for whole episodes), and the count per seed."""
        counts = np.array([len(r) for r in self.ready], np.int32)
        rows = self.block
        if self.discount is not None:
            rows = max(rows, 1 << int(max(int(counts.max()), 1) - 1).bit_length())
        n = len(self.ready)
        obs = np.zeros((n, rows, *self.obs_shape), np.float32)
        next_obs = np.zeros_like(obs)
        actions = np.zeros((n, rows, *self.action_shape), self.action_dtype)
        rewards, masks, dones, rtg = (np.zeros((n, rows), np.float32) for _ in range(4))
        for i, ready in enumerate(self.ready):
            for t, row in enumerate(ready):
                obs[i, t], actions[i, t], rewards[i, t], next_obs[i, t] = row[:4]
                masks[i, t] = 0.0 if row[4] else 1.0
                dones[i, t] = float(row[5])
                if self.discount is not None:
                    rtg[i, t] = row[6]
            ready.clear()
        batch = Batch(
            observations=obs,
            actions=actions,
            rewards=rewards,
            next_observations=next_obs,
            masks=masks,
            dones=dones,
            **({"returns_to_go": rtg} if self.discount is not None else {}),
        )
        return batch, counts


def _returns_to_go(rows: list[tuple], discount: float) -> np.ndarray:
    """Discounted returns of one finished episode, by `Dataset.returns_to_go`'s convention."""
    t = len(rows)
    zeros = np.zeros((t, 1), np.float32)
    terminals = np.array([r[4] for r in rows], bool)
    episode = Dataset(
        observations=zeros,
        actions=zeros,
        rewards=np.array([r[2] for r in rows], np.float32),
        next_observations=zeros,
        terminals=terminals,
        timeouts=~terminals & np.eye(t, dtype=bool)[-1],
    )
    return episode.returns_to_go(discount)

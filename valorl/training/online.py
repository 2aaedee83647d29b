"""Online and hybrid training: an environment (and, in the hybrid modes, a dataset) in, a run
directory of checkpoints, metrics and scores out.

Modes (`mode=`, `valorl train --mode`):

    online             no dataset: the agent learns from its own experience (SAC).
    hybrid             dataset and environment from the first step: every batch mixes offline
                       rows with replay, `offline_ratio` of them offline (default 0.5, RLPD's
                       symmetric sampling, Ball et al. 2023).
    offline-to-online  `offline_steps` gradient steps on the dataset (the offline driver's fused
                       chunks), then `online_steps` environment steps of fine-tuning. The
                       offline data stays in the mix; by default ("uniform") batches are drawn
                       uniformly from offline data ∪ replay, which is what IQL's fine-tuning
                       code does by loading the dataset into its replay buffer (Kostrikov et
                       al. 2022); `offline_ratio=0.5` is Cal-QL's and RLPD-with-pre-training's
                       fixed mix, 0 pure online replay.
    offline            `valorl.train`; not this module.

The loop. Each seed has its own Gymnasium environment on the host and its own replay buffer on
the device (a `ReplayBuffer` pytree with a leading seed axis). Per environment step one jitted,
seed-vmapped call picks every seed's action: uniform random for the first `start_steps` steps
(then no updates either, as in RLPD and SAC's reference code), afterwards a sample from the
agent's stochastic policy. The host steps the environments. After every K =
`env_steps_per_call` environment steps one jitted call adds the K transitions to the buffers
and runs K·`utd` gradient steps (batches) in one `lax.scan`, for all seeds at once. K = 1 (the
default) is the papers' order exactly: act, step, store, `utd` updates. A larger K takes the
same number of updates per environment step with K times fewer update calls, but the policy
then acts for K steps on parameters up to K updates old. An agent with a `utd` hyperparameter
(SAC) consumes its `utd` batches in one `update` (critic steps, then one actor step); for other
agents `utd` batches per environment step are `utd / batches_per_update` updates.

Bootstrapping: a termination is stored with mask 0, a truncation (time limit) with mask 1, and
the stored next observation is always the real last observation of the episode; the
environment is reset after the transition is stored. Agents whose class sets
`needs_returns_to_go` (Cal-QL) get each transition's discounted Monte-Carlo return: their
transitions wait on the host until the episode ends, and are then stored with
`Dataset.returns_to_go`'s convention (a truncated episode continues with a geometric tail at its
mean reward).

Resume. A checkpoint after every `log_every` environment steps holds the agents and optimiser
states, the RNG keys, the replay buffers (their filled rows), the environment-step count and
every seed's episode count. Running the same call again continues from that environment step
with exactly those buffers, parameters and keys; exploration keys and episode reset seeds are
functions of the seed and the step or episode count, so they continue too. What cannot be
saved is the environments' internal state: at resume every environment starts a new episode
(the next reset seed), and the interrupted episodes' transitions stay in the buffer without an
episode end (for `needs_returns_to_go` agents, an unfinished episode waiting on the host is
lost). A resumed run is therefore as reproducible as a fresh one, but not bit-identical to the
run that was never interrupted. Each checkpoint writes the buffers' filled rows: about 110 MB
per seed for a million MuJoCo Hopper transitions, so long runs want a `log_every` of 10,000 or
more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from typing import Any, Literal

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

import valorl
from valorl.agents import Agent, agent_class, make_agent
from valorl.config import to_dict
from valorl.critics import resolve_agent_support
from valorl.critics.heads import needs_support
from valorl.data import replay
from valorl.data.dataset import Batch, Dataset, DatasetInfo
from valorl.data.replay import OfflineMix, ReplayBuffer
from valorl.data.sources import load_dataset, make_env
from valorl.data.transforms import Normalizer, fit_normalizer
from valorl.errors import ValorlError
from valorl.eval.diagnostics import diagnose_run
from valorl.eval.rollouts import Evaluator
from valorl.training import checkpoint
from valorl.training.fused import init_seeds, seed_keys, update_chunk
from valorl.training.loggers import open_logger
from valorl.training.offline import (
    RunResult,
    Schedule,
    evaluation_round,
    training_data,
    write_result,
)
from valorl.training.run_config import (
    agent_from_config,
    dataset_info,
    default_run_path,
    make_run_config,
    spec_from_config,
    templates,
)
from valorl.training.run_dir import RunDir
from valorl.ui import console, progress_bar

Mode = Literal["offline", "online", "hybrid", "offline-to-online"]
MODES: tuple[str, ...] = ("offline", "online", "hybrid", "offline-to-online")
DEFAULT_START_STEPS = {"online": 5_000, "hybrid": 10_000, "offline-to-online": 0}
"""Random warm-up steps per mode: CleanRL's SAC default online, RLPD's `start_training` in
hybrid, none after pre-training (IQL's fine-tuning acts with the pre-trained policy at once)."""
DEFAULT_OFFLINE_RATIO: dict[str, replay.OfflineRatio] = {
    "hybrid": 0.5,
    "offline-to-online": "uniform",
}
TRAIN_EPISODES = 0x7E11
"""Tag of the stream of training-episode reset seeds (evaluation uses another stream)."""
EXPLORATION = 0xE4B1
"""Tag of the exploration keys (random warm-up actions, policy samples)."""


@dataclasses.dataclass(frozen=True)
class OnlineSchedule:
    """Lengths and cadence of an online run. The online phase counts environment steps (each
    seed takes one per step); the offline phase of offline-to-online counts gradient steps."""

    mode: str
    offline_steps: int
    online_steps: int
    utd: int
    """Gradient steps (batches) per environment step."""
    start_steps: int
    env_steps_per_call: int
    buffer_size: int
    offline_ratio: float | str | None
    offline_ratio_schedule: str
    log_every: int
    eval_every: int

    @property
    def steps(self) -> int:
        """Global steps: offline gradient steps, then online environment steps."""
        return self.offline_steps + self.online_steps

    def check(self, batches_per_update: int, agent_name: str) -> None:
        k = self.env_steps_per_call
        for name in ("online_steps", "log_every", "eval_every", "env_steps_per_call", "utd"):
            if getattr(self, name) < 1:
                raise ValorlError(f"{_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.mode == "offline-to-online" and self.offline_steps < 1:
            raise ValorlError(
                f"--mode offline-to-online needs --offline-steps of at least 1, got "
                f"{self.offline_steps}"
            )
        if self.mode != "offline-to-online" and self.offline_steps:
            raise ValorlError(
                f"--offline-steps applies to --mode offline-to-online, not --mode {self.mode}"
            )
        if not 0 <= self.start_steps <= self.online_steps:
            raise ValorlError(
                f"--start-steps must be between 0 and --online-steps ({self.online_steps}), "
                f"got {self.start_steps}"
            )
        for name in ("online_steps", "start_steps", "log_every", "eval_every"):
            value = getattr(self, name)
            if name in ("log_every", "eval_every"):
                value = min(value, self.online_steps)
            if value % k:
                raise ValorlError(
                    f"{_flag(name)} ({value}) must be a multiple of --env-steps-per-call ({k})"
                )
        if (k * self.utd) % batches_per_update:
            raise ValorlError(
                f"{agent_name} consumes {batches_per_update} batches per update, so "
                f"--env-steps-per-call × --utd ({k} × {self.utd}) must be a multiple of "
                f"{batches_per_update}"
            )
        if self.offline_steps:
            self.offline_schedule().check(batches_per_update, agent_name)

    def offline_schedule(self) -> Schedule:
        steps = self.offline_steps
        return Schedule(steps, min(self.log_every, steps), min(self.eval_every, steps))

    def updates(self, batches_per_update: int) -> int:
        """Agent updates over the whole run (for learning-rate schedules)."""
        online = (self.online_steps - self.start_steps) * self.utd
        return max(1, (self.offline_steps + online) // batches_per_update)

    def next_boundary(self, env_step: int) -> int:
        """The environment step at which to stop next for metrics, a checkpoint or an
        evaluation."""
        up = lambda every: (env_step // every + 1) * every
        return min(
            up(min(self.log_every, self.online_steps)),
            up(min(self.eval_every, self.online_steps)),
            self.online_steps,
        )

    def evaluates_at(self, env_step: int) -> bool:
        every = min(self.eval_every, self.online_steps)
        return env_step % every == 0 or env_step == self.online_steps


def train_online(
    agent: Agent | str,
    dataset: str | os.PathLike | Dataset | None = None,
    *,
    mode: Mode = "online",
    env: str | None = None,
    online_steps: int = 1_000_000,
    offline_steps: int = 0,
    utd: int | None = None,
    start_steps: int | None = None,
    offline_ratio: replay.OfflineRatio | None = None,
    offline_ratio_schedule: Literal["constant", "linear"] = "constant",
    buffer_size: int | None = None,
    env_steps_per_call: int | None = None,
    seeds: int = 1,
    seed: int = 0,
    log_every: int = 1000,
    eval_every: int = 10_000,
    eval_episodes: int = 10,
    out: str | os.PathLike | None = None,
    keep_checkpoints: bool = False,
    progress: bool = True,
    logger: str | None = None,
    **hyperparameters: Any,
) -> RunResult:
    """Train `seeds` seeds of an agent with environment interaction; returns the results.

    Args:
        agent: an agent instance, or a registered name ("sac", "iql", ...).
        dataset: offline data for `mode="hybrid"` and `"offline-to-online"` (a `Dataset`, a
            local Minari id, a Minari directory, or a D4RL-layout .hdf5 / .npz file).
        mode: "online", "hybrid" or "offline-to-online" (see the module docstring).
        env: Gymnasium id; defaults to the dataset's environment in the hybrid modes.
        online_steps: environment steps per seed.
        offline_steps: gradient steps of offline pre-training (offline-to-online only).
        utd: gradient steps (batches) per environment step; for an agent with a `utd`
            hyperparameter (SAC) this sets it. Default: the agent's, else 1.
        start_steps: environment steps of uniform random actions before updates begin;
            default 5000 online, 10000 hybrid, 0 offline-to-online.
        offline_ratio: share of each batch from the dataset, in [0, 1], or "uniform"
            (uniform over dataset ∪ replay); default 0.5 hybrid, "uniform" offline-to-online.
        offline_ratio_schedule: "constant", or "linear" to anneal the share to 0 by the end.
        buffer_size: replay capacity per seed; default all online steps, at most 1,000,000.
        env_steps_per_call: environment steps between update calls (K in the module doc);
            default 1, or as many as an agent that consumes several batches per update
            (DSAC-T's delayed actor) needs to keep `utd` critic steps per environment step.
        seeds, seed: how many seeds to train together, from `seed` on.
        log_every: environment steps (gradient steps offline) per logged, checkpointed chunk.
        eval_every: environment steps (gradient steps offline) between evaluation rounds.
        eval_episodes: episodes per seed and round; 0 for none.
        out: run directory; default `runs/<agent>-<data or env>-<hash of the config>`.
        keep_checkpoints: keep every checkpoint under `RUN/checkpoints/` (see `RunDir`):
            the behaviour policies of `valorl datasets` recipes come from these.
        logger: also send metrics and evaluations to "tensorboard", "wandb" or "mlflow"
            (each an optional extra; see valorl/training/loggers.py).
        **hyperparameters: agent fields to override when `agent` is a name.
    """
    if mode not in MODES:
        raise ValorlError(f"unknown --mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "offline":
        raise ValorlError("--mode offline trains without an environment: use valorl.train")
    agent_type = agent_class(agent) if isinstance(agent, str) else type(agent)
    utd_is_field = "utd" in {f.name for f in dataclasses.fields(agent_type)}
    if utd is not None and utd_is_field:
        hyperparameters["utd"] = utd
    if isinstance(agent, str):
        agent = make_agent(agent, **hyperparameters)
    elif hyperparameters:
        agent = make_agent(agent.name, **(to_dict(agent) | hyperparameters))
    if utd_is_field:
        utd = agent.utd
    elif utd is None:
        utd = 1
    if env_steps_per_call is None:
        env_steps_per_call = agent.batches_per_update // math.gcd(utd, agent.batches_per_update)
    if agent.batch_size < 1:
        raise ValorlError(f"--batch-size must be at least 1, got {agent.batch_size}")
    if seeds < 1:
        raise ValorlError(f"--seeds must be at least 1, got {seeds}")
    if eval_episodes < 0:
        raise ValorlError(f"--eval-episodes must be 0 or more, got {eval_episodes}")

    full_data: Dataset | None = None
    if mode == "online":
        if dataset is not None:
            raise ValorlError(
                "--mode online learns without a dataset; use --mode hybrid or "
                "offline-to-online to train with one"
            )
        if offline_ratio is not None or offline_ratio_schedule != "constant":
            raise ValorlError(
                "--offline-ratio needs a dataset (--mode hybrid or offline-to-online)"
            )
        if env is None:
            raise ValorlError("--mode online needs an environment: pass --env ENV_ID")
    else:
        if dataset is None:
            raise ValorlError(f"--mode {mode} needs a dataset: pass --dataset ID_OR_PATH")
        full_data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
        info = full_data.info
        if env is None and info.env_id is None and info.env_spec_json is None:
            raise ValorlError(
                f"--mode {mode} needs an environment, and dataset {info.name!r} names none: "
                "pass --env ENV_ID"
            )
    info = full_data.info if full_data is not None else DatasetInfo(name=env or "", env_id=env)
    probe = make_env(info, env)
    env_id = probe.spec.id if probe.spec else env
    space = probe.action_space
    obs_space = probe.observation_space
    probe.close()
    if (
        not isinstance(space, gym.spaces.Box)
        or not np.all(np.isfinite(space.low))
        or not (np.all(np.isfinite(space.high)))
    ):
        raise ValorlError(
            f"online training needs a bounded continuous (Box) action space; {env_id} has {space}"
        )
    if full_data is not None:
        full_data.check_env(obs_space, space, env_id or "the environment")
        normalizer = fit_normalizer(
            full_data,
            normalize_observations=agent.normalize_observations,
            reward_normalization=agent.reward_normalization,
            action_space=space,
        )
        agent = resolve_agent_support(agent, full_data, float(normalizer.reward_scale))
    else:
        normalizer = _env_normalizer(obs_space, space)
        head = getattr(agent, "critic", None)
        if head is not None and needs_support(head):
            raise ValorlError(
                f"--critic {head.name} needs --vmin and --vmax in --mode online: there is no "
                "dataset to fit its value support to"
            )

    ratio = offline_ratio
    if full_data is not None and ratio is None:
        ratio = DEFAULT_OFFLINE_RATIO[mode]
    if isinstance(ratio, str) and ratio != "uniform":
        try:
            ratio = float(ratio)
        except ValueError:
            raise ValorlError(
                f"--offline-ratio must be a number in [0, 1] or 'uniform', got {ratio!r}"
            ) from None
    schedule = OnlineSchedule(
        mode=mode,
        offline_steps=offline_steps,
        online_steps=online_steps,
        utd=utd,
        start_steps=DEFAULT_START_STEPS[mode] if start_steps is None else start_steps,
        env_steps_per_call=env_steps_per_call,
        buffer_size=min(online_steps, 1_000_000) if buffer_size is None else buffer_size,
        offline_ratio=ratio,
        offline_ratio_schedule=offline_ratio_schedule,
        log_every=log_every,
        eval_every=eval_every,
    )
    schedule.check(agent.batches_per_update, agent.name)
    if schedule.buffer_size < 1:
        raise ValorlError(f"--buffer-size must be at least 1, got {schedule.buffer_size}")
    mix = None
    if full_data is not None:
        mix = OfflineMix(ratio, offline_ratio_schedule, online_steps, len(full_data))
    if getattr(type(agent), "needs_returns_to_go", False):
        replay.init(1, (1,), 1, returns_to_go=True)  # fails early if Batch cannot carry them

    schedule_dict = dataclasses.asdict(schedule) | {
        "steps": schedule.steps,
        "updates": schedule.updates(agent.batches_per_update),
        "eval_episodes": eval_episodes,
    }
    seed_list = list(range(seed, seed + seeds))
    if full_data is not None:
        config = make_run_config(agent, full_data, schedule_dict, seed_list, env_id)
    else:
        config = _env_run_config(agent, schedule_dict, seed_list, env_id, obs_space, space)
    run = RunDir.open(out if out is not None else default_run_path(config), config)
    run.keep_checkpoints = keep_checkpoints
    with run:
        if run.finished:
            console.print(f"{run.path} already finished; nothing to do")
            return RunResult.load(run.path)
        run.attach_logger(open_logger(logger, run.path, config))  # closed with the lock
        _Loop(run, agent, config, full_data, normalizer, schedule, mix, eval_episodes, env).run(
            progress
        )
        if full_data is not None and hasattr(agent, "q_values"):
            diagnose_run(run.path, full_data)
    return RunResult.load(run.path)


# ---- compiled pieces ---------------------------------------------------------------------------


def _online_updates(
    agent: Agent,
    num_updates: int,
    mix: OfflineMix | None,
    state: Any,
    key: jax.Array,
    buffer: ReplayBuffer,
    staged: Batch,
    count: jax.Array,
    normalizer: Normalizer,
    offline: Batch | None,
    env_step: jax.Array,
) -> tuple[Any, jax.Array, ReplayBuffer, dict[str, jax.Array]]:
    """One seed: store the staged transitions (environment units), then `num_updates` agent
    updates on batches from the buffer, mixed with `offline` rows per `mix`."""
    buffer = replay.add(buffer, normalizer.batch(staged), count)
    if num_updates == 0:
        return state, key, buffer, {}

    def body(carry, _):
        state, key = carry
        key, key_batch, key_update = jax.random.split(key, 3)
        if mix is None:
            batch = replay.sample(buffer, key_batch, agent.batch_size, agent.batches_per_update)
        else:
            fraction = jnp.where(buffer.size > 0, mix.fraction(env_step, buffer.size), 1.0)
            batch = replay.mixed_sample(
                offline, buffer, key_batch, agent.batch_size, fraction, agent.batches_per_update
            )
        state, metrics = agent.update(state, batch, key_update)
        return (state, key), metrics

    (state, key), metrics = jax.lax.scan(body, (state, key), length=num_updates)
    return state, key, buffer, jax.tree.map(jnp.mean, metrics)


@functools.cache
def online_chunk(agent: Agent, num_updates: int, mix: OfflineMix | None):
    """jit(vmap): `(states, keys, buffers, staged, counts, normalizer, offline, env_step) ->
    (states, keys, buffers, metrics)`, seed axis first on the first five; states, keys and
    buffers are donated."""
    chunk = functools.partial(_online_updates, agent, num_updates, mix)
    in_axes = (0, 0, 0, 0, 0, None, None, None)
    return jax.jit(jax.vmap(chunk, in_axes=in_axes), donate_argnums=(0, 1, 2))


@functools.cache
def explore(agent: Agent, uniform: bool):
    """jit(vmap): `(states, normalizer, obs, keys, env_step) -> env actions (seeds, A)`: a
    sample of each seed's stochastic policy, or uniform random actions over the action box.
    The key of a step is the seed's exploration key folded with the step, so a resumed run
    draws what an uninterrupted one would have at the same step."""

    def one_seed(state, normalizer: Normalizer, obs, key, env_step):
        key = jax.random.fold_in(key, env_step)
        if uniform:
            unit = jax.random.uniform(key, normalizer.action_low.shape, minval=-1.0, maxval=1.0)
        else:
            unit = agent.act(state, normalizer.observations(obs)[None], key, False)[0]
        return normalizer.actions_to_env(unit)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, 0, 0, None)))


def _empty_buffers(config: dict[str, Any], agent: Agent):
    """A function giving a run's seed-stacked empty buffers (`jax.eval_shape` of it gives their
    shapes without allocating them)."""
    spec = spec_from_config(config, agent)
    rtg = bool(getattr(type(agent), "needs_returns_to_go", False))
    capacity, num_seeds = config["schedule"]["buffer_size"], len(config["seeds"])
    return lambda: jax.tree.map(
        lambda x: jnp.broadcast_to(x, (num_seeds, *x.shape)),
        replay.init(capacity, spec.obs_shape, spec.action_dim, returns_to_go=rtg),
    )


def load_progress(run_dir: str | os.PathLike) -> checkpoint.Checkpoint:
    """The latest checkpoint of an online or hybrid run, with its `online` progress: the
    environment steps, episode counters and every seed's replay buffer."""
    run = RunDir(run_dir)
    config = run.config()
    if "online_steps" not in config["schedule"]:
        raise ValorlError(f"{run.path} is not an online run (trained with --mode offline)")
    data = run.checkpoint_bytes()
    if data is None:
        raise ValorlError(f"{run.path} has no checkpoint yet")
    agent = agent_from_config(config)
    seeds = list(config["seeds"])
    where = str(run.path / "checkpoint.msgpack")
    ckpt = checkpoint.decode(
        data,
        *templates(agent, spec_from_config(config, agent), seeds),
        where=where,
        buffers_template=jax.eval_shape(_empty_buffers(config, agent)),
    )
    if ckpt.online is None:
        raise ValorlError(f"{where} holds no online progress")
    return ckpt


# ---- the host side -----------------------------------------------------------------------------


def train_episode_seed(seed: int, episode: int) -> int:
    """Reset seed of training episode `episode` of seed `seed`."""
    return int(np.random.SeedSequence([seed, TRAIN_EPISODES, episode]).generate_state(1)[0])


class Stager:
    """Transitions on the host, waiting to be added to the device buffers.

    Normally every transition is ready at once. With a `discount` (agents that need
    returns-to-go) an episode's transitions wait until it ends, and are then released with
    their discounted Monte-Carlo returns.
    """

    def __init__(
        self, num_seeds: int, obs_shape, action_dim: int, block: int, discount: float | None
    ):
        self.obs_shape, self.action_dim, self.block = tuple(obs_shape), action_dim, block
        self.discount = discount
        self.ready: list[list[tuple]] = [[] for _ in range(num_seeds)]
        self.episode: list[list[tuple]] = [[] for _ in range(num_seeds)]

    def record(self, i, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Keep one transition of seed `i` (copies: the caller reuses its arrays)."""
        row = (
            np.array(obs, np.float32),
            np.array(action, np.float32),
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
        actions = np.zeros((n, rows, self.action_dim), np.float32)
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


class _Loop:
    """One run's training loop (both phases), resumable from its checkpoint."""

    def __init__(
        self,
        run: RunDir,
        agent: Agent,
        config: dict[str, Any],
        data: Dataset | None,
        normalizer: Normalizer,
        schedule: OnlineSchedule,
        mix: OfflineMix | None,
        eval_episodes: int,
        env: str | None,
    ):
        self.run_dir, self.agent, self.config, self.data = run, agent, config, data
        self.schedule, self.mix, self.eval_episodes, self.env = schedule, mix, eval_episodes, env
        self.seed_list: list[int] = config["seeds"]
        self.info = dataset_info(config)
        spec = spec_from_config(config, agent)
        self.rtg = bool(getattr(type(agent), "needs_returns_to_go", False))
        init_keys, train_keys, self.eval_keys = seed_keys(self.seed_list)
        self.explore_keys = jnp.stack(
            [jax.random.fold_in(jax.random.key(s), EXPLORATION) for s in self.seed_list]
        )
        if run.checkpoint_bytes() is None:
            self.step, self.states, self.keys = 0, init_seeds(agent, spec)(init_keys), train_keys
            self.normalizer = normalizer
            self.env_step, self.episodes = 0, np.zeros(len(self.seed_list), np.int64)
            self.buffers = jax.jit(_empty_buffers(config, agent))()
            self.eval_steps: list[int] = []
            self.eval_returns = np.zeros((len(self.seed_list), 0, eval_episodes))
        else:
            ckpt = load_progress(run.path)
            self.step, self.states, self.keys = ckpt.step, ckpt.states, ckpt.keys
            self.normalizer = ckpt.normalizer
            self.env_step, self.episodes = ckpt.online.env_step, ckpt.online.episodes
            self.buffers = ckpt.online.buffers
            self.eval_steps, self.eval_returns = list(ckpt.eval_steps), ckpt.eval_returns
            console.print(f"resuming {run.path} from step {self.step}")
        run.drop_metrics_after(self.step)
        self.offline = None if data is None else training_data(agent, data, self.normalizer)

    # ---- shared by both phases -----------------------------------------------------------

    def run(self, progress: bool) -> None:
        with contextlib.ExitStack() as stack:
            self.evaluator = None
            if self.eval_episodes:
                self.evaluator = stack.enter_context(
                    Evaluator(
                        lambda: make_env(self.info, self.env),
                        len(self.seed_list),
                        self.eval_episodes,
                    )
                )
            self.bar = stack.enter_context(progress_bar(progress))
            self.task = self.bar.add_task(
                f"{self.agent.name} × {len(self.seed_list)} seeds, {self.schedule.mode}",
                total=self.schedule.steps,
                completed=self.step,
                rate="",
                note="",
            )
            if self.step < self.schedule.offline_steps:
                self.offline_phase()
            self.online_phase()
        write_result(self.run_dir, self.info, self.eval_steps, self.eval_returns, self.step)

    def end_chunk(self, record: dict[str, Any], evaluate: bool, rate: str) -> None:
        """Log a chunk, evaluate if due, checkpoint, and update the progress bar."""
        self.run_dir.append_metrics(record)
        note = {}
        if self.evaluator is not None and evaluate:
            returns = evaluation_round(
                self.evaluator,
                self.agent,
                self.states,
                self.normalizer,
                self.eval_keys,
                self.seed_list,
                len(self.eval_steps),
            )
            self.eval_steps.append(self.step)
            self.eval_returns = np.concatenate([self.eval_returns, returns[:, None]], axis=1)
            scores = self.info.normalized_score(self.eval_returns)
            self.run_dir.write_evaluations(np.array(self.eval_steps), self.eval_returns, scores)
            shown, label = (self.eval_returns, "return") if scores is None else (scores, "score")
            note = {"note": f"{label} {shown[:, -1].mean():.1f}"}
        self.run_dir.write_checkpoint(
            checkpoint.encode(
                checkpoint.Checkpoint(
                    step=self.step,
                    states=self.states,
                    keys=self.keys,
                    normalizer=self.normalizer,
                    eval_steps=np.array(self.eval_steps),
                    eval_returns=self.eval_returns,
                    online=checkpoint.OnlineProgress(self.env_step, self.episodes, self.buffers),
                )
            ),
            self.step,
        )
        self.bar.update(self.task, completed=self.step, rate=rate, **note)

    # ---- offline pre-training ------------------------------------------------------------

    def offline_phase(self) -> None:
        schedule, agent = self.schedule.offline_schedule(), self.agent
        while self.step < schedule.steps:
            n = schedule.next_boundary(self.step) - self.step
            start = time.perf_counter()
            self.states, self.keys, metrics = update_chunk(agent, n // agent.batches_per_update)(
                self.states, self.keys, self.offline
            )
            metrics = jax.device_get(metrics)
            elapsed = time.perf_counter() - start
            self.step += n
            rate = n * len(self.seed_list) / elapsed
            record = {
                "step": self.step,
                "phase": "offline",
                "wall_s": round(elapsed, 4),
                "updates_per_s": round(rate, 1),
                **{k: np.asarray(v).tolist() for k, v in metrics.items()},
            }
            self.end_chunk(record, schedule.evaluates_at(self.step), f"{rate:,.0f} upd/s")

    # ---- environment interaction ---------------------------------------------------------

    def online_phase(self) -> None:
        schedule, agent, seeds = self.schedule, self.agent, self.seed_list
        envs = [make_env(self.info, self.env) for _ in seeds]
        try:
            self._interact(envs, schedule, agent, seeds)
        finally:
            for e in envs:
                e.close()

    def _interact(self, envs: list[gym.Env], schedule: OnlineSchedule, agent, seeds) -> None:
        k = schedule.env_steps_per_call
        spec = spec_from_config(self.config, agent)
        stager = Stager(
            len(seeds), spec.obs_shape, spec.action_dim, k, agent.discount if self.rtg else None
        )
        obs = np.stack([self._reset(i, e) for i, e in enumerate(envs)]).astype(np.float32)
        episode_return = np.zeros(len(seeds))
        filled = np.array(jax.device_get(self.buffers.size), np.int64)
        updates_per_call = k * schedule.utd // agent.batches_per_update
        while self.env_step < schedule.online_steps:
            end = schedule.next_boundary(self.env_step)
            start = time.perf_counter()
            first_env_step = self.env_step
            call_metrics, updates, finished = [], 0, [[] for _ in seeds]
            while self.env_step < end:
                warm = self.env_step < schedule.start_steps
                act = explore(agent, warm)
                for _ in range(k):
                    actions = np.asarray(
                        act(self.states, self.normalizer, obs, self.explore_keys, self.env_step)
                    )
                    for i, e in enumerate(envs):
                        next_obs, reward, terminated, truncated, _ = e.step(actions[i])
                        stager.record(
                            i, obs[i], actions[i], reward, next_obs, terminated, truncated
                        )
                        episode_return[i] += reward
                        if terminated or truncated:
                            finished[i].append(episode_return[i])
                            episode_return[i] = 0.0
                            next_obs = self._reset(i, e)
                        obs[i] = next_obs
                    self.env_step += 1
                staged, counts = stager.take()
                filled += counts
                # An empty buffer (a returns-to-go agent's first episode) has nothing to sample:
                # wait for it, unless offline data fills the batches meanwhile.
                empty = self.mix is None and filled.min() == 0
                n = 0 if warm or empty else updates_per_call
                self.states, self.keys, self.buffers, metrics = online_chunk(agent, n, self.mix)(
                    self.states,
                    self.keys,
                    self.buffers,
                    staged,
                    counts,
                    self.normalizer,
                    self.offline,
                    jnp.int32(self.env_step),
                )
                if n:
                    call_metrics.append(metrics)
                    updates += n * agent.batches_per_update
            elapsed = time.perf_counter() - start
            self.step = schedule.offline_steps + self.env_step
            steps_done = self.env_step - first_env_step
            record: dict[str, Any] = {
                "step": self.step,
                "phase": "online",
                "env_step": self.env_step,
                "wall_s": round(elapsed, 4),
                "env_steps_per_s": round(steps_done / elapsed, 1),
                "updates_per_s": round(updates * len(seeds) / elapsed, 1),
            }
            if call_metrics:
                stacked = jax.device_get(call_metrics)
                for name in stacked[0]:
                    values = np.mean([np.asarray(m[name]) for m in stacked], axis=0)
                    record[name] = values.tolist()
            record["rollout/episode_return"] = [float(np.mean(f)) if f else None for f in finished]
            rate = f"{steps_done / elapsed:,.0f} env steps/s"
            self.end_chunk(record, schedule.evaluates_at(self.env_step), rate)

    def _reset(self, i: int, env: gym.Env) -> np.ndarray:
        obs, _ = env.reset(seed=train_episode_seed(self.seed_list[i], int(self.episodes[i])))
        self.episodes[i] += 1
        return obs


def _env_normalizer(obs_space: gym.Space, action_space: gym.spaces.Box) -> Normalizer:
    """No observation or reward transform; actions to [-1, 1] by the environment's bounds."""
    obs_shape = tuple(obs_space.shape)
    return Normalizer(
        obs_mean=jnp.zeros(obs_shape),
        obs_std=jnp.ones(obs_shape),
        action_low=jnp.asarray(action_space.low, jnp.float32),
        action_high=jnp.asarray(action_space.high, jnp.float32),
        reward_scale=jnp.float32(1.0),  # not a weak type, as a restored one would not be
    )


def _env_run_config(
    agent: Agent,
    schedule: dict[str, Any],
    seeds: list[int],
    env_id: str | None,
    obs_space: gym.Space,
    action_space: gym.spaces.Box,
) -> dict[str, Any]:
    """The config of a run without a dataset: its "data" names the environment only."""
    return {
        "valorl_version": valorl.__version__,
        "agent": {"name": agent.name, "hyperparameters": to_dict(agent)},
        "data": {
            "name": env_id or "",
            "source": "",
            "fingerprint": None,
            "transitions": 0,
            "env_id": env_id,
            "env_spec_json": None,
            "ref_min_score": None,
            "ref_max_score": None,
        },
        "spec": {"obs_shape": list(obs_space.shape), "action_dim": int(action_space.shape[0])},
        "schedule": schedule,
        "seeds": seeds,
    }


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"

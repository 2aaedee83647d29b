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

The environment phase (how environments are stepped, stored and learned from) is
interaction.py's; the loop around it, with evaluation, checkpoints and resume, is loop.py's.
Resuming continues from the last checkpoint's environment step with exactly its buffers,
parameters and keys; at resume every environment starts a new episode, so a resumed run is as
reproducible as a fresh one but not bit-identical to one never interrupted. Each checkpoint
writes the buffers' filled rows (about 110 MB per seed for a million MuJoCo Hopper
transitions), so long runs want a `checkpoint_every` of many thousands of steps, or a duration.
"""

from __future__ import annotations

import dataclasses
import math
import os
from fractions import Fraction
from typing import Any, Literal

import gymnasium as gym
import jax.numpy as jnp
import numpy as np

from valorl.agents import Agent, agent_class
from valorl.config import flag
from valorl.critics import resolve_agent_support
from valorl.critics.heads import needs_support
from valorl.data import replay
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.replay import OfflineMix
from valorl.data.sources import load_dataset, make_env
from valorl.data.transforms import Normalizer, fit_normalizer
from valorl.envs.gymnax_envs import JAX_ENVS, is_jax_env, make_jax_env
from valorl.envs.host import register_gymnasium_ids
from valorl.errors import ValorlError
from valorl.training.loop import run_plan
from valorl.training.offline import (
    check_action_kind,
    check_counts,
    check_multiples,
    configured_agent,
)
from valorl.training.plan import Interaction, RunPlan, data_record, environment_record
from valorl.training.results import RunResult
from valorl.training.schedule import Schedule, parse_checkpoint_every

Mode = Literal["offline", "online", "hybrid", "offline-to-online"]
MODES: tuple[str, ...] = ("offline", "online", "hybrid", "offline-to-online")
DEFAULT_START_STEPS = {"online": 5_000, "hybrid": 10_000, "offline-to-online": 0}
"""Random warm-up steps per mode: CleanRL's SAC default online, RLPD's `start_training` in
hybrid, none after pre-training (IQL's fine-tuning acts with the pre-trained policy at once)."""
DEFAULT_OFFLINE_RATIO: dict[str, replay.OfflineRatio] = {
    "hybrid": 0.5,
    "offline-to-online": "uniform",
}


def train_online(
    agent: Agent | str,
    dataset: str | os.PathLike | Dataset | None = None,
    *,
    mode: Mode = "online",
    env: str | None = None,
    online_steps: int = 1_000_000,
    offline_steps: int = 0,
    utd: float | None = None,
    start_steps: int | None = None,
    offline_ratio: replay.OfflineRatio | None = None,
    offline_ratio_schedule: Literal["constant", "linear"] = "constant",
    buffer_size: int | None = None,
    env_steps_per_call: int | None = None,
    num_envs: int = 1,
    host_loop: bool = False,
    sticky_actions: float | None = None,
    seeds: int = 1,
    seed: int = 0,
    log_every: int = 1000,
    eval_every: int = 10_000,
    checkpoint_every: int | str | None = None,
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
        utd: gradient steps (batches) per environment step, fractions allowed (0.25: one
            update every 4 steps); for an agent with a `utd` hyperparameter (SAC) this sets
            it. Default: the agent's, else 1.
        start_steps: environment steps of uniform random actions before updates begin;
            default 5000 online, 10000 hybrid, 0 offline-to-online.
        offline_ratio: share of each batch from the dataset, in [0, 1], or "uniform"
            (uniform over dataset ∪ replay); default 0.5 hybrid, "uniform" offline-to-online.
        offline_ratio_schedule: "constant", or "linear" to anneal the share to 0 by the end.
        buffer_size: replay capacity per seed; default all online steps, at most 1,000,000.
        env_steps_per_call: environment steps between update calls (K in the module doc);
            default 1, or as many as an agent that consumes several batches per update
            (DSAC-T's delayed actor) needs to keep `utd` critic steps per environment step,
            or as many as a fractional `utd` needs for whole updates.
        num_envs: parallel environments per seed, for a JAX environment (valorl.envs) in the
            compiled loop; each of their steps counts as an environment step.
        host_loop: step a JAX environment from Python between compiled calls (as a
            Gymnasium one) instead of inside the compiled loop, to compare the two.
        sticky_actions: probability that a JAX environment repeats the previous action;
            default 0.1 for MinAtar games (as the original MinAtar), 0 otherwise.
        seeds, seed: how many seeds to train together, from `seed` on.
        log_every: environment steps (gradient steps offline) per logged, checkpointed chunk.
        eval_every: environment steps (gradient steps offline) between evaluation rounds.
        checkpoint_every: steps between checkpoints, or a wall-clock duration ("10min");
            default: at every evaluation. The last step and Ctrl-C always checkpoint.
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
    utd_is_field = agent_type.utd_is_hyperparameter
    if utd is not None and utd_is_field:
        hyperparameters["utd"] = utd
    agent = configured_agent(agent, hyperparameters)
    if agent.needs_next_actions:
        raise ValorlError(
            f"{agent.name} learns from the dataset's next actions, which replay buffers do not "
            "keep: it trains offline only (valorl train without --mode)"
        )
    if agent.chunk_length > 1 or agent.action_chunk > 1:
        raise ValorlError(
            f"{agent.name} learns from chunks of actions, which valorl trains offline only "
            "so far: use valorl train without --mode"
        )
    if utd_is_field:
        utd = agent.utd
    elif utd is None:
        utd = 1
    utd = int(utd) if float(utd).is_integer() else float(utd)  # configs keep whole ratios whole
    if env_steps_per_call is None:
        env_steps_per_call = default_steps_per_call(utd, num_envs, agent.batches_per_update)
    check_counts(seeds, eval_episodes)

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
    if is_jax_env(env):  # a gridworld of a size not registered on import
        register_gymnasium_ids((env,))
    probe = make_env(info, env)
    env_id = probe.spec.id if probe.spec else env
    space = probe.action_space
    obs_space = probe.observation_space
    probe.close()
    num_actions = _num_actions(space, env_id)
    check_action_kind(agent, num_actions is not None, str(env_id))
    jax_env = is_jax_env(env_id)
    if not jax_env and (sticky_actions is not None or num_envs != 1 or host_loop):
        raise ValorlError(
            f"--sticky-actions, --num-envs and --host-loop apply to JAX environments "
            f"({', '.join(JAX_ENVS)}); {env_id} is stepped by Gymnasium"
        )
    if host_loop and num_envs != 1:
        raise ValorlError("--host-loop steps one environment per seed: leave --num-envs at 1")
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
        if jax_env and (agent.normalize_observations or agent.reward_normalization != "none"):
            raise ValorlError(
                f"{agent.name} asks for observation or reward normalisation, which needs a "
                "dataset to fit it to; a JAX environment run has none"
            )
        normalizer = _env_normalizer(obs_space, space)
        head = agent.critic if agent.has_critic else None
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
    schedule = Schedule(
        offline_steps=offline_steps,
        online_steps=online_steps,
        log_every=log_every,
        eval_every=eval_every,
        checkpoint_every=parse_checkpoint_every(checkpoint_every),
    )
    interaction = Interaction(
        mode=mode,
        utd=utd,
        start_steps=DEFAULT_START_STEPS[mode] if start_steps is None else start_steps,
        env_steps_per_call=env_steps_per_call,
        buffer_size=min(online_steps, 1_000_000) if buffer_size is None else buffer_size,
        offline_ratio=ratio,
        offline_ratio_schedule=offline_ratio_schedule,
        num_envs=num_envs,
        host_loop=host_loop,
    )
    check_schedule(schedule, interaction, agent)
    mix = None
    if full_data is not None:
        mix = OfflineMix(ratio, offline_ratio_schedule, online_steps, len(full_data))
    if agent.needs_returns_to_go:
        replay.init(1, (1,), 1, returns_to_go=True)  # fails early if Batch cannot carry them
    record = environment_record(env_id) if full_data is None else data_record(full_data, env_id)
    if jax_env:
        record["sticky_actions"] = make_jax_env(env_id, sticky_actions).sticky_actions
    plan = RunPlan(
        agent=agent,
        schedule=schedule,
        seeds=tuple(range(seed, seed + seeds)),
        data=record,
        obs_shape=tuple(obs_space.shape),
        action_dim=0 if num_actions is not None else int(space.shape[0]),
        eval_episodes=eval_episodes,
        interaction=interaction,
        num_actions=num_actions,
    )
    return run_plan(
        plan,
        out,
        keep_checkpoints=keep_checkpoints,
        progress=progress,
        logger=logger,
        data=full_data,
        normalizer=normalizer,
        diagnose_with=full_data,
        env=env,
        mix=mix,
    )


def default_steps_per_call(utd: float, num_envs: int, batches_per_update: int) -> int:
    """The fewest environment steps K per call for which K·num_envs·utd gradient steps are a
    whole number of updates (`batches_per_update` batches each)."""
    per_step = Fraction(utd).limit_denominator(10_000) * num_envs
    k = per_step.denominator
    batches = per_step.numerator
    return k * (batches_per_update // math.gcd(batches, batches_per_update))


def check_schedule(schedule: Schedule, interaction: Interaction, agent: Agent) -> None:
    """Lengths and cadences that fit the mode, the environment steps per call and the agent."""
    s, i = schedule, interaction
    k = i.env_steps_per_call * i.num_envs  # environment steps per call, over all environments
    named = {"online_steps": s.online_steps, "log_every": s.log_every, "eval_every": s.eval_every}
    named |= {"env_steps_per_call": i.env_steps_per_call, "num_envs": i.num_envs}
    for name, value in named.items():
        if value < 1:
            raise ValorlError(f"{flag(name)} must be at least 1, got {value}")
    if not i.utd > 0:
        raise ValorlError(f"--utd must be positive, got {i.utd}")
    s.check()
    if i.mode == "offline-to-online" and s.offline_steps < 1:
        raise ValorlError(
            f"--mode offline-to-online needs --offline-steps of at least 1, got {s.offline_steps}"
        )
    if i.mode != "offline-to-online" and s.offline_steps:
        raise ValorlError(
            f"--offline-steps applies to --mode offline-to-online, not --mode {i.mode}"
        )
    if not 0 <= i.start_steps <= s.online_steps:
        raise ValorlError(
            f"--start-steps must be between 0 and --online-steps ({s.online_steps}), "
            f"got {i.start_steps}"
        )
    named = {"online_steps": s.online_steps, "start_steps": i.start_steps}
    named |= {"log_every": min(s.log_every, s.online_steps)}
    named |= {"eval_every": min(s.eval_every, s.online_steps)}
    if isinstance(s.checkpoint_every, int):
        named["checkpoint_every"] = min(s.checkpoint_every, s.online_steps)
    per_call = "--env-steps-per-call" if i.num_envs == 1 else "--env-steps-per-call × --num-envs"
    for name, value in named.items():
        if value % k:
            raise ValorlError(f"{flag(name)} ({value}) must be a multiple of {per_call} ({k})")
    bpu = agent.batches_per_update
    batches = k * i.utd
    if batches != round(batches) or round(batches) % bpu:
        raise ValorlError(
            f"{agent.name} consumes {bpu} batches per update, so {per_call} × --utd "
            f"({k} × {i.utd}) must be a whole multiple of {bpu}"
        )
    if i.buffer_size < 1:
        raise ValorlError(f"--buffer-size must be at least 1, got {i.buffer_size}")
    if agent.model_based:
        _check_model_cadence(i, agent, k)
    if s.offline_steps:
        offline = dataclasses.replace(
            s,
            log_every=min(s.log_every, s.offline_steps),
            eval_every=min(s.eval_every, s.offline_steps),
        )
        check_multiples(offline, agent)


def _check_model_cadence(i: Interaction, agent: Agent, k: int) -> None:
    """A model-based agent refits its model and imagines rollouts every `rollout_every`
    environment steps, from the end of the warm-up on, and only online: the warm-up must fill
    the replay buffer it first fits to, and calls must not straddle a refit."""
    every = agent.rollouts.rollout_every
    if i.mode != "online":
        raise ValorlError(
            f"{agent.name} trains with --mode online (MBPO) or offline (valorl train "
            f"{agent.name} --dataset ...); --mode {i.mode} is not supported"
        )
    if i.start_steps < every or i.start_steps % every:
        raise ValorlError(
            f"{agent.name} first fits its model when the random warm-up ends, so "
            f"--start-steps must be a positive multiple of --rollout-every ({every}), "
            f"got {i.start_steps}"
        )
    if every % k:
        raise ValorlError(
            f"--rollout-every ({every}) must be a multiple of --env-steps-per-call ({k})"
        )


def _num_actions(space: gym.Space, env_id: str | None) -> int | None:
    """n of a `Discrete(n)` action space starting at 0; None for a bounded `Box`; any other
    space is refused."""
    if isinstance(space, gym.spaces.Discrete) and int(space.start) == 0:
        return int(space.n)
    if (
        not isinstance(space, gym.spaces.Box)
        or not np.all(np.isfinite(space.low))
        or not (np.all(np.isfinite(space.high)))
    ):
        raise ValorlError(
            "online training needs a bounded continuous (Box) action space or a Discrete(n) "
            f"one; {env_id} has {space}"
        )
    return None


def _env_normalizer(obs_space: gym.Space, action_space: gym.Space) -> Normalizer:
    """No observation or reward transform; actions to [-1, 1] by the environment's bounds
    (discrete actions pass through: bounds of width 0)."""
    obs_shape = tuple(obs_space.shape)
    discrete = isinstance(action_space, gym.spaces.Discrete)
    return Normalizer(
        obs_mean=jnp.zeros(obs_shape),
        obs_std=jnp.ones(obs_shape),
        action_low=jnp.zeros(0) if discrete else jnp.asarray(action_space.low, jnp.float32),
        action_high=jnp.zeros(0) if discrete else jnp.asarray(action_space.high, jnp.float32),
        reward_scale=jnp.float32(1.0),  # not a weak type, as a restored one would not be
    )

"""Offline training: a dataset in, a run directory of checkpoints, metrics and scores out.

`train` validates everything it can before writing anything (agent, hyperparameters, data,
environment, schedule), then runs the one run loop (loop.py) with its offline phase only:
every seed trains together in chunks of fused updates. Running the same call again resumes
from the last checkpoint; a finished run is returned as it is, never retrained or overwritten.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

from valorl.agents import Agent, make_agent
from valorl.config import flag, to_dict
from valorl.critics import resolve_agent_support
from valorl.data.dataset import Dataset
from valorl.data.goals import GoalSampling, goal_features
from valorl.data.sources import load_dataset, make_env
from valorl.data.transforms import fit_normalizer, with_goal_features
from valorl.envs import token_games
from valorl.envs.goal_tasks import check_episodes
from valorl.envs.gymnax_envs import is_jax_env
from valorl.errors import ValorlError
from valorl.training.loop import run_plan
from valorl.training.plan import RunPlan, data_record
from valorl.training.results import RunResult
from valorl.training.schedule import Schedule, parse_checkpoint_every


def train(
    agent: Agent | str,
    dataset: str | os.PathLike | Dataset,
    *,
    steps: int = 1_000_000,
    seeds: int = 1,
    seed: int = 0,
    log_every: int = 1000,
    eval_every: int = 10_000,
    checkpoint_every: int | str | None = None,
    eval_episodes: int = 10,
    env: str | None = None,
    holdout: float = 0.0,
    out: str | os.PathLike | None = None,
    keep_checkpoints: bool = False,
    progress: bool = True,
    logger: str | None = None,
    goals: GoalSampling | str | None = None,
    init_from: str | os.PathLike | None = None,
    **hyperparameters: Any,
) -> RunResult:
    """Train `seeds` seeds of an agent on a dataset and evaluate them; returns the results.

    Args:
        agent: an agent instance, or a registered name ("bc", "td3_bc", "iql").
        dataset: a `Dataset`, a local Minari id, a Minari directory, or a D4RL-layout
            .hdf5 / .npz file.
        steps: gradient steps (batches) per seed.
        seeds: how many seeds to train together; they are `seed, seed + 1, ...`.
        log_every: steps per compiled chunk; a metrics line follows each chunk.
        eval_every: steps between evaluation rounds (there is always one at the end); an
            evaluation falls on the end of the chunk that reaches it.
        checkpoint_every: steps between checkpoints, or a wall-clock duration ("10min");
            default: at every evaluation. The last step and Ctrl-C always checkpoint.
        eval_episodes: episodes per seed and round; 0 trains without an environment.
        env: Gymnasium id to evaluate in, if the dataset names none (or to override it).
        holdout: fraction of episodes kept out of training, for the held-out TD error of the
            value diagnostics written when a critic agent finishes (`diagnostics.json`).
        out: run directory; default `runs/<agent>-<data>-<hash of the config>`.
        keep_checkpoints: keep every checkpoint under `RUN/checkpoints/` (see `RunDir`).
        logger: also send metrics and evaluations to "tensorboard", "wandb" or "mlflow"
            (each an optional extra; see valorl/training/loggers.py).
        goals: train goal-conditioned (`valorl.data.goals`): each row gets a relabelled goal,
            appended to its observations, and its reward says whether the row reaches it;
            "observation" or "oracle" (the goal representation), or a `GoalSampling`.
            Evaluation plays OGBench's five goal-conditioned tasks in turn.
        init_from: a run of the same agent whose latest parameters this run starts from
            (fine-tuning; the agent's `warm_start` says what it keeps).
        **hyperparameters: agent fields to override when `agent` is a name.
    """
    agent = configured_agent(agent, hyperparameters)
    full_data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    data, _ = full_data.split_episodes(holdout)
    if steps < 1:
        raise ValorlError(f"--steps must be at least 1, got {steps}")
    schedule = Schedule(
        offline_steps=steps,
        online_steps=0,
        log_every=min(log_every, steps),
        eval_every=min(eval_every, steps),
        checkpoint_every=parse_checkpoint_every(checkpoint_every),
    )
    schedule.check()
    check_multiples(schedule, agent)
    check_counts(seeds, eval_episodes)
    check_action_kind(agent, full_data.discrete, f"dataset {full_data.info.name!r}")
    token_games.check_episodes(full_data.info.env_spec_json, env, eval_episodes, "--eval-episodes")
    goals = GoalSampling(goals) if isinstance(goals, str) else goals
    if goals is not None:
        check_goals(agent, goals.check(), eval_episodes, full_data, holdout)
    action_space, env_id = None, env or data.info.env_id
    if eval_episodes > 0:
        probe = make_env(data.info, env)
        env_id = probe.spec.id if probe.spec else env
        data.check_env(probe.observation_space, probe.action_space, env_id or "the environment")
        action_space = probe.action_space
        if goals is not None:
            check_goal_env(probe, env_id)
        probe.close()
        check_chunks_on_host(agent, env_id)
    normalizer = fit_normalizer(
        data,
        normalize_observations=agent.normalize_observations,
        # relabelled goals pay their own rewards (0/1 or -1/0), which no scale must change
        reward_normalization="none" if goals else agent.reward_normalization,
        action_space=action_space,
    )
    obs_shape, goal_dim = full_data.obs_shape, 0
    if goals is not None:
        features = goal_features(data, goals)
        normalizer = with_goal_features(normalizer, features, agent.normalize_observations)
        goal_dim = features.shape[1]
        obs_shape = (obs_shape[0] + goal_dim,)
    values = None if goals is None else goals.value_range(agent.discount)
    agent = resolve_agent_support(agent, data, float(normalizer.reward_scale), values)
    plan = RunPlan(
        agent=agent,
        schedule=schedule,
        seeds=tuple(range(seed, seed + seeds)),
        data=data_record(full_data, env_id, holdout, goals, init_from),
        obs_shape=obs_shape,
        action_dim=full_data.action_dim,
        eval_episodes=eval_episodes,
        num_actions=full_data.num_actions,
        goal_dim=goal_dim,
    )
    return run_plan(
        plan,
        out,
        keep_checkpoints=keep_checkpoints,
        progress=progress,
        logger=logger,
        data=data,
        normalizer=normalizer,
        diagnose_with=full_data,
        env=env,
    )


def configured_agent(agent: Agent | str, hyperparameters: dict[str, Any]) -> Agent:
    """The agent named (or given) with `hyperparameters` overridden, through `make_agent` so
    that overrides are type-checked; its batch size checked."""
    if isinstance(agent, str):
        agent = make_agent(agent, **hyperparameters)
    elif hyperparameters:
        agent = make_agent(agent.name, **(to_dict(agent) | hyperparameters))
    if agent.batch_size < 1:
        raise ValorlError(f"--batch-size must be at least 1, got {agent.batch_size}")
    return agent


def check_goals(
    agent: Agent, goals: GoalSampling, eval_episodes: int, data: Dataset, holdout: float
) -> None:
    """Goal-conditioned training relabels rewards per batch: agents that read the dataset's own
    returns or fit a model of its rewards cannot take it, nor can single-task data (its
    terminals would cut the trajectories goals are drawn from), and evaluation plays five
    tasks."""
    if "-singletask-" in (data.info.env_id or ""):
        raise ValorlError(
            f"{data.info.name!r} is a single-task dataset (its rewards and terminals fix one "
            "task); train goal-conditioned on its base dataset, e.g. cube-double-play-v0"
        )
    if holdout:
        raise ValorlError("--holdout feeds value diagnostics, which goal-conditioned runs skip")
    if agent.needs_returns_to_go or agent.model_based:
        what = "its returns-to-go" if agent.needs_returns_to_go else "a model of its rewards"
        raise ValorlError(
            f"{agent.name} learns from {what}, which relabelled goals change; "
            "goal-conditioned training takes model-free agents without returns-to-go"
        )
    if goals.actor_goals != "same" and not agent.separate_actor_goals:
        raise ValorlError(
            f"--actor-goals {goals.actor_goals}: {agent.name}'s actor learns with the rows' "
            "own goals; separate actor goals are for IQL's family"
        )
    head = getattr(agent, "critic", None)
    if goals.reward == "negative" and getattr(head, "name", None) == "bce":
        raise ValorlError(
            f"{agent.name}'s bce critic values are success probabilities in [0, 1], which "
            "--goal-reward negative (0 and -1) cannot reach; use --goal-reward success"
        )
    check_episodes(eval_episodes, "--eval-episodes")


def check_goal_env(probe: gym.Env, env_id: str | None) -> None:
    """A goal-conditioned run evaluates where resets report the task's goal (OGBench's)."""
    _, info = probe.reset(seed=0, options={"task_id": 1})
    if "goal" not in info:
        raise ValorlError(
            f"{env_id or 'the environment'} reports no info['goal'] on reset; goal-conditioned "
            "runs evaluate in OGBench's goal-conditioned environments (or pass --eval-episodes 0)"
        )


def check_action_kind(agent: Agent, discrete: bool, source: str) -> None:
    """A discrete agent needs discrete actions and a continuous agent continuous ones."""
    if agent.discrete != discrete:
        theirs, mine = ("discrete", "continuous") if discrete else ("continuous", "discrete")
        raise ValorlError(
            f"{agent.name} acts in a {mine} action space but {source} has {theirs} actions"
        )


def check_chunks_on_host(agent: Agent, env_id: str | None) -> None:
    """Chunks of actions are executed open-loop by the host evaluator only."""
    if agent.action_chunk > 1 and is_jax_env(env_id):
        raise ValorlError(
            f"{agent.name} acts in chunks of {agent.action_chunk} actions, which only "
            f"Gymnasium environments evaluate; {env_id} is a JAX environment"
        )


def check_counts(seeds: int, eval_episodes: int) -> None:
    if seeds < 1:
        raise ValorlError(f"--seeds must be at least 1, got {seeds}")
    if eval_episodes < 0:
        raise ValorlError(f"--eval-episodes must be 0 or more, got {eval_episodes}")


def check_multiples(schedule: Schedule, agent: Agent) -> None:
    """An agent that consumes several batches per update needs step counts divisible by that."""
    k = agent.batches_per_update
    named = {"steps": schedule.offline_steps, "log_every": schedule.log_every}
    named |= {"eval_every": schedule.eval_every}
    for name, value in named.items():
        if value % k:
            raise ValorlError(
                f"{agent.name} consumes {k} batches per update, so {flag(name)} must be a "
                f"multiple of {k} (got {value})"
            )
    if agent.model_based and schedule.offline_steps:
        if agent.model.model_loss == "vagram":
            raise ValorlError(
                "--model-loss vagram weights the model's errors by the critic's value gradient, "
                "so it needs a model refitted as the critic learns (--mode online); offline the "
                "model is fitted once, before the critic has learned anything"
            )
        # offline chunks are whole rounds of rollouts and updates
        r = agent.rollouts.rollout_every * k
        for name in ("steps", "log_every"):
            if named[name] % r:
                raise ValorlError(
                    f"{agent.name} imagines rollouts every {agent.rollouts.rollout_every} "
                    f"updates, so {flag(name)} must be a multiple of {r} (got {named[name]})"
                )

"""Offline training: a dataset in, a run directory of checkpoints, metrics and scores out.

`train` validates everything it can before writing anything (agent, hyperparameters, data,
environment, schedule), then trains every seed together in chunks of fused updates. After each
chunk it appends metrics and writes a checkpoint; evaluation rounds roll each seed's policy out
in the environment. Running the same call again resumes from the last checkpoint, losing at
most one chunk; a finished run is returned as it is, never retrained or overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from valorl.agents import Agent, make_agent
from valorl.config import to_dict
from valorl.critics import resolve_agent_support
from valorl.data.dataset import Batch, Dataset
from valorl.data.sources import load_dataset, make_env
from valorl.data.transforms import fit_normalizer
from valorl.errors import ValorlError
from valorl.eval.diagnostics import diagnose_run
from valorl.eval.policy import seed_policies
from valorl.eval.rollouts import Evaluator, episode_seeds
from valorl.eval.stats import mean_interval
from valorl.training import checkpoint
from valorl.training.fused import init_seeds, seed_keys, update_chunk
from valorl.training.loggers import open_logger
from valorl.training.run_config import (
    dataset_info,
    default_run_path,
    make_run_config,
    spec_from_config,
    templates,
)
from valorl.training.run_dir import RunDir
from valorl.ui import console, progress_bar


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Training length and the cadence of logging/checkpointing and evaluation, in steps
    (one step = one batch, as papers count them)."""

    steps: int
    log_every: int
    eval_every: int

    def check(self, batches_per_update: int, agent_name: str) -> None:
        for name in ("steps", "log_every", "eval_every"):
            value = getattr(self, name)
            if value < 1:
                raise ValorlError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
            if value % batches_per_update:
                raise ValorlError(
                    f"{agent_name} consumes {batches_per_update} batches per "
                    f"update, so --{name.replace('_', '-')} must be a multiple of "
                    f"{batches_per_update} (got {value})"
                )

    def next_boundary(self, step: int) -> int:
        """The next step at which to stop for metrics, a checkpoint, or an evaluation."""
        up = lambda every: (step // every + 1) * every
        return min(up(self.log_every), up(self.eval_every), self.steps)

    def evaluates_at(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.steps


@dataclasses.dataclass
class RunResult:
    """What a finished (or resumed-and-finished) run produced."""

    path: Path
    eval_steps: np.ndarray
    """(evaluations,) the step of each evaluation round."""
    returns: np.ndarray
    """(seeds, evaluations, episodes) undiscounted returns."""
    scores: np.ndarray | None
    """Same shape, normalised (0 = random, 100 = reference best); None without references."""

    @property
    def final_scores(self) -> np.ndarray | None:
        """Per-seed mean normalised score at the last evaluation."""
        return None if self.scores is None else self.scores[:, -1].mean(axis=-1)

    @property
    def final_returns(self) -> np.ndarray | None:
        """Per-seed mean return at the last evaluation; None if the run never evaluated."""
        return self.returns[:, -1].mean(axis=-1) if self.returns.shape[1] else None

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> RunResult:
        run = RunDir(run_dir)
        evals = run.evaluations()
        returns = evals.get("returns", np.zeros((len(run.config()["seeds"]), 0, 0)))
        return cls(
            path=run.path,
            eval_steps=evals.get("steps", np.zeros(0, int)),
            returns=returns,
            scores=evals.get("normalized_scores"),
        )


def train(
    agent: Agent | str,
    dataset: str | os.PathLike | Dataset,
    *,
    steps: int = 1_000_000,
    seeds: int = 1,
    seed: int = 0,
    log_every: int = 1000,
    eval_every: int = 10_000,
    eval_episodes: int = 10,
    env: str | None = None,
    holdout: float = 0.0,
    out: str | os.PathLike | None = None,
    keep_checkpoints: bool = False,
    progress: bool = True,
    logger: str | None = None,
    **hyperparameters: Any,
) -> RunResult:
    """Train `seeds` seeds of an agent on a dataset and evaluate them; returns the results.

    Args:
        agent: an agent instance, or a registered name ("bc", "td3_bc", "iql").
        dataset: a `Dataset`, a local Minari id, a Minari directory, or a D4RL-layout
            .hdf5 / .npz file.
        steps: gradient steps (batches) per seed.
        seeds: how many seeds to train together; they are `seed, seed + 1, ...`.
        log_every: steps per compiled chunk; metrics and a checkpoint follow each chunk.
        eval_every: steps between evaluation rounds (there is always one at the end).
        eval_episodes: episodes per seed and round; 0 trains without an environment.
        env: Gymnasium id to evaluate in, if the dataset names none (or to override it).
        holdout: fraction of episodes kept out of training, for the held-out TD error of the
            value diagnostics written when a critic agent finishes (`diagnostics.json`).
        out: run directory; default `runs/<agent>-<data>-<hash of the config>`.
        keep_checkpoints: keep every checkpoint under `RUN/checkpoints/` (see `RunDir`).
        logger: also send metrics and evaluations to "tensorboard", "wandb" or "mlflow"
            (each an optional extra; see valorl/training/loggers.py).
        **hyperparameters: agent fields to override when `agent` is a name.
    """
    if isinstance(agent, str):
        agent = make_agent(agent, **hyperparameters)
    elif hyperparameters:  # through make_agent, so overrides are type-checked too
        agent = make_agent(agent.name, **(to_dict(agent) | hyperparameters))
    if agent.batch_size < 1:
        raise ValorlError(f"--batch-size must be at least 1, got {agent.batch_size}")
    full_data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    data, _ = full_data.split_episodes(holdout)
    schedule = Schedule(steps, min(log_every, steps), min(eval_every, steps))
    schedule.check(agent.batches_per_update, agent.name)
    if seeds < 1:
        raise ValorlError(f"--seeds must be at least 1, got {seeds}")
    if eval_episodes < 0:
        raise ValorlError(f"--eval-episodes must be 0 or more, got {eval_episodes}")
    action_space, env_id = None, env or data.info.env_id
    if eval_episodes > 0:
        probe = make_env(data.info, env)
        env_id = probe.spec.id if probe.spec else env
        data.check_env(probe.observation_space, probe.action_space, env_id or "the environment")
        action_space = probe.action_space
        probe.close()
    normalizer = fit_normalizer(
        data,
        normalize_observations=agent.normalize_observations,
        reward_normalization=agent.reward_normalization,
        action_space=action_space,
    )
    agent = resolve_agent_support(agent, data, float(normalizer.reward_scale))
    seed_list = list(range(seed, seed + seeds))
    config = make_run_config(
        agent,
        full_data,
        dataclasses.asdict(schedule) | {"eval_episodes": eval_episodes},
        seed_list,
        env_id,
        holdout,
    )
    run = RunDir.open(out if out is not None else default_run_path(config), config)
    run.keep_checkpoints = keep_checkpoints
    with run:
        if run.finished:
            console.print(f"{run.path} already finished; nothing to do")
            return RunResult.load(run.path)
        run.attach_logger(open_logger(logger, run.path, config))  # closed with the lock
        _train_loop(run, agent, config, data, normalizer, schedule, eval_episodes, env, progress)
        if hasattr(agent, "q_values"):  # a critic agent: check its values (diagnostics.py)
            diagnose_run(run.path, full_data)
    return RunResult.load(run.path)


def _train_loop(
    run: RunDir,
    agent: Agent,
    config: dict[str, Any],
    data: Dataset,
    normalizer,
    schedule: Schedule,
    eval_episodes: int,
    env: str | None,
    progress: bool,
) -> None:
    seed_list = config["seeds"]
    spec = spec_from_config(config, agent)
    init_keys, train_keys, eval_keys = seed_keys(seed_list)
    saved = run.checkpoint_bytes()
    if saved is None:
        step, states, keys = 0, init_seeds(agent, spec)(init_keys), train_keys
        eval_steps: list[int] = []
        eval_returns = np.zeros((len(seed_list), 0, eval_episodes))
    else:
        ckpt = checkpoint.decode(
            saved, *templates(agent, spec, seed_list), where=str(run.path / "checkpoint.msgpack")
        )
        step, states, keys, normalizer = ckpt.step, ckpt.states, ckpt.keys, ckpt.normalizer
        eval_steps, eval_returns = list(ckpt.eval_steps), ckpt.eval_returns
        console.print(f"resuming {run.path} from step {step}")
    run.drop_metrics_after(step)  # forget chunks logged after the last checkpoint, if any
    info = dataset_info(config)
    device_data = training_data(agent, data, normalizer)
    with contextlib.ExitStack() as stack:
        evaluator = None
        if eval_episodes:
            evaluator = stack.enter_context(
                Evaluator(lambda: make_env(data.info, env), len(seed_list), eval_episodes)
            )
        bar = stack.enter_context(progress_bar(progress))
        task = bar.add_task(
            f"{agent.name} × {len(seed_list)} seeds",
            total=schedule.steps,
            completed=step,
            rate="",
            note="",
        )
        while step < schedule.steps:
            n = schedule.next_boundary(step) - step
            start = time.perf_counter()
            states, keys, metrics = update_chunk(agent, n // agent.batches_per_update)(
                states, keys, device_data
            )
            metrics = jax.device_get(metrics)
            elapsed = time.perf_counter() - start
            step += n
            rate = n * len(seed_list) / elapsed
            run.append_metrics(
                {
                    "step": step,
                    "wall_s": round(elapsed, 4),
                    "updates_per_s": round(rate, 1),
                    **{k: np.asarray(v).tolist() for k, v in metrics.items()},
                }
            )
            note = {}
            if evaluator is not None and schedule.evaluates_at(step):
                returns = evaluation_round(
                    evaluator, agent, states, normalizer, eval_keys, seed_list, len(eval_steps)
                )
                eval_steps.append(step)
                eval_returns = np.concatenate([eval_returns, returns[:, None]], axis=1)
                scores = info.normalized_score(eval_returns)
                run.write_evaluations(np.array(eval_steps), eval_returns, scores)
                shown, label = (eval_returns, "return") if scores is None else (scores, "score")
                note = {"note": f"{label} {shown[:, -1].mean():.1f}"}
            run.write_checkpoint(
                checkpoint.encode(
                    checkpoint.Checkpoint(
                        step=step,
                        states=states,
                        keys=keys,
                        normalizer=normalizer,
                        eval_steps=np.array(eval_steps),
                        eval_returns=eval_returns,
                    )
                ),
                step,
            )
            bar.update(task, completed=step, rate=f"{rate:,.0f} upd/s", **note)
    write_result(run, info, eval_steps, eval_returns, step)


def training_data(agent: Agent, data: Dataset, normalizer) -> Batch:
    """The dataset on the device in the agent's units, with Monte-Carlo returns-to-go at the
    agent's discount (scaled like the rewards) when its class sets `needs_returns_to_go`."""
    wants = getattr(type(agent), "needs_returns_to_go", False)
    return normalizer.batch(data.to_batch(discount=agent.discount if wants else None))


def evaluation_round(
    evaluator: Evaluator,
    agent: Agent,
    states: Any,
    normalizer,
    eval_keys: jax.Array,
    seeds: list[int],
    round_index: int,
) -> np.ndarray:
    """Every seed's deterministic policy on this round's episode starts: (seeds, episodes)."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, round_index)
    act = seed_policies(agent)
    return evaluator.returns(
        lambda obs: act(states, normalizer, obs, keys),
        [episode_seeds(s, round_index, evaluator.episodes) for s in seeds],
    )


def write_result(
    run: RunDir, info, eval_steps: list[int], eval_returns: np.ndarray, step: int
) -> None:
    """Finish `run` with result.json: final per-seed returns and scores with 95% intervals
    (shared by the offline and online drivers)."""
    result: dict[str, Any] = {"step": step, "seeds": run.config()["seeds"]}
    if eval_steps:
        final = eval_returns[:, -1].mean(axis=-1)
        result["final_return_per_seed"] = final.tolist()
        scores = info.normalized_score(final)
        if scores is not None:
            mean, low, high = mean_interval(scores)
            result["final_score_per_seed"] = scores.tolist()
            result["final_score"] = {"mean": mean, "ci95": [low, high]}
    run.write_result(result)

"""The one run loop: every mode of training is this loop over up to two phases.

    restore or initialise -> [offline phase] -> [environment phase] -> result.json

The offline phase runs fused chunks of updates on batches drawn from a dataset (an offline
run is the loop with this phase only); the environment phase (interaction.py) steps the
environments on the host and runs a fused chunk of updates after every K environment steps.
After every chunk the loop appends a metrics line, evaluates if the chunk reached an
evaluation step, and writes a checkpoint if one is due (schedule.py) or Ctrl-C was pressed.
Running the same plan again resumes from the last checkpoint with the same states, keys,
buffers and evaluation history; a resumed offline run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import jax
import numpy as np

from valorl.data.dataset import Dataset
from valorl.data.replay import OfflineMix
from valorl.data.transforms import Normalizer
from valorl.training import checkpoint
from valorl.training.compiled import CompiledEvaluator, jax_environment_phase
from valorl.training.diagnostics import diagnosable, diagnose_run
from valorl.training.evaluation import evaluation_round, run_evaluator
from valorl.training.fused import init_seeds, seed_keys, update_chunk
from valorl.training.interaction import environment_phase
from valorl.training.loggers import open_logger
from valorl.training.model_based import fit_on_dataset, offline_model_chunk
from valorl.training.plan import RunPlan, default_run_path, with_current_defaults
from valorl.training.restore import restore, warm_start
from valorl.training.results import RunResult, write_result
from valorl.training.run_dir import RunDir
from valorl.training.schedule import Cadence
from valorl.training.sources import dataset_rows, goal_data
from valorl.ui import console, progress_bar

clock = time.monotonic
"""Seconds for wall-clock checkpoints (a module attribute, so tests can stand in for it)."""


class Loop:
    """One run's progress (agent states, keys, step, evaluations, replay) and the loop over
    its phases."""

    def __init__(
        self,
        run: RunDir,
        plan: RunPlan,
        data: Dataset | None,
        normalizer: Normalizer,
        env: str | None = None,
        mix: OfflineMix | None = None,
    ):
        self.run_dir, self.plan, self.env, self.mix = run, plan, env, mix
        seeds = list(plan.seeds)
        init_keys, train_keys, self.eval_keys = seed_keys(seeds)
        saved = restore(run, plan, with_buffers=True)
        if saved is None:
            self.step, self.keys = 0, train_keys
            self.states = init_seeds(plan.agent, plan.spec)(init_keys)
            if plan.data.get("init_from"):
                self.states = warm_start(plan, self.states)
            self.normalizer = normalizer
            self.eval_steps: list[int] = []
            self.eval_returns = np.zeros((len(seeds), 0, plan.eval_episodes))
            self.eval_successes: np.ndarray | None = None
            self.online = None
            self.model_buffers = None
            if plan.agent.model_based:
                self.model_buffers = jax.jit(plan.empty_model_buffers)()
            if plan.interaction is not None:
                buffers = jax.jit(plan.empty_buffers)()
                episodes = np.zeros(len(seeds), np.int64)
                carry = jax.jit(plan.initial_env_carry)()
                self.online = checkpoint.OnlineProgress(0, episodes, buffers, carry)
        else:
            self.step, self.states, self.keys = saved.step, saved.states, saved.keys
            self.normalizer = saved.normalizer
            self.eval_steps, self.eval_returns = list(saved.eval_steps), saved.eval_returns
            self.eval_successes = saved.eval_successes
            self.online, self.model_buffers = saved.online, saved.model_buffers
            console.print(f"resuming {run.path} from step {self.step}")
        # forget chunks logged after the last checkpoint (all of them when starting afresh)
        run.drop_metrics_after(self.step if saved is not None else -1)
        self.offline = None
        if data is not None and plan.goals is not None:
            self.offline = goal_data(plan.agent, data, self.normalizer, plan.goals)
        elif data is not None:
            self.offline = dataset_rows(plan.agent, data, self.normalizer)
        self.last_checkpoint = clock()

    def run(self, progress: bool) -> None:
        plan = self.plan
        with contextlib.ExitStack() as stack:
            self.evaluator = None
            if plan.eval_episodes and plan.jax_env is not None:
                self.evaluator = CompiledEvaluator(plan.jax_env, plan.eval_episodes)
            elif plan.eval_episodes:
                evaluator = run_evaluator(
                    plan.info,
                    self.env,
                    plan.goals,
                    plan.obs_shape,
                    len(plan.seeds),
                    plan.eval_episodes,
                )
                self.evaluator = stack.enter_context(evaluator)
            self.bar = stack.enter_context(progress_bar(progress))
            mode = "" if plan.interaction is None else f", {plan.mode}"
            self.task = self.bar.add_task(
                f"{plan.agent.name} × {len(plan.seeds)} seeds{mode}",
                total=plan.schedule.steps,
                completed=self.step,
                rate="",
                note="",
            )
            if self.step < plan.schedule.offline_steps:
                self.offline_phase()
            if plan.compiled:
                jax_environment_phase(self)
            elif plan.interaction is not None:
                environment_phase(self)
        write_result(
            self.run_dir,
            plan.info,
            self.eval_steps,
            self.eval_returns,
            self.step,
            self.eval_successes,
        )

    def offline_phase(self) -> None:
        """Fused chunks of updates on dataset rows up to the phase's last step (for a
        model-based agent: its models fitted first, and rounds of imagined rollouts)."""
        agent, seeds = self.plan.agent, len(self.plan.seeds)
        cadence = self.plan.schedule.phase(online=False)
        phase = "offline" if self.plan.interaction is not None else None
        if agent.model_based and self.step == 0:
            self.fit_models()
        while self.step < cadence.steps:
            start_step = self.step
            n = cadence.chunk_end(start_step) - start_step
            start = time.perf_counter()
            if agent.model_based:
                rounds = n // (agent.rollouts.rollout_every * agent.batches_per_update)
                chunk = offline_model_chunk(agent, rounds, seeds, self.plan.data["env_id"])
                self.states, self.keys, self.model_buffers, metrics = chunk(
                    self.states, self.keys, self.model_buffers, self.offline, self.normalizer
                )
            else:
                self.states, self.keys, metrics = update_chunk(
                    agent, n // agent.batches_per_update, seeds, self.plan.goals
                )(self.states, self.keys, self.offline)
            metrics = jax.device_get(metrics)
            elapsed = time.perf_counter() - start
            self.step += n
            rate = n * seeds / elapsed
            record: dict[str, Any] = {"step": self.step}
            if phase:
                record["phase"] = phase
            record |= {
                "wall_s": round(elapsed, 4),
                "updates_per_s": round(rate, 1),
                **{k: np.asarray(v).tolist() for k, v in metrics.items()},
            }
            self.end_chunk(record, cadence, start_step, self.step, f"{rate:,.0f} upd/s")

    def fit_models(self) -> None:
        """Fit every seed's dynamics model to the dataset before the first update, and log
        it as a "model" line of metrics."""
        start = time.perf_counter()
        fit = fit_on_dataset(self.plan.agent, len(self.plan.seeds))
        self.states, metrics = fit(self.states, self.keys, self.offline)
        metrics = jax.device_get(metrics)  # waits for the fit: JAX returns before it is done
        record = {"step": 0, "phase": "model", "wall_s": round(time.perf_counter() - start, 4)}
        record |= {k: np.asarray(v).tolist() for k, v in metrics.items()}
        self.run_dir.append_metrics(record)

    def end_chunk(
        self, record: dict[str, Any], cadence: Cadence, start: int, end: int, rate: str
    ) -> None:
        """Log a chunk (phase steps `start` to `end`), evaluate and checkpoint if due, and
        update the progress bar."""
        self.run_dir.append_metrics(record)
        note = {}
        if self.evaluator is not None and cadence.evaluates(start, end):
            note = {"note": self.evaluate()}
        seconds = self.plan.schedule.checkpoint_seconds
        due = cadence.checkpoints(start, end) or (
            seconds is not None and clock() - self.last_checkpoint >= seconds
        )
        if due or self.run_dir.stop_requested:
            self.write_checkpoint()
        self.bar.update(self.task, completed=self.step, rate=rate, **note)

    def evaluate(self) -> str:
        """One evaluation round of every seed at the current step; returns a short summary."""
        round_index = len(self.eval_steps)
        if isinstance(self.evaluator, CompiledEvaluator):
            returns = self.evaluator.round(
                self.plan.agent, self.states, self.eval_keys, round_index
            )
        else:
            returns = evaluation_round(
                self.evaluator,
                self.plan.agent,
                self.states,
                self.normalizer,
                self.eval_keys,
                list(self.plan.seeds),
                round_index,
            )
        self.eval_steps.append(self.step)
        self.eval_returns = np.concatenate([self.eval_returns, returns[:, None]], axis=1)
        successes = getattr(self.evaluator, "successes", None)
        if successes is not None:  # environments that report info["success"] (OGBench's)
            before = self.eval_successes
            if before is None:
                before = np.zeros((*successes.shape[:1], 0, *successes.shape[1:]), bool)
            self.eval_successes = np.concatenate([before, successes[:, None]], axis=1)
        scores = self.plan.info.normalized_score(self.eval_returns)
        self.run_dir.write_evaluations(
            np.array(self.eval_steps), self.eval_returns, scores, self.eval_successes
        )
        shown, label = (self.eval_returns, "return") if scores is None else (scores, "score")
        note = f"{label} {shown[:, -1].mean():.1f}"
        if successes is not None:
            note += f", success {successes.mean():.2f}"
        return note

    def write_checkpoint(self) -> None:
        self.run_dir.write_checkpoint(
            checkpoint.encode(
                checkpoint.Checkpoint(
                    step=self.step,
                    states=self.states,
                    keys=self.keys,
                    normalizer=self.normalizer,
                    eval_steps=np.array(self.eval_steps),
                    eval_returns=self.eval_returns,
                    online=self.online,
                    model_buffers=self.model_buffers,
                    eval_successes=self.eval_successes,
                )
            ),
            self.step,
        )
        self.last_checkpoint = clock()


def run_plan(
    plan: RunPlan,
    out: str | os.PathLike | None,
    *,
    keep_checkpoints: bool,
    progress: bool,
    logger: str | None,
    data: Dataset | None,
    normalizer: Normalizer,
    diagnose_with: Dataset | None,
    env: str | None = None,
    mix: OfflineMix | None = None,
) -> RunResult:
    """Open (or reopen) the plan's run directory and run the loop unless it has finished.
    `data` gives the offline rows; critic agents, chunk critics included, get value diagnostics
    (`diagnostics.json`) on `diagnose_with`, the whole dataset, when there is one (not in
    goal-conditioned runs, whose values answer relabelled goals, not the dataset's returns)."""
    config = plan.config()
    path = out if out is not None else default_run_path(config)
    run = RunDir.open(path, config, upgrade=with_current_defaults)
    run.keep_checkpoints = keep_checkpoints
    with run:
        if run.finished:
            console.print(f"{run.path} already finished; nothing to do")
            return RunResult.load(run.path)
        run.attach_logger(open_logger(logger, run.path, config))  # closed with the lock
        Loop(run, plan, data, normalizer, env, mix).run(progress)
        if diagnose_with is not None and diagnosable(plan.agent) and plan.goals is None:
            diagnose_run(run.path, diagnose_with)
    return RunResult.load(run.path)

"""Reading a run back: its plan from config.json and a checkpoint restored against it.

The one place a checkpoint is restored, for resuming (with the environment phase's replay
buffers), for loading policies and for diagnostics (agents only).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from valorl.errors import ValorlError
from valorl.training import checkpoint
from valorl.training.plan import RunPlan
from valorl.training.run_dir import CHECKPOINT, RunDir


def warm_start(plan: RunPlan, states: Any) -> Any:
    """Fresh seed-stacked `states` of a run with `plan.data["init_from"]` with the parameters
    of that run's latest checkpoint (seed i from its seed i, or from its only seed), through
    the agent's `warm_start`."""
    source = plan.data["init_from"]
    source_plan, ckpt = load_checkpoint(source)
    if source_plan.agent.name != plan.agent.name:
        raise ValorlError(
            f"--init-from {source} is a {source_plan.agent.name} run; this run trains "
            f"{plan.agent.name}"
        )
    pretrained, n = ckpt.states, len(source_plan.seeds)
    if n == 1:
        pretrained = jax.tree.map(lambda x: jnp.repeat(x, len(plan.seeds), axis=0), pretrained)
    elif n != len(plan.seeds):
        raise ValorlError(
            f"--init-from {source} has {n} seeds; fine-tune it with --seeds {n} (or start from "
            "a one-seed run)"
        )
    shapes = lambda tree: jax.tree.map(jnp.shape, tree)
    try:
        started = jax.vmap(plan.agent.warm_start)(states, pretrained)
        jax.tree.map(lambda a, b: None if a == b else _raise(), shapes(started), shapes(states))
    except (ValueError, TypeError):
        raise ValorlError(
            f"--init-from {source}: its networks have other shapes than this run's (keep the "
            "architecture flags of the pre-training run)"
        ) from None
    return started


def _raise() -> None:
    raise ValueError("shapes differ")


def restore(
    run: RunDir, plan: RunPlan, step: int | None = None, with_buffers: bool = False
) -> checkpoint.Checkpoint | None:
    """The run's latest checkpoint (or the one kept at `step`), checked against `plan`; None if
    it has none yet. `with_buffers` also restores an online run's replay buffers and a
    model-based agent's buffers of imagined rows."""
    data = run.checkpoint_bytes(step)
    if data is None:
        return None
    states, normalizer = plan.templates()
    buffers = carry = None
    if with_buffers and plan.interaction is not None:
        buffers = jax.eval_shape(plan.empty_buffers)
        carry = jax.eval_shape(plan.initial_env_carry) if plan.compiled else None
    model_buffers = None
    if with_buffers and plan.agent.model_based:
        model_buffers = jax.eval_shape(plan.empty_model_buffers)
    return checkpoint.decode(
        data,
        states,
        normalizer,
        where=str(run.path / CHECKPOINT),
        buffers_template=buffers,
        carry_template=carry,
        model_buffers_template=model_buffers,
    )


def load_checkpoint(
    run_dir: str | os.PathLike, step: int | None = None, with_buffers: bool = False
) -> tuple[RunPlan, checkpoint.Checkpoint]:
    """A run's plan and its latest checkpoint (or the one kept at `step`); ValorlError if it
    has none yet."""
    run = RunDir(run_dir)
    plan = RunPlan.from_config(run.config())
    ckpt = restore(run, plan, step, with_buffers)
    if ckpt is None:
        raise ValorlError(f"{run.path} has no checkpoint yet")
    return plan, ckpt


def load_progress(run_dir: str | os.PathLike) -> checkpoint.Checkpoint:
    """The latest checkpoint of an online or hybrid run, with its `online` progress: the
    environment steps, episode counters and every seed's replay buffer."""
    plan, ckpt = load_checkpoint(run_dir, with_buffers=True)
    if plan.interaction is None:
        raise ValorlError(f"{run_dir} is not an online run (trained with --mode offline)")
    if ckpt.online is None:
        raise ValorlError(f"{os.fspath(run_dir)}/{CHECKPOINT} holds no online progress")
    return ckpt

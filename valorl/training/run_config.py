"""The run config: what `config.json` records, and rebuilding a run's pieces from it.

The config names the agent and all its hyperparameters, the data (with a content fingerprint,
so a run never resumes on changed data), the schedule and the seeds. Anything that loads a run
later (resume, `valorl eval`, `load_policy`) rebuilds the agent, its `Spec` and the shape of its
state from this file alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax

import valorl
from valorl.agents import Agent, Spec, agent_class
from valorl.config import from_dict, to_dict
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.transforms import Normalizer
from valorl.training.fused import init_seeds, seed_keys


def make_run_config(
    agent: Agent,
    dataset: Dataset,
    schedule: dict[str, Any],
    seeds: list[int],
    env_id: str | None,
    holdout: float = 0.0,
) -> dict[str, Any]:
    """The config of a run on `dataset` (all of it, before `holdout` episodes are set aside)."""
    info = dataset.info
    config = {
        "valorl_version": valorl.__version__,
        "agent": {"name": agent.name, "hyperparameters": to_dict(agent)},
        "data": {
            "name": info.name,
            "source": info.source,
            "fingerprint": dataset.fingerprint(),
            "transitions": len(dataset),
            "env_id": env_id,
            "env_spec_json": info.env_spec_json if env_id == info.env_id else None,
            "ref_min_score": info.ref_min_score,
            "ref_max_score": info.ref_max_score,
        },
        "spec": {"obs_shape": list(dataset.obs_shape), "action_dim": dataset.action_dim},
        "schedule": schedule,
        "seeds": seeds,
    }
    if holdout:  # only when used, so configs of runs without a split stay as they were
        config["data"]["holdout"] = holdout
    return config


def default_run_path(config: dict[str, Any], root: str | Path = "runs") -> Path:
    """`runs/<agent>-<data>-<hash>`: the same command maps to the same directory (so re-running
    it resumes), and any change of hyperparameters, data or schedule to a new one."""
    identity = {k: config[k] for k in ("agent", "data", "schedule", "seeds")}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    name = config["data"]["name"].replace("/", "_") or "data"
    return Path(root) / f"{config['agent']['name']}-{name}-{digest}"


def agent_from_config(config: dict[str, Any]) -> Agent:
    return from_dict(agent_class(config["agent"]["name"]), config["agent"]["hyperparameters"])


def spec_from_config(config: dict[str, Any], agent: Agent) -> Spec:
    schedule = config["schedule"]
    # Online runs record their update count; offline ones take one update per batches_per_update.
    total_updates = schedule.get("updates") or schedule["steps"] // agent.batches_per_update
    return Spec(
        obs_shape=tuple(config["spec"]["obs_shape"]),
        action_dim=config["spec"]["action_dim"],
        total_updates=total_updates,
    )


def templates(agent: Agent, spec: Spec, seeds: list[int]) -> tuple[Any, Normalizer]:
    """Shapes of the seed-stacked agent state and of the normalizer, for restoring."""
    init_keys, _, _ = seed_keys(seeds)
    states = jax.eval_shape(init_seeds(agent, spec), init_keys)
    return states, Normalizer.identity(spec.obs_shape, spec.action_dim)


def dataset_info(config: dict[str, Any]) -> DatasetInfo:
    """What the run recorded about its data: name, environment and reference returns."""
    data = config["data"]
    return DatasetInfo(
        name=data["name"],
        source=data["source"],
        env_id=data["env_id"],
        env_spec_json=data.get("env_spec_json"),
        ref_min_score=data["ref_min_score"],
        ref_max_score=data["ref_max_score"],
    )

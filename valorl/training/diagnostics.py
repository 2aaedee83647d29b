"""Value diagnostics: is a learned Q-function over- or under-estimating, and does it generalise?

Two checks on a run's critic, per seed, in the environment's reward units:

- **bias**: Q(s, a) at the dataset's state-actions minus the discounted Monte-Carlo return
  G_t observed from there (`Dataset.returns_to_go`). G is the value of the *behaviour* policy,
  so an agent that improves on it should sit somewhat above; a gap of the size of the returns
  themselves is the over-estimation that offline RL methods exist to prevent (Kumar et al.
  2020, CQL, Fig. 1; Fujimoto et al. 2019, BCQ, Fig. 1).
- **TD error**: the root-mean-square of r + γ·m·Q(s', π(s')) − Q(s, a), the Bellman residual
  of Q for the agent's own deterministic policy π, on the transitions it trained on and on
  held-out episodes (`valorl train --holdout`). A held-out error far above the training error
  means the critic memorised its data.

Q is the mean over the ensemble (the estimate, not the pessimistic target). A model-based run
also gets its dynamics model's one- and k-step prediction errors (`model_diagnostics.py`).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from valorl.agents import CriticAgent
from valorl.data.dataset import Dataset
from valorl.data.files import atomic_write
from valorl.data.sources import load_dataset
from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.training.model_diagnostics import model_diagnostics
from valorl.training.restore import load_checkpoint
from valorl.training.run_dir import RunDir

DIAGNOSTICS = "diagnostics.json"
CHUNK = 4096  # transitions per device call; bounds memory on large datasets


def value_diagnostics(
    agent: CriticAgent,
    states: Any,
    normalizer: Normalizer,
    train: Dataset,
    heldout: Dataset | None,
) -> dict[str, Any]:
    """Bias against Monte-Carlo returns and TD errors for every seed of a seed-stacked state."""
    if not agent.has_critic:
        raise ValorlError(f"{agent.name} has no critic: value diagnostics need a Q-function")
    q, td = _q_and_td(agent, states, normalizer, train)
    returns = train.returns_to_go(agent.discount)
    result: dict[str, Any] = {
        "discount": agent.discount,
        "train_episodes": len(train.episode_slices()),
        "heldout_episodes": 0 if heldout is None else len(heldout.episode_slices()),
        "q_mean": q.mean(axis=1).tolist(),
        "mc_return_mean": float(returns.mean()),
        "bias": (q - returns).mean(axis=1).tolist(),
        "td_error_train": _rms(td).tolist(),
        "td_error_heldout": None,
    }
    if heldout is not None:
        result["td_error_heldout"] = _rms(_q_and_td(agent, states, normalizer, heldout)[1]).tolist()
    return result


def diagnose_run(
    run_dir: str | os.PathLike, dataset: str | os.PathLike | Dataset | None = None
) -> dict[str, Any]:
    """Diagnostics of a run's latest checkpoint on its own data (the recorded training split
    and held-out episodes), written to `RUN/diagnostics.json` and returned. `dataset` defaults
    to where the run loaded its data from."""
    run = RunDir(run_dir)
    config = run.config()["data"]
    plan, ckpt = load_checkpoint(run.path)
    source = config["source"] if dataset is None else dataset
    data = source if isinstance(source, Dataset) else load_dataset(source)
    if data.fingerprint() != config["fingerprint"]:
        raise ValorlError(f"{data.info.source} is not the data {run.path} trained on")
    train, heldout = data.split_episodes(config.get("holdout", 0.0))
    result = {
        "step": ckpt.step,
        "seeds": list(plan.seeds),
        **value_diagnostics(plan.agent, ckpt.states, ckpt.normalizer, train, heldout),
    }
    if plan.agent.model_based:
        episodes, split = (train, "train") if heldout is None else (heldout, "heldout")
        result["model"] = model_diagnostics(
            plan.agent.model, ckpt.states.model, ckpt.normalizer, episodes, split=split
        )
    atomic_write(run.path / DIAGNOSTICS, (json.dumps(result, indent=2) + "\n").encode())
    return result


def _q_and_td(
    agent: CriticAgent, states: Any, normalizer: Normalizer, data: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Q(s, a) and TD errors in reward units, each of shape (seeds, transitions)."""
    batch = normalizer.batch(data.to_batch())
    n = len(data)
    pad = -n % CHUNK
    chunks = jax.tree.map(
        lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(-1, CHUNK, *x.shape[1:]),
        batch,
    )
    q, td = _evaluate(agent.without_planning())(states, chunks)
    scale = float(normalizer.reward_scale)
    flat = lambda x: np.asarray(x).reshape(x.shape[0], -1)[:, :n] / scale
    return flat(q), flat(td)


@functools.cache
def _evaluate(agent: CriticAgent):
    def one_chunk(state, b):
        q = agent.q_values(state, b.observations, b.actions).mean(axis=0)
        next_actions = agent.act(state, b.next_observations, jax.random.key(0), True)
        next_q = agent.q_values(state, b.next_observations, next_actions).mean(axis=0)
        return q, b.rewards + agent.discount * b.masks * next_q - q

    def one_seed(state, chunks):
        return jax.lax.map(lambda b: one_chunk(state, b), chunks)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None)))


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt((x**2).mean(axis=1))

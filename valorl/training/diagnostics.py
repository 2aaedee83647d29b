"""Value diagnostics: is a learned Q-function over- or under-estimating, and does it generalise?

Checks on a run's critic, per seed, in the environment's reward units:

- **bias**: Q(s, a) at the dataset's state-actions minus the discounted Monte-Carlo return
  G_t observed from there (`Dataset.returns_to_go`). G is the value of the *behaviour* policy,
  so an agent that improves on it should sit somewhat above; a gap of the size of the returns
  themselves is the over-estimation that offline RL methods exist to prevent (Kumar et al.
  2020, CQL, Fig. 1; Fujimoto et al. 2019, BCQ, Fig. 1).
- **TD error**: the root-mean-square of r + γ·m·Q(s', π(s')) − Q(s, a), the Bellman residual
  of Q for the agent's own deterministic policy π, on the transitions it trained on and on
  held-out episodes (`valorl train --holdout`). A held-out error far above the training error
  means the critic memorised its data.

- **divergence**: the discounted returns any policy could have if every reward stayed in the
  data's range [r_min, r_max] make a range; a seed whose mean Q lies beyond it by more than
  the range's own width has diverged (or a reward penalty, as MOPO's, dominates what it
  learns). A critic just outside it is not flagged: an untrained one sits near 0, the edge of
  the range for rewards of one sign; nor is any where every reward is the same 0.

- **settling** (`q_drift`): how far the mean Q logged during training (`critic/q_mean` in
  metrics.jsonl) moved over the last fifth of the run. A critic still moving by more than 3%
  of the return range has not reached its fixed point, and its bias is then in part rewards
  it has yet to back up, not over-estimation. With a Polyak target of rate τ and h-step
  targets, values settle over about 1/(τ·(1 − γ^h)) updates (the target follows the online
  critic at rate τ, and each backup contracts by γ^h): 20k at τ 0.005, γ 0.99 with one-step
  targets, 40k where the target moves every second update (TD3, ReBRAC), 4k with 5-step ones.

- **on-policy bias** (`policy_value_check`, `valorl diagnose --episodes N`): the same bias on
  the policy's own state-actions, from episodes it plays in the environment: mean Q(s, a)
  against the discounted return it then really collects. This is the over-estimation of the
  value of the learned policy itself (Fujimoto et al. 2018, TD3, Fig. 1; Chen et al. 2021,
  REDQ, its normalised bias), which the bias on the data cannot show: there G is another
  policy's return. A soft critic's Q (SAC's) also counts the entropy bonus, which G does not.

A critic of action chunks (QC, FQL over chunks: Q(s_t, a_t, …, a_(t+h−1))) is read the same way
at every row's chunk of the data: its bias against G_t, and its h-step TD error
Σ_(k<h) γ^k r_(t+k) + γ^h·m·Q(s_(t+h), π(s_(t+h))) − Q, over the rows whose chunk is whole
(`nstep.whole_chunks`, the rows its loss learns from). An agent whose policy acts chunks of
another length than its critic scores (DQC) has no Q of its own actions and is not diagnosed.

Q is the mean over the ensemble (the estimate, not the pessimistic target). A model-based run
also gets its dynamics model's one- and k-step prediction errors (`model_diagnostics.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from valorl.agents import CriticAgent
from valorl.agents.flow_bc import flat_actions, flat_chunks
from valorl.data.dataset import Batch, Dataset
from valorl.data.files import atomic_write
from valorl.data.nstep import chunk_transitions, whole_chunks, window_rows
from valorl.data.sources import load_dataset
from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.training.checkpoint import Checkpoint
from valorl.training.model_diagnostics import model_diagnostics
from valorl.training.plan import RunPlan
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
    require_diagnosable(agent)
    result: dict[str, Any] = {
        "discount": agent.discount,
        "chunk_length": agent.critic_chunk,
        "train_episodes": len(train.episode_slices()),
        "heldout_episodes": 0 if heldout is None else len(heldout.episode_slices()),
        # None where no row counts: every episode shorter than the critic's chunk and none
        # ending at a terminal state leaves no chunk to read the critic at
        **dict.fromkeys(("q_mean", "mc_return_mean", "bias", "td_error_train")),
        "td_error_heldout": None,
        "return_range": return_range(train.rewards, agent.discount),
        "q_diverged": None,
    }
    q, td, counted = _q_and_td(agent, states, normalizer, train)
    if counted.any():
        returns = train.returns_to_go(agent.discount)[counted]
        result["q_mean"] = q[:, counted].mean(axis=1).tolist()
        result["mc_return_mean"] = float(returns.mean())
        result["bias"] = (q[:, counted] - returns).mean(axis=1).tolist()
        result["td_error_train"] = _rms(td[:, counted]).tolist()
        low, high = result["return_range"] or (0.0, 0.0)
        if high > low:
            width = high - low
            result["q_diverged"] = [
                not low - width <= q_seed <= high + width for q_seed in result["q_mean"]
            ]
    if heldout is not None:
        _, td, counted = _q_and_td(agent, states, normalizer, heldout)
        if counted.any():
            result["td_error_heldout"] = _rms(td[:, counted]).tolist()
    return result


def policy_value_check(
    agent: CriticAgent, states: Any, normalizer: Normalizer, played: Sequence[Dataset]
) -> dict[str, Any]:
    """Each seed's critic on the episodes its own policy played (`played[i]` for seed i):
    mean undiscounted episode return, mean Q over the visited state-actions (a chunk critic:
    at every row's chunk of the actions taken, where whole), the mean discounted return-to-go
    from them (`Dataset.returns_to_go`: a truncated episode continues at its mean reward), the
    bias Q − G and the RMS TD error, in reward units (None where no chunk is whole)."""
    require_diagnosable(agent)
    keys = ("return", "q_mean", "return_to_go_mean", "bias", "td_error")
    result: dict[str, Any] = {"episodes": len(played[0].episode_slices())}
    result |= {key: [] for key in keys}
    for seed_index, episodes in enumerate(played):
        state = jax.tree.map(lambda x, i=seed_index: x[i : i + 1], states)
        q, td, counted = _q_and_td(agent, state, normalizer, episodes)
        q, td = q[0, counted], td[0, counted]
        to_go = episodes.returns_to_go(agent.discount)[counted]
        values = [episodes.rewards.sum() / len(episodes.episode_slices())]
        if counted.any():
            values += [q.mean(), to_go.mean(), (q - to_go).mean(), np.sqrt((td**2).mean())]
        for key, value in itertools.zip_longest(keys, values):
            result[key].append(None if value is None else float(value))
    return result


def return_range(rewards: np.ndarray, discount: float) -> list[float] | None:
    """[low, high]: the discounted returns possible when every reward lies in the range of
    REWARDS, from one reward before a termination to an unending run of the same reward
    (r / (1 − γ)); None for no rewards or γ = 1, where an unending run has no bound."""
    if len(rewards) == 0 or discount >= 1:
        return None
    low, high = float(np.min(rewards)), float(np.max(rewards))
    horizon = 1 / (1 - discount)
    return [min(low, low * horizon), max(high, high * horizon)]


SETTLED = 0.03  # of the return range: a larger move over the last fifth is not settled


def q_drift(
    metrics: Sequence[dict[str, Any]],
    step: int,
    value_range: Sequence[float] | None,
    reward_scale: float = 1.0,
) -> dict[str, Any]:
    """`q_drift`: each seed's change of the logged mean Q (`critic/q_mean`, a batch mean,
    divided by the reward scale) over the last fifth of a run of `step` updates, as the mean
    of its records in (0.9·step, step] less the mean of those in [0.7·step, 0.8·step] (means
    of a few records: one batch's Q is noisy); `q_settled`: whether each moved by at most 3%
    of `value_range`'s width. Both None without records in both windows, or a range of no
    width (`q_settled` alone)."""
    logged = [(r["step"], r["critic/q_mean"]) for r in metrics if "critic/q_mean" in r]
    early = [q for at, q in logged if 0.7 * step <= at <= 0.8 * step]
    late = [q for at, q in logged if 0.9 * step < at <= step]
    if not early or not late or value_range is None:
        return {"q_drift": None, "q_settled": None}
    drift = (np.mean(late, axis=0) - np.mean(early, axis=0)) / reward_scale
    width = value_range[1] - value_range[0]
    settled = None if width <= 0 else (np.abs(drift) <= SETTLED * width).tolist()
    return {"q_drift": drift.tolist(), "q_settled": settled}


def diagnosable(agent: Any) -> bool:
    """Whether the agent has a Q of the actions it takes: a one-step critic, or a critic of
    the very chunks its policy acts (QC, FQL over chunks; not DQC)."""
    return agent.critic_chunk > 0 and agent.critic_chunk == agent.action_chunk


def require_diagnosable(agent: Any) -> None:
    """ValorlError unless the agent has a Q of the actions it takes (`diagnosable`)."""
    if not diagnosable(agent):
        raise ValorlError(
            f"{agent.name} has no critic: value diagnostics need a Q-function"
            if agent.critic_chunk == 0
            else f"{agent.name}'s critic scores chunks of {agent.critic_chunk} actions and its "
            f"policy acts {agent.action_chunk}: value diagnostics need Q of the actions taken"
        )


def diagnose_run(
    run_dir: str | os.PathLike,
    dataset: str | os.PathLike | Dataset | None = None,
    on_policy: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Diagnostics of a run's latest checkpoint on its own data (the recorded training split
    and held-out episodes), written to `RUN/diagnostics.json` and returned. `dataset` defaults
    to where the run loaded its data from, or to its name for data derived on load.

    `on_policy` plays the policy's own episodes and returns `policy_value_check`'s result
    (`valorl.collection.on_policy.prepare_on_policy_check` for this run); it is called once
    the data is found, and is all there is to check for a run trained online without one."""
    run = RunDir(run_dir)
    config = run.config()["data"]
    plan, ckpt = load_checkpoint(run.path)
    result: dict[str, Any] = {"step": ckpt.step, "seeds": list(plan.seeds)}
    if dataset is None and config.get("fingerprint") is None:  # online: nothing recorded
        if on_policy is None:
            raise ValorlError(
                f"{run.path} trained online, with no dataset to read its critic on: play "
                "episodes with --episodes N"
            )
        result |= {"discount": plan.agent.discount, "on_policy": on_policy()}
    else:
        result |= _data_diagnostics(run, config, plan, ckpt, dataset)
        if on_policy is not None:
            result["on_policy"] = on_policy()
    atomic_write(run.path / DIAGNOSTICS, (json.dumps(result, indent=2) + "\n").encode())
    return result


@dataclasses.dataclass(frozen=True)
class DataValues:
    """A run's critic read at every row of its data (`q_on_training_data`)."""

    step: int
    """The checkpoint's step."""
    q: np.ndarray
    """(seeds, rows) Q in reward units at each row's action (a chunk critic: its chunk)."""
    returns: np.ndarray
    """(rows,) the discounted Monte-Carlo return from each row at the agent's discount."""
    counted: np.ndarray
    """(rows,) the rows a critic is read at (`_q_and_td`: for a chunk critic, whole chunks)."""
    data: Dataset


def q_on_training_data(run_dir: str | os.PathLike) -> DataValues:
    """The latest checkpoint's critic at every row of the run's data (held-out episodes
    included, where it held some out), for reading it by something the diagnostics do not
    group by (a task's own notion of progress, as `benchmarks/puzzle_values.py` does)."""
    plan, ckpt = load_checkpoint(run_dir)
    require_diagnosable(plan.agent)
    data = _recorded_data(RunDir(run_dir).config()["data"], run_dir)
    q, _, counted = _q_and_td(plan.agent, ckpt.states, ckpt.normalizer, data)
    return DataValues(ckpt.step, q, data.returns_to_go(plan.agent.discount), counted, data)


def _data_diagnostics(
    run: RunDir,
    config: dict[str, Any],
    plan: RunPlan,
    ckpt: Checkpoint,
    dataset: str | os.PathLike | Dataset | None,
) -> dict[str, Any]:
    """`value_diagnostics` on the run's training split and held-out episodes, and a
    model-based run's model errors."""
    if dataset is None:
        data = _recorded_data(config, run.path)
    else:
        data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
        if data.fingerprint() != config["fingerprint"]:
            raise ValorlError(f"{data.info.source} is not the data {run.path} trained on")
    train, heldout = data.split_episodes(config.get("holdout", 0.0))
    result = value_diagnostics(plan.agent, ckpt.states, ckpt.normalizer, train, heldout)
    scale = float(ckpt.normalizer.reward_scale)
    result |= q_drift(run.metrics(), ckpt.step, result["return_range"], scale)
    if plan.agent.model_based:
        episodes, split = (train, "train") if heldout is None else (heldout, "heldout")
        result["model"] = model_diagnostics(
            plan.agent.model, ckpt.states.model, ckpt.normalizer, episodes, split=split
        )
    return result


def _recorded_data(config: dict[str, Any], run: os.PathLike) -> Dataset:
    """The data a run trained on, from where it was loaded or else by its name: data derived
    on load (an OGBench single-task variant relabels its base recipe's file, which is what the
    run records as its source) is found by the name."""
    for where in dict.fromkeys(w for w in (config["source"], config.get("name")) if w):
        try:
            data = load_dataset(where)
        except ValorlError:
            continue
        if data.fingerprint() == config["fingerprint"]:
            return data
        del data  # a 1M-row dataset: not held while the next candidate loads
    raise ValorlError(f"{config['source']} is not the data {run} trained on")


def _q_and_td(
    agent: CriticAgent, states: Any, normalizer: Normalizer, data: Dataset
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q at each row's action (or chunk) and its TD error in reward units, each of shape
    (seeds, transitions), and which rows count (transitions,): all of them for a one-step
    critic, those whose chunk is whole for a chunk critic."""
    batch = normalizer.batch(data.to_batch())
    n = len(data)
    starts = jnp.arange(n + (-n % CHUNK)).reshape(-1, CHUNK)  # padded: rows past n are dropped
    q, td, whole = _evaluate(agent.without_planning())(states, batch, starts)
    scale = float(normalizer.reward_scale)
    flat = lambda x: np.asarray(x).reshape(x.shape[0], -1)[:, :n] / scale
    return flat(q), flat(td), np.asarray(whole)[0].reshape(-1)[:n] > 0  # the data's, not a seed's


@functools.cache
def _evaluate(agent: CriticAgent):
    """Q, TD error and whether the chunk is whole at the rows `starts` of the data: the row's
    own transition for a one-step critic, the h-row window from it for a chunk critic."""
    h = agent.critic_chunk

    def block(state, data: Batch, starts):
        rows = window_rows(starts, h)
        size = data.rewards.shape[0]
        steps = jax.tree.map(lambda x: x[jnp.minimum(rows, size - 1)], data)
        b = chunk_transitions(steps, rows < size, agent.discount)
        actions = flat_actions(b) if h > 1 else b.actions[:, 0]
        q = agent.q_values(state, b.observations, actions).mean(axis=0)
        next_actions = agent.act(state, b.next_observations, jax.random.key(0), True)
        next_q = agent.q_values(state, b.next_observations, flat_chunks(next_actions)).mean(axis=0)
        return q, b.rewards + agent.discount * b.masks * next_q - q, whole_chunks(b)

    def one_seed(state, data, starts):
        return jax.lax.map(lambda s: block(state, data, s), starts)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt((x**2).mean(axis=1))

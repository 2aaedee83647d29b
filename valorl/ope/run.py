"""Off-policy evaluation of trained runs: estimates from logged data, checked by rollouts.

`run_ope(run_dirs, dataset)` scores every seed of every run as one candidate policy (made
stochastic, see `target.py`) on the dataset's complete episodes with four estimators, each
with a bootstrap 95% interval over episodes:

    fqe    direct method with fitted Q evaluation: mean over episodes of V̂(s_0)
    pdis   per-decision importance sampling
    wpdis  weighted (self-normalised) per-decision importance sampling
    dr     doubly robust: PDIS with FQE's Q̂ and V̂ as control variates

It then rolls each candidate out to measure its true value, and reports how well each
estimator selects policies (Spearman ρ, regret@k, SharpeRatio@k against the behaviour value:
the data's mean discounted episode return). Values are expected discounted returns from the
environment's start states, over its episodes (time limit included); the data's episodes are
assumed to start at a reset, as `valorl collect` makes them.

Discrete actions (a dataset with `num_actions`, runs of discrete agents): every candidate is
evaluated as the ε-greedy policy around its greedy action, ε = `target_noise` (0: the greedy
policy itself, see `target.py`), or with `target_temperature` T as the softmax over its
Q-values at temperature T (critic agents); the behaviour is a fitted softmax policy, or
ε-greedy around a given run's policy (`behaviour_run`, `behaviour_epsilon`); FQE learns
Q(s, ·) over the actions and takes the exact expectation under the evaluated policy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from valorl.data.dataset import Dataset
from valorl.data.files import atomic_write
from valorl.data.sources import load_dataset, make_env
from valorl.data.transforms import fit_normalizer
from valorl.errors import ValorlError
from valorl.eval.policy import Policy, load_policy
from valorl.ope.behaviour import (
    EPSILON_GREEDY,
    BehaviourModel,
    behaviour_log_probs,
    epsilon_greedy_behaviour,
)
from valorl.ope.estimators import (
    bootstrap_interval,
    direct_method,
    doubly_robust,
    effective_sample_size,
    pad_episodes,
    pdis,
    weighted_pdis,
)
from valorl.ope.fqe import FQE, fit_fqe
from valorl.ope.selection import selection_metrics
from valorl.ope.target import TargetPolicies
from valorl.stats import mean_interval

ESTIMATORS = ("fqe", "pdis", "wpdis", "dr")
CONFIDENCE = 0.95


def run_ope(
    run_dirs: Sequence[str | os.PathLike],
    dataset: Dataset | str | os.PathLike,
    *,
    env: str | None = None,
    discount: float = 0.99,
    target_noise: float = 0.2,
    target_temperature: float | None = None,
    episodes: int = 10,
    fqe_steps: int = 10_000,
    hidden_dims: Sequence[int] = (256, 256),
    batch_size: int = 256,
    lr: float = 3e-4,
    behaviour_steps: int = 5000,
    behaviour_run: str | os.PathLike | None = None,
    behaviour_epsilon: float = 0.1,
    bootstrap: int = 1000,
    top_k: Sequence[int] = (1, 2, 3, 5),
    seed: int = 0,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Estimate each candidate's value from `dataset`, measure it by `episodes` rollouts, and
    return (and write to `out`, if given) the JSON-ready result: per policy its true value and
    every estimator's (estimate, low, high); per estimator its selection metrics.

    `hidden_dims`, `batch_size` and `lr` configure the networks OPE fits (FQE, and a behaviour
    model when the data hold no behaviour log-probabilities; `behaviour_steps` trains that).
    For discrete actions, `behaviour_run` names a run whose (first seed's) greedy policy took
    the data ε-greedily with ε = `behaviour_epsilon`, instead of a fitted behaviour model.
    """
    if isinstance(run_dirs, str | os.PathLike):
        run_dirs = [run_dirs]
    hidden_dims, top_k = tuple(hidden_dims), tuple(top_k)
    _check_settings(
        run_dirs,
        discount=discount,
        target_noise=target_noise,
        hidden_dims=hidden_dims,
        top_k=top_k,
        counts={
            "--episodes": episodes,
            "--fqe-steps": fqe_steps,
            "--batch-size": batch_size,
            "--behaviour-steps": behaviour_steps,
            "--bootstrap-reps": bootstrap,
        },
    )
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    _check_noise(data, target_noise, target_temperature)
    if behaviour_run is not None and not data.discrete:
        raise ValorlError(
            "--behaviour-run (an epsilon-greedy behaviour) needs discrete actions; dataset "
            f"{data.info.name!r} has continuous ones"
        )
    env_name, action_space, horizon = _environment(data, env)
    runs = {str(path): _load_run(path, data, env_name, env) for path in run_dirs}
    complete = _complete_episodes(data, horizon)

    normalizer = fit_normalizer(
        data, normalize_observations=True, reward_normalization="none", action_space=action_space
    )
    behaviour_key, fqe_key = jax.random.split(jax.random.key(seed))
    if behaviour_run is not None:
        behaviour = {str(behaviour_run): _load_run(behaviour_run, data, env_name, env)}
        greedy = TargetPolicies(behaviour, 0.0, num_actions=data.num_actions)
        log_b = epsilon_greedy_behaviour(
            data, greedy.means(data.observations)[0], behaviour_epsilon
        )
        behaviour_source = f"{EPSILON_GREEDY} ({behaviour_run}, epsilon {behaviour_epsilon})"
    else:
        model = BehaviourModel(hidden_dims, lr=lr, batch_size=batch_size, steps=behaviour_steps)
        log_b, behaviour_source = behaviour_log_probs(
            data, normalizer, behaviour_key, model, progress
        )
    if data.discrete:
        if target_temperature is not None:
            _check_critics(runs)
        targets = TargetPolicies(
            runs, target_noise, num_actions=data.num_actions, temperature=target_temperature
        )
        policy_at = targets.probabilities  # discrete policies by their action probabilities
    else:
        targets = TargetPolicies(runs, target_noise, action_space.low, action_space.high)
        policy_at = targets.means
    means = policy_at(data.observations)
    log_e = targets.log_probs(data.actions, means)
    fqe = FQE(
        discount,
        target_noise,
        hidden_dims,
        lr,
        batch_size=batch_size,
        steps=fqe_steps,
        num_actions=data.num_actions,
    )
    next_means = policy_at(data.next_observations)
    q, v = fit_fqe(fqe, data, normalizer, means, next_means, horizon, fqe_key, progress)
    estimates, ess = _estimates(data, complete, log_e - log_b, q, v, discount, bootstrap, seed)
    returns = targets.true_values(
        lambda: make_env(data.info, env), episodes, discount, seed, horizon, progress
    )

    rewards, valid = pad_episodes(data.rewards, complete)
    discounted = np.where(valid, discount ** np.arange(valid.shape[1]) * rewards, 0.0)
    behaviour_value = float(discounted.sum(axis=1).mean())
    policies = [
        {
            "name": candidate.name,
            "run": candidate.run,
            "seed_index": candidate.seed_index,
            "seed": candidate.seed,
            "true_value": dict(
                zip(("mean", "low", "high"), mean_interval(returns[k], CONFIDENCE), strict=True)
            ),
            "estimates": {
                name: dict(zip(("estimate", "low", "high"), values[k], strict=True))
                for name, values in estimates.items()
            },
            "effective_sample_size": ess[k],
        }
        for k, candidate in enumerate(targets.candidates)
    ]
    selection = {
        name: selection_metrics(
            np.array([point for point, _, _ in values]),
            returns.mean(axis=1),
            behaviour_value,
            top_k,
        )
        for name, values in estimates.items()
    }
    result = _strict(
        {
            "dataset": {
                "name": data.info.name,
                "source": data.info.source,
                "transitions": len(data),
                "episodes": len(complete),
                "incomplete_episodes_left_out": len(data.episode_slices()) - len(complete),
            },
            "env": env_name,
            "behaviour": {"log_probs": behaviour_source, "value": behaviour_value},
            "settings": {
                "discount": discount,
                "target_noise": target_noise,
                **(
                    {} if target_temperature is None else {"target_temperature": target_temperature}
                ),
                "horizon": horizon,
                "rollout_episodes": episodes,
                "bootstrap_resamples": bootstrap,
                "confidence": CONFIDENCE,
                "seed": seed,
                "fqe": {  # num_actions only when discrete: continuous results stay as they were
                    k: v
                    for k, v in dataclasses.asdict(fqe).items()
                    if k != "num_actions" or v is not None
                },
            },
            "policies": policies,
            "selection": selection,
        }
    )
    if out is not None:
        atomic_write(Path(out), (json.dumps(result, indent=2) + "\n").encode())
    return result


def _environment(data: Dataset, env: str | None) -> tuple[str, Any, int | None]:
    """(name, action space, time limit) of the environment rollouts run in, checked against
    the data."""
    if env is None and data.info.env_id is None and data.info.env_spec_json is None:
        raise ValorlError(
            f"dataset {data.info.name!r} names no environment; pass --env ENV_ID "
            "(true values are measured by rollouts)"
        )
    probe = make_env(data.info, env)
    try:
        name = probe.spec.id if probe.spec is not None else str(env)
        data.check_env(probe.observation_space, probe.action_space, name)
        horizon = probe.spec.max_episode_steps if probe.spec is not None else None
        return name, probe.action_space, horizon
    finally:
        probe.close()


def _complete_episodes(data: Dataset, horizon: int | None) -> list[slice]:
    """Episodes that terminate or reach the time limit: the only ones whose return is known."""
    slices = data.episode_slices()
    complete = [s for s in slices if data.terminals[s.stop - 1] or s.stop - s.start == horizon]
    if not complete:
        ends = "terminates" + (f" or reaches the time limit of {horizon} steps" if horizon else "")
        raise ValorlError(
            f"dataset {data.info.name!r} has no complete episode (one that {ends}); "
            "the estimators need whole episodes"
        )
    return complete


def _estimates(
    data: Dataset,
    complete: list[slice],
    log_ratios: np.ndarray,
    q: np.ndarray,
    v: np.ndarray,
    discount: float,
    bootstrap: int,
    seed: int,
) -> tuple[dict[str, list[tuple[float, float, float]]], list[float]]:
    """({estimator: [(point, low, high) per candidate]}, [effective sample size per candidate]);
    every estimator and candidate sees the same bootstrap resamples."""
    rewards, valid = pad_episodes(data.rewards.astype(np.float64), complete)
    ratios, _ = pad_episodes(log_ratios.T, complete)  # (episodes, T, candidates)
    q_pad, _ = pad_episodes(q.T, complete)
    v_pad, _ = pad_episodes(v.T, complete)
    chunk = max(1, (1 << 22) // rewards.size)  # resamples per call: bounds WPDIS's memory
    estimates: dict[str, list] = {name: [] for name in ESTIMATORS}
    ess = []
    # weights beyond floating point make an estimate infinite or NaN: reported as null
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for k in range(log_ratios.shape[0]):
            lr, qk, vk = ratios[..., k], q_pad[..., k], v_pad[..., k]
            functions = {
                "fqe": lambda c, vk=vk: direct_method(vk[:, 0], c),
                "pdis": lambda c, lr=lr: pdis(rewards, lr, valid, discount, c),
                "wpdis": lambda c, lr=lr: weighted_pdis(rewards, lr, valid, discount, c),
                "dr": lambda c, lr=lr, qk=qk, vk=vk: doubly_robust(
                    rewards, lr, qk, vk, valid, discount, c
                ),
            }
            for name, function in functions.items():
                estimates[name].append(
                    bootstrap_interval(
                        function,
                        len(complete),
                        resamples=bootstrap,
                        confidence=CONFIDENCE,
                        seed=seed,
                        chunk=chunk,
                    )
                )
            ess.append(effective_sample_size(lr, valid))
    return estimates, ess


def _load_run(path: str | os.PathLike, data: Dataset, env_name: str, env: str | None) -> Policy:
    if not Path(path).is_dir():
        raise ValorlError(f"run directory {str(path)!r} not found")
    policy = load_policy(path)
    trained_on = policy.info.env_id
    if trained_on and trained_on != env_name:
        source = "--env is" if env else f"dataset {data.info.name!r} comes from"
        raise ValorlError(f"{path} was trained on {trained_on}, but {source} {env_name}")
    if policy.agent.discrete != data.discrete:
        mine, theirs = ("discrete", "continuous") if data.discrete else ("continuous", "discrete")
        raise ValorlError(
            f"{path} acts with {theirs} actions, but dataset {data.info.name!r} has {mine} ones"
        )
    if policy.obs_shape != data.obs_shape:
        raise ValorlError(
            f"{path} expects observations of shape {policy.obs_shape}, but dataset "
            f"{data.info.name!r} has {data.obs_shape}"
        )
    return policy


def _check_settings(
    run_dirs: Sequence,
    *,
    discount: float,
    target_noise: float,
    hidden_dims: tuple[int, ...],
    top_k: Sequence[int],
    counts: dict[str, int],
) -> None:
    """One-line errors for settings that cannot work, before any work is done."""
    if not run_dirs:
        raise ValorlError("name at least one run directory to evaluate")
    if not 0 < discount <= 1:
        raise ValorlError(f"--discount must be in (0, 1], got {discount}")
    if not 0 <= target_noise < np.inf:  # 0 only for discrete actions: see `_check_noise`
        raise ValorlError(
            f"--target-noise must be > 0 (importance sampling needs a stochastic policy), "
            f"got {target_noise}"
        )
    for flag, value in counts.items():
        least = 2 if flag == "--bootstrap-reps" else 1
        if value < least:
            raise ValorlError(f"{flag} must be at least {least}, got {value}")
    if not hidden_dims or min(hidden_dims) < 1:
        raise ValorlError(f"--hidden-dims must be positive layer sizes, got {list(hidden_dims)}")
    if not top_k or min(top_k) < 1:
        raise ValorlError(f"--top-k values must be at least 1, got {list(top_k)}")


def _check_critics(runs: dict[str, Policy]) -> None:
    """A softmax over Q needs every evaluated run to have a Q-function."""
    for path, policy in runs.items():
        if not policy.agent.has_critic:
            raise ValorlError(
                f"--target-temperature evaluates a softmax over Q, but {path} trained "
                f"{policy.agent.name}, which has no Q-function"
            )


def _check_noise(data: Dataset, target_noise: float, temperature: float | None = None) -> None:
    """Continuous actions need Gaussian noise > 0; discrete ones an ε in [0, 1] (0: greedy)
    or a softmax temperature > 0."""
    if temperature is not None and not data.discrete:
        raise ValorlError(
            "--target-temperature (a softmax over Q) needs discrete actions; dataset "
            f"{data.info.name!r} has continuous ones"
        )
    if temperature is not None and not 0 < temperature < np.inf:
        raise ValorlError(f"--target-temperature must be > 0, got {temperature}")
    if data.discrete and target_noise > 1:
        raise ValorlError(
            f"--target-noise is epsilon of the epsilon-greedy evaluated policies for discrete "
            f"actions and must be in [0, 1], got {target_noise}"
        )
    if not data.discrete and target_noise <= 0:
        raise ValorlError(
            f"--target-noise must be > 0 (importance sampling needs a stochastic policy), "
            f"got {target_noise}"
        )


def _strict(value: Any) -> Any:
    """JSON without NaN or infinity: undefined numbers become null."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value

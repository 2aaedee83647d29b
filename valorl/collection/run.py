"""Collecting datasets: roll behaviour policies out in a Gymnasium environment.

A behaviour is named by a short spec, `KIND[:key=value,...]`:

    random                       uniform actions
    pendulum-swingup:noise=0.3   a scripted controller (see `controllers.py`) with Gaussian noise
    runs/iql-x:noise=0.1,index=2  a valorl run's policy (its seed list's index 2) with noise
    policies/hopper.npz:noise=0.1  a policy file (`policy_file.py`) with Gaussian noise
    random:share=2               any of the above, given twice the default share of steps
    policies/breakout.npz:noise=0.05  discrete actions: epsilon-greedy (ε = noise) around the
                                   policy file's greedy action

`noise` is the standard deviation of Gaussian action noise as a fraction of half the action
range; in a discrete (`Discrete(n)`) action space it is ε of ε-greedy exploration around the
policy's action instead (uniform actions with probability ε), and `random` draws uniform
integers; controllers act in continuous spaces only. `share` weighs how
many of the steps a behaviour collects. Several behaviours make a mixed-quality dataset.
Collection is deterministic for a given seed: episode reset seeds and noise come from
`numpy.random.SeedSequence(seed)`.

The dataset records its reference returns for normalised scores: `ref_min_score` is the mean
return of uniform random actions and `ref_max_score` that of the best noise-free behaviour
(or a value the user gives), each over `reference_episodes` seeded episodes.

Every transition also records the log-probability of its action under the behaviour that took
it (`behaviour_log_prob` in each Minari episode's `infos`), which off-policy evaluation needs for
importance weights. Actions are clipped to the action bounds, so a noisy behaviour's action
has a density inside the bounds and a probability mass on each bound; `clipped_gaussian_log_prob`
defines both, and off-policy evaluation scores its target policies with the same function.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import scipy.special

from valorl._version import __version__
from valorl.collection.controllers import CONTROLLERS
from valorl.collection.policy_file import PolicyFile
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.sources import minari_root, save_minari
from valorl.errors import ValorlError
from valorl.eval.policy import load_policy
from valorl.ui import progress_bar

Act = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, float]]
"""A behaviour: (observation, rng) -> (action in environment units, its log-probability)."""

LOG_PROB_KEY = "behaviour_log_prob"
"""Name of the per-step behaviour log-probabilities in episodes and in Minari `infos`."""


def clipped_gaussian_log_prob(
    actions: np.ndarray, means: np.ndarray, std: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """log-probability of `actions` under `clip(means + std·ε, low, high)`, ε ~ N(0, I), summed
    over the last axis (everything broadcasts; environment units).

    Clipping puts probability mass on the bounds, so the measure is Lebesgue measure inside the
    bounds plus a point mass at each bound: a coordinate strictly inside contributes the Gaussian
    log-density, one at the lower bound log Φ((low − mean) / std), one at the upper bound
    log Φ((mean − high) / std). Behaviour and target policies are scored against this same
    measure, so the ratio of two such probabilities is a proper importance weight. A zero `std`
    (a noise-free behaviour) is the limit: +inf at the mean inside the bounds, −inf elsewhere,
    and log 1 = 0 at a bound the mean lies on or beyond.
    """
    actions, means = np.asarray(actions, np.float64), np.asarray(means, np.float64)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    std = np.broadcast_to(np.asarray(std, np.float64), np.broadcast(actions, means).shape)
    noisy = std > 0
    safe = np.where(noisy, std, 1.0)
    z = (actions - means) / safe
    inside = np.where(
        noisy,
        -0.5 * z**2 - np.log(safe) - 0.5 * np.log(2 * np.pi),
        np.where(actions == means, np.inf, -np.inf),
    )
    at_low = np.where(
        noisy, scipy.special.log_ndtr((low - means) / safe), np.where(means <= low, 0.0, -np.inf)
    )
    at_high = np.where(
        noisy, scipy.special.log_ndtr((means - high) / safe), np.where(means >= high, 0.0, -np.inf)
    )
    per_coordinate = np.where(actions <= low, at_low, np.where(actions >= high, at_high, inside))
    return per_coordinate.sum(axis=-1)


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """One behaviour policy of a collection, parsed from its spec string."""

    kind: str
    noise: float = 0.0
    share: float = 1.0
    seed_index: int = 0

    @classmethod
    def parse(cls, spec: str) -> Behaviour:
        kind, _, options = spec.partition(":")
        fields: dict[str, Any] = {"kind": kind}
        for item in filter(None, options.split(",")):
            key, sep, value = item.partition("=")
            names = {"noise": "noise", "share": "share", "index": "seed_index"}
            if not sep or key not in names:
                raise ValorlError(
                    f"behaviour {spec!r}: unknown option {item!r}; use noise=, share= or index="
                )
            try:
                fields[names[key]] = int(value) if key == "index" else float(value)
            except ValueError:
                raise ValorlError(f"behaviour {spec!r}: {key} must be a number") from None
        behaviour = cls(**fields)
        if not (0 <= behaviour.noise < math.inf and 0 < behaviour.share < math.inf):
            raise ValorlError(f"behaviour {spec!r}: noise must be >= 0 and share > 0")
        return behaviour

    def build(self, env: gym.Env) -> Act:
        """The behaviour's action function (environment units, with each action's
        log-probability), validated against `env`."""
        space = env.action_space
        if isinstance(space, gym.spaces.Discrete) and int(space.start) == 0:
            return self._build_discrete(env, int(space.n))
        if not isinstance(space, gym.spaces.Box):
            raise ValorlError(
                f"collect supports continuous (Box) and Discrete(n) actions; {env.spec.id} "
                f"has {space}"
            )
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        if self.kind == "random":
            if self.noise:
                raise ValorlError("behaviour 'random' takes no noise= (its actions are uniform)")
            log_prob = -float(np.log(high - low).sum())  # uniform density on the box
            return lambda obs, rng: (rng.uniform(low, high).astype(np.float32), log_prob)
        if self.kind in CONTROLLERS:
            controller = CONTROLLERS[self.kind]
            if env.spec.id not in controller.env_ids:
                raise ValorlError(
                    f"controller {self.kind!r} drives {', '.join(controller.env_ids)},"
                    f" not {env.spec.id}"
                )
            base = controller.act
        elif Path(self.kind).is_dir():
            base = _run_policy(Path(self.kind), self.seed_index, env)
        elif Path(self.kind).suffix == ".npz" and Path(self.kind).is_file():
            base = _file_policy(Path(self.kind), env)
        else:
            raise ValorlError(
                f"unknown behaviour {self.kind!r}: use random, a run directory, a policy "
                f"file (.npz), or one of: {', '.join(sorted(CONTROLLERS))}"
            )
        std = self.noise * (0.5 * (high - low))

        def act(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
            mean = base(obs)
            noise = std * rng.standard_normal(low.shape) if self.noise else 0.0
            action = np.clip(mean + noise, low, high).astype(np.float32)
            return action, float(clipped_gaussian_log_prob(action, mean, std, low, high))

        return act

    def _build_discrete(self, env: gym.Env, n: int) -> Act:
        """Uniform integers, or ε-greedy (ε = `noise`) around a run's greedy action."""
        if self.kind == "random":
            if self.noise:
                raise ValorlError("behaviour 'random' takes no noise= (its actions are uniform)")
            log_uniform = -float(np.log(n))
            return lambda obs, rng: (np.int32(rng.integers(n)), log_uniform)
        if Path(self.kind).is_dir():
            greedy = _run_policy(Path(self.kind), self.seed_index, env)
        elif Path(self.kind).suffix == ".npz" and Path(self.kind).is_file():
            greedy = _file_policy(Path(self.kind), env)
        else:
            raise ValorlError(
                f"behaviour {self.kind!r} cannot act in {env.spec.id}'s Discrete({n}) action "
                "space: use random, a run directory of a discrete agent or a discrete policy "
                "file (.npz)"
            )
        if self.noise > 1:
            raise ValorlError(
                f"behaviour {self.kind!r}: in a discrete action space noise= is epsilon of "
                f"epsilon-greedy, in [0, 1]; got {self.noise}"
            )
        epsilon = self.noise

        def act(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
            best = int(greedy(obs))
            action = int(rng.integers(n)) if epsilon and rng.random() < epsilon else best
            p = (1.0 - epsilon) * (action == best) + epsilon / n
            return np.int32(action), float(np.log(p))

        return act


def _run_policy(path: Path, seed_index: int, env: gym.Env) -> Callable[[np.ndarray], np.ndarray]:
    policy = load_policy(path)
    if not 0 <= seed_index < len(policy.seeds):
        raise ValorlError(
            f"{path} has {len(policy.seeds)} seeds; index={seed_index} is out of range"
        )
    if policy.obs_shape != tuple(env.observation_space.shape):
        raise ValorlError(
            f"{path} was trained on observations of shape {policy.obs_shape}, but "
            f"{env.spec.id} has {tuple(env.observation_space.shape)}"
        )
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    if policy.agent.discrete != discrete:
        mine, theirs = (
            ("discrete", "continuous") if policy.agent.discrete else ("continuous", "discrete")
        )
        raise ValorlError(f"{path} acts with {mine} actions, but {env.spec.id} has {theirs} ones")
    return lambda obs: policy(obs, seed_index=seed_index)


def _file_policy(path: Path, env: gym.Env) -> Callable[[np.ndarray], np.ndarray]:
    policy = PolicyFile.load(path)
    if isinstance(env.action_space, gym.spaces.Discrete):
        n, obs_shape = int(env.action_space.n), tuple(env.observation_space.shape)
        if policy.num_actions != n or policy.obs_shape != obs_shape:
            raise ValorlError(
                f"{path} maps observations of shape {policy.obs_shape} to "
                f"{policy.num_actions or 'continuous'} actions, but {env.spec.id} has "
                f"{obs_shape} and Discrete({n})"
            )
        return policy
    obs_dim, action_dim = env.observation_space.shape, env.action_space.shape
    if (policy.obs_dim,) != obs_dim or (policy.action_dim,) != action_dim:
        raise ValorlError(
            f"{path} maps observations of shape {(policy.obs_dim,)} to actions of shape "
            f"{(policy.action_dim,)}, but {env.spec.id} has {obs_dim} and {action_dim}"
        )
    return policy


def run_episode(
    env: gym.Env, act: Act, rng: np.random.Generator, reset_seed: int, max_steps: int | None = None
) -> dict[str, np.ndarray]:
    """One episode in Minari's layout, plus each action's behaviour log-probability under
    `LOG_PROB_KEY`; cut (as a truncation) after `max_steps` if given."""
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    obs, _ = env.reset(seed=reset_seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    log_probs = []
    while True:
        action, log_prob = act(obs, rng)
        obs, reward, terminated, truncated, _ = env.step(int(action) if discrete else action)
        observations.append(obs)
        actions.append(action)
        log_probs.append(log_prob)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated or (max_steps is not None and len(rewards) >= max_steps))
        if terminations[-1] or truncations[-1]:
            break
    frames = env.observation_space.dtype == np.uint8  # MinAtar's boolean frames stay compact
    return dict(
        observations=np.asarray(observations, np.uint8 if frames else np.float32),
        actions=np.asarray(actions, np.int32 if discrete else np.float32),
        rewards=np.asarray(rewards, np.float32),
        terminations=np.asarray(terminations),
        truncations=np.asarray(truncations),
        **{LOG_PROB_KEY: np.asarray(log_probs, np.float64)},
    )


def mean_return(env: gym.Env, act: Act, episodes: int, seed: int) -> float:
    """Average undiscounted return over `episodes` seeded episodes."""
    seq = np.random.SeedSequence([seed, 7919])  # a stream apart from collection's
    rng = np.random.default_rng(seq)
    seeds = seq.generate_state(episodes).tolist()
    return float(np.mean([run_episode(env, act, rng, s)["rewards"].sum() for s in seeds]))


def collect(
    env_id: str,
    behaviours: list[str],
    steps: int,
    *,
    seed: int = 0,
    dataset_id: str | None = None,
    out: str | os.PathLike | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    reference_episodes: int = 10,
    extra_metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> Dataset:
    """Collect `steps` transitions from the behaviours (split by share) into a Dataset.

    With `dataset_id` the result is also written as a Minari dataset (under `out` if given,
    else in the local Minari root), with `extra_metadata` added to Minari's; nothing is
    written if anything fails. Reference returns not given are measured (module docstring).
    """
    if steps < 1:
        raise ValorlError(f"--steps must be at least 1, got {steps}")
    if not behaviours:
        raise ValorlError("name at least one --policy (e.g. random)")
    parsed = [Behaviour.parse(b) for b in behaviours]
    try:
        env = gym.make(env_id)
    except gym.error.Error as exc:
        raise ValorlError(f"cannot make environment {env_id!r}: {exc}") from None
    acts = [b.build(env) for b in parsed]
    if dataset_id is not None and out is None and (minari_root() / dataset_id).exists():
        raise ValorlError(f"Minari dataset {dataset_id!r} already exists in {minari_root()}")
    if out is not None and Path(out).exists():
        raise ValorlError(f"{out} already exists; choose another --out or delete it")

    shares = np.array([b.share for b in parsed])
    budgets = np.floor(steps * shares / shares.sum()).astype(int)
    budgets[-1] = steps - budgets[:-1].sum()
    seq = np.random.SeedSequence(seed)
    episodes, per_behaviour = [], []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"collect {env_id}", total=steps, rate="", note="")
        for index, (act, budget) in enumerate(zip(acts, budgets, strict=True)):
            noise_stream, reset_stream = seq.spawn(2)
            rng, resets = np.random.default_rng(noise_stream), np.random.default_rng(reset_stream)
            returns, done = [], 0
            while done < budget:
                reset_seed = int(resets.integers(2**31))
                ep = run_episode(env, act, rng, reset_seed, max_steps=budget - done)
                episodes.append(ep)
                done += len(ep["rewards"])
                returns.append(float(ep["rewards"].sum()))
                bar.update(
                    task,
                    advance=len(ep["rewards"]),
                    note=f"{Path(parsed[index].kind).name} return {returns[-1]:.1f}",
                )
            per_behaviour.append(
                {
                    "behaviour": behaviours[index],
                    "steps": int(budget),
                    "episodes": len(returns),
                    "mean_return": float(np.mean(returns)),
                }
            )

    if ref_min_score is None:
        random_act = Behaviour("random").build(env)
        ref_min_score = mean_return(env, random_act, reference_episodes, seed)
    if ref_max_score is None:
        candidates = [dataclasses.replace(b, noise=0.0) for b in parsed if b.kind != "random"]
        if candidates:
            ref_max_score = max(
                mean_return(env, b.build(env), reference_episodes, seed) for b in candidates
            )
    spec_json = env.spec.to_json() if env.spec is not None else None
    space = env.action_space
    num_actions = int(space.n) if isinstance(space, gym.spaces.Discrete) else None
    env.close()
    info = DatasetInfo(
        name=dataset_id or env_id,
        source=str(out or ""),
        env_id=env_id,
        env_spec_json=spec_json,
        ref_min_score=ref_min_score,
        ref_max_score=ref_max_score,
    )
    dataset = Dataset.from_episodes(episodes, info, num_actions=num_actions)
    if dataset_id is not None:
        provenance = {
            "valorl_version": __version__,
            "seed": seed,
            "steps": steps,
            "behaviours": per_behaviour,
            "reference_episodes": reference_episodes,
        }
        path = save_minari(
            dataset,
            dataset_id,
            out,
            algorithm_name="valorl collect",
            description=f"{env_id}: " + ", ".join(behaviours),
            extra_metadata={"valorl_collect": provenance} | (extra_metadata or {}),
            step_infos={LOG_PROB_KEY: np.concatenate([ep[LOG_PROB_KEY] for ep in episodes])},
        )
        dataset = dataclasses.replace(dataset, info=dataclasses.replace(info, source=str(path)))
    return dataset

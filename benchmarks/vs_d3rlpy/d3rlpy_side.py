"""The d3rlpy half of the valorl-vs-d3rlpy benchmark: train d3rlpy's IQL, TD3+BC or BC on a
Minari dataset that valorl wrote, evaluate it, print one JSON line per seed.

Runs in the d3rlpy environment (`bash benchmarks/vs_d3rlpy/setup.sh`), never imports valorl.
`compare.py` calls it with valorl's settings for each algorithm spelled out; by hand, the
equivalent of valorl's IQL defaults is:

    benchmarks/vs_d3rlpy/.venv/bin/python benchmarks/vs_d3rlpy/d3rlpy_side.py \\
        --dataset-dir ~/.minari/datasets/valorl/pendulum-mixed-v0 --env Pendulum-v1 \\
        --algo iql --steps 30000 --seeds 0 1 2 --hidden 256,256 --discount 0.99 \\
        --cosine-actor-lr --return-range=-1814.08,-0.93

Each seed: `d3rlpy.seed(seed)`, one call of d3rlpy's own `fit` for `--steps` gradient steps
(logging off, no progress bar, CPU, torch's default thread count unless `--torch-threads`),
then `--eval-episodes` episodes with deterministic actions, reset with the seeds valorl's final
evaluation uses (`valorl.envs.rollouts.episode_seeds`, round 0). Output, on stdout (d3rlpy's
own log goes to stderr, warnings only):

    {"library": "d3rlpy", "algo", "seed", "returns", "updates_per_s", "train_s", ...}

`train_s` is the whole `fit` call (scaler set-up and model building included);
`updates_per_s` covers only the steps after the first `--untimed-steps`, sampling included,
measured between two calls of fit's per-step callback (compare.py leaves out the same first
tenth of valorl's training, whose first chunk includes compilation). On a machine with other
load, torch's default OpenMP threads spin against it and training slows down many times (2.6
instead of 130 IQL updates/s with 2x64 networks on a 2-core machine running another job):
`--torch-threads 1` or OMP_WAIT_POLICY=PASSIVE avoids that.

The data. Each Minari episode holds T+1 observations for T actions. d3rlpy stores one
observation per row and takes a row's next observation from the row after it; for an episode
that ends in a truncation it drops the last transition, whose next observation it does not
have. So a truncated episode gets one padding row holding its final observation (action and
reward zero) that carries the timeout flag: d3rlpy then trains on all T transitions, each with
its recorded next observation, exactly the transitions valorl trains on, and never samples the
padding row itself. A terminated episode needs no padding row (its last transition does not
bootstrap).

Settings matched to valorl (compare.py passes valorl's values):
  - networks: ReLU MLPs of `--hidden` for actor, critics and value (d3rlpy's
    VectorEncoderFactory plus a linear head); two critics, min over them in targets;
  - batch size, gradient steps, discount, Polyak rate, Adam learning rates;
  - actions in [-1, 1] through MinMaxActionScaler with the environment's bounds (valorl maps
    actions with the environment's bounds too);
  - observation standardisation when asked: StandardObservationScaler with the mean and std
    of the dataset's observations (one per transition) and d3rlpy's eps 1e-3 added to the std,
    as valorl does;
  - IQL: expectile, beta (d3rlpy's `weight_temp`), max weight, the squashed-mean Gaussian
    actor with a state-independent log-std in [-5, 2], the actor learning rate decayed to zero
    over training by a cosine (`--cosine-actor-lr`: CosineAnnealingLR, stepped once per actor
    update like optax's cosine_decay_schedule), rewards scaled by 1000 / (max - min episode
    return) (`--return-range`: ReturnBasedRewardScaler with multiplier 1000);
  - TD3+BC: alpha, target-policy noise and its clip, one actor and target update every
    `--policy-freq` critic steps, the BC term as the mean squared error of tanh actions;
  - BC: a deterministic tanh policy trained by mean squared error.

Not matched (d3rlpy cannot be configured so, or it is library internals):
  - weight initialisation: torch's default (Kaiming-uniform) against valorl's Glorot-uniform;
  - IQL's log-std is a sigmoid-squashed parameter starting at -1.5 (valorl: clipped, starting
    at 0); d3rlpy steps Q and V together with one Adam (the same learning rate is required,
    compare.py checks) and then the actor, while valorl steps V, then the actor, then Q;
  - the random streams (batch sampling, noise) and so the individual seeds' results;
  - the evaluation environment is `gymnasium.make(--env)` with gymnasium 1.0.0, where valorl
    rebuilds the dataset's stored EnvSpec with its own gymnasium version.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import d3rlpy
import gymnasium as gym
import minari
import numpy as np
import structlog
import torch
from d3rlpy.algos import BCConfig, IQLConfig, QLearningAlgoBase, TD3PlusBCConfig
from d3rlpy.base import LearnableConfig
from d3rlpy.dataset import MDPDataset
from d3rlpy.logging import NoopAdapterFactory
from d3rlpy.models import VectorEncoderFactory
from d3rlpy.optimizers import AdamFactory, CosineAnnealingLRFactory
from d3rlpy.preprocessing import (
    MinMaxActionScaler,
    ReturnBasedRewardScaler,
    StandardObservationScaler,
)

# d3rlpy logs through structlog to stdout; keep stdout for the JSON lines.
structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    logger_factory=structlog.PrintLoggerFactory(sys.stderr),
)


def return_range(text: str) -> tuple[float, float]:
    low, high = (float(x) for x in text.split(","))
    if not high > low:
        raise ValueError(text)
    return low, high


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset-dir",
        type=Path,
        required=True,
        help="a Minari dataset directory (holding data/main_data.hdf5)",
    )
    parser.add_argument("--algo", choices=("iql", "td3_bc", "bc"), required=True)
    parser.add_argument("--env", required=True, help="Gymnasium id to evaluate in")
    parser.add_argument("--steps", type=int, required=True, help="gradient steps per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", default="256,256", help="hidden layer sizes")
    parser.add_argument("--discount", type=float, default=0.99)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument(
        "--untimed-steps", type=int, help="first steps left out of updates/s (default: a tenth)"
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--normalize-observations",
        action="store_true",
        help="standardise observations with dataset statistics",
    )
    parser.add_argument(
        "--return-range",
        type=return_range,
        metavar="MIN,MAX",
        help="scale rewards by 1000 / (MAX - MIN), the dataset's episode "
        "return range (IQL); write it as --return-range=MIN,MAX",
    )
    parser.add_argument("--lr", type=float, default=3e-4, help="BC learning rate")
    parser.add_argument("--actor-lr", type=float, default=3e-4)
    parser.add_argument(
        "--critic-lr", type=float, default=3e-4, help="critic (and IQL value) learning rate"
    )
    parser.add_argument(
        "--cosine-actor-lr",
        action="store_true",
        help="decay the IQL actor learning rate to 0 by a cosine",
    )
    parser.add_argument("--tau", type=float, default=0.005, help="Polyak rate of targets")
    parser.add_argument("--expectile", type=float, default=0.7)
    parser.add_argument("--beta", type=float, default=3.0, help="IQL inverse temperature")
    parser.add_argument("--max-weight", type=float, default=100.0)
    parser.add_argument("--alpha", type=float, default=2.5, help="TD3+BC alpha")
    parser.add_argument("--policy-noise", type=float, default=0.2)
    parser.add_argument("--noise-clip", type=float, default=0.5)
    parser.add_argument("--policy-freq", type=int, default=2)
    args = parser.parse_args()
    if args.untimed_steps is None:
        args.untimed_steps = max(args.steps // 10, 1)
    if not 1 <= args.untimed_steps < args.steps:
        parser.error(f"--untimed-steps must be in [1, --steps), got {args.untimed_steps}")
    return args


def load_episodes(dataset_dir: Path) -> list[minari.EpisodeData]:
    data_dir = dataset_dir / "data" if (dataset_dir / "data").is_dir() else dataset_dir
    if not (data_dir / "metadata.json").is_file():
        raise SystemExit(
            f"d3rlpy_side.py: {dataset_dir} is not a Minari dataset directory "
            f"(no metadata.json in {data_dir})"
        )
    return list(minari.MinariDataset(data_dir).iterate_episodes())


def to_mdp_dataset(episodes: list[minari.EpisodeData]) -> tuple[MDPDataset, np.ndarray]:
    """d3rlpy's dataset of every transition (see the module docstring on padding rows), and the
    observations of the transitions themselves, one per row, as valorl sees them."""
    columns: dict[str, list[np.ndarray]] = {
        "observations": [],
        "actions": [],
        "rewards": [],
        "terminals": [],
        "timeouts": [],
    }
    for ep in episodes:
        length, terminated = len(ep.actions), bool(ep.terminations[-1])
        pad = 0 if terminated else 1
        ends = np.zeros(length + pad, np.float32)
        ends[-1] = 1.0
        columns["observations"].append(ep.observations[: length + pad])
        columns["actions"].append(np.concatenate([ep.actions, np.zeros_like(ep.actions[:pad])]))
        columns["rewards"].append(np.concatenate([ep.rewards, np.zeros(pad)]))
        columns["terminals"].append(ends if terminated else np.zeros_like(ends))
        columns["timeouts"].append(np.zeros_like(ends) if terminated else ends)
    arrays = {k: np.concatenate(v).astype(np.float32) for k, v in columns.items()}
    dataset = MDPDataset(**arrays)
    observations = np.concatenate([ep.observations[: len(ep.actions)] for ep in episodes])
    return dataset, observations


def make_config(
    args: argparse.Namespace, observations: np.ndarray, action_space: gym.spaces.Box
) -> LearnableConfig:
    """The d3rlpy algorithm config with valorl's settings (module docstring)."""
    hidden = [int(h) for h in args.hidden.split(",")]
    encoder = VectorEncoderFactory(hidden_units=hidden)
    shared = dict(
        batch_size=args.batch_size,
        action_scaler=MinMaxActionScaler(minimum=action_space.low, maximum=action_space.high),
        observation_scaler=(
            StandardObservationScaler(mean=observations.mean(0), std=observations.std(0))
            if args.normalize_observations
            else None
        ),
    )
    if args.algo == "bc":
        return BCConfig(
            learning_rate=args.lr, encoder_factory=encoder, policy_type="deterministic", **shared
        )
    if args.return_range is not None:
        low, high = args.return_range
        shared["reward_scaler"] = ReturnBasedRewardScaler(
            return_min=low, return_max=high, multiplier=1000.0
        )
    critic = dict(
        gamma=args.discount,
        tau=args.tau,
        n_critics=2,
        actor_learning_rate=args.actor_lr,
        critic_learning_rate=args.critic_lr,
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
    )
    if args.algo == "td3_bc":
        return TD3PlusBCConfig(
            alpha=args.alpha,
            target_smoothing_sigma=args.policy_noise,
            target_smoothing_clip=args.noise_clip,
            update_actor_interval=args.policy_freq,
            **critic,
            **shared,
        )
    cosine = CosineAnnealingLRFactory(T_max=args.steps) if args.cosine_actor_lr else None
    return IQLConfig(
        expectile=args.expectile,
        weight_temp=args.beta,
        max_weight=args.max_weight,
        value_encoder_factory=encoder,
        actor_optim_factory=AdamFactory(lr_scheduler_factory=cosine),
        **critic,
        **shared,
    )


def fit_timed(
    algo: QLearningAlgoBase, dataset: MDPDataset, steps: int, untimed: int
) -> tuple[float, float]:
    """Train with d3rlpy's `fit`; returns (seconds of the whole call, seconds of the steps
    after the first `untimed`, from the callback after step `untimed` to the one after the
    last step)."""
    marks: dict[int, float] = {}

    def mark(_algo: QLearningAlgoBase, _epoch: int, step: int) -> None:
        if step in (untimed, steps):
            marks[step] = time.perf_counter()

    start = time.perf_counter()
    algo.fit(
        dataset,
        n_steps=steps,
        n_steps_per_epoch=steps,
        show_progress=False,
        logger_adapter=NoopAdapterFactory(),
        save_interval=steps + 1,
        callback=mark,
    )
    return time.perf_counter() - start, marks[steps] - marks[untimed]


def evaluate(algo: QLearningAlgoBase, env: gym.Env, seed: int, episodes: int) -> list[float]:
    """Undiscounted returns of the deterministic policy, one episode per reset seed."""
    returns = []
    for reset_seed in np.random.SeedSequence([seed, 0]).generate_state(episodes).tolist():
        obs, _ = env.reset(seed=reset_seed)
        total, done = 0.0, False
        while not done:
            action = algo.predict(np.asarray(obs, np.float32)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def main() -> None:
    args = parse_args()
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    dataset, observations = to_mdp_dataset(load_episodes(args.dataset_dir))
    env = gym.make(args.env)
    for seed in args.seeds:
        print(f"d3rlpy {args.algo} seed {seed}: {args.steps} steps", file=sys.stderr, flush=True)
        d3rlpy.seed(seed)
        algo = make_config(args, observations, env.action_space).create(device="cpu:0")
        train_s, timed_s = fit_timed(algo, dataset, args.steps, args.untimed_steps)
        timed_steps = args.steps - args.untimed_steps
        record = {
            "library": "d3rlpy",
            "algo": args.algo,
            "seed": seed,
            "returns": evaluate(algo, env, seed, args.eval_episodes),
            "updates_per_s": timed_steps / timed_s,
            "train_s": train_s,
            "timed_steps": timed_steps,
            "timed_s": timed_s,
            "version": d3rlpy.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

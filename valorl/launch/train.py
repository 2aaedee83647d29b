"""`valorl train AGENT`: its flags, and training from parsed flags.

`train_from_args` is the one place a `valorl train` command line becomes a call of
`valorl.train` or `valorl.train_online`; `valorl sweep` runs its groups through it, so a sweep's
run is exactly the run its `valorl train` command line would make. It lives in the library, not
in the CLI, so that the sweep (a library entry point) does not depend on the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from valorl.agents import AGENTS, agent_class
from valorl.data.dataset import Dataset
from valorl.data.goals import ACTOR_GOALS, REPRESENTATIONS, REWARDS, GoalSampling
from valorl.errors import ValorlError
from valorl.launch.args import StrictParser, add_dataclass_flags, parse_overrides
from valorl.training.loggers import LOGGERS
from valorl.training.results import RunResult


def add_train_parser(
    commands: argparse._SubParsersAction, run: Callable[[argparse.Namespace], int]
) -> None:
    """The `train` command with one subcommand per agent; `run` is what the command does."""
    train = commands.add_parser(
        "train",
        help="train an agent offline on a dataset, online, or both",
        description="Train an agent on a logged dataset (--mode offline), in an environment "
        "(--mode online), or both (--mode hybrid, offline-to-online), several seeds "
        "at once. Re-running the same command resumes an interrupted "
        "run.",
    )
    agents = train.add_subparsers(dest="agent", required=True, metavar="AGENT")
    for name, cls in AGENTS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        sub = agents.add_parser(
            name,
            help=doc,
            description=_module_doc(cls),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_agent_flags(sub, cls)
        sub.set_defaults(run=run)


def train_parser(name: str) -> StrictParser:
    """The parser of `valorl train NAME` alone, raising ValorlError on bad flags."""
    cls = agent_class(name)
    parser = StrictParser(prog=f"valorl train {cls.name}")
    _add_agent_flags(parser, cls)
    parser.set_defaults(agent=cls.name)
    return parser


def _add_agent_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    _add_train_flags(parser)
    _add_online_flags(parser, cls)
    add_dataclass_flags(parser, cls, f"{cls.name} hyperparameters")
    parser.set_defaults(agent_cls=cls)


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run")
    run.add_argument(
        "--dataset",
        default=None,
        metavar="ID_OR_PATH",
        help="local Minari id, Minari directory, D4RL-layout .hdf5, or .npz (all modes but online)",
    )
    run.add_argument(
        "--datasets",
        default=None,
        metavar="ID,ID,...",
        help="several MinAtar games' datasets as one multi-game run of token observations "
        "(jowa; --mode offline); evaluation episodes take the games in turn",
    )
    run.add_argument(
        "--episodes-per-game",
        type=int,
        default=None,
        metavar="N",
        help="with --datasets: only the first N episodes of each (fine-tuning from a few)",
    )
    run.add_argument(
        "--init-from",
        default=None,
        metavar="RUN",
        help="start from this run's latest parameters (fine-tuning; jowa): with --datasets, "
        "the new games extend its token code and game numbering",
    )
    run.add_argument(
        "--steps",
        type=int,
        default=None,
        help="gradient steps per seed (default: 1000000); with --mode online or hybrid, "
        "environment steps (as --online-steps)",
    )
    run.add_argument("--seeds", type=int, default=1, help="seeds trained together (default: 1)")
    run.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    run.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="run directory (default: runs/<agent>-<data>-<config hash>)",
    )
    run.add_argument(
        "--log-every",
        type=int,
        default=1000,
        help="steps per compiled call, with a metrics line after each (default: 1000)",
    )
    run.add_argument(
        "--eval-every",
        type=int,
        default=10_000,
        help="steps between evaluations, each at the end of the call that reaches it "
        "(default: 10000)",
    )
    run.add_argument(
        "--checkpoint-every",
        default=None,
        metavar="STEPS|DURATION",
        help="steps between checkpoints, or wall-clock time such as 10min, 90s, 1h (default: at "
        "every evaluation); the last step and Ctrl-C always write one",
    )
    run.add_argument(
        "--eval-episodes",
        type=int,
        default=10,
        help="episodes per seed and evaluation; 0 for none (default: 10)",
    )
    run.add_argument(
        "--env",
        default=None,
        help="Gymnasium id to learn in (online modes) or evaluate in, if the dataset names none",
    )
    run.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of episodes kept out of training, to measure the critic's TD error on "
        "unseen data in diagnostics.json (default: 0, train on everything)",
    )
    run.add_argument(
        "--goals",
        choices=REPRESENTATIONS,
        default=None,
        help="train goal-conditioned on OGBench data (offline): each row gets a goal relabelled "
        "from its own trajectory or the dataset, appended to its observations; 'observation' "
        "goals are states, 'oracle' ones the objects' positions (DQC's); evaluation plays the "
        "five tasks in turn (default: not goal-conditioned)",
    )
    run.add_argument(
        "--goal-reward",
        choices=REWARDS,
        default=None,
        help="with --goals: 'success' pays 1 at the goal and 0 elsewhere (DQC's), 'negative' "
        "0 and -1 (OGBench's GCIQL) (default: success)",
    )
    run.add_argument(
        "--actor-goals",
        choices=ACTOR_GOALS,
        default=None,
        help="with --goals: 'future' gives the actor goals of its own, later states of each "
        "row's trajectory (OGBench's GCIQL; IQL's family), 'same' the rows' goals (default: "
        "same)",
    )
    run.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every checkpoint in RUN/checkpoints/, not just the latest",
    )
    run.add_argument(
        "--logger",
        choices=LOGGERS,
        default=None,
        help="also send metrics to TensorBoard (RUN/tensorboard/), W&B (WANDB_MODE=offline "
        "works without a network) or MLflow (RUN/mlruns, or $MLFLOW_TRACKING_URI); each needs "
        "its extra, e.g. pip install 'valorl[tensorboard]'",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")


ONLINE_FLAGS = (
    "offline_steps",
    "online_steps",
    "utd",
    "start_steps",
    "offline_ratio",
    "offline_ratio_schedule",
    "buffer_size",
    "env_steps_per_call",
    "num_envs",
    "host_loop",
    "sticky_actions",
)
"""Flags of the online and hybrid modes (`_add_online_flags`), unset unless given."""


def _add_online_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Flags of the online and hybrid modes (valorl/training/online.py); `--utd` only for agents
    without a `utd` hyperparameter of their own (SAC has one)."""
    group = parser.add_argument_group(
        "online and hybrid training",
        "--mode online learns in --env; hybrid mixes --dataset rows into every batch from the "
        "start; offline-to-online pre-trains on --dataset, then fine-tunes in the environment",
    )
    group.add_argument(
        "--mode",
        choices=["offline", "online", "hybrid", "offline-to-online"],
        default="offline",
        help="where the data comes from (default: offline)",
    )
    group.add_argument(
        "--offline-steps",
        type=int,
        default=None,
        help="gradient steps of offline pre-training (offline-to-online)",
    )
    group.add_argument(
        "--online-steps",
        type=int,
        default=None,
        help="environment steps per seed (default: 1000000)",
    )
    if not cls.utd_is_hyperparameter:
        group.add_argument(
            "--utd",
            type=float,
            default=None,
            help="gradient steps (batches) per environment step; fractions allowed, e.g. 0.25 "
            "for one update every 4 steps (default: 1)",
        )
    group.add_argument(
        "--start-steps",
        type=int,
        default=None,
        help="environment steps of uniform random actions before updates start (default: "
        "5000 online, 10000 hybrid, 0 offline-to-online)",
    )
    group.add_argument(
        "--offline-ratio",
        default=None,
        metavar="F|uniform",
        help="share of each batch drawn from --dataset, or 'uniform' over dataset and replay "
        "together (default: 0.5 hybrid, as RLPD; uniform offline-to-online, as IQL)",
    )
    group.add_argument(
        "--offline-ratio-schedule",
        choices=["constant", "linear"],
        default=None,
        help="keep the share, or anneal it linearly to 0 over the online steps (default: constant)",
    )
    group.add_argument(
        "--buffer-size",
        type=int,
        default=None,
        help="replay capacity per seed (default: the online steps, at most 1000000)",
    )
    group.add_argument(
        "--env-steps-per-call",
        type=int,
        default=None,
        metavar="K",
        help="environment steps between compiled update calls, each running K × utd "
        "gradient steps (default: 1, the papers' order; 2 for dsac_t, whose update is two "
        "critic steps and one actor step)",
    )
    jax_envs = parser.add_argument_group(
        "JAX environments (MinAtar: Breakout-MinAtar, Asterix-MinAtar, Freeway-MinAtar, "
        "SpaceInvaders-MinAtar; gymnax/CartPole-v1; gridworlds: ProcMaze-v0, ButtonGrid-v0, "
        "PanFlute-v0 and sizes such as ProcMaze-4x4-v0)",
        "these step inside the compiled loop with the updates, many per seed; Gymnasium ids "
        "step on the host",
    )
    jax_envs.add_argument(
        "--num-envs",
        type=int,
        default=None,
        help="parallel environments per seed; every step of each counts as an environment "
        "step (default: 1)",
    )
    jax_envs.add_argument(
        "--host-loop",
        action="store_true",
        default=None,
        help="step the JAX environment from Python between compiled calls, as a Gymnasium "
        "one is (to compare the two loops)",
    )
    jax_envs.add_argument(
        "--sticky-actions",
        type=float,
        default=None,
        metavar="P",
        help="probability of repeating the previous action (default: 0.1 for MinAtar, as the "
        "original MinAtar; 0 otherwise)",
    )


def _module_doc(cls: type) -> str:
    return (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip()


def train_from_args(args: argparse.Namespace) -> RunResult:
    """Train as the parsed `valorl train AGENT ...` command line asks; returns the results."""
    overrides = parse_overrides(args, args.agent_cls)
    run = dict(  # what both training drivers take alike
        seeds=args.seeds,
        seed=args.seed,
        log_every=args.log_every,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        eval_episodes=args.eval_episodes,
        env=args.env,
        out=args.out,
        keep_checkpoints=args.keep_checkpoints,
        progress=not args.quiet,
        logger=args.logger,
    )
    if args.mode != "offline":
        return _train_online(args, run | overrides)
    given = [f for f in ONLINE_FLAGS if getattr(args, f, None) is not None]
    if given:
        raise ValorlError(
            f"{'--' + given[0].replace('_', '-')} applies to --mode online, hybrid and "
            "offline-to-online, not --mode offline"
        )
    if args.episodes_per_game is not None and args.datasets is None:
        raise ValorlError("--episodes-per-game applies to --datasets")
    dataset = args.dataset if args.datasets is None else _multigame(args, overrides)
    if dataset is None:
        raise ValorlError(
            "--mode offline needs --dataset ID_OR_PATH (or learn in an environment with "
            "--mode online --env ENV_ID)"
        )
    from valorl.training.offline import train

    steps = 1_000_000 if args.steps is None else args.steps
    for flag, value in (("--goal-reward", args.goal_reward), ("--actor-goals", args.actor_goals)):
        if value is not None and args.goals is None:
            raise ValorlError(f"{flag} applies to goal-conditioned runs: add --goals")
    goals = None
    if args.goals is not None:
        goals = GoalSampling(
            args.goals, args.goal_reward or "success", actor_goals=args.actor_goals or "same"
        )
    return train(
        args.agent,
        dataset,
        steps=steps,
        holdout=args.holdout,
        goals=goals,
        init_from=args.init_from,
        **run,
        **overrides,
    )


def _multigame(args: argparse.Namespace, overrides: dict) -> Dataset:
    """The token dataset of `--datasets`, coded with the agent's vocabulary."""
    if args.dataset is not None:
        raise ValorlError("give --dataset or --datasets, not both")
    vocab = overrides.get("vocab_size", getattr(args.agent_cls, "vocab_size", None))
    if vocab is None:
        raise ValorlError(
            f"--datasets makes token observations, which {args.agent} does not read (jowa does)"
        )
    from valorl.envs.token_games import load_multigame

    base, reserve = None, 256
    if args.init_from is not None:
        base, vocab, reserve = _pretraining_games(args.init_from)
    return load_multigame(
        args.datasets.split(","), vocab, reserve, base=base, episodes=args.episodes_per_game
    )


def _pretraining_games(run_dir: str) -> tuple[list[str], int, int]:
    """The datasets, vocabulary and reserve of a multi-game pre-training run."""
    from valorl.envs.token_games import games_in
    from valorl.training.run_dir import RunDir

    spec = RunDir(run_dir).config()["data"].get("env_spec_json")
    if games_in(spec) is None:
        raise ValorlError(f"{run_dir} is not a multi-game run (valorl train jowa --datasets)")
    kwargs = json.loads(spec)["kwargs"]
    if kwargs.get("base"):
        raise ValorlError(f"{run_dir} is itself fine-tuned; fine-tune from a pre-training run")
    return kwargs["datasets"], kwargs["vocab_size"], kwargs["reserve"]


def _train_online(args: argparse.Namespace, kwargs: dict) -> RunResult:
    from valorl.training.online import train_online

    if args.holdout:
        raise ValorlError("--holdout applies to --mode offline")
    if args.datasets or args.init_from:
        which = "--datasets" if args.datasets else "--init-from"
        raise ValorlError(f"{which} applies to --mode offline")
    if args.goals or args.goal_reward or args.actor_goals:
        raise ValorlError("--goals applies to --mode offline")
    if args.steps is not None and args.mode == "offline-to-online":
        raise ValorlError(
            "--mode offline-to-online takes --offline-steps and --online-steps, not --steps"
        )
    if args.steps is not None and args.online_steps is not None:
        raise ValorlError("give --steps or --online-steps, not both")
    online_steps = args.online_steps if args.online_steps is not None else args.steps
    # --utd is a run flag, or the agent's own hyperparameter (SAC): train_online takes either
    utd = kwargs.pop("utd", getattr(args, "utd", None))
    return train_online(
        args.agent,
        args.dataset,
        mode=args.mode,
        online_steps=1_000_000 if online_steps is None else online_steps,
        offline_steps=args.offline_steps or 0,
        utd=utd,
        start_steps=args.start_steps,
        offline_ratio=args.offline_ratio,
        offline_ratio_schedule=args.offline_ratio_schedule or "constant",
        buffer_size=args.buffer_size,
        env_steps_per_call=args.env_steps_per_call,
        num_envs=args.num_envs or 1,
        host_loop=bool(args.host_loop),
        sticky_actions=args.sticky_actions,
        **kwargs,
    )

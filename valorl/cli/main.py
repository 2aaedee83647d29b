"""The `valorl` command: parse arguments, call the library, print results. No algorithm here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from rich.table import Table

from valorl.cli.args import Parser, add_dataclass_flags, parse_overrides
from valorl.cli.corrupt import add_corrupt_parser
from valorl.cli.diagnose import add_diagnose_parser
from valorl.cli.ope import add_ope_parser
from valorl.cli.report import add_report_parser
from valorl.errors import ValorlError
from valorl.ui import out

EPILOG = """examples:
  valorl demo                                   build data, train BC and IQL, compare
  valorl collect --env Pendulum-v1 --policy random --policy pendulum-swingup:noise=0.3 \\
      --steps 50000 --id valorl/pendulum-mixed-v0
  valorl train iql --dataset valorl/pendulum-mixed-v0 --steps 50000 --seeds 5
  valorl train sac --env Pendulum-v1 --mode online --steps 15000 --seeds 2
  valorl eval runs/iql-valorl_pendulum-mixed-v0-1a2b3c4d
  valorl bench throughput --agent iql --seeds 5 --json
"""


def build_parser() -> Parser:
    from valorl.agents import AGENTS
    from valorl.data.controllers import CONTROLLERS

    parser = Parser(
        prog="valorl",
        description="Learn value functions and policies from logged "
        "data, and evaluate them over many seeds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="build a small dataset, train BC and IQL, compare",
        description="The main job on an embedded default: build a "
        "mixed-quality Pendulum dataset locally, train BC and IQL with "
        "several seeds, evaluate them and print normalised scores.",
    )
    demo.add_argument(
        "--out",
        default="valorl-demo",
        help="directory for data and runs (default: valorl-demo); re-running reuses what is there",
    )
    demo.add_argument("--steps", type=int, default=None, help="gradient steps per agent")
    demo.add_argument("--seeds", type=int, default=3, help="seeds per agent (default: 3)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=cmd_demo)

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
        _add_train_flags(sub)
        _add_online_flags(sub, cls)
        add_dataclass_flags(sub, cls, f"{name} hyperparameters")
        sub.set_defaults(run=cmd_train, agent_cls=cls)

    ev = commands.add_parser(
        "eval",
        help="evaluate a run's policies on fresh episodes",
        description="Roll every seed's latest policy out on fresh, seeded "
        "episodes and print returns and normalised scores.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a directory made by `valorl train`")
    ev.add_argument("--episodes", type=int, default=10, help="episodes per seed (default: 10)")
    ev.add_argument("--env", default=None, help="evaluate in this environment instead")
    ev.add_argument("--seed", type=int, default=0, help="seed of the episode starts")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(run=cmd_eval)

    col = commands.add_parser(
        "collect",
        help="roll out behaviour policies into a dataset",
        description="Roll behaviour policies out in a Gymnasium environment and write a Minari "
        "dataset. Behaviours: 'random', a scripted controller "
        f"({', '.join(CONTROLLERS)}), or a valorl run directory; options after a colon: "
        "noise=STD (fraction of half the action range), share=WEIGHT (of the steps), "
        "seed=INDEX (of a run).",
    )
    col.add_argument("--env", required=True, help="Gymnasium environment id, e.g. Pendulum-v1")
    col.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="SPEC",
        help="behaviour spec; repeat to mix, e.g. --policy random --policy runs/x:noise=0.2",
    )
    col.add_argument("--steps", type=int, required=True, help="transitions to collect")
    col.add_argument(
        "--id",
        dest="dataset_id",
        required=True,
        help="Minari dataset id, e.g. valorl/pendulum-mixed-v0",
    )
    col.add_argument(
        "--out",
        default=None,
        help="write the dataset to this directory instead of the local Minari root",
    )
    col.add_argument("--seed", type=int, default=0, help="collection seed (default: 0)")
    col.add_argument(
        "--ref-max",
        type=float,
        default=None,
        help="return that scores 100 (default: the best noise-free behaviour's mean return)",
    )
    col.add_argument("--quiet", action="store_true", help="no progress bar")
    col.set_defaults(run=cmd_collect)

    add_corrupt_parser(commands)
    add_diagnose_parser(commands)
    add_ope_parser(commands)

    ds = commands.add_parser("datasets", help="list or inspect local datasets")
    ds_commands = ds.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    ds_list = ds_commands.add_parser("list", help="local Minari datasets")
    ds_list.set_defaults(run=cmd_datasets_list)
    ds_info = ds_commands.add_parser("info", help="one dataset's metadata")
    ds_info.add_argument("name", metavar="ID_OR_PATH")
    ds_info.set_defaults(run=cmd_datasets_info)

    bench = commands.add_parser("bench", help="benchmarks")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    tp = bench_commands.add_parser(
        "throughput",
        help="gradient steps per second on synthetic data (obs 17, action 6), after compilation",
    )
    tp.add_argument("--agent", default="iql", choices=sorted(AGENTS))
    tp.add_argument("--hidden", default="256,256", help="hidden sizes (default: 256,256)")
    tp.add_argument("--batch", type=int, default=256, help="batch size (default: 256)")
    tp.add_argument("--seeds", type=int, default=1, help="seeds trained together (default: 1)")
    tp.add_argument(
        "--steps-per-call",
        type=int,
        default=1000,
        help="steps fused in one compiled call (default: 1000)",
    )
    tp.add_argument("--calls", type=int, default=5, help="timed calls (default: 5)")
    tp.add_argument("--json", action="store_true", help="print one JSON object")
    tp.set_defaults(run=cmd_bench_throughput)
    add_report_parser(commands)
    return parser


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run")
    run.add_argument(
        "--dataset",
        default=None,
        metavar="ID_OR_PATH",
        help="local Minari id, Minari directory, D4RL-layout .hdf5, or .npz (all modes but online)",
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
        help="steps per compiled call; metrics and a checkpoint after each (default: 1000)",
    )
    run.add_argument(
        "--eval-every", type=int, default=10_000, help="steps between evaluations (default: 10000)"
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
)
"""Flags of the online and hybrid modes (`_add_online_flags`), unset unless given."""


def _add_online_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Flags of the online and hybrid modes (valorl/train/online.py); `--utd` only for agents
    without a `utd` hyperparameter of their own (SAC has one)."""
    import dataclasses

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
    if "utd" not in {f.name for f in dataclasses.fields(cls)}:
        group.add_argument(
            "--utd",
            type=int,
            default=None,
            help="gradient steps (batches) per environment step (default: 1)",
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


def _module_doc(cls: type) -> str:
    return (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip()


# ---- commands ------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    import valorl

    overrides = parse_overrides(args, args.agent_cls)
    if args.mode != "offline":
        return _train_online(args, overrides)
    given = [f for f in ONLINE_FLAGS if getattr(args, f, None) is not None]
    if given:
        raise ValorlError(
            f"{'--' + given[0].replace('_', '-')} applies to --mode online, hybrid and "
            "offline-to-online, not --mode offline"
        )
    if args.dataset is None:
        raise ValorlError(
            "--mode offline needs --dataset ID_OR_PATH (or learn in an environment with "
            "--mode online --env ENV_ID)"
        )
    result = valorl.train(
        args.agent,
        args.dataset,
        steps=1_000_000 if args.steps is None else args.steps,
        seeds=args.seeds,
        seed=args.seed,
        log_every=args.log_every,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        env=args.env,
        holdout=args.holdout,
        out=args.out,
        progress=not args.quiet,
        **overrides,
    )
    rows = [(args.agent, result.path, result.final_returns, result.final_scores)]
    _print_scores(f"{args.agent} on {args.dataset}", rows)
    return 0


def _train_online(args: argparse.Namespace, overrides: dict) -> int:
    from valorl.train.online import train_online

    if args.holdout:
        raise ValorlError("--holdout applies to --mode offline")
    if args.steps is not None and args.mode == "offline-to-online":
        raise ValorlError(
            "--mode offline-to-online takes --offline-steps and --online-steps, not --steps"
        )
    if args.steps is not None and args.online_steps is not None:
        raise ValorlError("give --steps or --online-steps, not both")
    online_steps = args.online_steps if args.online_steps is not None else args.steps
    # --utd is a run flag, or the agent's own hyperparameter (SAC): train_online takes either
    utd = overrides.pop("utd", getattr(args, "utd", None))
    result = train_online(
        args.agent,
        args.dataset,
        mode=args.mode,
        env=args.env,
        online_steps=1_000_000 if online_steps is None else online_steps,
        offline_steps=args.offline_steps or 0,
        utd=utd,
        start_steps=args.start_steps,
        offline_ratio=args.offline_ratio,
        offline_ratio_schedule=args.offline_ratio_schedule or "constant",
        buffer_size=args.buffer_size,
        env_steps_per_call=args.env_steps_per_call,
        seeds=args.seeds,
        seed=args.seed,
        log_every=args.log_every,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        out=args.out,
        progress=not args.quiet,
        **overrides,
    )
    rows = [(args.agent, result.path, result.final_returns, result.final_scores)]
    where = args.dataset if args.dataset is not None else args.env
    _print_scores(f"{args.agent} on {where} ({args.mode})", rows)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from valorl.eval.evaluate import evaluate_run

    ev = evaluate_run(args.run_dir, episodes=args.episodes, env=args.env, seed=args.seed)
    per_seed_returns = ev.returns.mean(axis=1)
    per_seed_scores = None if ev.scores is None else ev.scores.mean(axis=1)
    if args.json:
        summary = {
            "run": ev.run,
            "step": ev.step,
            "seeds": ev.seeds,
            "return_per_seed": per_seed_returns.tolist(),
            "return": _interval_json(per_seed_returns),
        }
        if per_seed_scores is not None:
            summary["score_per_seed"] = per_seed_scores.tolist()
            summary["score"] = _interval_json(per_seed_scores)
        print(json.dumps(summary))
        return 0
    table = Table(title=f"{ev.run} at step {ev.step}: {args.episodes} episodes per seed")
    table.add_column("seed", justify="right")
    table.add_column("return", justify="right")
    table.add_column("normalised score", justify="right")
    for i, s in enumerate(ev.seeds):
        score = "-" if per_seed_scores is None else f"{per_seed_scores[i]:.1f}"
        table.add_row(str(s), f"{per_seed_returns[i]:.1f}", score)
    out.print(table)
    _print_scores("summary over seeds", [("policy", ev.run, per_seed_returns, per_seed_scores)])
    return 0


def _interval_json(values) -> dict:
    """Mean and 95% interval as strict JSON: null where undefined (a single seed)."""
    from valorl.eval.stats import mean_interval

    mean, low, high = mean_interval(values)
    return {
        "mean": mean,
        "low": None if low != low else low,
        "high": None if high != high else high,
    }


def cmd_collect(args: argparse.Namespace) -> int:
    from valorl.data.collect import collect

    ds = collect(
        args.env,
        args.policy,
        args.steps,
        seed=args.seed,
        dataset_id=args.dataset_id,
        out=args.out,
        ref_max_score=args.ref_max,
        progress=not args.quiet,
    )
    info = ds.info
    returns = ds.episode_returns()
    out.print(
        f"wrote {args.dataset_id} to {info.source}: {len(ds)} transitions, "
        f"{len(returns)} episodes, mean episode return {returns.mean():.1f}; "
        f"reference returns random {info.ref_min_score:.1f}, best "
        f"{'-' if info.ref_max_score is None else f'{info.ref_max_score:.1f}'}"
    )
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from valorl.data.catalog import local_datasets
    from valorl.data.sources import minari_root

    entries = local_datasets()
    table = Table(title=f"local Minari datasets in {minari_root()}")
    for column in ("id", "env", "transitions", "episodes", "size", "reference returns"):
        table.add_column(column, justify="left" if column in ("id", "env") else "right")
    for e in entries:
        refs = (
            "-"
            if e.ref_min_score is None
            else f"{e.ref_min_score:.1f} .. "
            f"{'-' if e.ref_max_score is None else f'{e.ref_max_score:.1f}'}"
        )
        table.add_row(
            e.dataset_id,
            e.env_id or "-",
            f"{e.steps:,}",
            f"{e.episodes:,}",
            f"{e.size_mb:.1f} MB",
            refs,
        )
    out.print(table)
    if not entries:
        out.print("none yet: make one with `valorl collect` (or `valorl demo`)")
    return 0


def cmd_datasets_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from valorl.data.catalog import read_entry
    from valorl.data.sources import minari_root

    path = Path(args.name)
    if not path.is_dir():
        path = minari_root() / args.name
    if not path.is_dir():
        raise ValorlError(
            f"dataset {args.name!r} not found: not a directory and not a local "
            f"Minari id under {minari_root()}"
        )
    entry = read_entry(path)
    shown = {
        k: v
        for k, v in entry.metadata.items()
        if k not in ("observation_space", "action_space", "env_spec", "eval_env_spec")
    }
    out.print_json(
        json.dumps(
            {
                "path": str(entry.path),
                "env_id": entry.env_id,
                "size_mb": round(entry.size_mb, 2),
                **shown,
            }
        )
    )
    return 0


def cmd_bench_throughput(args: argparse.Namespace) -> int:
    from valorl.bench import throughput
    from valorl.config import coerce

    hidden = coerce(tuple[int, ...], args.hidden, "--hidden")
    result = throughput(
        args.agent,
        hidden_dims=hidden,
        batch_size=args.batch,
        seeds=args.seeds,
        steps_per_call=args.steps_per_call,
        calls=args.calls,
    )
    if args.json:
        print(json.dumps(result))
    else:
        out.print(
            f"{result['agent']} {result['hidden']} batch {result['batch']}, "
            f"{result['seeds']} seed(s) on {result['device']}: "
            f"{result['updates_per_s']:,.0f} steps/s total "
            f"({result['updates_per_s_per_seed']:,.0f} per seed), "
            f"compile {result['compile_s']:.1f} s"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from valorl.demo import run_demo

    rows = run_demo(args.out, steps=args.steps, seeds=args.seeds, progress=not args.quiet)
    _print_scores(
        "valorl demo: Pendulum-v1, mixed-quality data (3/4 random, 1/4 noisy controller)",
        [(r.agent, r.path, r.returns, r.scores) for r in rows],
    )
    return 0


def _print_scores(title: str, rows: Sequence[tuple]) -> None:
    """One line per agent: normalised score and return as mean [95% interval] over seeds."""
    from valorl.eval.stats import mean_interval

    def cell(values) -> str:
        if values is None:
            return "-"
        mean, low, high = mean_interval(values)
        if low != low:  # one seed: no interval
            return f"{mean:.1f}"
        return f"{mean:.1f} [{low:.1f}, {high:.1f}]"

    table = Table(title=title)
    table.add_column("agent")
    table.add_column("normalised score (95% CI)", justify="right")
    table.add_column("return (95% CI)", justify="right")
    table.add_column("seeds", justify="right")
    for name, _, returns, scores in rows:
        n = "-" if returns is None else str(len(returns))
        table.add_row(name, cell(scores), cell(returns), n)
    out.print(table)
    for name, path, _, _ in rows:
        out.print(f"  {name}: {path}")


# ---- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # report it from the (sub)command that was given the flag
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ValorlError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"valorl: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            "valorl: interrupted; run the same command again to resume from the last checkpoint\n"
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

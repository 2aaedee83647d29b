"""The `valorl` command: parse arguments, call the library, print results. No algorithm here."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence

from rich.table import Table

from valorl.cli.corrupt import add_corrupt_parser
from valorl.cli.datasets import add_datasets_parser
from valorl.cli.diagnose import add_diagnose_parser
from valorl.cli.lm import add_lm_parser
from valorl.cli.ope import add_ope_parser
from valorl.cli.report import add_report_parser
from valorl.cli.scores import print_scores
from valorl.cli.sweep import add_sweep_parser
from valorl.errors import ValorlError
from valorl.launch.args import (
    ExitCode,
    Parser,
    add_old_spelling,
    exit_codes_help,
    renamed_spec_options,
)
from valorl.launch.train import add_train_parser, train_from_args
from valorl.ui import out

EPILOG = """examples:
  valorl demo                                   build data, train BC and IQL, compare
  valorl collect --env Pendulum-v1 --policy random --policy pendulum-swingup:noise=0.3 \\
      --steps 50000 --id valorl/pendulum-mixed-v0
  valorl train iql --dataset valorl/pendulum-mixed-v0 --steps 50000 --seeds 5
  valorl train sac --env Pendulum-v1 --mode online --steps 15000 --seeds 2
  valorl eval runs/iql-valorl_pendulum-mixed-v0-1a2b3c4d
  valorl sweep sweep.toml --out runs/sweep         a grid of runs, then one report
  valorl bench throughput --agent iql --seeds 5 --json

names: --id is a dataset id, --out where a command writes (a directory; a file for ope and
export-policy), --hidden-dims and --batch-size the networks and batches, --bootstrap-reps
the bootstrap resamples, :index=N a seed index of a run. Old spellings still work for one
release, with a note on stderr.

"""


def build_parser() -> Parser:
    from valorl.agents import AGENTS
    from valorl.collection import CONTROLLERS

    parser = Parser(
        prog="valorl",
        description="Learn value functions and policies from logged "
        "data, and evaluate them over many seeds.",
        epilog=EPILOG + exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of bad-input errors too"
    )
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

    add_train_parser(commands, run=cmd_train)

    ev = commands.add_parser(
        "eval",
        help="evaluate a run's policies on fresh episodes",
        description="Roll every seed's latest policy out on fresh, seeded episodes and print\n"
        "returns and normalised scores.\n\n"
        "Value-guided steering (V-GPS, Nakamoto et al. 2024): with --steer-with CRITIC_RUN,\n"
        "the policy draws --samples actions (or action chunks) at every decision, another\n"
        "run's critic scores each (a chunk by its first action), and the best one is executed\n"
        "(--beta 0) or one is drawn from softmax(Q / beta). The policy's weights do not change.\n"
        "Steer a stochastic policy: a deterministic one (bc) gives N identical samples.",
        epilog="example:\n  valorl eval runs/gaussian-bc --steer-with runs/iql --samples 16 "
        "--beta 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a directory made by `valorl train`")
    ev.add_argument("--episodes", type=int, default=10, help="episodes per seed (default: 10)")
    ev.add_argument("--env", default=None, help="evaluate in this environment instead")
    ev.add_argument("--seed", type=int, default=0, help="seed of the episode starts")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument(
        "--steer-with",
        metavar="CRITIC_RUN",
        default=None,
        help="steer the policy with this run's critic (iql, cql, calql, td3_bc, sac, ...) "
        "trained on the same task; seed i is steered by the critic's seed i when both runs "
        "have as many seeds, else by its first seed",
    )
    ev.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="actions drawn from the policy per decision when steering (default: 10, as "
        "V-GPS's code)",
    )
    ev.add_argument(
        "--beta",
        type=float,
        default=None,
        help="steering temperature in return units: beta > 0 draws from softmax(Q / beta), 0 "
        "takes the highest-Q sample (default: 1.0, as V-GPS's code)",
    )
    ev.add_argument(
        "--reduction",
        choices=("min", "mean"),
        default="min",
        help="how the critic's ensemble members combine into one Q (default: min, as V-GPS)",
    )
    ev.add_argument(
        "--plan",
        default=None,
        metavar="K,H",
        help="act by beam search of width K and depth H in the run's learned model (jowa); "
        "0,0 or 1,0: greedy in Q (default: as the run trained)",
    )
    ev.set_defaults(run=cmd_eval)

    col = commands.add_parser(
        "collect",
        help="roll out behaviour policies into a dataset",
        description="Roll behaviour policies out in a Gymnasium environment and write a Minari "
        "dataset. Behaviours: 'random', a scripted controller "
        f"({', '.join(CONTROLLERS)}), a valorl run directory, or a policy file (.npz, see "
        "valorl.collection.policy_file); options after a colon: "
        "noise=STD (fraction of half the action range), share=WEIGHT (of the steps), "
        "index=I (which of a run's seeds, counting from 0).",
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
    add_lm_parser(commands)

    add_datasets_parser(commands)

    bench = commands.add_parser("bench", help="benchmarks")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    tp = bench_commands.add_parser(
        "throughput",
        help="gradient steps per second on synthetic data (obs 17, action 6), after "
        "compilation; with --env, environment and gradient steps per second of online "
        "training in that environment",
        description="Without --env: gradient steps per second of fused updates on synthetic "
        "data (obs 17, action 6). With --env: online training through the run loop, "
        "reporting env_steps_per_s and updates_per_s (a JAX environment such as "
        "Breakout-MinAtar steps inside the compiled loop; --host-loop steps it from Python).",
    )
    tp.add_argument("--agent", default="iql", choices=sorted(AGENTS))
    hidden = tp.add_argument(
        "--hidden-dims",
        default=None,
        metavar="N,N,...",
        help="hidden sizes (default: 256,256; with --env the agent's own)",
    )
    add_old_spelling(tp, "--hidden", hidden)
    batch = tp.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="batch size (default: 256; with --env the agent's own)",
    )
    add_old_spelling(tp, "--batch", batch)
    tp.add_argument("--seeds", type=int, default=1, help="seeds trained together (default: 1)")
    tp.add_argument(
        "--steps-per-call",
        type=int,
        default=1000,
        help="steps fused in one compiled call (default: 1000)",
    )
    tp.add_argument("--calls", type=int, default=5, help="timed calls (default: 5)")
    tp.add_argument(
        "--env", default=None, help="measure online training in this environment instead"
    )
    tp.add_argument(
        "--num-envs", type=int, default=1, help="with --env: environments per seed (default: 1)"
    )
    tp.add_argument(
        "--host-loop",
        action="store_true",
        help="with --env: step the JAX environment from Python between compiled calls",
    )
    tp.add_argument(
        "--env-steps",
        type=int,
        default=5000,
        metavar="N",
        help="with --env: environment steps per seed in each timed chunk (default: 5000)",
    )
    tp.add_argument("--utd", type=float, default=None, help="with --env: updates per env step")
    tp.add_argument(
        "--random-actions",
        action="store_true",
        help="with --env: uniform random actions and no updates (the cost of stepping alone)",
    )
    tp.add_argument("--json", action="store_true", help="print one JSON object")
    tp.set_defaults(run=cmd_bench_throughput)
    add_report_parser(commands)
    add_sweep_parser(commands)
    return parser


# ---- commands ------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    result = train_from_args(args)
    where = next(w for w in (args.dataset, args.datasets, args.env) if w is not None)
    mode = "" if args.mode == "offline" else f" ({args.mode})"
    rows = [
        (
            args.agent,
            result.path,
            result.final_returns,
            result.final_scores,
            result.final_success_rates,
        )
    ]
    print_scores(f"{args.agent} on {where}{mode}", rows)
    if args.datasets is not None and result.returns.shape[1]:
        from valorl.envs.token_games import per_game
        from valorl.training.run_dir import RunDir

        spec = RunDir(result.path).config()["data"]["env_spec_json"]
        games = per_game(spec, result.returns[:, -1])
        print_scores("per game", [(name, result.path, r, s) for name, r, s in games])
    return 0


def _plan(text: str) -> tuple[int, int]:
    try:
        width, depth = (int(x) for x in text.split(","))
    except ValueError:
        raise ValorlError(f"--plan takes K,H (two integers), got {text!r}") from None
    return max(width, 1), depth


def cmd_eval(args: argparse.Namespace) -> int:
    from valorl.eval.evaluate import evaluate_run

    ev = evaluate_run(
        args.run_dir,
        episodes=args.episodes,
        env=args.env,
        seed=args.seed,
        steer_with=args.steer_with,
        samples=args.samples,
        beta=args.beta,
        reduction=args.reduction,
        plan=None if args.plan is None else _plan(args.plan),
    )
    per_seed_returns = ev.returns.mean(axis=1)
    per_seed_scores = None if ev.scores is None else ev.scores.mean(axis=1)
    per_seed_success = None if ev.successes is None else ev.successes.mean(axis=1)
    if args.json:
        summary = {
            "run": ev.run,
            "step": ev.step,
            "seeds": ev.seeds,
            "return_per_seed": per_seed_returns.tolist(),
            "return": _interval_json(per_seed_returns),
        }
        if ev.steering is not None:
            summary["steering"] = ev.steering
        if per_seed_scores is not None:
            summary["score_per_seed"] = per_seed_scores.tolist()
            summary["score"] = _interval_json(per_seed_scores)
        if per_seed_success is not None:
            summary["success_rate_per_seed"] = per_seed_success.tolist()
            summary["success_rate"] = _interval_json(per_seed_success)
        print(json.dumps(summary))
        return 0
    steered = ""
    if ev.steering is not None:
        st = ev.steering
        steered = (
            f", steered by {st['steer_with']} ({st['samples']} samples, beta {st['beta']:g}, "
            f"{st['reduction']} over the ensemble)"
        )
    title = f"{ev.run} at step {ev.step}{steered}: {args.episodes} episodes per seed"
    table = Table(title=title)
    table.add_column("seed", justify="right")
    table.add_column("return", justify="right")
    table.add_column("normalised score", justify="right")
    if per_seed_success is not None:
        table.add_column("success rate", justify="right")
    for i, s in enumerate(ev.seeds):
        score = "-" if per_seed_scores is None else f"{per_seed_scores[i]:.1f}"
        success = [] if per_seed_success is None else [f"{per_seed_success[i]:.2f}"]
        table.add_row(str(s), f"{per_seed_returns[i]:.1f}", score, *success)
    out.print(table)
    row = ("policy", ev.run, per_seed_returns, per_seed_scores, per_seed_success)
    print_scores("summary over seeds", [row])
    return 0


def _interval_json(values) -> dict:
    """Mean and 95% interval as strict JSON: null where undefined (a single seed)."""
    from valorl.stats import mean_interval

    mean, low, high = mean_interval(values)
    return {
        "mean": mean,
        "low": None if low != low else low,
        "high": None if high != high else high,
    }


def cmd_collect(args: argparse.Namespace) -> int:
    from valorl.collection import collect

    ds = collect(
        args.env,
        [renamed_spec_options(spec, {"seed": "index"}) for spec in args.policy],
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


def cmd_bench_throughput(args: argparse.Namespace) -> int:
    from valorl.bench import env_throughput, throughput
    from valorl.config import coerce

    sizes = {}
    if args.hidden_dims is not None:
        sizes["hidden_dims"] = coerce(tuple[int, ...], args.hidden_dims, "--hidden-dims")
    if args.batch_size is not None:
        sizes["batch_size"] = args.batch_size
    if args.env is not None:
        result = env_throughput(
            args.agent,
            args.env,
            seeds=args.seeds,
            num_envs=args.num_envs,
            host_loop=args.host_loop,
            steps_per_chunk=args.env_steps,
            chunks=args.calls,
            utd=args.utd,
            random_actions=args.random_actions,
            **sizes,
        )
        summary = (
            f"{result['agent']} in {result['env']} ({result['loop']} loop), "
            f"{result['seeds']} seed(s) × {result['num_envs']} env(s) on "
            f"{result['device']}: {result['env_steps_per_s']:,.0f} env steps/s, "
            f"{result['updates_per_s']:,.0f} updates/s"
        )
        if args.json:
            print(json.dumps(result))
        else:
            out.print(summary)
        return 0
    result = throughput(
        args.agent,
        seeds=args.seeds,
        steps_per_call=args.steps_per_call,
        calls=args.calls,
        **({"hidden_dims": (256, 256), "batch_size": 256} | sizes),
    )
    if args.json:
        print(json.dumps(result))
    else:
        out.print(
            f"{result['agent']} hidden {result['hidden_dims']} batch {result['batch_size']}, "
            f"{result['seeds']} seed(s) on {result['device']}: "
            f"{result['updates_per_s']:,.0f} steps/s total "
            f"({result['updates_per_s_per_seed']:,.0f} per seed), "
            f"compile {result['compile_s']:.1f} s"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from valorl.demo import run_demo

    rows = run_demo(args.out, steps=args.steps, seeds=args.seeds, progress=not args.quiet)
    print_scores(
        "valorl demo: Pendulum-v1, mixed-quality data (3/4 random, 1/4 noisy controller)",
        [(r.agent, r.path, r.returns, r.scores) for r in rows],
    )
    return 0


# ---- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `valorl` command; the exit status is an `ExitCode` (usage errors exit with
    BAD_INPUT from the parser, as SystemExit)."""
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
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write(
            "valorl: interrupted; run the same command again to resume from the last checkpoint\n"
        )
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug: keep the traceback, whatever --debug says
        traceback.print_exc()
        sys.stderr.write(
            f"valorl: internal error: {type(exc).__name__}: {exc} (a bug in valorl; please "
            "report it with the traceback above)\n"
        )
        return ExitCode.INTERNAL_ERROR


if __name__ == "__main__":
    raise SystemExit(main())

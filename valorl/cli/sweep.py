"""`valorl sweep SPEC --out DIR`: train a grid of runs, locally or on Ray, and report on it."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from valorl.cli.scores import print_scores
from valorl.launch.args import ExitCode
from valorl.ui import out

EXAMPLE = """spec (TOML; keys are `valorl train` flags with underscores):
  agents = ["iql", "td3_bc"]
  datasets = ["valorl/pendulum-mixed-v0"]
  seeds = 5
  [settings]
  steps = 20000
  hidden_dims = [64, 64]
  [grid]
  discount = [0.95, 0.99]

examples:
  valorl sweep sweep.toml --out runs/sweep --dry-run     list the groups and their commands
  valorl sweep sweep.toml --out runs/sweep               train them here, one after another
  valorl sweep sweep.toml --out runs/sweep --backend ray --address auto
"""


def add_sweep_parser(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train a grid of agents x datasets x hyperparameters x seeds, then report",
        description="Expand a sweep spec into groups (agent x dataset or environment x mode x\n"
        "grid point), each one `valorl train` process training all its seeds together; run\n"
        "them here or on a Ray cluster; write one report over all of them to OUT/report.\n"
        "Re-running the same command skips finished groups and resumes interrupted ones.\n"
        "Exit status 3 when some groups failed (each has OUT/<group>.error.log).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("spec", metavar="SPEC", help="the sweep spec, a TOML file")
    sweep.add_argument(
        "--out", default=None, metavar="DIR", help="sweep directory (default: runs/<SPEC name>)"
    )
    sweep.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: groups one after another in this process (default); ray: one Ray task "
        "per group",
    )
    sweep.add_argument(
        "--address",
        default=None,
        help="Ray cluster address ('auto' on a cluster node, or HOST:PORT); default with "
        "--backend ray: start a cluster on this machine, listening on 127.0.0.1 only",
    )
    sweep.add_argument(
        "--cpus-per-group",
        type=float,
        default=1.0,
        help="CPUs each group's Ray task asks for (default: 1)",
    )
    sweep.add_argument(
        "--gpus-per-group",
        type=float,
        default=0.0,
        help="GPUs each group's Ray task asks for, e.g. 0.25 to share one GPU by 4 (default: 0)",
    )
    sweep.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="times Ray restarts a group whose worker died; it resumes from its last "
        "checkpoint (default: 3)",
    )
    sweep.add_argument("--no-report", action="store_true", help="skip the report at the end")
    sweep.add_argument(
        "--dry-run", action="store_true", help="list the groups and their commands, train nothing"
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress display")
    sweep.set_defaults(run=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from valorl.sweep import expand, load_spec, run_sweep
    from valorl.sweep.run import error_log
    from valorl.training.results import RunResult

    spec = load_spec(args.spec)
    sweep_dir = Path(args.out) if args.out else Path("runs") / Path(args.spec).stem
    if args.dry_run:
        groups = expand(spec)
        runs = sum(len(g.seeds) for g in groups)
        out.print(f"{len(groups)} groups, {runs} runs, in {sweep_dir}:")
        for g in groups:
            out.print(shlex.join(["valorl", *g.command(sweep_dir / g.name)]), soft_wrap=True)
        return 0
    result = run_sweep(
        spec,
        sweep_dir,
        backend=args.backend,
        address=args.address,
        cpus_per_group=args.cpus_per_group,
        gpus_per_group=args.gpus_per_group,
        max_retries=args.max_retries,
        report=not args.no_report,
        progress=not args.quiet,
    )
    rows = []
    for path in result.run_dirs():
        run = RunResult.load(path)
        rows.append((path.name, path, run.final_returns, run.final_scores))
    if rows:
        print_scores(f"sweep {args.spec}: {len(rows)} of {len(result.groups)} groups", rows)
    for group in result.groups:
        if group.name in result.failures:
            log = error_log(result.out, group)
            out.print(f"[red]failed[/red] {group.name}: {result.failures[group.name]} (see {log})")
    if result.report is not None:
        out.print(f"report: {result.report / 'report.html'}")
    return ExitCode.SWEEP_GROUPS_FAILED if result.failures else ExitCode.DONE

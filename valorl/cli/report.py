"""`valorl report`: runs in, an HTML report with interval estimates out."""

from __future__ import annotations

import argparse
from pathlib import Path

from valorl.launch.args import add_old_spelling

DESCRIPTION = """\
Compare trained runs honestly. Each seed of each run directory is one run; runs are
grouped into algorithms (the agent plus every hyperparameter that differs between its
runs, e.g. `iql critic=hl-gauss` vs `iql critic=mse`) and into tasks (datasets). The
score of a run is its normalised score at its final evaluation (the raw return where
the dataset has no reference returns).

The --out directory gets report.html (open it in any browser; it needs no network),
the figures as PNG files, and summary.json with every number. The report shows mean, median, IQM and
optimality gap with stratified-bootstrap 95% intervals, performance profiles, the
probability that one algorithm beats another, learning curves, a per-dataset table,
and value diagnostics where `valorl diagnose` has been run (Agarwal et al. 2021, "Deep
RL at the Edge of the Statistical Precipice"). Unfinished runs are included, marked
as such, with the scores of their latest evaluation."""

EPILOG = """\
examples:
  valorl report runs/iql-a runs/iql-b runs/bc --out report
  valorl report runs/ --out report --force     every run under runs/, replacing report/
"""


def add_report_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand to the `valorl` command's subparsers."""
    report = commands.add_parser(
        "report",
        help="compare runs: HTML report with bootstrap intervals, profiles, curves",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="a directory made by `valorl train`, or a directory holding such runs",
    )
    report.add_argument(
        "--out",
        default="report",
        metavar="DIR",
        help="report directory to create (default: report); must not exist or be empty",
    )
    report.add_argument("--force", action="store_true", help="replace an earlier report in --out")
    reps = report.add_argument(
        "--bootstrap-reps",
        type=int,
        default=2000,
        metavar="N",
        help="bootstrap resamples per interval (default: 2000)",
    )
    add_old_spelling(report, "--reps", reps)
    report.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="coverage of every interval (default: 0.95)",
    )
    report.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap resamples (default: 0)"
    )
    report.add_argument("--quiet", action="store_true", help="no progress bar")
    report.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from valorl.report import build_report
    from valorl.report.build import HTML, SUMMARY
    from valorl.ui import console, out

    summary = build_report(
        args.run_dirs,
        args.out,
        force=args.force,
        reps=args.bootstrap_reps,
        confidence=args.confidence,
        seed=args.seed,
        progress=not args.quiet,
    )
    for warning in summary["warnings"]:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    runs = sum(len(r["seeds"]) for r in summary["runs"])
    out.print(
        f"wrote {Path(args.out) / HTML}: {len(summary['algorithms'])} algorithm(s) on "
        f"{len(summary['tasks'])} task(s), {runs} runs from {len(summary['runs'])} run "
        f"directories; numbers in {Path(args.out) / SUMMARY}",
        markup=False,
        highlight=False,
    )
    return 0

"""`valorl diagnose`: value diagnostics of a trained run (see valorl/training/diagnostics.py)."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from valorl.ui import out


def add_diagnose_parser(commands) -> None:
    parser = commands.add_parser(
        "diagnose",
        help="check a run's critic: over-estimation and TD error on held-out data",
        description="For every seed of a run: mean Q at the dataset's state-actions against "
        "the discounted Monte-Carlo return (bias > 0 is over-estimation), and the RMS TD error "
        "of Q for the agent's own policy on the training data and on held-out episodes "
        "(train with --holdout to have some). A critic of action chunks (QC, FQL with "
        "--horizon) is read at the data's chunks, with its h-step TD error. A seed whose mean "
        "Q lies far outside the discounted returns the data's rewards allow is named: its "
        "critic has diverged; so is one whose mean Q, as logged in training, still moved over "
        "the last fifth of the run by more than 3% of that range: it has not settled. With "
        "--episodes N every seed's policy also plays N episodes in the environment, and its "
        "mean Q on the state-actions it visits is set against the discounted return it really "
        "collects from them: the over-estimation of the learned policy's own value. Values "
        "are in the environment's reward units. Writes RUN_DIR/diagnostics.json (training a "
        "critic agent writes it too, without the episodes).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory made by `valorl train`")
    parser.add_argument(
        "--dataset",
        default=None,
        metavar="ID_OR_PATH",
        help="where to read the run's data (default: where training read it)",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=0,
        metavar="N",
        help="also play N episodes per seed and check the critic on them (default: 0, none)",
    )
    parser.add_argument(
        "--env",
        default=None,
        metavar="ENV_ID",
        help="where --episodes play (default: the environment the dataset names)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the episodes' starts (default: 0)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=cmd_diagnose)


def cmd_diagnose(args: argparse.Namespace) -> int:
    from valorl.training.diagnostics import diagnose_run

    on_policy = None
    if args.episodes or args.env is not None:
        from valorl.collection.on_policy import prepare_on_policy_check

        on_policy = prepare_on_policy_check(
            args.run_dir, args.episodes, args.env, args.seed, progress=not args.json
        )
    result = diagnose_run(args.run_dir, args.dataset, on_policy)
    if args.json:
        print(json.dumps(result))
        return 0
    if "q_mean" in result:  # a run trained online has only its own episodes to be read on
        _print_data(args.run_dir, result)
    if "on_policy" in result:
        _print_on_policy(result["seeds"], result["on_policy"])
    return 0


def _print_data(run_dir: str, result: dict) -> None:
    """The critic on the run's data: Q against the Monte-Carlo return, TD errors, divergence."""
    mc = result["mc_return_mean"]
    table = Table(
        title=f"{run_dir} at step {result['step']}: Monte-Carlo return "
        f"{'-' if mc is None else f'{mc:.2f}'} (γ = {result['discount']})"
        + (f", chunks of {result['chunk_length']}" if result["chunk_length"] > 1 else "")
    )
    for column in ("seed", "mean Q", "bias Q − G", "TD error (train)", "TD error (held out)"):
        table.add_column(column, justify="right")
    formats = {"q_mean": ".2f", "bias": "+.2f", "td_error_train": ".3f", "td_error_heldout": ".3f"}
    for i, seed in enumerate(result["seeds"]):
        cells = [
            "-" if result[key] is None else format(result[key][i], spec)
            for key, spec in formats.items()
        ]
        table.add_row(str(seed), *cells)
    out.print(table)
    low, high = result["return_range"] or (None, None)
    for i, seed in enumerate(result["seeds"]):
        if result["q_diverged"] and result["q_diverged"][i]:
            q = result["q_mean"][i]
            out.print(
                f"seed {seed}: mean Q {q:.2f} lies beyond [{low:.2f}, {high:.2f}], the "
                "discounted returns the data's rewards allow, by more than its width: the "
                "critic has diverged (or a reward penalty dominates it)"
            )
    for i, seed in enumerate(result["seeds"]):
        if result.get("q_settled") is not None and not result["q_settled"][i]:
            out.print(
                f"seed {seed}: its mean Q still moved by {result['q_drift'][i]:+.2f} over the "
                "last fifth of training: the critic has not settled, and part of its bias is "
                "rewards it has yet to back up (Polyak targets settle over about "
                "1/(τ·(1 − γ^h)) updates; train longer, or back up h > 1 steps)"
            )
    if result["heldout_episodes"] == 0:
        out.print("no held-out episodes: train with --holdout 0.05 to measure generalisation")


def _print_on_policy(seeds: list[int], checked: dict) -> None:
    """The critic on each seed's own episodes: Q against the return it really collects."""
    table = Table(
        title=f"on its own episodes ({checked['episodes']} per seed in {checked['env']}): "
        "mean Q against the discounted return collected from the same state-actions"
    )
    for column in ("seed", "episode return", "mean Q", "return to go", "bias Q − G", "TD error"):
        table.add_column(column, justify="right")
    formats = {
        "return": ".1f",
        "q_mean": ".2f",
        "return_to_go_mean": ".2f",
        "bias": "+.2f",
        "td_error": ".3f",
    }
    for i, seed in enumerate(seeds):
        cells = [  # None: no whole chunk of a chunk critic's to read Q at
            "-" if checked[key][i] is None else format(checked[key][i], spec)
            for key, spec in formats.items()
        ]
        table.add_row(str(seed), *cells)
    out.print(table)

"""`valorl datasets`: the recipe zoo (list, info, build) and other local Minari datasets, and
exporting a run's policy as a behaviour policy file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from valorl.errors import ValorlError
from valorl.ui import out

EPILOG = """examples:
  valorl datasets list                          recipes and local datasets
  valorl datasets build pendulum-medium-v0      build (and verify) one recipe's dataset
  valorl datasets build --all                   every recipe (MuJoCo ones take minutes each)
  valorl datasets info hopper-medium-v0
  valorl datasets export-policy runs/sac-hopper --step 30000 --out hopper-medium.npz
  valorl datasets build cube-double-play-v0     OGBench data from its oracles (~3-7 min)
  valorl datasets export cube-double-play-v0 --format ogbench --out cube-double-play-v0.npz
"""


def add_datasets_parser(commands) -> None:
    ds = commands.add_parser(
        "datasets",
        help="the dataset zoo: list, build, inspect; export behaviour policies",
        description="valorl's dataset zoo: D4RL-style datasets (random, medium, medium-replay, "
        "medium-expert, expert on Hopper, HalfCheetah, Walker2d; small Pendulum and "
        "InvertedPendulum ones) built locally from committed recipes and behaviour policies, "
        "identical bit for bit across machines (checked by a content checksum; OGBench's "
        "recipes on x86-64 CPUs with AVX2). Built "
        "datasets are Minari datasets under valorl/NAME in the local Minari root "
        "($MINARI_DATASETS_PATH or ~/.minari/datasets); `valorl train --dataset NAME` builds "
        "a recipe's dataset on first use.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = ds.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    ds_list = actions.add_parser(
        "list", help="every recipe (size, built, checksum) and other local datasets"
    )
    ds_list.set_defaults(run=cmd_list)
    info = actions.add_parser(
        "info", help="one dataset's metadata, and its recipe (with `status`) if it has one"
    )
    info.add_argument("name", metavar="NAME_OR_PATH", help="recipe name, Minari id or directory")
    info.set_defaults(run=cmd_info)
    build = actions.add_parser(
        "build",
        help="build recipes' datasets and verify their checksums",
        description="Build each named recipe's dataset (and the ones it is made from) unless "
        "a verified copy exists, then check its content checksum against the recipe's.",
    )
    build.add_argument("names", nargs="*", metavar="NAME", help="recipe names")
    build.add_argument("--all", action="store_true", help="every recipe")
    build.add_argument(
        "--force", action="store_true", help="replace a copy that does not match its recipe"
    )
    build.add_argument(
        "--accept-local-build",
        action="store_true",
        help="keep a build whose checksum differs from the recorded one (a CPU whose "
        "numerical kernels differ from the recording machine's: OGBench recipes on non-AVX2 "
        "CPUs, ARM), marked 'local' and checked against its own checksum from then on",
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(run=cmd_build)
    export_data = actions.add_parser(
        "export",
        help="write a dataset in another library's layout (OGBench's .npz)",
        description="Write an OGBench recipe's dataset (built on first use) in OGBench's .npz "
        "layout: OUT and OUT-val (the validation file OGBench's loader requires; it repeats "
        "the last tenth of the trajectories), readable by ogbench.make_env_and_datasets(NAME, "
        "dataset_path=OUT).",
    )
    export_data.add_argument("name", metavar="NAME", help="recipe name or dataset directory")
    export_data.add_argument("--format", choices=["ogbench"], default="ogbench")
    export_data.add_argument("--out", required=True, help="file to write (.npz)")
    export_data.set_defaults(run=cmd_export)
    export = actions.add_parser(
        "export-policy",
        help="write a run's policy as a behaviour policy file (.npz)",
        description="Write one seed's deterministic policy from a run (its latest checkpoint, "
        "or one kept with `train --keep-checkpoints`) as a policy file: plain arrays that "
        "`valorl collect --policy FILE.npz` rolls out without JAX, identically on any "
        "machine. Its mean return over --episodes seeded episodes goes into its provenance.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--out", required=True, help="policy file to write (.npz)")
    export.add_argument("--step", type=int, default=None, help="a kept checkpoint's step")
    export.add_argument("--seed-index", type=int, default=0, help="which seed (default: 0)")
    export.add_argument(
        "--episodes", type=int, default=100, help="episodes to measure its return (default: 100)"
    )
    export.set_defaults(run=cmd_export_policy)


def cmd_list(args: argparse.Namespace) -> int:
    from valorl import zoo
    from valorl.data.catalog import local_datasets
    from valorl.data.sources import minari_root

    table = Table(title=f"dataset recipes (built into {minari_root() / zoo.recipe.NAMESPACE})")
    for column in ("name", "env", "transitions", "built", "checksum", "reference returns"):
        table.add_column(column, justify="right" if column == "transitions" else "left")
    marks = {
        "verified": "[green]verified[/]",
        "local": "[yellow]local build[/]",
        "modified": "[red]MODIFIED[/]",
        "unrecorded": "[yellow]not recorded[/]",
        "not built": "-",
    }
    for recipe in zoo.recipes().values():
        state = zoo.status(recipe)
        table.add_row(
            recipe.name,
            recipe.env_id,
            f"{recipe.steps:,}",
            "no" if state == "not built" else "yes",
            marks[state],
            "success rate"
            if recipe.ref_random is None
            else f"{recipe.ref_random:.1f} .. {recipe.ref_expert:.1f}",
        )
    out.print(table)
    if any(r.ogbench for r in zoo.recipes().values()):
        out.print(
            "OGBench recipes also load as single-task variants: NAME-singletask-taskN-v0 "
            "(N = 1..5) and NAME-singletask-taskN-sparse-v0, e.g. "
            "cube-double-play-singletask-task2-v0"
        )
    others = [e for e in local_datasets() if zoo.find(e.dataset_id) is None]
    if others:
        table = Table(title=f"other local Minari datasets in {minari_root()}")
        for column in ("id", "env", "transitions", "episodes", "size", "reference returns"):
            table.add_column(column, justify="left" if column in ("id", "env") else "right")
        for e in others:
            refs = "-" if e.ref_min_score is None else f"{e.ref_min_score:.1f} .. "
            if e.ref_min_score is not None:
                refs += "-" if e.ref_max_score is None else f"{e.ref_max_score:.1f}"
            table.add_row(
                e.dataset_id,
                e.env_id or "-",
                f"{e.steps:,}",
                f"{e.episodes:,}",
                f"{e.size_mb:.1f} MB",
                refs,
            )
        out.print(table)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from valorl import zoo
    from valorl.data import ogbench
    from valorl.data.catalog import read_entry, space_summary
    from valorl.data.sources import minari_root
    from valorl.zoo import ogbench_tasks

    recipe = zoo.find(args.name)
    shown: dict = {}
    path = Path(args.name)
    variant = ogbench_tasks.parse(args.name) if recipe is None else None
    if variant is not None:  # a single-task relabelling of an OGBench recipe, made on load
        recipe, task, sparse = variant
        shown["singletask"] = {
            "base": recipe.name,
            "task": task,
            "reward": "sparse (-1 until solved, 0 then)" if sparse else "dense (solved - all)",
            "eval_env": ogbench.task_env_id(recipe.env_id, task),
        }
    if recipe is not None:
        shown["recipe"] = recipe.provenance() | {
            "env_id": recipe.env_id,
            "reference_returns": {"random": recipe.ref_random, "expert": recipe.ref_expert},
            "status": zoo.status(recipe),
        }
        path = zoo.dataset_path(recipe)
    elif not path.is_dir():
        path = minari_root() / args.name
        if not path.is_dir():
            raise ValorlError(
                f"dataset {args.name!r} not found: not a recipe, not a directory, and not a "
                f"local Minari id under {minari_root()}"
            )
    if path.is_dir():
        entry = read_entry(path)
        hidden = ("observation_space", "action_space", "env_spec", "eval_env_spec")
        shown |= {
            "path": str(entry.path),
            "env_id": entry.env_id,
            "size_mb": round(entry.size_mb, 2),
            "observation_space": space_summary(entry.metadata, "observation_space"),
            "action_space": space_summary(entry.metadata, "action_space"),
            **{k: v for k, v in entry.metadata.items() if k not in hidden},
        }
    out.print_json(json.dumps(shown))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from valorl import zoo

    names = list(zoo.recipes()) if args.all else args.names
    if not names:
        raise ValorlError("name the recipes to build (see `valorl datasets list`), or --all")
    for recipe in [zoo.get(n) for n in names]:  # every name checked before anything builds
        before = zoo.status(recipe)
        path = zoo.build(
            recipe.name,
            force=args.force,
            progress=not args.quiet,
            accept_local=args.accept_local_build,
        )
        after = zoo.status(recipe)
        done = "already built" if zoo.reusable(before, args.force) else "built"
        check = {
            "verified": "checksum verified",
            "local": f"this machine's build, checksum {zoo.checksum(path)} "
            f"(recorded: {recipe.sha256})",
            "unrecorded": f"checksum {zoo.checksum(path)} (none recorded)",
        }[after]
        out.print(f"{recipe.name}: {done}, {recipe.steps:,} transitions, {check}: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from valorl.zoo.ogbench_export import export

    train, val = export(args.name, args.out)
    out.print(f"wrote {train} and {val} (OGBench's layout)")
    return 0


def cmd_export_policy(args: argparse.Namespace) -> int:
    from valorl.collection import export_policy
    from valorl.training.run_dir import RunDir
    from valorl.zoo.references import policy_return

    config = RunDir(args.run_dir).config()
    policy = export_policy(
        args.run_dir, step=args.step, seed_index=args.seed_index, provenance={"config": config}
    )
    env_id = config["data"].get("env_id")
    note = ""
    if env_id and args.episodes > 0:
        mean = policy_return(env_id, policy, args.episodes)
        policy.provenance.update(mean_return=mean, return_episodes=args.episodes)
        note = f", mean return {mean:.1f} over {args.episodes} episodes"
    policy.save(args.out)
    p = policy.provenance
    out.print(f"wrote {args.out}: {p['agent']} seed {p['seed']} at step {p['step']}{note}")
    return 0

"""`valorl corrupt`: write a corrupted copy of a dataset (Yang et al. 2023's data corruptions)."""

from __future__ import annotations

import argparse
from pathlib import Path

from valorl.errors import ValorlError
from valorl.launch.args import add_old_spelling, deprecated

DESCRIPTION = """\
Write a copy of a dataset with a fraction of its transitions corrupted, as in Yang et al.,
"Towards Robust Offline RL under Diverse Data Corruption" (ICLR 2024). The new Minari dataset
records in its metadata (key "valorl_corruption") the kind, mode, rate, scale, seed, the source
dataset and its fingerprint, and exactly which transitions were changed.

--kind picks the field; std is that field's per-dimension standard deviation over the data,
S the --scale, and λ is drawn from U[-S, S] per dimension:

  kind      random                         adversarial (needs --attack-run)
  obs       s  <- s  + λ·std(s)            s  <- argmin Q(s~, a) with |s~ - s| <= S·std(s)
  actions   a  <- a  + λ·std(a), clipped   a  <- argmin Q(s, a~) with |a~ - a| <= S·std(a)
  rewards   r  <- U[-30·S, 30·S]           r  <- -S·r   (no --attack-run)
  dynamics  s' <- s' + λ·std(s')           s' <- argmin Q(s~', π(s~')) with |s~' - s'| <= S·std(s')

Adversarial corruptions minimise the mean Q over the ensemble of a trained critic agent (a
valorl run of iql, td3_bc or riql) by projected gradient descent: 100 sign-gradient steps of
0.01·S·std from a random start in the box. The paper's defaults are --rate 0.3 --scale 1.
"""

EPILOG = """\
examples:
  valorl corrupt valorl/pendulum-mixed-v0 --kind obs --rate 0.3 --scale 1 \\
      --id valorl/pendulum-mixed-obs-random-v0
  valorl corrupt valorl/pendulum-mixed-v0 --kind actions --mode adversarial \\
      --attack-run runs/iql-pendulum --id valorl/pendulum-mixed-act-adv-v0 --out data/act-adv
  valorl datasets info valorl/pendulum-mixed-obs-random-v0     # shows the record

Before this release the new id was --out NEW_ID and the directory --dir DIR; without --id,
--out is still read as the id (and --dir as the directory), with a note on stderr.
"""


def add_corrupt_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `valorl corrupt` on the top-level subcommands."""
    from valorl.corruption import (
        ATTACK_STEP_SIZE,
        ATTACK_STEPS,
        KINDS,
        MODES,
        REWARD_BOUND,
    )

    parser = commands.add_parser(
        "corrupt",
        help="write a copy of a dataset with corrupted observations, actions, rewards or dynamics",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset", metavar="DATASET", help="local Minari id, Minari directory, .hdf5 or .npz"
    )
    parser.add_argument(
        "--kind", required=True, choices=list(KINDS), help="what to corrupt (see above)"
    )
    parser.add_argument(
        "--mode",
        default="random",
        choices=list(MODES),
        help="random or adversarial (default: random)",
    )
    parser.add_argument(
        "--rate",
        metavar="R",
        type=float,
        default=0.3,
        help="fraction of transitions corrupted, in [0, 1] (default: 0.3)",
    )
    parser.add_argument(
        "--scale",
        metavar="S",
        type=float,
        default=1.0,
        help="corruption scale S, positive (default: 1.0)",
    )
    parser.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=0,
        help="chooses the transitions, the noise and the attack's start (default: 0)",
    )
    parser.add_argument(
        "--id",
        dest="dataset_id",
        default=None,  # required; checked by `_target` while the old `--out NEW_ID` still works
        metavar="NEW_ID",
        help="Minari id of the new dataset, e.g. valorl/pendulum-mixed-obs-v0; never overwritten "
        "(required)",
    )
    out = parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write the dataset to this directory instead of the local Minari root",
    )
    add_old_spelling(parser, "--dir", out, dest="old_dir")
    attack = parser.add_argument_group("adversarial mode")
    attack.add_argument(
        "--attack-run",
        default=None,
        metavar="RUN_DIR",
        help="a valorl run of a critic agent whose Q the attack minimises",
    )
    attack.add_argument(
        "--attack-seed-index",
        metavar="I",
        type=int,
        default=0,
        help="which seed of the run to attack (default: 0)",
    )
    attack.add_argument(
        "--attack-steps",
        metavar="N",
        type=int,
        default=ATTACK_STEPS,
        help=f"projected gradient steps (default: {ATTACK_STEPS})",
    )
    attack.add_argument(
        "--attack-step-size",
        metavar="F",
        type=float,
        default=ATTACK_STEP_SIZE,
        help=f"step size as a fraction of S·std (default: {ATTACK_STEP_SIZE})",
    )
    parser.add_argument(
        "--reward-bound",
        metavar="B",
        type=float,
        default=REWARD_BOUND,
        help="random rewards are drawn from U[-B·S, B·S] (default: the paper's "
        f"{REWARD_BOUND:g}, for D4RL MuJoCo rewards)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=cmd_corrupt)
    return parser


def cmd_corrupt(args: argparse.Namespace) -> int:
    from valorl.corruption import Attack, check_settings, corrupt, save_corrupted
    from valorl.data.sources import load_dataset
    from valorl.ui import out

    check_settings(
        args.kind,
        args.mode,
        args.rate,
        args.scale,
        attack_given=args.attack_run is not None,
        reward_bound=args.reward_bound,
        attack_steps=args.attack_steps,
        attack_step_size=args.attack_step_size,
    )
    dataset_id, directory = _target(args)
    _check_target(dataset_id, directory)
    dataset = load_dataset(args.dataset)
    attack = None
    if args.attack_run is not None:
        if not Path(args.attack_run).is_dir():
            raise ValorlError(f"--attack-run {args.attack_run}: no such run directory")
        attack = Attack.from_run(args.attack_run, args.attack_seed_index)
    corrupted = corrupt(
        dataset,
        args.kind,
        args.mode,
        args.rate,
        args.scale,
        args.seed,
        attack=attack,
        reward_bound=args.reward_bound,
        attack_steps=args.attack_steps,
        attack_step_size=args.attack_step_size,
        name=dataset_id,
        progress=not args.quiet,
    )
    path = save_corrupted(corrupted, dataset_id, directory)
    record = corrupted.record
    out.print(
        f"wrote {dataset_id} to {path}: {record['corrupted']} of {record['transitions']} "
        f"transitions have corrupted {record['field']} ({args.mode}, rate {args.rate:g}, "
        f"scale {args.scale:g}, seed {args.seed}); source fingerprint "
        f"{record['source']['fingerprint']}"
    )
    return 0


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    """The new dataset's id and directory. Without --id, the command line is read the old way:
    `--out NEW_ID [--dir DIR]`, which no new command line can be (--id is required)."""
    if args.dataset_id is None:
        if args.out is None:
            raise ValorlError("name the new dataset with --id NEW_ID")
        deprecated("--out NEW_ID", "--id NEW_ID (--out now names the directory)")
        return args.out, args.old_dir
    if args.old_dir is not None and args.out is not None:
        raise ValorlError("--dir is the old spelling of --out; give only --out")
    return args.dataset_id, args.out if args.old_dir is None else args.old_dir


def _check_target(dataset_id: str, directory: str | None) -> None:
    """Refuse an invalid id or an existing destination before any work is done."""
    from minari.dataset.minari_dataset import parse_dataset_id

    from valorl.data.sources import minari_root

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise ValorlError(
            f"invalid Minari dataset id {dataset_id!r} for --id: use "
            "[namespace/]name-v<version>, e.g. valorl/pendulum-mixed-obs-v0"
        ) from None
    if directory is not None:
        target = Path(directory)
        if target.exists():
            raise ValorlError(f"{target} already exists; choose another --out or delete it")
    elif (minari_root() / dataset_id).exists():
        raise ValorlError(f"Minari dataset {dataset_id!r} already exists in {minari_root()}")

"""Model-based offline RL (MOPO, MOBILE; ensemble and single model + Lipschitz) against IQL and
CQL on the zoo's locomotion datasets.

    MINARI_DATASETS_PATH=... python benchmarks/model_based_offline.py --out runs/mb-offline
    python benchmarks/model_based_offline.py --datasets hopper-medium-replay-v0 --steps 20000
    python benchmarks/model_based_offline.py --datasets hopper-medium-v0 --arms iql,mopo

Datasets: hopper, walker2d and halfcheetah, each -medium-replay-v0 (the default) or -medium-v0
(1M transitions, built in about 4-10 minutes each on first use).

Arms, on every dataset, the same seeds trained together (vmapped):

    mopo              MOPO with MBPO's 7/5 probabilistic ensemble, OfflineRL-Kit's λ per dataset
    mopo-single-lip   MOPO with one probabilistic model (its own σ is the penalty) and the
                      robust Lipschitz loss on imagined states (ε 0.01, λ_robust 1)
    mobile            MOBILE with the ensemble, OfflineRL-Kit's β per dataset, 10 samples
                      (no single-model arm: its penalty is a spread across members)
    iql, cql          the model-free baselines, valorl's defaults

A SAC-based arm takes variants as suffixes, each changing one setting: `-lambda0.25` sets the
penalty coefficient (λ for MOPO, β for MOBILE) in place of the reference's, `-temp0.1` starts
SAC's temperature α at 0.1 instead of 1 (at 20k steps, α from 1 at OfflineRL-Kit's rate 1e-4
is still above 0.1 and its entropy bonus can outweigh the reward; see BENCHMARKS.md),
`-epochs10` fits the models for at most 10 epochs instead of the cap below, `-layernorm`
puts LayerNorm after each hidden layer of the critics (OfflineRL-Kit has none; it stopped
MOPO's critics diverging on walker2d-medium, see BENCHMARKS.md). So
`--arms mopo-lambda0.1-temp0.1,mopo-single-lip-lambda0.1-temp0.1` runs both MOPO arms with
λ 0.1 and α from 0.1.

Scaled down from OfflineRL-Kit's protocol (3M gradient steps, 50k rollouts every 1000 steps,
4x200 models): `--steps` gradient steps (default 20,000), 10k rollouts every 1000 steps of
length 5 (1 on walker2d-medium-replay, as the reference), 3x200 models fitted for at most 30
epochs on medium-replay data and 2 on medium data (about 1.5M and 2M rows either way: 30 epochs
of 1M rows would take hours of a core before the first gradient step; 10 epochs, about 35
minutes of a core, served MOPO on hopper-medium far better than 2, and with `-temp0.1` on
halfcheetah-medium, whose policies exploit 2-epoch models: see BENCHMARKS.md).
Datasets are the zoo's (valorl datasets build NAME), which are smaller and from short-budget
experts (see BENCHMARKS.md), so scores are not D4RL's. Finished runs are reused, interrupted
ones resume.

Prints the last evaluated normalised score per arm and dataset (mean over seeds, 95%
t-interval, and how many seeds' critics diverged where `valorl diagnose` found any; – where a
run has not evaluated yet) and the IQM over datasets × seeds with a 95%
stratified-bootstrap interval, and draws each dataset's learning curves
(`OUT/curves-DATASET.png`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from common import BenchmarkParser, iqm_cell, mean_cell, plot_curves, train_arms

DATASETS = ("hopper-medium-replay-v0", "walker2d-medium-replay-v0", "halfcheetah-medium-replay-v0")
MOPO_PENALTY = {
    "hopper-medium-replay": "2.5",
    "walker2d-medium-replay": "2.5",
    "halfcheetah-medium-replay": "0.5",
    "hopper-medium": "5.0",
    "walker2d-medium": "0.5",
    "halfcheetah-medium": "0.5",
}
"""OfflineRL-Kit's MOPO λ per dataset (run_mopo.py's suggested hyperparameters)."""
MOBILE_PENALTY = {
    "hopper-medium-replay": "0.1",
    "walker2d-medium-replay": "0.5",
    "halfcheetah-medium-replay": "0.1",
    "hopper-medium": "1.5",
    "walker2d-medium": "0.5",
    "halfcheetah-medium": "0.5",
}
"""OfflineRL-Kit's MOBILE β per dataset (run_mobile.py's suggestions)."""
MODEL = "--model-hidden-dims 200,200,200 --rollout-batch 10000"
MODEL_EPOCHS = {"medium-replay": 30, "medium": 2}
"""The model fit's epoch cap by kind of data: about the same rows fitted on the zoo's 40-55k
medium-replay datasets and on its 1M-transition medium ones."""
SINGLE_LIP = "--model-members 1 --model-elites 1 --robust-coef 1 --robust-radius 0.01"


VARIANTS = {
    "lambda": "--penalty-coef",
    "temp": "--init-temperature",
    "epochs": "--model-max-epochs",
}
"""Arm-name suffixes (`-lambda0.25`, `-temp0.1`, `-epochs10`) and the flag each sets."""
SWITCHES = {"layernorm": "--layer-norm"}
"""Arm-name suffixes without a value (`-layernorm`) and the boolean flag each turns on."""


def arm(name: str, dataset: str) -> str:
    """The `valorl train` recipe of arm NAME (a base arm, then any variant suffixes) on DATASET."""
    base, variants = name, {}
    pattern = rf"-(?:({'|'.join(VARIANTS)})([0-9.]+)|({'|'.join(SWITCHES)}))$"
    while suffix := re.search(pattern, base):
        if suffix[3]:
            variants[SWITCHES[suffix[3]]] = "true"
        else:
            variants[VARIANTS[suffix[1]]] = suffix[2]
        base = base[: suffix.start()]
    kind = dataset.rsplit("-v", 1)[0]  # hopper-medium-replay-v0 -> hopper-medium-replay
    if kind not in MOPO_PENALTY:
        raise SystemExit(
            f"no reference settings for {dataset!r}: the datasets are the zoo's "
            f"{', '.join(f'{k}-v0' for k in MOPO_PENALTY)}"
        )
    length = "1" if kind == "walker2d-medium-replay" else "5"
    epochs = MODEL_EPOCHS["medium-replay" if kind.endswith("-replay") else "medium"]
    model = f"{MODEL} --model-max-epochs {epochs} --rollout-length {length}"
    recipes = {
        "mopo": f"mopo {model} --penalty-coef {MOPO_PENALTY[kind]}",
        "mopo-single-lip": f"mopo {model} {SINGLE_LIP} --penalty-coef {MOPO_PENALTY[kind]}",
        "mobile": f"mobile {model} --penalty-coef {MOBILE_PENALTY[kind]}",
        "iql": "iql",
        "cql": "cql",
    }
    if base not in recipes:
        raise SystemExit(f"unknown arm {name!r}: the arms are {', '.join(recipes)}")
    if variants and base in ("iql", "cql"):
        raise SystemExit(f"arm {name!r}: only the SAC-based arms take variants")
    recipe = recipes[base]
    for flag, value in variants.items():
        recipe = re.sub(rf" {flag} \S+", "", recipe) + f" {flag} {value}"
    return recipe


def scores(run: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A run's evaluation steps and normalised scores per seed and evaluation, or None when
    it has not evaluated yet."""
    path = run / "evaluations.npz"
    if not path.is_file():
        return None
    with np.load(path) as f:
        return f["steps"], f["normalized_scores"].mean(axis=-1)  # (evals,), (seeds, evals)


def diverged(run: Path) -> int:
    """How many of a run's seeds `valorl diagnose` found with a diverged critic (0 when it
    has not been diagnosed)."""
    path = run / "diagnostics.json"
    if not path.is_file():
        return 0
    return sum(json.loads(path.read_text()).get("q_diverged") or [])


def cell(run: Path, final: np.ndarray) -> str:
    """A run's final scores as `mean [low, high]`, with its diverged critics counted."""
    count = diverged(run)
    return mean_cell(final) + (f" ({count} diverged)" if count else "")


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/mb-offline")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--arms", default="mopo,mopo-single-lip,mobile,iql,cql")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-report", action="store_true", help="train only")
    parser.add_argument("--report-only", action="store_true", help="read the runs, train none")
    args = parser.parse_args()
    out, datasets, names = Path(args.out), args.datasets.split(","), args.arms.split(",")
    common = f"--steps {args.steps} --log-every 1000 --eval-every {args.steps // 4} "
    common += f"--eval-episodes 10 --seeds {args.seeds} --quiet"
    for name in names:  # refuse an unknown arm or dataset now, not after hours of training
        for dataset in datasets:
            arm(name, dataset)
    if not args.report_only:
        train_arms(out, datasets, names, arm, common)
    if args.skip_report:
        return
    runs = {(n, d): scores(out / f"{n}-{d}") for n in names for d in datasets}
    for d in datasets:
        curves = {n: runs[n, d] for n in names if runs[n, d] is not None}
        if not curves:
            continue
        title = f"{d}: normalised score ({args.seeds} seeds)"
        plot_curves(curves, title, out / f"curves-{d}.png", "normalised score", "gradient steps")
    print(f"\n| arm | IQM (95% CI) | {' | '.join(datasets)} |")
    print("|---|---:|" + "---:|" * len(datasets))
    for name in names:
        final = [None if runs[name, d] is None else runs[name, d][1][:, -1] for d in datasets]
        cells = " | ".join(
            "–" if f is None else cell(out / f"{name}-{d}", f)
            for f, d in zip(final, datasets, strict=True)
        )
        whole = all(f is not None for f in final) and len({len(f) for f in final}) == 1
        iqm = iqm_cell(np.stack(final, axis=1)) if whole else "–"
        print(f"| {name} | {iqm} | {cells} |")


if __name__ == "__main__":
    main()

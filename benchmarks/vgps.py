"""V-GPS: a behaviour-cloned policy steered at test time by an offline-RL critic.

    MINARI_DATASETS_PATH=... python benchmarks/vgps.py --out runs/vgps
    python benchmarks/vgps.py --dataset hopper-medium-replay-v0 --steps 20000 --seeds 3
    python benchmarks/vgps.py --policy-agent flow_bc --critics iql,calql

"Steering Your Generalists" (Nakamoto et al., CoRL 2024) re-ranks N samples of a frozen
policy with a critic trained on the same data and executes the best one (β = 0) or a draw
from softmax(Q / β). Arms, every one on the same fresh episode starts:

    policy alone          the behaviour-cloned policy's own deterministic action
    N = 1                 one sample of the policy (its stochastic action), nothing to choose
    policy + critic       steered with N in --samples and β in --betas (valorl eval --steer-with)
    critic's own policy   the critic run's extracted policy (IQL's AWR actor, Cal-QL's SAC actor)

The policy must be stochastic for steering to do anything. valorl's `bc` is a deterministic
mean-squared-error regressor, so the default `--policy-agent gaussian-bc` is IQL's Gaussian
actor with inverse temperature 0 (`iql --beta 0`: every advantage weight is 1, so the actor
loss is Gaussian maximum likelihood on the data, i.e. BC); any other agent name (`flow_bc`) is
trained with its defaults plus `--policy-flags`. (IQL's Q and V losses never read the actor,
so the Gaussian BC run's own critic is bit for bit the IQL run's: checked on hopper.)
Networks are valorl's defaults (2x256); the budget is `--steps` gradient steps per run (V-GPS
trains its critic for 1M steps). Finished runs and finished evaluations (`OUT/evals/*.json`)
are reused, so an interrupted benchmark resumes.

Prints a Markdown table: final normalised score (success rate on OGBench's single-task
datasets, e.g. `cube-single-noisy-singletask-task2-v0`), mean over seeds with a 95%
t-interval (each seed's score averaged over its episodes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from common import BenchmarkParser, mean_cell, valorl

from valorl.eval.evaluate import evaluate_run

POLICY_PRESETS = {"gaussian-bc": "iql --beta 0"}
"""Named policy recipes: agent and flags."""
CRITICS = {"iql": "iql", "calql": "calql", "cql": "cql"}


def train(out: Path, name: str, recipe: str, dataset: str, common: str) -> Path:
    """Train (or reuse) the run `name` on `dataset`; returns its directory."""
    agent, *flags = recipe.split()
    run = out / f"{name}-{dataset}"
    valorl("train", agent, "--dataset", dataset, *common.split(), *flags, "--out", str(run))
    return run


def scores(out: Path, label: str, run: Path, episodes: int, **steering) -> np.ndarray:
    """Per-seed mean normalised score of `run` (steered when `steering` names a critic), or its
    success rate in % where the environment reports success (OGBench's), evaluated once and
    kept in OUT/evals/LABEL.json."""
    cache = out / "evals" / f"{label}.json"
    if cache.exists():
        return np.asarray(json.loads(cache.read_text())["scores"])
    print(f"evaluating {label}", flush=True)
    ev = evaluate_run(run, episodes=episodes, **steering)
    per_seed = (100.0 * ev.successes if ev.successes is not None else ev.scores).mean(axis=1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    record = dict(scores=per_seed.tolist(), returns=ev.returns.mean(axis=1).tolist(), step=ev.step)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(record | {"steering": ev.steering}))
    tmp.replace(cache)
    return per_seed


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/vgps")
    parser.add_argument("--dataset", default="hopper-medium-replay-v0")
    parser.add_argument("--policy-agent", default="gaussian-bc")
    parser.add_argument("--policy-flags", default="", help="extra flags of the policy's run")
    parser.add_argument("--critics", default="iql", help=f"any of {','.join(CRITICS)}")
    parser.add_argument("--samples", default="1,4,16,32", help="1: the policy's own sample")
    parser.add_argument("--betas", default="0,1")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per seed")
    args = parser.parse_args()
    out, dataset = Path(args.out), args.dataset
    log_every = min(1000, args.steps // 2)
    common = f"--steps {args.steps} --log-every {log_every} --eval-every {args.steps // 2} "
    common += f"--eval-episodes {args.episodes} --seeds {args.seeds} --quiet"
    recipe = POLICY_PRESETS.get(args.policy_agent, args.policy_agent) + " " + args.policy_flags
    policy = train(out, args.policy_agent, recipe, dataset, common)
    critics = {
        name: train(out, name, CRITICS[name], dataset, common) for name in args.critics.split(",")
    }

    rows = [
        (args.policy_agent, "-", "-", "-", scores(out, args.policy_agent, policy, args.episodes))
    ]
    for name, critic in critics.items():
        for n in map(int, args.samples.split(",")):
            for beta in map(float, args.betas.split(",") if n > 1 else [0]):  # β: no choice
                label = f"{args.policy_agent}+{name}-n{n}-beta{beta:g}"
                steering = dict(steer_with=critic, samples=n, beta=beta)
                rows.append(
                    (
                        args.policy_agent,
                        name,
                        n,
                        f"{beta:g}",
                        scores(out, label, policy, args.episodes, **steering),
                    )
                )
        rows.append(
            (f"{name} (own policy)", "-", "-", "-", scores(out, name, critic, args.episodes))
        )

    print(
        f"\n{dataset}, {args.seeds} seeds, {args.steps} gradient steps per run, "
        f"{args.episodes} episodes per seed\n"
    )
    metric = "success rate, %" if "singletask" in dataset else "normalised score"
    print(f"| policy | steered by | N | β | {metric} (mean, 95% CI) |")
    print("|---|---|---:|---:|---:|")
    for policy_name, critic, n, beta, values in rows:
        print(f"| {policy_name} | {critic} | {n} | {beta} | {mean_cell(values)} |")


if __name__ == "__main__":
    main()

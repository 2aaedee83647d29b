"""How the MinAtar recipes of the dataset zoo were made (valorl/zoo/recipes/*-minatar.toml).

    valorl train dqn --mode online --env Breakout-MinAtar --online-steps 300000 --utd 0.25 \
        --start-steps 5000 --eps-decay-steps 60000 --log-every 5000 --eval-every 25000 \
        --eval-episodes 20 --keep-checkpoints --seed 0 --out runs/zoo-dqn-breakout
    python benchmarks/minatar_zoo.py --runs runs --games Breakout      # for each game

From a DQN training run with every checkpoint kept, per game: the expert is the last
checkpoint, the medium one the checkpoint whose evaluation return lies nearest one third of
the way from random to expert (the rule of the MuJoCo recipes); both, and two earlier
checkpoints for the medium-replay data, are exported as policy files into valorl/zoo/policies/.
Reference returns (random, and the expert without exploration) are measured over 100 seeded
episodes. The recipe file is written, every dataset built, and its content checksum recorded
in the recipe, so `valorl datasets build` reproduces each one bit for bit or refuses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from valorl.collection.policy_file import PolicyFile, export_policy
from valorl.data.checksum import checksum
from valorl.zoo import builder, recipe
from valorl.zoo.references import reference_returns

TRAINING = (
    "valorl train dqn --mode online --env {env} --online-steps 300000 --utd 0.25 "
    "--start-steps 5000 --eps-decay-steps 60000 --log-every 5000 --eval-every 25000 "
    "--eval-episodes 20 --keep-checkpoints --seed 0"
)
SIZES = {"random": 15_000, "medium": 40_000, "expert": 40_000, "replay": 40_000, "mixed": 45_000}
"""Transitions per dataset: small enough to build in minutes on 2 cores (host-stepped games,
float64 policies), large enough for the offline benchmark in BENCHMARKS.md."""


def make(game: str, run: Path) -> None:
    env = f"{game}-MinAtar"
    family = f"{game.lower()}-minatar"
    evaluations = np.load(run / "evaluations.npz")
    steps, returns = evaluations["steps"].tolist(), evaluations["returns"].mean(axis=(0, 2))
    expert_step = steps[-1]
    files: dict[str, tuple[int, PolicyFile]] = {}

    def policy(name: str, step: int) -> PolicyFile:
        exported = export_policy(run, step=step, provenance={"training": TRAINING.format(env=env)})
        exported.save(recipe.POLICIES / f"{family}-dqn-step{step}.npz")
        files[name] = (step, exported)
        return exported

    expert = policy("expert", expert_step)
    random, expert_return = reference_returns(env, expert)
    target = random + (expert_return - random) / 3
    medium_step = steps[int(np.argmin(np.abs(returns[:-1] - target)))]
    policy("medium", medium_step)
    earlier = [s for s in steps if s < medium_step][-2:] or [steps[0]]
    for step in earlier:
        policy(f"step{step}", step)
    replay_share = SIZES["replay"] // (len(earlier) + 2)

    lines = [
        f"# {env}: datasets from valorl's own DQN (random, medium, expert, medium-replay, mixed).",
        f'env = "{env}"',
        "",
        "[reference]",
        "# Mean returns over 100 seeded episodes (valorl.zoo.reference_returns, seed 0), sticky",
        "# actions 0.1 as every MinAtar number in valorl: uniform random actions, and the expert",
        "# policy acting greedily.",
        f"random = {random!r}",
        f"expert = {expert_return!r}",
        "",
        "[training]",
        "# One DQN run (seed 0, default hyperparameters: Young & Tian's network, Adam 2.5e-4,",
        "# batch 32, one update per 4 environment steps) with every checkpoint kept; policies",
        "# exported with `valorl datasets export-policy RUN --step N --out FILE`. 300,000",
        "# environment steps: a short-budget expert (Young & Tian train 5M); see BENCHMARKS.md.",
        f'command = "{TRAINING.format(env=env)}"',
        "# Greedy evaluation returns during training (step, mean of 20 episodes):",
        "# " + ", ".join(f"{s}: {r:.2f}" for s, r in zip(steps, returns, strict=True)),
    ]
    for name, (step, _) in files.items():
        lines += [
            "",
            f"[policies.{name}]",
            f'file = "{family}-dqn-step{step}.npz"',
            f"step = {step}",
        ]
    datasets = {
        "random": ("uniform random actions", ["random"], SIZES["random"]),
        "medium": ("the medium policy, ε-greedy (ε 0.1)", ["medium:noise=0.1"], SIZES["medium"]),
        "expert": ("the expert policy, ε-greedy (ε 0.05)", ["expert:noise=0.05"], SIZES["expert"]),
        "medium-replay": (
            "the training run up to medium, regenerated from its checkpoints with decreasing ε",
            [f"random:share={replay_share}"]
            + [f"step{s}:noise={0.5 / (i + 1):.2f},share={replay_share}"
               for i, s in enumerate(earlier)]
            + [f"medium:noise=0.1,share={replay_share}"],
            SIZES["replay"],
        ),
        "mixed": (
            "random, medium (ε 0.1) and expert (ε 0.05) in equal shares",
            ["random", "medium:noise=0.1", "expert:noise=0.05"],
            SIZES["mixed"],
        ),
    }  # fmt: skip
    for kind, (description, behaviours, size) in datasets.items():
        lines += [
            "",
            f"[datasets.{family}-{kind}-v0]",
            f'description = "{description}"',
            f"behaviours = {json.dumps(behaviours)}",
            f"steps = {size}",
            "seed = 0",
        ]
    path = recipe.RECIPES / f"{family}.toml"
    path.write_text("\n".join(lines) + "\n")
    recipe._families.cache_clear()
    recipe.recipes.cache_clear()
    text = path.read_text()
    for kind in datasets:
        name = f"{family}-{kind}-v0"
        built = checksum(builder.build(name, progress=False))
        text = text.replace(f"[datasets.{name}]\n", f'[datasets.{name}]\nsha256 = "{built}"\n')
        print(name, built, flush=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="folder of the zoo-dqn-GAME runs")
    parser.add_argument("--games", default="Breakout,Asterix,SpaceInvaders,Freeway")
    args = parser.parse_args()
    for game in args.games.split(","):
        make(game, Path(args.runs) / f"zoo-dqn-{game.lower()}")


if __name__ == "__main__":
    main()

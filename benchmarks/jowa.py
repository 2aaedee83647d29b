"""JOWA-mini on MinAtar: joint world-action model vs its ablations, planning, transfer, size.

    MINARI_DATASETS_PATH=... python benchmarks/jowa.py --out runs/jowa --steps 20000
    python benchmarks/jowa.py --parts pretrain,planning --seeds 3

Tests the claims of Cheng et al. 2024 (JOWA, Sec. 5) at MinAtar scale. Parts:

    pretrain   on --games (default Breakout, Asterix, SpaceInvaders; the zoo's medium data),
               the same transformer and gradient steps:
                 jowa          world model first, then joint training (JOWA)
                 stop-grad     the TD loss stopped at the backbone (`--joint false`)
                 q-only        no world-model loss at all (`--world-model-steps 0
                               --supervised-weight 0`): the backbone learns from Q alone
                 mtbc          multi-task BC: the same network trained as a policy alone
                               (`--behaviour-cloning true`, no world-model loss)
               and single-game discrete CQL on each game's own frames (`cql_discrete`);
               `--arms` picks and orders them (`cql` names the last)
    planning   the jowa run evaluated greedy and with beam search of width K and depth H
               (`--plans`: (2, 1), (2, 2), (3, 2)), with the wall-clock per decision
    transfer   on --held-out (default Freeway, expert data), the first --episodes episodes:
                 fine-tune     from the jowa run (`--init-from`, JOWA's fine-tuning settings)
                 fine-tune-imagined  the same with --imagine-batch of each batch's sequences
                               rolled out in the model (JOWA's optional data synthesis)
                 scratch       the same model and steps from a random initialisation
                 bc            the same model trained as a policy (BC) on the episodes
    size       jowa at each of --sizes widths (the --width run is the pretrain jowa run)
    world-model  how well the jowa run's seed 0 predicts the data, teacher-forced on 256
               segments: next-frame tokens, non-empty patches, whole frames, reward signs

Scores are normalised per game by the zoo's references (random 0, the behaviour data's
expert 100) and aggregated as the IQM over games × seeds with a 95% stratified-bootstrap
interval. Scaled down from JOWA's 150M-parameter model, 1.75M steps and 15 Atari games: widths
64-256 (`--width`, `--sizes`), 4 layers (`--depth`), `--steps` gradient steps, 3-4 MinAtar
games. Finished runs are reused, interrupted ones resume; `--seeds-per-run` splits an arm's
seeds over runs (`<arm>`, `<arm>-from3`, ...), so raising `--seeds` trains only the new ones.
On one core of the 2-core CPU machine (AMD EPYC), at `--width 64 --depth 2` (a compute-bound
4 GFLOP per update), one seed trains at about 7 gradient steps/s, two seeds vmapped at 3.1 and
three at 2.2 (the runs' `updates_per_s` counts every seed's), so `--seeds-per-run 1` is the
fastest here: a 3,000-step pre-training seed is about 12 minutes of a core, of which about 3
are the evaluation of 18 episodes and 2 the value diagnostics every critic run writes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import BenchmarkParser, iqm_cell, mean_cell, valorl

from valorl.data.segments import sample_segments
from valorl.envs.token_games import load_multigame, per_game
from valorl.eval.evaluate import evaluate_run
from valorl.eval.policy import load_policy
from valorl.training.run_dir import RunDir

GAMES = ("breakout", "asterix", "spaceinvaders")
FINE_TUNE = "--world-model-steps 0 --supervised-weight 0.5"
"""JOWA's fine-tuning settings; its learning rate is the pre-training one halved (JOWA: 1e-4,
then 5e-5)."""
BC = "--behaviour-cloning true --world-model-steps 0 --supervised-weight 0"


def datasets(games: list[str], kind: str) -> str:
    return ",".join(f"{g}-minatar-{kind}-v0" for g in games)


def game_scores(run: Path, returns: np.ndarray) -> np.ndarray:
    """(seeds, games) normalised scores from (seeds, episodes) returns of a multi-game run."""
    spec = RunDir(run).config()["data"]["env_spec_json"]
    return np.stack([s for _, _, s in per_game(spec, returns)], axis=1)


def final(run: Path) -> np.ndarray:
    with np.load(run / "evaluations.npz") as f:
        return f["returns"][:, -1]


def seed_groups(seeds: int, per_run: int | None) -> list[tuple[str, list[str]]]:
    """(run-name suffix, `valorl train` seed flags) of each run an arm's seeds are split into:
    seeds 0..per_run−1 in the arm's own directory, seed s onwards in `<arm>-from<s>`, so an arm
    grows to more seeds by training only the new ones."""
    size, groups = per_run or seeds, []
    for first in range(0, seeds, size):
        flags = ["--seed", str(first), "--seeds", str(min(size, seeds - first))]
        groups.append(("" if first == 0 else f"-from{first}", flags))
    return groups


def train(
    out: Path,
    name: str,
    argv: list[str],
    groups,
    agent: str = "jowa",
    init_from: list[Path] | None = None,
) -> list[Path]:
    """The arm's runs (trained, or reused when finished), one per seed group; with
    `init_from`, each group starts from the same group's run of another arm."""
    runs = []
    for i, (suffix, seed_flags) in enumerate(groups):
        runs.append(out / f"{name}{suffix}")
        warm = ["--init-from", str(init_from[i])] if init_from else []
        valorl("train", agent, *argv, *warm, *seed_flags, "--out", str(runs[-1]))
    return runs


def arm_scores(runs: list[Path]) -> np.ndarray:
    """(seeds, games) normalised final scores of an arm's runs, seed groups stacked."""
    return np.concatenate([game_scores(run, final(run)) for run in runs])


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/jowa")
    parser.add_argument("--parts", default="pretrain,planning,transfer,size")
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument(
        "--arms", default="jowa,q-only,mtbc,cql,stop-grad", help="pre-training arms, in order"
    )
    parser.add_argument("--held-out", default="freeway")
    parser.add_argument(
        "--transfer-arms",
        default="fine-tune,fine-tune-imagined,scratch,bc",
        help="transfer arms, in order",
    )
    parser.add_argument(
        "--imagine-batch",
        type=int,
        default=16,
        help="sequences of 32 imagined per update in fine-tune-imagined (JOWA: 16)",
    )
    parser.add_argument("--episodes", type=int, default=4, help="held-out episodes to learn from")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--fine-tune-steps", type=int, default=5_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--seeds-per-run",
        type=int,
        help="seeds trained together in one run (default: all); on this CPU one seed per run "
        "trains faster than seeds vmapped together, and an arm grows to more seeds by training "
        "only the new ones",
    )
    parser.add_argument("--width", type=int, default=128, help="the transformer's width")
    parser.add_argument("--depth", type=int, default=4, help="the transformer's layers")
    parser.add_argument("--sizes", default="64,128,256", help="widths of the size part")
    parser.add_argument(
        "--world-model-steps", type=int, default=1000, help="world-model-only steps first"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=1e-4, help="pre-training (JOWA: 1e-4)"
    )
    parser.add_argument(
        "--target-every", type=int, default=1000, help="updates between target copies (JOWA: 1000)"
    )
    parser.add_argument("--eval-episodes", type=int, default=6, help="per game and seed")
    parser.add_argument(
        "--plans", default="1x0,2x1,2x2,3x2", help="planners KxH of the planning part; 1x0 greedy"
    )
    parser.add_argument(
        "--plan-episodes",
        type=int,
        help="per game and seed in the planning part (default --eval-episodes; a planned decision "
        "feeds 1 + H·(tokens per frame + 1) tokens per beam through the key/value cache)",
    )
    args = parser.parse_args()
    out, games, parts = Path(args.out), args.games.split(","), args.parts.split(",")
    n_games = len(games)
    groups = seed_groups(args.seeds, args.seeds_per_run)
    common = f"--quiet --log-every 1000 --eval-every {args.steps}"
    model = f"--depth {args.depth} --world-model-steps {args.world_model_steps} "
    model += f"--learning-rate {args.learning_rate} --target-update-every {args.target_every}"
    multi = f"--datasets {datasets(games, 'medium')} {common} {model} --steps {args.steps} "
    multi += f"--eval-episodes {args.eval_episodes * n_games}"
    arms = {
        "jowa": "",
        "q-only": "--world-model-steps 0 --supervised-weight 0",
        "mtbc": BC,
        "stop-grad": "--joint false",
    }
    width = ["--width", str(args.width)]
    rows = {}
    if "pretrain" in parts:
        for name in args.arms.split(","):
            if name == "cql":
                rows["cql (one per game)"] = _cql_per_game(out, games, common, groups, args)
                continue
            argv = [*multi.split(), *width, *arms[name].split()]
            rows[name] = arm_scores(train(out, name, argv, groups))
        print(f"\n| arm | IQM (95% CI) | {' | '.join(games)} |")
        print("|---|---:|" + "---:|" * n_games)
        for name, scores in rows.items():
            cells = " | ".join(mean_cell(scores[:, g]) for g in range(n_games))
            print(f"| {name} | {iqm_cell(scores)} | {cells} |")
    jowa_runs = [out / f"jowa{suffix}" for suffix, _ in groups]
    if "planning" in parts:
        print("\n| planner (K, H) | IQM (95% CI) | ms per decision |")
        print("|---|---:|---:|")
        for plan in args.plans.split(","):
            plan_width, depth = map(int, plan.split("x"))
            episodes = (args.plan_episodes or args.eval_episodes) * n_games
            planner = (plan_width, depth)
            scores = np.concatenate([
                game_scores(run, evaluate_run(run, episodes=episodes, plan=planner).returns)
                for run in jowa_runs
            ])  # fmt: skip
            ms = 1000 * _seconds_per_decision(jowa_runs[0], plan_width, depth)
            print(f"| ({plan_width}, {depth}) | {iqm_cell(scores)} | {ms:.1f} |")
    if "transfer" in parts:
        held = f"{args.held_out}-minatar-expert-v0"
        few = f"--datasets {held} --episodes-per-game {args.episodes} {common} "
        few += f"--depth {args.depth} --target-update-every {args.target_every} "
        few += f"--steps {args.fine_tune_steps} --eval-episodes {args.eval_episodes}"
        few_argv = [*few.split(), *width]
        lr = ["--learning-rate", str(args.learning_rate)]
        fine_tune = [*FINE_TUNE.split(), "--learning-rate", str(args.learning_rate / 2)]
        imagine = ["--imagine-batch", str(args.imagine_batch)]
        transfer_arms = {
            "fine-tune": fine_tune,
            "fine-tune-imagined": [*fine_tune, *imagine],
            "scratch": lr,
            "bc": [*lr, *BC.split()],
        }
        print(f"\n{args.held_out}, {args.episodes} episodes | normalised score |")
        for name in args.transfer_arms.split(","):
            init = jowa_runs if name.startswith("fine-tune") else None
            runs = train(out, name, [*few_argv, *transfer_arms[name]], groups, init_from=init)
            print(f"| {name} | {mean_cell(arm_scores(runs)[:, 0])} |")
    if "world-model" in parts:
        _world_model_accuracy(jowa_runs[0], games)
    if "size" in parts:
        print("\n| width | parameters | IQM (95% CI) |")
        for size in map(int, args.sizes.split(",")):
            name = "jowa" if size == args.width else f"jowa-w{size}"
            runs = train(out, name, [*multi.split(), "--width", str(size)], groups)
            print(f"| {size} | {_parameters(runs[0]):,} | {iqm_cell(arm_scores(runs))} |")


def _cql_per_game(out: Path, games: list[str], common: str, groups, args) -> np.ndarray:
    """(seeds, games) normalised scores of single-game discrete CQL on each game's own data."""
    scores = []
    for game in games:
        argv = [
            "--dataset", f"{game}-minatar-medium-v0", *common.split(), "--steps", str(args.steps),
            "--eval-episodes", str(args.eval_episodes),
        ]  # fmt: skip
        runs = train(out, f"cql-{game}", argv, groups, agent="cql_discrete")
        per_seed = []
        for run in runs:
            with np.load(run / "evaluations.npz") as f:
                per_seed.append(f["normalized_scores"][:, -1].mean(axis=-1))
        scores.append(np.concatenate(per_seed))
    return np.stack(scores, axis=1)


def _world_model_accuracy(run: Path, games: list[str], rows: int = 256) -> None:
    """Teacher-forced accuracy of seed 0's world model on `rows` data segments: what the
    planner's imagined steps start from."""
    policy = load_policy(run)
    agent, state = policy.agent, jax.tree.map(lambda x: x[0], policy.states)
    data = jax.device_put(load_multigame(datasets(games, "medium").split(",")).to_batch())
    seg = sample_segments(data, jax.random.key(0), rows, agent.context)
    tokens, tasks, _ = agent.sequence(state, seg)
    world, _ = state.model.apply_fn({"params": state.model.params}, tokens, tasks)
    frame_logits, reward_logits, _ = world
    per = tokens.shape[1] // agent.context
    right = np.asarray(jnp.argmax(frame_logits[:, :-1], -1) == tokens[:, 1:])  # predicts p+1
    steps = np.asarray(seg.valid)
    valid = np.repeat(steps, per, axis=1)[:, 1:]
    position = np.arange(1, tokens.shape[1])
    frame = (position % per < per - 1) & (position >= per) & valid  # frame tokens of blocks >= 1
    nonempty = frame & (np.asarray(tokens[:, 1:]) != 0)
    whole = [
        right[:, k * per - 1 : (k + 1) * per - 2].all(axis=1)[steps[:, k]].mean()
        for k in range(1, agent.context)
    ]
    sign = np.asarray(jnp.argmax(reward_logits.reshape(rows, agent.context, per, 3)[:, :, -1], -1))
    rewards = np.sign(np.asarray(seg.rewards))
    no_reward = (rewards == 0)[steps].mean()
    print(
        f"\nnext-frame tokens right: {right[frame].mean():.3f}, non-empty patches "
        f"{right[nonempty].mean():.3f}, whole frames {np.round(whole, 3).tolist()}, reward signs "
        f"{(sign - 1 == rewards)[steps].mean():.3f} (steps without reward {no_reward:.3f})"
    )


def _seconds_per_decision(run: Path, width: int, depth: int, batch: int = 16) -> float:
    """Wall-clock of one decision of seed 0's policy with this planner, compiled, on a batch
    of the run's own observations (each row one decision)."""
    policy = load_policy(run)
    agent = dataclasses.replace(policy.agent, plan_width=width, plan_depth=depth)
    kwargs = json.loads(RunDir(run).config()["data"]["env_spec_json"])["kwargs"]
    obs = load_multigame(kwargs["datasets"], kwargs["vocab_size"], kwargs["reserve"])
    rows = jax.numpy.asarray(obs.observations[:: max(len(obs) // batch, 1)][:batch])
    state = jax.tree.map(lambda x: x[0], policy.states)
    act = jax.jit(lambda o: agent.act(state, o, jax.random.key(0)))
    act(rows).block_until_ready()
    start = time.perf_counter()
    act(rows).block_until_ready()
    return (time.perf_counter() - start) / len(rows)


def _parameters(run: Path) -> int:
    """Parameters of one seed's world-action model."""
    leaves = jax.tree.leaves(load_policy(run).states.model.params)
    return int(sum(x[0].size for x in leaves))


if __name__ == "__main__":
    main()

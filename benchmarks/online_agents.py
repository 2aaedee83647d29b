"""DSAC-T against SAC online: learning curves, value bias, robustness to reward scale.

    python benchmarks/online_agents.py --out runs/online-agents
    python benchmarks/online_agents.py --envs InvertedDoublePendulum-v5:20000 --seeds 3

Tests the claims of Duan et al. ("Distributional Soft Actor-Critic with Three Refinements",
DSAC-T, IEEE TPAMI 2025): DSAC-T learns at least as well as SAC (and TD3, which valorl has
only as TD3+BC's base, so it is left out), its critic neither
over- nor under-estimates as much as theirs (Sec. V, value estimation bias), and its returns hold
when the rewards are multiplied by 0.1 or 10 (the variance-based gradient adjustment, Sec. IV-C).

Arms, every one with valorl's defaults (2x256 networks, batch 256, one update per environment
step, 2000 random warm-up steps), the same seeds trained together (vmapped), for `--envs`
environment steps each:

    sac, dsac-t                     on every environment
    dsac-t-2025                     DSAC-T with the reference code's critic loss since July 2025
                                    (`--loss-version reference-2025`), on every environment
    sac-r0.1, sac-r10, dsac-t-r0.1, dsac-t-r10
                                    on the first environment, whose rewards are multiplied by
                                    0.1 or 10 (a Gymnasium wrapper registered by this script;
                                    returns are reported divided back, in the task's units)

The runs are trained in this process (so the rescaled environments exist for them), finished
runs are reused and interrupted ones resume. Value bias: each seed's final greedy policy plays
`--bias-steps` environment steps; at every visited state-action whose discounted return is known
to within γ^500 (the episode terminated, or at least 500 steps remained before the time limit),
the critic's Q (ensemble mean) minus that Monte-Carlo return, relative to the return. SAC's and
DSAC-T's soft Q also counts the entropy bonus still to come, α·H/(1 − γ) (α ≈ 0.9 and H ≈ −1 at
the end of the InvertedDoublePendulum runs: about −90, or −10% of the return). At these budgets
Q is still rising (SAC's mean Q on InvertedDoublePendulum grows by ~45 every 2,000 steps to the
end), so the bias measures how far values have propagated as much as a steady-state bias.

Prints the final return per arm (mean over seeds with its 95% t-interval), the return at each
evaluation, and the relative value bias; writes learning curves to OUT/curves-ENV.png.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import jax
import numpy as np
from common import BenchmarkParser, mean_cell, plot_curves

from valorl.collection.run import collect
from valorl.launch.train import train_from_args, train_parser
from valorl.training.restore import load_checkpoint

AGENTS = {"sac": "sac", "dsac-t": "dsac-t", "dsac-t-2025": "dsac-t --loss-version reference-2025"}
SCALES = ("0.1", "10")
COMMON = "--mode online --log-every 500 --eval-episodes 10 --quiet"
EXACT_HORIZON = 500  # rows this many steps from a time limit have a return known to γ^500


class RewardScale(gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """Rewards multiplied by `scale` (a wrapper whose spec serialises, unlike a lambda's)."""

    def __init__(self, env: gym.Env, scale: float) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, scale=scale)
        gym.RewardWrapper.__init__(self, env)
        self.scale = scale

    def reward(self, reward):
        return self.scale * reward


def make_scaled(base: str, scale: float, **kwargs) -> gym.Env:
    """Environment `base` with its rewards multiplied by `scale`."""
    return RewardScale(gym.make(base, **kwargs), scale)


def scaled_env_id(env_id: str, scale: str) -> str:
    """The id of `env_id` with its rewards multiplied by `scale`, registered on first use (by
    module path, so that its spec stays serialisable for collection)."""
    name, version = env_id.rsplit("-", 1)
    scaled = f"valorl-bench/{name}-r{scale}-{version}"
    if scaled not in gym.registry:
        kwargs = {"base": env_id, "scale": float(scale)}
        gym.register(scaled, entry_point="online_agents:make_scaled", kwargs=kwargs)
    return scaled


def arms(envs: list[str]) -> dict[str, tuple[str, str, float]]:
    """Run name -> (agent and its flags, environment id, reward scale)."""
    table = {f"{name}-{e}": (spec, e, 1.0) for e in envs for name, spec in AGENTS.items()}
    for agent in ("sac", "dsac-t"):
        for scale in SCALES:
            scaled = scaled_env_id(envs[0], scale)
            table[f"{agent}-r{scale}-{envs[0]}"] = (agent, scaled, float(scale))
    return table


def train(run: Path, spec: str, env: str, steps: int, seeds: int, warm_up: int) -> None:
    agent, *flags = spec.split()
    argv = [*COMMON.split(), *flags, "--env", env, "--online-steps", str(steps)]
    argv += ["--seeds", str(seeds)]
    argv += ["--start-steps", str(warm_up)]
    argv += ["--eval-every", str(steps // 10), "--out", str(run)]
    print(f"$ valorl train {agent} {' '.join(argv)}", flush=True)
    train_from_args(train_parser(agent).parse_args(argv))


def curve(run: Path, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation steps and greedy returns per seed and evaluation, in the task's units."""
    with np.load(run / "evaluations.npz") as f:
        return f["steps"], f["returns"].mean(axis=-1) / scale


def relative_bias(run: Path, env: str, steps: int) -> np.ndarray:
    """Per seed: mean of (Q − G) / |G| over its own greedy policy's state-actions whose return G
    is known exactly (module docstring)."""
    plan, ckpt = load_checkpoint(run)
    agent, norm = plan.agent, ckpt.normalizer
    biases = []
    for i in range(len(plan.seeds)):
        data = collect(env, [f"{run}:index={i}"], steps, seed=1000 + i, progress=False)
        returns = data.returns_to_go(agent.discount)
        keep = np.zeros(len(data), bool)
        for sl in data.episode_slices():
            remaining = np.arange(sl.stop - sl.start, 0, -1)
            keep[sl] = bool(data.terminals[sl.stop - 1]) | (remaining >= EXACT_HORIZON)
        state = jax.tree.map(lambda x, i=i: x[i], ckpt.states)
        obs = norm.observations(data.observations[keep])
        q = agent.q_values(state, obs, norm.actions_to_unit(data.actions[keep])).mean(axis=0)
        q = np.asarray(q) / float(norm.reward_scale)
        biases.append(float(np.mean((q - returns[keep]) / np.maximum(np.abs(returns[keep]), 1e-6))))
    return np.array(biases)


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/online-agents")
    parser.add_argument(
        "--envs",
        default="InvertedDoublePendulum-v5:20000,Hopper-v5:40000",
        help="ENV:STEPS,...; the reward-scale arms run on the first",
    )
    parser.add_argument("--arms", default=None, help="comma-separated run names (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--start-steps", type=int, default=2000, help="random warm-up steps")
    parser.add_argument("--bias-steps", type=int, default=3000)
    parser.add_argument("--skip-report", action="store_true", help="train only")
    args = parser.parse_args()
    out = Path(args.out)
    budget = dict(x.split(":") for x in args.envs.split(","))
    table = arms(list(budget))
    chosen = args.arms.split(",") if args.arms else list(table)
    for name in chosen:
        agent, env, _ = table[name]
        train(out / name, agent, env, int(budget[_base_env(env)]), args.seeds, args.start_steps)
    if args.skip_report:
        return
    for base in budget:
        names = [n for n in chosen if _base_env(table[n][1]) == base]
        curves = {n: curve(out / n, table[n][2]) for n in names}
        steps = next(iter(curves.values()))[0]
        print(f"\n{base}, {budget[base]} environment steps, {args.seeds} seeds")
        print(f"| arm | final return (95% CI) | {' | '.join(f'{s:,}' for s in steps)} | Q bias |")
        print("|---|---:|" + "---:|" * len(steps) + "---:|")
        for n, (_, returns) in curves.items():
            bias = relative_bias(out / n, table[n][1], args.bias_steps)
            cells = " | ".join(f"{v:.0f}" for v in returns.mean(axis=0))
            print(f"| {n} | {mean_cell(returns[:, -1])} | {cells} | {mean_cell(100 * bias)}% |")
        plot_curves(curves, f"{base}: greedy return", out / f"curves-{base}.png")


def _base_env(env: str) -> str:
    """The task an environment id plays: the unscaled id of a rescaled one."""
    if not env.startswith("valorl-bench/"):
        return env
    name, _, version = env.removeprefix("valorl-bench/").rsplit("-", 2)
    return f"{name}-{version}"


if __name__ == "__main__":
    main()

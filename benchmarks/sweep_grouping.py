"""Wall time of one sweep, grouped (all seeds of a group vmapped in one process) vs one process
per seed.

    python benchmarks/sweep_grouping.py --out runs/sweep-grouping

The sweep: IQL and TD3+BC x 3 small valorl-built datasets x 5 seeds (30 runs, 6 groups).
Grouped: `valorl sweep` with the local backend (6 training calls, one after another). Per seed:
the same 30 runs as 30 `valorl train --seeds 1` processes, one after another, as a job script
without valorl's grouping would launch them. Both write full run directories (checkpoints,
metrics, evaluations); the report is skipped in both. Prints a Markdown table.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from common import BenchmarkParser, ensure_dataset, short_name, valorl

from valorl.sweep import expand

DATASETS = {
    "valorl/pendulum-mixed-small-v0": "--env Pendulum-v1 --policy random:share=3 "
    "--policy pendulum-swingup:noise=0.3 --steps 20000",
    "valorl/pendulum-random-small-v0": "--env Pendulum-v1 --policy random --steps 20000",
    "valorl/mountaincar-mixed-small-v0": "--env MountainCarContinuous-v0 --policy random:share=3 "
    "--policy mountaincar-pump:noise=0.5 --steps 20000",
}


def spec_text(data_dirs: list[Path], steps: int, seeds: int) -> str:
    datasets = ", ".join(f'"{d}"' for d in data_dirs)
    return f"""agents = ["iql", "td3_bc"]
datasets = [{datasets}]
seeds = {seeds}

[settings]
steps = {steps}
log_every = 1000
eval_every = {steps}
eval_episodes = 5
hidden_dims = [64, 64]
"""


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/sweep-grouping")
    parser.add_argument("--steps", type=int, default=5000, help="gradient steps per run")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    out = Path(args.out)
    data_dirs = [ensure_dataset(out, d, flags) for d, flags in DATASETS.items()]
    spec = out / "sweep.toml"
    spec.write_text(spec_text(data_dirs, args.steps, args.seeds))
    import tomllib

    groups = expand(tomllib.loads(spec.read_text()))
    for name in ("grouped", "per-seed"):
        shutil.rmtree(out / name, ignore_errors=True)

    start = time.perf_counter()
    valorl("sweep", str(spec), "--out", str(out / "grouped"), "--no-report", "--quiet")
    grouped = time.perf_counter() - start

    start = time.perf_counter()
    for group in groups:
        for seed in group.seeds:
            argv = list(group.argv)
            argv[argv.index("--seeds") + 1] = "1"
            argv[argv.index("--seed") + 1] = str(seed)
            run_dir = out / "per-seed" / f"{group.name}-seed{seed}"
            valorl("train", group.agent, *argv, "--out", str(run_dir), "--quiet")
    per_seed = time.perf_counter() - start

    runs = sum(len(g.seeds) for g in groups)
    print(f"\n{runs} runs ({len(groups)} groups: iql, td3_bc x "
          f"{', '.join(short_name(d) for d in DATASETS)}), {args.steps} steps each\n")  # fmt: skip
    print("| how | processes | wall time (s) | per run (s) |")
    print("|---|---|---|---|")
    print(f"| `valorl sweep` (grouped) | {len(groups)} | {grouped:.0f} | {grouped / runs:.1f} |")
    print(f"| one process per seed | {runs} | {per_seed:.0f} | {per_seed / runs:.1f} |")
    print(f"\ngrouped is {per_seed / grouped:.1f}x faster", file=sys.stderr)


if __name__ == "__main__":
    main()

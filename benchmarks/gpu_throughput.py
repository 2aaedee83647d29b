"""The throughput table of BENCHMARKS.md in one run, on whatever device JAX picks: a GPU where
JAX's CUDA plugin is installed (`pip install 'valorl[cuda]'`), else the CPU.

Each cell is one `valorl bench throughput --json` in its own process (so no cell inherits
another's compiled code or memory): gradient steps per second after compilation, summed over
the seeds trained together with `vmap`. The table names the device every cell ran on.

    python benchmarks/gpu_throughput.py --out gpu-throughput.md
    python benchmarks/gpu_throughput.py --agents iql --seeds 1,100 --batch-size 1024
    JAX_PLATFORMS=cpu python benchmarks/gpu_throughput.py --seeds 1,2 --steps-per-call 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def measure(agent: str, seeds: int, args: argparse.Namespace) -> dict:
    """One `valorl bench throughput --json` cell, in a fresh process."""
    command = [
        str(Path(sys.executable).with_name("valorl")),
        "bench",
        "throughput",
        "--agent",
        agent,
        "--seeds",
        str(seeds),
        "--hidden-dims",
        args.hidden_dims,
        "--batch-size",
        str(args.batch_size),
        "--steps-per-call",
        str(args.steps_per_call),
        "--calls",
        str(args.calls),
        "--json",
    ]
    print("$", " ".join(["valorl", *command[1:]]), file=sys.stderr, flush=True)
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def table(results: dict[tuple[str, int], dict], agents: list[str], seeds: list[int]) -> str:
    """Markdown: a row per agent, a column per seed count; total steps/s, per seed below."""
    first = next(iter(results.values()))
    devices = sorted({r["device"] for r in results.values()})
    lines = [
        f"Device: {', '.join(devices)}; jax {first['jax']}; hidden {first['hidden_dims']}, "
        f"batch {first['batch_size']}, {first['steps_per_call']} steps per compiled call, "
        f"{first['calls']} timed calls. Cells: gradient steps/s summed over seeds "
        "(per seed in parentheses).",
        "",
        "| agent | " + " | ".join(f"{n} seed{'s' * (n > 1)}" for n in seeds) + " |",
        "|---|" + "---:|" * len(seeds),
    ]
    for agent in agents:
        cells = [results[agent, n] for n in seeds]
        lines.append(
            f"| `{agent}` | "
            + " | ".join(
                f"{c['updates_per_s']:,.1f} ({c['updates_per_s_per_seed']:,.1f})" for c in cells
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="iql,td3_bc,bc", help="comma-separated agents")
    parser.add_argument("--seeds", default="1,5,20,100", help="comma-separated seed counts")
    parser.add_argument("--hidden-dims", default="256,256")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps-per-call", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the table here")
    args = parser.parse_args()
    agents = args.agents.split(",")
    seeds = [int(n) for n in args.seeds.split(",")]
    results = {(a, n): measure(a, n, args) for a in agents for n in seeds}
    text = table(results, agents, seeds)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

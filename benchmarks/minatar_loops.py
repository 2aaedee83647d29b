"""The compiled loop against the host loop on MinAtar: environment steps and updates per second.

    python benchmarks/minatar_loops.py                 # the table in BENCHMARKS.md
    python benchmarks/minatar_loops.py --quick         # fewer steps, for a look

Runs `valorl bench throughput --agent dqn --env Breakout-MinAtar` for the same agent and seeds
in the compiled loop (environments stepped inside `lax.scan`) and with `--host-loop` (the same
gymnax environment stepped from Python, one compiled call per environment step), with one
update per 4 environment steps and with no updates at all (uniform random actions: the cost of
stepping and storing alone), then the compiled loop with more environments per seed and more
seeds. Every number is measured after
compilation (the first chunk is left out); all of them in one process run, one after another.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ENV = "Breakout-MinAtar"


def bench(*flags: str) -> dict:
    command = [str(Path(sys.executable).with_name("valorl")), "bench", "throughput"]
    command += ["--agent", "dqn", "--env", ENV, "--json", *flags]
    print("$", " ".join(command[1:]), flush=True)
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    host_steps, steps = (512, 2048) if args.quick else (2048, 10240)
    rows = []
    for label, flags in (("utd 0.25", ["--utd", "0.25"]), ("no updates", ["--random-actions"])):
        for seeds in (1, 4):
            s = ["--seeds", str(seeds), *flags]
            host = bench(*s, "--host-loop", "--env-steps", str(host_steps))
            compiled = bench(*s, "--env-steps", str(steps))
            rows.append((f"{label}, {seeds}", host, compiled))
    print("\n| updates, seeds | host env steps/s | compiled env steps/s | ratio | updates/s |")
    print("|---|---|---|---|---|")
    for label, host, compiled in rows:
        ratio = compiled["env_steps_per_s"] / host["env_steps_per_s"]
        print(
            f"| {label} | {host['env_steps_per_s']:,.0f} | {compiled['env_steps_per_s']:,.0f} | "
            f"{ratio:.1f}x | {host['updates_per_s']:,.0f}, {compiled['updates_per_s']:,.0f} |"
        )
    print("\n| seeds | envs per seed | env steps/s (all seeds) | updates/s |")
    print("|---|---|---|---|")
    for seeds in (1, 4):
        for envs in (1, 4, 16, 64):
            r = bench(
                "--seeds", str(seeds), "--num-envs", str(envs), "--env-steps", str(steps),
                "--utd", "0.25",
            )  # fmt: skip
            print(f"| {seeds} | {envs} | {r['env_steps_per_s']:,.0f} | {r['updates_per_s']:,.0f} |")
    print(f"\ndevice {r['device']}, jax {r['jax']}, utd {r['utd']}, batch {r['batch_size']}")


if __name__ == "__main__":
    main()

"""Memory of a local sweep over groups that each compile different code (issue #13).

A sweep with the local backend trains its groups one after another in one process. Before
bounded compile caches, every group's jitted builders and JAX's executables stayed cached, so
the process grew group after group. This script runs a 30-group sweep (3 agents × 5 network
shapes × 2 batch sizes, 200 steps, 1 seed, no evaluation) on a small synthetic dataset in a
fresh subprocess of each given Python (a venv with valorl installed, e.g. one per checkout)
and prints the process's resident memory after each group and its peak (`ru_maxrss`).

    python benchmarks/sweep_memory.py --python /path/to/before/.venv/bin/python \\
        --python .venv/bin/python --out /tmp/sweep-memory

The subprocesses run at the same time when several are given (memory does not depend on
load); each imports valorl from its own venv.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

AGENTS = ["bc", "iql", "td3_bc"]
HIDDEN_DIMS = [[32, 32], [48, 48], [64, 64], [32, 32, 32], [96, 96]]
BATCH_SIZES = [64, 128]
ROWS, EPISODE, OBS, ACT = 20_000, 200, 3, 1


def rss_mb() -> float:
    """Resident memory of this process now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_dataset(path: Path) -> None:
    """Pendulum-shaped random transitions in episodes of 200 steps, saved with valorl."""
    import valorl

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(ROWS, OBS)).astype(np.float32)
    timeouts = np.zeros(ROWS, bool)
    timeouts[EPISODE - 1 :: EPISODE] = True
    dataset = valorl.Dataset(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(ROWS, ACT)).astype(np.float32),
        rewards=rng.normal(size=ROWS).astype(np.float32),
        next_observations=np.roll(obs, -1, axis=0),
        terminals=np.zeros(ROWS, bool),
        timeouts=timeouts,
        info=valorl.DatasetInfo(name="synthetic-pendulum", env_id="Pendulum-v1"),
    )
    valorl.save_npz(dataset, path)


def child(out: Path) -> None:
    """Run the sweep here, recording memory as each group starts (after the previous one has
    finished and the backend has cleaned up) and once more at the end."""
    import valorl.sweep.run as sweep_run
    from valorl.sweep import run_sweep

    data = out / "data.npz"
    write_dataset(data)
    spec = {
        "agents": AGENTS,
        "datasets": [str(data)],
        "seeds": 1,
        "settings": {"steps": 200, "log_every": 100, "eval_episodes": 0},
        "grid": {"hidden_dims": HIDDEN_DIMS, "batch_size": BATCH_SIZES},
    }
    after_group: list[float] = []
    started = sweep_run.Tally.started

    def record(self, group) -> None:
        after_group.append(round(rss_mb(), 1))
        started(self, group)

    sweep_run.Tally.started = record
    baseline = rss_mb()
    result = run_sweep(spec, out / "sweep", backend="local", report=False, progress=False)
    after_group.append(round(rss_mb(), 1))
    print(
        json.dumps(
            {
                "groups": len(result.groups),
                "failed": sorted(result.failures),
                "rss_before_sweep_mb": round(baseline, 1),
                "rss_after_group_mb": after_group[1:],
                "peak_mb": round(peak_mb(), 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="a venv's python (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="scratch directory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.out)
        return
    pythons = args.python or [sys.executable]
    procs = []
    for i, python in enumerate(pythons):
        out = args.out / f"run{i}"
        out.mkdir(parents=True, exist_ok=False)
        command = [python, __file__, "--child", "--out", str(out)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    for python, proc in zip(pythons, procs, strict=True):
        stdout, _ = proc.communicate()
        if proc.returncode:
            sys.exit(f"{python} failed with exit status {proc.returncode}")
        result = json.loads(stdout.strip().splitlines()[-1])
        curve = result["rss_after_group_mb"]
        marks = {k: curve[k - 1] for k in (1, 10, 20, 30) if k <= len(curve)}
        print(f"{python}: {json.dumps(result)}")
        print(f"  RSS after groups {marks}, peak {result['peak_mb']} MB")


if __name__ == "__main__":
    main()

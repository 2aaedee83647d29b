"""IQL training throughput of d3rlpy on the same synthetic shapes as `valorl bench throughput`.

Runs in its own environment (d3rlpy pins gymnasium 1.0.0), e.g.:

    python3 -m venv /tmp/d3rlpy-venv
    /tmp/d3rlpy-venv/bin/pip install torch==2.13.0 d3rlpy==2.8.1
    /tmp/d3rlpy-venv/bin/python benchmarks/d3rlpy_throughput.py --steps 2000

Times d3rlpy's own `fit` loop (sampling included, logging off) after a warm-up, and prints one
JSON object with `updates_per_s` like valorl's benchmark.
"""

import argparse
import json
import time

import d3rlpy
import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="256,256")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, obs_dim, action_dim = 100_000, 17, 6
    terminals = np.zeros(n)
    terminals[999::1000] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(
        observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, action_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=terminals,
    )
    hidden = [int(h) for h in args.hidden.split(",")]
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=hidden)
    iql = d3rlpy.algos.IQLConfig(
        batch_size=args.batch,
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
        value_encoder_factory=encoder,
    ).create(device="cpu:0")
    fit = dict(
        n_steps_per_epoch=args.steps,
        show_progress=False,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        save_interval=10**9,
    )
    iql.fit(dataset, n_steps=200, **{**fit, "n_steps_per_epoch": 200})  # warm-up
    start = time.perf_counter()
    iql.fit(dataset, n_steps=args.steps, **fit)
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "library": f"d3rlpy {d3rlpy.__version__}",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "agent": "iql",
                "hidden": hidden,
                "batch": args.batch,
                "seeds": 1,
                "updates_per_s": round(args.steps / elapsed, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

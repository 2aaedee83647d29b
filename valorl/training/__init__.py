"""Training: the run plan, the one run loop and its phases, batch sources, fused multi-seed
updates, checkpoints, run directories and the entry points `train` (offline.py) and
`train_online` (online.py). docs/architecture.md walks through it."""

"""Training: the fused multi-seed update loop, checkpoints, run directories, the offline driver."""

"""Sweeps: grids of agents x datasets x modes x hyperparameters x seeds, trained locally or on
Ray (`valorl sweep SPEC --out DIR`), resumable, with one report at the end."""

from valorl.sweep.run import SweepResult, run_sweep
from valorl.sweep.spec import Group, expand, load_spec

__all__ = ["Group", "SweepResult", "expand", "load_spec", "run_sweep"]

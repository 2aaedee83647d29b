"""Collecting datasets: behaviour policies rolled out in a Gymnasium environment.

    from valorl.collection import collect
    ds = collect("Pendulum-v1", ["random", "pendulum-swingup:noise=0.3"], 50_000, dataset_id="x")

`run.py` parses behaviour specs and collects, `controllers.py` holds the scripted behaviours, and
`policy_file.py` the behaviour policies stored as plain arrays (and their export from a run).
It sits above training and evaluation because a behaviour may be a trained run's policy.
"""

from valorl.collection.controllers import CONTROLLERS
from valorl.collection.policy_file import PolicyFile, export_policy
from valorl.collection.run import (
    LOG_PROB_KEY,
    Behaviour,
    clipped_gaussian_log_prob,
    collect,
    mean_return,
)

__all__ = [
    "CONTROLLERS",
    "LOG_PROB_KEY",
    "Behaviour",
    "PolicyFile",
    "clipped_gaussian_log_prob",
    "collect",
    "export_policy",
    "mean_return",
]

"""Learned dynamics models and the imagined data they produce (model-based RL): Gaussian
ensembles and single models of continuous control (dynamics.py, fit.py, rollouts.py,
termination.py), and the binary "simple model" of gridworlds (binary.py)."""

from __future__ import annotations

from valorl.models.binary import BinaryModel
from valorl.models.dynamics import DynamicsModel, ModelState, Prediction
from valorl.models.fit import fit
from valorl.models.rollouts import Rollouts, add_valid, rollout, termination_test
from valorl.models.termination import termination_rule

__all__ = [
    "BinaryModel",
    "DynamicsModel",
    "ModelState",
    "Prediction",
    "Rollouts",
    "add_valid",
    "fit",
    "rollout",
    "termination_rule",
    "termination_test",
]

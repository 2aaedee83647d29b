"""Networks: MLPs, value functions and their ensembles, policies."""

from valorl.nets.critics import Ensemble, StateActionValue, StateValue
from valorl.nets.mlp import MLP
from valorl.nets.policies import (
    DeterministicPolicy,
    GaussianPolicy,
    TanhGaussianPolicy,
    gaussian_log_prob,
    gaussian_sample,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
)

__all__ = [
    "MLP",
    "DeterministicPolicy",
    "Ensemble",
    "GaussianPolicy",
    "StateActionValue",
    "StateValue",
    "TanhGaussianPolicy",
    "gaussian_log_prob",
    "gaussian_sample",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_sample",
]

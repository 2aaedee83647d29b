"""Networks: MLP and CNN torsos, value functions and their ensembles, policies."""

from valorl.nets.critics import ActionValues, Ensemble, StateActionValue, StateValue, TorsoValue
from valorl.nets.mlp import MLP
from valorl.nets.policies import (
    CategoricalPolicy,
    DeterministicPolicy,
    GaussianPolicy,
    TanhGaussianPolicy,
    categorical_log_prob,
    gaussian_log_prob,
    gaussian_sample,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
)
from valorl.nets.torsos import Torso, obs_rank

__all__ = [
    "MLP",
    "ActionValues",
    "CategoricalPolicy",
    "DeterministicPolicy",
    "Ensemble",
    "GaussianPolicy",
    "StateActionValue",
    "StateValue",
    "TanhGaussianPolicy",
    "Torso",
    "TorsoValue",
    "categorical_log_prob",
    "gaussian_log_prob",
    "gaussian_sample",
    "obs_rank",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_sample",
]

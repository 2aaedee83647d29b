"""Critics: heads (how a Q-network represents and learns a value) and ensembles."""

from valorl.critics.ensemble import QEnsemble
from valorl.critics.heads import (
    HEADS,
    Bernoulli,
    Categorical,
    CriticHead,
    Gaussian,
    HLGauss,
    Huber,
    Quantile,
    Scalar,
    TwoHot,
    resolve_agent_support,
    resolve_support,
    support_from_data,
)

__all__ = [
    "HEADS",
    "Bernoulli",
    "Categorical",
    "CriticHead",
    "Gaussian",
    "HLGauss",
    "Huber",
    "QEnsemble",
    "Quantile",
    "Scalar",
    "TwoHot",
    "resolve_agent_support",
    "resolve_support",
    "support_from_data",
]

"""Conservative Q-Learning for discrete actions (Kumar, Zhou, Tucker & Levine, NeurIPS 2020,
arXiv:2006.04779), registered as "cql_discrete".

CQL(H) (Eq. 4) adds to each member's TD loss α times the gap between a soft maximum of Q over
all actions and Q at the data's action:

    L_Q = ℓ_TD(Q) + α · E_{s,a~D}[ log Σ_a' exp Q(s, a') − Q(s, a) ]

With finitely many actions the log-sum-exp is exact (no sampled proposals, unlike continuous
CQL). The TD part is DQN's (`valorl.agents.dqn`): Double-DQN targets, n-step returns, hard
target copies, any critic head; the paper's Atari experiments put CQL on a QR-DQN critic, which
is the default here (`quantile`). Q in the gap is read through the head's `value` (the mean of
the quantiles, the expectation of a histogram), so a distributional critic is pushed down in
mean away from the data while its shape is learned by its own TD loss.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from valorl.agents.base import Metrics
from valorl.agents.dqn import DQN
from valorl.critics import CriticHead, Quantile
from valorl.data.dataset import Batch
from valorl.errors import ValorlError
from valorl.losses import discrete_cql_gap


@dataclasses.dataclass(frozen=True)
class DiscreteCQL(DQN):
    """DQN (Double-DQN, n-step) with CQL(H)'s log-sum-exp penalty, for offline data."""

    name: ClassVar[str] = "cql_discrete"

    cql_alpha: float = 1.0
    """α, the weight of the conservative gap (Eq. 4); the paper tunes it per dataset."""
    critic: CriticHead = Quantile()
    """How Q is represented and trained (the paper's Atari CQL: quantile, i.e. QR-DQN)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cql_alpha < 0:
            raise ValorlError(f"--cql-alpha must be at least 0, got {self.cql_alpha}")

    def penalty(self, q_all: jax.Array, batch: Batch) -> tuple[jax.Array, Metrics]:
        """α · E_B[log Σ_a exp Q_i(s, a) − Q_i(s, a_data)] for each member i."""
        gap = discrete_cql_gap(q_all, batch.actions).mean(axis=-1)  # (members,)
        return self.cql_alpha * gap, {"cql_gap": gap.mean()}

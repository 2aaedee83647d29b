"""Calibrated Q-Learning (Nakamoto, Zhai, Singh, Sobol Mark, Ma, Finn, Kumar & Levine,
"Cal-QL: Calibrated Offline RL Pre-Training for Efficient Online Fine-Tuning", NeurIPS 2023,
arXiv:2303.05479).

Cal-QL is CQL (`valorl.agents.cql`, whose losses it reuses unchanged) with one change: the
Q-values that the conservative regulariser pushes down at the policy's actions are bounded
from below by the value of a reference policy, estimated by the Monte-Carlo return-to-go of the
behaviour policy in the data (Sec. 5 and Alg. 1):

    E_s[ log ∫ exp max(Q(s, ã), V^μ(s)) dã − E_{a~D}[Q(s, a)] ],   V^μ(s) ≈ Σ_t' γ^(t'−t) r_t'

so the learned Q is calibrated: never pushed below what the data already achieves from s,
which keeps the policy from unlearning good behaviour when online fine-tuning starts. As in
the reference code, the bound applies to the proposals drawn from π(·|s) and π(·|s') (both
evaluated at s, bounded by the return from s); the uniform proposals stay unbounded.

The trainer puts the returns-to-go (at the agent's discount, scaled like the rewards) in every
batch for an agent that sets `needs_returns_to_go`; an online loop does the same for its own
finished episodes. Defaults are the reference code's ConservativeSAC defaults
(nakamotoo/Cal-QL); its published runs add per-task settings (AntMaze: `--cql-lagrange true
--cql-target-action-gap 0.8` and 4x256 critics; Adroit: `--cql-alpha 1`) and a reward shift
(10·r − 5) valorl has no flag for. A truncated episode's return-to-go ends in its mean reward
continued forever (`Dataset.returns_to_go`), where the reference adds nothing but to an
all-failure sparse episode; networks are initialised as valorl's (`valorl.nets`), not with
the reference's orthogonal initialisation.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from valorl.agents.base import Metrics
from valorl.agents.cql import CQL
from valorl.data.dataset import Batch
from valorl.errors import ValorlError


@dataclasses.dataclass(frozen=True)
class CalQL(CQL):
    """Cal-QL: CQL whose pushed-down Q-values are bounded below by Monte-Carlo returns."""

    name: ClassVar[str] = "calql"
    needs_returns_to_go: ClassVar[bool] = True

    cql_max_target_backup: bool = True
    """Back up the maximum of Q̂' over N actions from π(·|s') (the Cal-QL reference: on)."""
    actor_lr: float = 1e-4
    """Actor learning rate (the Cal-QL reference: 1e-4)."""
    temperature_lr: float = 1e-4
    """Learning rate of log α_ent (the reference: the actor's)."""

    def bound_policy_values(self, q_policy: jax.Array, batch: Batch) -> jax.Array:
        """max(Q(s, ã), V^μ(s)) for the policy's proposals: q_policy (members, B, M)."""
        return jnp.maximum(q_policy, self._returns(batch)[:, None])

    def bound_metrics(self, q_policy: jax.Array, batch: Batch) -> Metrics:
        """How often the bound is active (the reference logs it as bound_rate)."""
        return {"bound_rate": (q_policy < self._returns(batch)[:, None]).mean()}

    @staticmethod
    def _returns(batch: Batch) -> jax.Array:
        if batch.returns_to_go is None:
            raise ValorlError(
                "calql needs Monte-Carlo returns-to-go in every batch (Batch.returns_to_go): "
                "build the data with Dataset.to_batch(discount=...)"
            )
        return batch.returns_to_go

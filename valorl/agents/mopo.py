"""MOPO: Model-based Offline Policy Optimization (Yu et al., NeurIPS 2020, Alg. 1, Eq. 6).

Offline: fit the dynamics ensemble once on the dataset, then train SAC on a mix of dataset rows
and rollouts of length h branched from dataset states, with every imagined reward penalised by
the model's uncertainty,

    r̃(s, a) = r̂(s, a) − λ · max_i ‖σ_i(s, a)‖₂,

the largest norm over members of the predicted standard deviation of (s', r) (the aleatoric
penalty of the paper's practical algorithm, Sec. 4.3). Defaults are OfflineRL-Kit's: rollouts
of length 5 from 50k states every 1000 gradient steps, 5 rounds kept, 5% real rows. λ depends on
the dataset; OfflineRL-Kit uses (medium / medium-replay / medium-expert) halfcheetah 0.5 / 0.5 /
2.5, hopper 5.0 / 2.5 / 5.0, walker2d 0.5 / 2.5 / 2.5, and h = 1 on walker2d medium-replay and
medium-expert. The penalty is the model's own predicted spread, so a deterministic model
(`--model-kind deterministic`) gets none: MOPO then is MBPO trained offline.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from valorl.agents.model_based import OfflineModelBasedSAC, member_std_norm
from valorl.models import Prediction


@dataclasses.dataclass(frozen=True)
class MOPO(OfflineModelBasedSAC):
    """SAC on dataset rows and uncertainty-penalised model rollouts (offline)."""

    name: ClassVar[str] = "mopo"

    penalty_coef: float = 1.0
    """λ of the uncertainty penalty (per dataset; see the module docstring)."""

    def rollout_penalty(self, prediction: Prediction) -> jax.Array:
        return self.penalty_coef * member_std_norm(prediction).max(axis=0)

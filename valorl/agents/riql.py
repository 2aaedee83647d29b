"""Robust IQL (Yang, Zhong, Xu, Zhang, Zhang, Han & Zhang, "Towards Robust Offline Reinforcement
Learning under Diverse Data Corruption", ICLR 2024, arXiv:2310.12955).

RIQL is IQL (`valorl.agents.iql`, whose update it reuses unchanged) with three changes that make
it robust to corrupted observations, actions, rewards and dynamics:

1. observation normalisation with dataset statistics;
2. the Huber loss for the Q-functions, so heavy-tailed TD targets (from corrupted dynamics)
   pull linearly, not quadratically (`Huber` head; the reference code's `sigma` σ sets the
   threshold 1/σ², its default σ = 1 is δ = 1 here):

       L_Q = Σ_i E[ l_δ(r + γ·m·V(s') − Q_i(s, a)) ]

3. the quantile Q estimator: V's expectile target and the actor's advantage use the α-quantile
   over K target Q-functions instead of their minimum (`QEnsemble(q_reduce="quantile")`):

       Q̂_α(s, a) = α-quantile of {Q̄_1(s, a), …, Q̄_K(s, a)}
       L_V = E[ L2^τ(Q̂_α(s, a) − V(s)) ],   A(s, a) = Q̂_α(s, a) − V(s)

The reference implementation (github.com/YangRui2015/RIQL, `RIQL.py`) also trains a
deterministic tanh actor by advantage-weighted squared error, E[exp(β·A)·‖π(s) − a‖²] (its
README and App. E.4 say so): `deterministic_actor=True`, the default here, overrides IQL's
`actor_network` and `weighted_loss` hooks; `false` keeps IQL's Gaussian actor and
log-likelihood. Like the reference code, RIQL does not rescale rewards.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax

from valorl.agents.base import Metrics, Params, apply
from valorl.agents.iql import IQL, IQLState
from valorl.critics import CriticHead, Huber, QEnsemble
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.nets import DeterministicPolicy


@dataclasses.dataclass(frozen=True)
class RIQL(IQL):
    """Robust IQL: IQL with normalised observations, a Huber critic and a quantile Q target."""

    name: ClassVar[str] = "riql"

    critic: CriticHead = Huber(huber_delta=1.0)
    """How Q is represented and trained; the paper: Huber loss (reference default σ = 1, δ = 1)."""
    ensemble: QEnsemble = QEnsemble(num_qs=5, q_reduce="quantile", q_quantile=0.25)
    """Q-ensemble; the paper: K = 5 members, reduced by their α = 0.25 quantile."""
    normalize_observations: bool = True
    """Standardise observations with dataset statistics (part of RIQL)."""
    reward_normalization: RewardNormalization = "none"
    """Rewards as they are, as in the reference code."""
    deterministic_actor: bool = True
    """A tanh actor trained by advantage-weighted squared error (the reference code's default);
    false: IQL's Gaussian actor and weighted log-likelihood."""

    def actor_network(self, action_dim: int) -> nn.Module:
        """A deterministic tanh actor, or IQL's Gaussian with `deterministic_actor=False`."""
        if not self.deterministic_actor:
            return super().actor_network(action_dim)
        return DeterministicPolicy(self.hidden_dims, action_dim)

    def weighted_loss(
        self, params: Params, state: IQLState, batch: Batch, weights: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """mean(w · ‖π(s) − a‖²), or IQL's −mean(w · log π(a|s)) with
        `deterministic_actor=False`."""
        if not self.deterministic_actor:
            return super().weighted_loss(params, state, batch, weights)
        error = (apply(state.actor, params, batch.observations) - batch.actions) ** 2
        return (weights * error.sum(axis=-1)).mean(), {"bc_mse": error.mean()}

    def act(
        self, state: IQLState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        if not self.deterministic_actor:
            return super().act(state, obs, key, deterministic)
        return apply(state.actor, state.actor.params, obs)

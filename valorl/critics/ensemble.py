"""Q-ensembles: how many critics, how their estimates combine into one, and their layers.

The reduction turns member values of shape (members, batch) into one estimate per sample:

    min          clipped double Q (Fujimoto et al. 2018) and SAC-N (An et al. 2021)
    mean         the plain average
    subset-min   min over `q_subset` members drawn at random each update (REDQ, Chen et al.
                 2021; RLPD, Ball et al. 2023): one subset for the whole batch
    pessimistic  mean − `q_pessimism` · std over members (lower confidence bound, as in
                 EDAC/SAC-N-style uncertainty penalties)
    quantile     the `q_quantile` (α) quantile over members, linearly interpolated between
                 sorted members: with K members sorted v_(0) ≤ … ≤ v_(K−1), the value at
                 position α·(K − 1) (numpy's and torch.quantile's default "linear" rule): the
                 quantile Q estimator of RIQL (Yang et al. 2023, ICLR 2024; the reference code
                 calls torch.quantile). α = 0 is the min, 0.5 the median, 1 the max
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from valorl.config import require_at_least_one
from valorl.errors import ValorlError
from valorl.nets import ActionValues, Ensemble, StateActionValue
from valorl.nets.mlp import Activation

Reduction = Literal["min", "mean", "subset-min", "pessimistic", "quantile"]


@dataclasses.dataclass(frozen=True)
class QEnsemble:
    """The critic ensemble of an agent."""

    num_qs: int = 2
    """Number of Q-networks."""
    q_reduce: Reduction = "min"
    """How member estimates combine in targets: min, mean, subset-min, pessimistic, quantile."""
    q_subset: int = 2
    """Members drawn for subset-min (REDQ/RLPD use 2)."""
    q_pessimism: float = 1.0
    """k in mean − k·std for the pessimistic reduction."""
    q_quantile: float = 0.25
    """α of the quantile reduction, in [0, 1] (RIQL uses 0.25)."""
    layer_norm: bool = False
    """LayerNorm in each hidden layer of the Q-networks (as in RLPD, FQL, ReBRAC)."""
    norm_after_activation: bool = False
    """LayerNorm after the activation (FQL's, Q-chunking's, DQC's and ReBRAC's code) instead of
    before it (RLPD's)."""
    spectral_norm: bool = False
    """Spectral normalisation of the Q-networks' hidden layers (Miyato et al. 2018)."""
    activation: Activation = "relu"
    """Hidden-layer nonlinearity of the Q-networks: relu, elu (Young et al. 2023), gelu (FQL)."""

    def __post_init__(self) -> None:
        require_at_least_one(self, "num_qs")
        if self.q_reduce == "subset-min" and not 1 <= self.q_subset <= self.num_qs:
            raise ValorlError(
                f"--q-subset must be between 1 and --num-qs ({self.num_qs}), got {self.q_subset}"
            )
        if self.q_reduce == "pessimistic" and self.num_qs < 2:
            raise ValorlError("the pessimistic reduction needs --num-qs of at least 2")
        if self.q_reduce == "quantile" and not 0.0 <= self.q_quantile <= 1.0:
            raise ValorlError(f"--q-quantile must be between 0 and 1, got {self.q_quantile}")

    def network(self, hidden_dims: tuple[int, ...], out_dim: int) -> nn.Module:
        """The Q-networks: outputs of shape (num_qs, batch, out_dim)."""
        q = StateActionValue(
            hidden_dims,
            out_dim,
            self.layer_norm,
            self.spectral_norm,
            self.activation,
            self.norm_after_activation,
        )
        return Ensemble(q, self.num_qs)

    def discrete_network(
        self, hidden_dims: tuple[int, ...], num_actions: int, out_dim: int, obs_rank: int = 1
    ) -> nn.Module:
        """The Q-networks of a discrete action space: observations only in, outputs of shape
        (num_qs, batch, num_actions, out_dim), on a CNN torso for frames (`obs_rank` 3). The
        reductions apply unchanged to values of shape (num_qs, batch, num_actions)."""
        q = ActionValues(
            hidden_dims,
            num_actions,
            out_dim,
            obs_rank,
            self.layer_norm,
            self.spectral_norm,
            self.activation,
            self.norm_after_activation,
        )
        return Ensemble(q, self.num_qs)

    def members(self, key: jax.Array) -> jax.Array:
        """Indices of the members the reduction looks at (all, or a random subset)."""
        if self.q_reduce == "subset-min":
            return jax.random.choice(key, self.num_qs, (self.q_subset,), replace=False)
        return jnp.arange(self.num_qs)

    def reduce(self, values: jax.Array, key: jax.Array) -> jax.Array:
        """(members, ...) -> (...): one estimate per sample."""
        if self.q_reduce == "mean":
            return values.mean(0)
        if self.q_reduce == "pessimistic":
            return values.mean(0) - self.q_pessimism * values.std(0)
        if self.q_reduce == "quantile":
            return jnp.quantile(values, self.q_quantile, axis=0, method="linear")
        return values[self.members(key)].min(0)

    @property
    def picks_a_member(self) -> bool:
        """Whether the reduction chooses one member per sample (min, subset-min), which a
        distributional backup can then follow."""
        return self.q_reduce in ("min", "subset-min")

    def select(self, values: jax.Array, key: jax.Array) -> jax.Array:
        """Per sample, the member with the lowest value among those `reduce` looks at: the one a
        distributional backup follows. Shape (...); needs `picks_a_member`."""
        members = self.members(key)
        return members[jnp.argmin(values[members], axis=0)]

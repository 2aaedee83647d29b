"""MOBILE: Model-Bellman Inconsistency penalised offLinE policy optimization (Sun et al., ICML
2023, Eq. 5–7).

Offline, like MOPO, but the penalty measures how much the ensemble's members disagree about the
Bellman target rather than about the next state: for an imagined row (s, a), each elite i
predicts next states s'_i (N samples each), and

    u(s, a) = Std_i [ mean_n min_j Q̄_j(s'_{i,n}, a'_{i,n}) ],   a'_{i,n} ~ π(·|s'_{i,n}),

the standard deviation over elites of their expected target value. The critic's target on
imagined rows becomes y = r − β·u(s, a) + γ·m·min_j Q̄_j(s', a') (real rows: u = 0), without
the entropy term (a deterministic backup, as the reference code's default) and clipped below at
`target_floor` (the reference clips at 0, which presumes non-negative returns). Defaults follow
OfflineRL-Kit: N = 10 samples, SAC's α tuned, its offline SAC settings (`OfflineModelBasedSAC`).
β depends on the dataset; OfflineRL-Kit's run_mobile.py suggests (medium / medium-replay /
medium-expert) halfcheetah 0.5 / 0.1 / 2.0, hopper 1.5 / 0.1 / 1.5 (hopper-medium with α
fixed), walker2d 0.5 / 0.5 / 1.5, with h = 1 on walker2d medium-replay and medium-expert.

MOBILE has no single-model form: u is a spread across members, and one model has none (the
samples of one Gaussian measure its noise, not its error), so it needs at least two elites;
the single model with a Lipschitz-regularised critic (Zheng et al. 2023) pairs with MOPO.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from valorl.agents.base import Metrics, apply
from valorl.agents.model_based import ModelBasedState, OfflineModelBasedSAC
from valorl.data.dataset import Batch
from valorl.errors import ValorlError
from valorl.nets import tanh_gaussian_sample


@dataclasses.dataclass(frozen=True)
class MOBILE(OfflineModelBasedSAC):
    """SAC whose target on imagined rows is penalised by the members' Bellman inconsistency."""

    name: ClassVar[str] = "mobile"

    backup_entropy: bool = False
    """Subtract α·log π in the target (the reference's deterministic backup: no)."""
    penalty_coef: float = 1.0
    """β of the Bellman-inconsistency penalty."""
    penalty_samples: int = 10
    """N: next states sampled per elite."""
    target_floor: float | None = 0.0
    """Clip the target below at this value (the reference's 0); unset: no clip."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model.model_elites < 2:
            raise ValorlError(
                "mobile's penalty is a standard deviation over elites: it needs "
                f"--model-elites of at least 2, got {self.model.model_elites}"
            )

    def bellman_uncertainty(
        self, state: ModelBasedState, obs: jax.Array, actions: jax.Array, key: jax.Array
    ) -> jax.Array:
        """u(s, a) (B,): the standard deviation over elites of their mean sampled target value."""
        key_noise, key_actions = jax.random.split(key)
        p = self.model.predict(state.model, obs, actions)
        mean, std = p.next_obs_mean[state.model.elites], p.next_obs_std[state.model.elites]
        noise = jax.random.normal(key_noise, (self.penalty_samples, *mean.shape))
        next_obs = (mean + noise * std).reshape(-1, mean.shape[-1])
        mu, log_std = apply(state.actor, state.actor.params, next_obs)
        next_actions, _ = tanh_gaussian_sample(key_actions, mu, log_std)
        outputs = apply(state.critic, state.target_critic, next_obs, next_actions)
        values = self.critic.value(outputs).min(axis=0).reshape(noise.shape[:-1])
        return values.mean(axis=0).std(axis=0, ddof=1)

    def critic_target(
        self, state: ModelBasedState, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """SAC's target less β·u(s, a) on imagined rows, floored; logs the mean of β·u over
        them as `critic/penalty` (MOPO's penalty is logged at rollout time instead)."""
        key_target, key_penalty = jax.random.split(key)
        target, metrics = super().critic_target(state, batch, key_target)
        n = self.real_rows
        penalty = self.penalty_coef * self.bellman_uncertainty(
            state, batch.observations[n:], batch.actions[n:], key_penalty
        )
        target = target - jnp.concatenate([jnp.zeros(n), penalty])
        if self.target_floor is not None:
            target = jnp.maximum(target, self.target_floor)
        return target, {**metrics, "penalty": penalty.mean()}

"""ReBRAC (Tarasov, Kurenkov, Nikulin & Kolesnikov, "Revisiting the Minimalist Approach to
Offline Reinforcement Learning", NeurIPS 2023, arXiv:2305.09836).

TD3+BC with the design choices the paper isolates (Sec. 4): LayerNorm in the critics, deeper
networks, and a behaviour-cloning penalty in both losses with separate weights (Eq. 2-3):

    actor    max  Q(s, π(s)) / mean|Q|  −  β_actor · ‖π(s) − a‖²
    critic   y = r + γ·mask·( min_i Q̄_i(s', a') − β_critic · ‖a' − a'_data‖² ),
             a' = π̄(s') + clipped noise, a'_data the dataset's next action

The critic's penalty needs the action the data took at s' (`needs_next_actions`), so ReBRAC
trains offline only. Defaults follow FQL's ReBRAC baseline on OGBench (4x512, batch 256,
lr 3e-4); both β are tuned per dataset in the papers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from valorl.agents.base import Metrics, Params, apply
from valorl.agents.td3 import TD3Base, TD3State
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization


@dataclasses.dataclass(frozen=True)
class ReBRAC(TD3Base):
    """TD3 with LayerNorm critics and behaviour-cloning penalties on the actor and the target."""

    name: ClassVar[str] = "rebrac"
    needs_next_actions: ClassVar[bool] = True
    # the actor's output layer starts small, so that its first actions lie near 0 and not in
    # tanh's saturated tails (FQL's ReBRAC `actor_fc_scale` 0.01; CORL's ±1e-3)
    actor_output_scale: ClassVar[float] = 0.01

    actor_bc_coef: float = 0.1
    """β_actor: weight of ‖π(s) − a‖² against the normalised Q."""
    critic_bc_coef: float = 0.01
    """β_critic: weight of ‖a' − a'_data‖² subtracted from the bootstrapped value."""
    discount: float = 0.99
    """Discount factor γ."""
    tau: float = 0.005
    """Polyak rate of the target networks."""
    policy_noise: float = 0.2
    """Std of the smoothing noise on target actions (actions in [-1, 1])."""
    noise_clip: float = 0.5
    """Clip on that noise."""
    policy_freq: int = 2
    """Critic steps per actor and target step."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise `act` adds when not deterministic."""
    actor_lr: float = 3e-4
    """Actor learning rate (the ReBRAC paper's D4RL runs use 1e-3)."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden layer sizes of actor and critics (FQL's baseline; the paper's D4RL runs 3x256)."""
    critic: CriticHead = Scalar()
    """How Q is represented and trained (`valorl.critics.heads`)."""
    ensemble: QEnsemble = QEnsemble(layer_norm=True, norm_after_activation=True)
    """Two critics with LayerNorm; targets and the actor take their minimum."""
    distributional_backup: bool = False
    """Train a c51/quantile/gaussian critic towards the backed-up next-state distribution."""
    batch_size: int = 256
    """Transitions per gradient step (the paper's D4RL runs use 1024)."""
    normalize_observations: bool = False
    """Standardise observations (the reference does not)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none."""

    def next_value_penalty(self, batch: Batch, next_actions: jax.Array) -> jax.Array:
        return self.critic_bc_coef * ((next_actions - batch.next_actions) ** 2).sum(axis=-1)

    def actor_loss(
        self, params: Params, state: TD3State, batch: Batch
    ) -> tuple[jax.Array, Metrics]:
        actions = apply(state.actor, params, batch.observations)
        outputs = apply(state.critic, state.critic.params, batch.observations, actions)
        q = self.critic.value(outputs).min(axis=0)
        scale = jax.lax.stop_gradient(1.0 / jnp.abs(q).mean())
        bc = ((actions - batch.actions) ** 2).sum(axis=-1)
        loss = -(scale * q).mean() + self.actor_bc_coef * bc.mean()
        return loss, {"q": q.mean(), "bc_mse": bc.mean()}

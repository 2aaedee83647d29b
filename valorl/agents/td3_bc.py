"""TD3+BC (Fujimoto & Gu, "A Minimalist Approach to Offline RL", NeurIPS 2021, arXiv:2106.06860).

TD3 (Fujimoto et al. 2018; `agents.td3`) with one added term: the actor maximises λ·Q(s, π(s))
while staying close to the dataset action, with λ normalised by the critic's scale (Eq. 3–4):

    π = argmax_π E[ λ·Q(s, π(s)) − (π(s) − a)² ],   λ = α / mean|Q(s, π(s))|

and observations are standardised with dataset statistics (Sec. 5). The critic, the delayed
actor and target updates are TD3's.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from valorl.agents.base import Metrics, Params, apply
from valorl.agents.td3 import TD3Base, TD3State
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.losses import td3_bc_actor_loss


@dataclasses.dataclass(frozen=True)
class TD3BC(TD3Base):
    """TD3 with a behaviour-cloning term in the actor loss and normalised observations."""

    name: ClassVar[str] = "td3_bc"

    alpha: float = 2.5
    """α in λ = α / mean|Q|: larger trusts the critic more, smaller imitates more."""
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
    """Actor learning rate."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of actor and critics."""
    critic: CriticHead = Scalar()
    """How Q is represented and trained: mse, huber, bce, hl-gauss, two-hot, c51, quantile, gaussian
    (`valorl.critics.heads`)."""
    ensemble: QEnsemble = QEnsemble()
    """Q-ensemble: size, how members combine in targets (TD3: min of two), layers."""
    distributional_backup: bool = False
    """Train a c51/quantile/gaussian critic towards the backed-up next-state distribution of the
    member the reduction picks, instead of towards a scalar target."""
    batch_size: int = 256
    """Transitions per gradient step."""
    normalize_observations: bool = True
    """Standardise observations with dataset statistics (the paper does)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling: none in the paper."""

    def actor_loss(
        self, params: Params, state: TD3State, batch: Batch
    ) -> tuple[jax.Array, Metrics]:
        actions = apply(state.actor, params, batch.observations)
        outputs = apply(state.critic, state.critic.params, batch.observations, actions)
        q = self.critic.value(outputs)[0]  # TD3 follows the first critic
        loss, lmbda = td3_bc_actor_loss(q, actions, batch.actions, self.alpha)
        return loss, {"lambda": lmbda, "bc_mse": ((actions - batch.actions) ** 2).mean()}

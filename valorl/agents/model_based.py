"""SAC on real and imagined data: the base of MBPO, MOPO and MOBILE.

A model-based agent is SAC (`valorl.agents.sac`) whose state also holds a learned dynamics
model (`state.model`, a `valorl.models.DynamicsModel`) and whose batches have a fixed layout:
the first `rollouts.real_rows(batch_size)` rows are real transitions and the rest come from the
model buffer of imagined rollouts. The run loop fits the model, imagines the rollouts with the
agent's policy (`valorl.training.model_based`) and draws the batches; the agent says how
imagined rewards are penalised (`rollout_penalty`: none here, MOPO's uncertainty) and may
change its critic's target on imagined rows (MOBILE). The offline agents (MOPO, MOBILE) take
OfflineRL-Kit's SAC settings (`OfflineModelBasedSAC`).

The critic can be kept smooth in the state as Zheng et al. (ICLR 2023) propose instead of an
ensemble: spectral normalisation (`--spectral-norm true`) or the adversarial robust loss on the
imagined rows (`robust_coef` > 0; `valorl.critics.lipschitz`), perturbing states in the
model's standardised units. Every update logs `critic/lipschitz`, the largest ‖∇_s Q‖ over
its last batch.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from valorl.agents.base import LRSchedule, Metrics, Params, Spec, apply
from valorl.agents.sac import SAC, SACState
from valorl.config import added_later
from valorl.critics.lipschitz import lipschitz_estimate, robust_loss
from valorl.data.dataset import Batch
from valorl.errors import ValorlError
from valorl.models import DynamicsModel, ModelState, Prediction, Rollouts
from valorl.models.fit import ValueWeights


class ModelBasedState(SACState):
    model: ModelState


@dataclasses.dataclass(frozen=True)
class ModelBasedSAC(SAC):
    """SAC learning from a `real_ratio` share of real rows and imagined rows."""

    model_based: ClassVar[bool] = True

    model: DynamicsModel = DynamicsModel()
    """The dynamics model: members, elites, kind, layers, fitting."""
    rollouts: Rollouts = Rollouts()
    """Imagined data: rollouts per round, length (schedule), rounds kept, real share."""
    robust_coef: float = 0.0
    """λ of the robust Lipschitz loss on imagined rows (0: off)."""
    robust_radius: float = 0.01
    """ε: the largest perturbation of a standardised state coordinate."""
    robust_steps: int = 5
    """k: projected gradient-ascent steps finding the worst perturbation."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.robust_coef < 0 or self.robust_radius < 0 or self.robust_steps < 1:
            raise ValorlError(
                "--robust-coef and --robust-radius must be non-negative and --robust-steps "
                "at least 1"
            )
        if self.robust_coef > 0 and self.real_rows >= self.batch_size:
            raise ValorlError(
                "--robust-coef regularises the critic on imagined rows, and a batch of "
                f"{self.batch_size} at --real-ratio {self.rollouts.real_ratio} has none"
            )

    def init(self, key: jax.Array, spec: Spec) -> ModelBasedState:
        if spec.discrete or len(spec.obs_shape) != 1:
            raise ValorlError(
                f"{self.name} models flat observations and continuous actions; got "
                f"observations of shape {spec.obs_shape}"
                + (" and discrete actions" if spec.discrete else "")
            )
        key_sac, key_model = jax.random.split(key)
        sac = super().init(key_sac, spec)
        model = self.model.init(key_model, spec.obs_shape[0], spec.action_dim)
        return ModelBasedState(
            **{f: getattr(sac, f) for f in sac.__dataclass_fields__}, model=model
        )

    @property
    def real_rows(self) -> int:
        """Real rows at the head of every batch."""
        return self.rollouts.real_rows(self.batch_size)

    def rollout_penalty(self, prediction: Prediction) -> jax.Array:
        """What imagined rewards lose, per row (B,), given every member's prediction: nothing
        (MBPO); MOPO's uncertainty."""
        return jnp.zeros(prediction.reward_mean.shape[1:])

    def q_function(self, state: ModelBasedState, params: Params):
        """(obs, actions) -> every member's Q (members, B) with critic `params`."""
        return lambda obs, actions: self.critic.value(apply(state.critic, params, obs, actions))

    def critic_loss(
        self, params: Params, state: ModelBasedState, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        key_sac, key_robust = jax.random.split(key)
        loss, metrics = super().critic_loss(params, state, batch, key_sac)
        q = self.q_function(state, params)
        if self.robust_coef > 0:
            imagined = jax.tree.map(lambda x: x[self.real_rows :], batch)
            scale = state.model.input_std[: batch.observations.shape[-1]]
            robust = robust_loss(
                q,
                imagined.observations,
                imagined.actions,
                self.robust_radius,
                self.robust_steps,
                scale,
                key_robust,
            )
            loss = loss + self.robust_coef * robust
            metrics["robust"] = robust
        return loss, metrics

    def update(
        self, state: ModelBasedState, batch: Batch, key: jax.Array
    ) -> tuple[ModelBasedState, Metrics]:
        """SAC's update (`sac_update`), and the updated critic's Lipschitz estimate on the last
        batch."""
        state, metrics = self.sac_update(state, batch, key)
        last = batch if self.utd == 1 else jax.tree.map(lambda x: x[-1], batch)
        q = self.q_function(state, state.critic.params)
        metrics["critic/lipschitz"] = lipschitz_estimate(q, last.observations, last.actions)
        return state, metrics

    def sac_update(
        self, state: ModelBasedState, batch: Batch, key: jax.Array
    ) -> tuple[ModelBasedState, Metrics]:
        """SAC's update: `utd` critic steps, then one actor and temperature step."""
        return super().update(state, batch, key)

    def value_weights(self, state: ModelBasedState) -> ValueWeights:
        """VaGraM's weights: (∂Q_i(s', a')/∂s')² averaged over the critic's members, online and
        target, at a' = tanh μ(s') held fixed, as its reference (`use_all_vf`, the action
        detached)."""

        def q_sums(params, obs, actions):  # (members,): each member's Q summed over rows
            return self.critic.value(apply(state.critic, params, obs, actions)).sum(axis=-1)

        def weights(next_obs):
            flat = next_obs.reshape(-1, next_obs.shape[-1])
            actions = self.act(state, flat, None, deterministic=True)
            grads = [  # with respect to the observations only: the actions are held fixed
                jax.jacrev(q_sums, argnums=1)(params, flat, actions)  # (members, rows, S)
                for params in (state.critic.params, state.target_critic)
            ]
            return jnp.square(jnp.concatenate(grads)).mean(axis=0).reshape(next_obs.shape)

        return weights


@dataclasses.dataclass(frozen=True)
class OfflineModelBasedSAC(ModelBasedSAC):
    """A model-based agent trained offline, with OfflineRL-Kit's SAC settings for MOPO and
    MOBILE (run_mopo.py, run_mobile.py): actor and temperature learning rates 1e-4, the
    actor's decayed to zero over training by a cosine, its log σ clipped below at −5."""

    actor_lr: float = 1e-4
    """Actor learning rate (OfflineRL-Kit's 1e-4)."""
    actor_lr_schedule: LRSchedule = added_later("cosine", before="constant")
    """The actor's learning rate decayed to zero over training (OfflineRL-Kit), or held."""
    temperature_lr: float = 1e-4
    """Learning rate of log α (OfflineRL-Kit's 1e-4)."""
    policy_log_std_min: float = added_later(-5.0, before=-20.0)
    """Lower clip of the actor's log σ: OfflineRL-Kit's −5 (its `TanhDiagGaussian`), where
    SAC keeps RLPD's −20."""


def member_std_norm(prediction: Prediction) -> jax.Array:
    """‖σ_i(s, a)‖₂ of every member's predicted standard deviation over (s', r): (members, B)."""
    std = jnp.concatenate([prediction.next_obs_std, prediction.reward_std[..., None]], axis=-1)
    return jnp.sqrt(jnp.square(std).sum(axis=-1))

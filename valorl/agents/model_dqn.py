"""DQN trained only on rollouts of a model: the "simple model" and "perfect model" agents of
Young, Ramesh, Kirsch & Schmidhuber, "The Benefits of Model-Based Generalization in
Reinforcement Learning" (ICML 2023, Sec. 5).

Every update draws `batch_size` (32) observations from the replay buffer, rolls each out for
`rollout_length` (10) steps in a model with actions drawn from softmax(Q(s, ·)/temperature),
and takes one DQN step on the 32 x 10 = 320 imagined transitions: as many transitions per Q
update as the experience-replay baseline's batch of 320 (DQN with `batch_size 320`), so the
three arms differ only in where the transitions come from. Q never trains on replayed
transitions themselves.

A model step gives, besides the next observation and reward, the probability c_k that the
episode continues. The k-th transition of a rollout is weighted by the probability that the
rollout is still inside its episode, w_k = c_1···c_{k−1} (w_1 = 1), and its target discounts
by c_k:

    L(θ) = mean_k,b  w_k·(Q_θ(s_k, a_k) − (r_k + γ·c_k·max_a Q̂(s_{k+1}, a)))²

(the authors' code: kenjyoung/Model_Generalization_Code_supplement, train_simple_model_DQN.py
and train_perfect_model_DQN.py; valorl's code is its own). The loss and target are DQN's
(`valorl.agents.dqn`) with these weights and continuations; the defaults are the paper's (plain
DQN targets, squared error, γ 0.9, target copy every 100 updates, three 200-unit ELU layers,
Adam ε 1e-5; the step size and temperature of its ProcMaze high-data table).

- `model_dqn`: the model is learned (`valorl.models.binary`: next-observation bits, Gaussian
  reward, Bernoulli continuation), one NLL step on the same 32 replayed transitions before each
  Q step; c_k is its predicted continuation probability.
- `perfect_model_dqn`: the model is the true environment `simulator` (a JAX environment id with
  `state_from_obs`, e.g. "ProcMaze-4x4-v0"), stepped from the replayed observation; c_k is
  1 − terminated, so a rollout stops counting after its first true termination. This isolates
  "more data per update" from "a model that generalises".

Differences from the authors' code, stated: the paper's continuing environments (ButtonGrid,
PanFlute) use w_k = 1; here the weights are always the product, which equals 1 wherever the
model predicts no terminations (in a continuing environment it learns c ≈ 1). The authors'
perfect model replays environment states; valorl rebuilds them from observations, which for
the gridworlds describe the state completely.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp

from valorl.agents.base import Metrics, Spec, prefix
from valorl.agents.discrete import require_discrete, softmax_actions
from valorl.agents.dqn import DQN, DQNState
from valorl.config import require_at_least_one
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.envs.gymnax_envs import is_jax_env, make_jax_env
from valorl.errors import ValorlError
from valorl.models.binary import BinaryModel


class ModelDQNState(DQNState):
    model: Any = None
    """The learned model's train state (None for the perfect model)."""


@dataclasses.dataclass(frozen=True)
class RolloutDQN(DQN):
    """DQN whose Q-network trains only on model rollouts from replayed observations; a
    subclass says what one model step is (`model_step`)."""

    rollout_length: int = 10
    """Imagined steps from each replayed observation (the paper: 10)."""
    batch_size: int = 32
    """Replayed observations per update, each the start of a rollout (the paper: 32)."""
    discount: float = 0.9
    target_update_every: int = 100
    hidden_dims: tuple[int, ...] = (200, 200, 200)
    critic: CriticHead = Scalar()
    """Squared TD error, as the paper's agents."""
    ensemble: QEnsemble = QEnsemble(num_qs=1, activation="elu")
    """One Q-network with ELU layers, as the paper's."""
    double_q: bool = False
    exploration: Literal["epsilon", "softmax"] = "softmax"
    adam_eps: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least_one(self, "rollout_length")

    def model_step(
        self, state: Any, obs: jax.Array, actions: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(next observations, rewards, continuation probabilities) of one step from
        observations (B, ...) and actions (B,)."""
        raise NotImplementedError

    def rollouts(self, state: Any, start: jax.Array, key: jax.Array) -> tuple[Batch, jax.Array]:
        """`rollout_length` model steps from each start observation with actions drawn from
        softmax(Q/temperature): a batch of rollout_length x B transitions (step-major; masks
        are the continuations c_k) and their weights w_k = c_1···c_{k−1}."""

        def body(carry, key):
            obs, weight = carry
            act_key, model_key = jax.random.split(key)
            actions = softmax_actions(act_key, self.all_q_values(state, obs), self.temperature)
            next_obs, rewards, continuation = self.model_step(state, obs, actions, model_key)
            row = (obs, actions, rewards, next_obs, continuation, weight)
            return (next_obs, weight * continuation), row

        ones = jnp.ones(start.shape[0])
        keys = jax.random.split(key, self.rollout_length)
        _, rows = jax.lax.scan(body, (start, ones), keys)
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), rows)
        obs, actions, rewards, next_obs, continuation, weights = jax.lax.stop_gradient(flat)
        batch = Batch(obs, actions, rewards, next_obs, continuation, 1.0 - continuation)
        return batch, weights

    def q_on_rollouts(self, state: Any, batch: Batch, key: jax.Array) -> tuple[Any, Metrics]:
        """One DQN step on the rollouts from the batch's observations."""
        rollout_key, q_key = jax.random.split(key)
        rollouts, weights = self.rollouts(state, batch.observations, rollout_key)
        state, metrics = self.q_step(state, rollouts, q_key, weights)
        metrics["rollout/weight"] = weights.mean()
        metrics["rollout/reward"] = rollouts.rewards.mean()
        return state, metrics


@dataclasses.dataclass(frozen=True)
class ModelDQN(RolloutDQN):
    """DQN on rollouts of a learned model of binary observations (the paper's "simple model")."""

    name: ClassVar[str] = "model_dqn"

    critic_lr: float = 2e-4
    temperature: float = 0.8
    model: BinaryModel = BinaryModel()
    """The learned model: its layers, step size and Adam ε."""

    def init(self, key: jax.Array, spec: Spec) -> ModelDQNState:
        q_key, model_key = jax.random.split(key)
        num_actions = require_discrete(self.name, spec)
        model = self.model.init(model_key, spec.obs_shape, num_actions)
        critic = self.create_critic(q_key, spec)
        return ModelDQNState(critic=critic, target_critic=critic.params, model=model)

    def model_step(self, state, obs, actions, key):
        return self.model.sample(state.model, key, obs, actions)

    def update(
        self, state: ModelDQNState, batch: Batch, key: jax.Array
    ) -> tuple[ModelDQNState, Metrics]:
        model, model_metrics = self.model.update(state.model, batch)
        state, metrics = self.q_on_rollouts(state.replace(model=model), batch, key)
        return state, {**metrics, **prefix("model", model_metrics)}


@dataclasses.dataclass(frozen=True)
class PerfectModelDQN(RolloutDQN):
    """DQN on rollouts of the true environment (the paper's "perfect model")."""

    name: ClassVar[str] = "perfect_model_dqn"

    simulator: str = ""
    """Id of the JAX environment rolled out (the run's environment, e.g. ProcMaze-4x4-v0)."""
    critic_lr: float = 1e-4
    temperature: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.simulator:  # checked when the agent initialises (`init`)
            return
        if not is_jax_env(self.simulator):
            raise ValorlError(f"--simulator must name a JAX environment, got {self.simulator!r}")
        if not hasattr(make_jax_env(self.simulator), "state_from_obs"):
            raise ValorlError(
                f"{self.simulator} cannot be stepped from an observation: the perfect model "
                "needs an environment with state_from_obs (the gridworlds)"
            )

    def init(self, key: jax.Array, spec: Spec) -> ModelDQNState:
        if not self.simulator:
            raise ValorlError(
                "perfect_model_dqn needs --simulator, the id of the JAX environment it rolls "
                "out (the run's environment, e.g. ProcMaze-4x4-v0)"
            )
        env = make_jax_env(self.simulator)
        if tuple(spec.obs_shape) != env.obs_shape or spec.num_actions != env.num_actions:
            raise ValorlError(
                f"--simulator {self.simulator} has observations {env.obs_shape} and "
                f"{env.num_actions} actions, the run's environment {tuple(spec.obs_shape)} and "
                f"{spec.num_actions}"
            )
        critic = self.create_critic(key, spec)
        return ModelDQNState(critic=critic, target_critic=critic.params)

    def model_step(self, state, obs, actions, key):
        env = make_jax_env(self.simulator)

        def one(key, obs, action):
            next_obs, _, reward, terminated, _ = env.step(key, env.state_from_obs(obs), action)
            return next_obs, reward, 1.0 - terminated.astype(jnp.float32)

        keys = jax.random.split(key, obs.shape[0])
        next_obs, rewards, continuation = jax.vmap(one)(keys, obs, actions)
        return next_obs.astype(obs.dtype), rewards, continuation

    def update(
        self, state: ModelDQNState, batch: Batch, key: jax.Array
    ) -> tuple[ModelDQNState, Metrics]:
        return self.q_on_rollouts(state, batch, key)

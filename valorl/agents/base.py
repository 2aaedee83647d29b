"""The agent contract and the pieces every agent shares.

An agent is a frozen dataclass of hyperparameters (hashable, so it is a static `jit` argument)
with three pure methods:

    init(key, spec)                    -> state         a pytree of TrainStates and target params
    update(state, batch, key)          -> state, metrics (flat dict "<part>/<name>" -> scalar)
    act(state, obs, key, deterministic) -> actions in [-1, 1]

The library owns everything else: sampling, fusing updates with `lax.scan`, training seeds
together with `vmap`, normalising data, checkpoints and evaluation. An agent sees actions in
[-1, 1], and observations and rewards after the transforms it asks for with
`normalize_observations` and `reward_normalization`.

An update may consume several batches (TD3's delayed actor: `policy_freq` critic steps, then
one actor step). Such an agent sets `batches_per_update > 1` and receives a batch with a
leading axis of that size; training steps are counted in batches, as papers count them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.nets.policies import tanh_gaussian_sample

Metrics = dict[str, jax.Array]
Params = Any


@dataclasses.dataclass(frozen=True)
class Spec:
    """What an agent needs to know when it initialises."""

    obs_shape: tuple[int, ...]
    action_dim: int
    total_updates: int = 1_000_000
    """How many times `update` will be called in training, for learning-rate schedules."""


class Agent(Protocol):
    name: ClassVar[str]
    batch_size: int
    normalize_observations: bool
    reward_normalization: RewardNormalization

    @property
    def batches_per_update(self) -> int: ...

    def init(self, key: jax.Array, spec: Spec) -> Any: ...

    def update(self, state: Any, batch: Batch, key: jax.Array) -> tuple[Any, Metrics]: ...

    def act(
        self, state: Any, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array: ...


class CriticAgent(Agent, Protocol):
    """An agent with a learned Q-function, which value diagnostics, off-policy evaluation and
    adversarial data attacks read."""

    discount: float

    def q_values(self, state: Any, obs: jax.Array, actions: jax.Array) -> jax.Array:
        """Q(s, a) of every ensemble member, shape (members, batch): observations and actions
        in agent units (normalised, actions in [-1, 1]), values in scaled-reward units."""
        ...


class NetState(TrainState):
    """A network's parameters and optimiser, plus its non-parameter variables (`extra`: the
    power-iteration vectors of spectral normalisation, when used)."""

    extra: Any = flax.struct.field(default_factory=dict)
    input_shapes: tuple[tuple[int, ...], ...] = flax.struct.field(pytree_node=False, default=())


def create_train_state(
    module: nn.Module,
    key: jax.Array,
    inputs: tuple[jax.Array, ...],
    tx: optax.GradientTransformation,
) -> NetState:
    """Initialise `module` on example `inputs` and pair it with its optimiser."""
    variables = dict(module.init(key, *inputs))
    params = variables.pop("params")
    return NetState.create(
        apply_fn=module.apply,
        params=params,
        tx=tx,
        extra=variables,
        input_shapes=tuple(x.shape for x in inputs),
    )


def apply(state: NetState, params: Params, *inputs: jax.Array) -> Any:
    """Run a network with the given parameters (its own, a target's, or traced ones)."""
    return state.apply_fn({"params": params, **state.extra}, *inputs)


def grad_step(
    state: NetState, loss_fn: Callable[[Params], tuple[jax.Array, Metrics]]
) -> tuple[NetState, Metrics]:
    """One optimiser step on `loss_fn(params) -> (loss, metrics)`; adds loss and grad norm.

    Afterwards the network's non-parameter variables advance one step with the new parameters
    (one power iteration of spectral normalisation per update, as Miyato et al. do).
    """
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    if state.extra:
        zeros = [jnp.zeros(shape) for shape in state.input_shapes]
        _, extra = state.apply_fn(
            {"params": state.params, **state.extra}, *zeros, mutable=list(state.extra)
        )
        state = state.replace(extra=extra)
    return state, {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}


def polyak(params: Params, target: Params, tau: float) -> Params:
    """target <- tau * params + (1 - tau) * target."""
    return optax.incremental_update(params, target, tau)


def adam(learning_rate: float, cosine_steps: int | None = None) -> optax.GradientTransformation:
    """Adam, optionally with the learning rate decayed to zero over `cosine_steps` (IQL's actor)."""
    if cosine_steps is None:
        return optax.adam(learning_rate)
    return optax.adam(optax.cosine_decay_schedule(learning_rate, cosine_steps))


def prefix(part: str, metrics: Metrics) -> Metrics:
    return {f"{part}/{name}": value for name, value in metrics.items()}


def critic_q_values(agent: Any, state: Any, obs: jax.Array, actions: jax.Array) -> jax.Array:
    """`CriticAgent.q_values` for agents whose state holds the critic as `state.critic` and
    whose head is `agent.critic`: Q(s, a) of every member, shape (members, batch). Agents bind
    it as a method: `q_values = critic_q_values`."""
    return agent.critic.value(apply(state.critic, state.critic.params, obs, actions))


def tanh_gaussian_act(
    agent: Any, state: Any, obs: jax.Array, key: jax.Array, deterministic: bool = True
) -> jax.Array:
    """`act` for a tanh-squashed Gaussian actor in `state.actor` (SAC, CQL, DSAC-T): tanh of the
    mean when deterministic, else a squashed sample. Agents bind it as a method:
    `act = tanh_gaussian_act`."""
    mean, log_std = apply(state.actor, state.actor.params, obs)
    if deterministic:
        return jnp.tanh(mean)
    return tanh_gaussian_sample(key, mean, log_std)[0]

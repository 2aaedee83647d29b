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
one actor step; `valorl.agents.steps`). Such an agent sets `batches_per_update > 1` and receives
a batch with a leading axis of that size; training steps are counted in batches, as papers
count them.

What the library needs to know about an agent beyond these methods it reads from class
attributes the agent declares, never by probing for methods or fields. An agent inherits
`AgentBase` (their defaults) or `CriticAgentBase` (a Q-ensemble, its construction and
`q_values`) and sets only those that differ:

    needs_returns_to_go    every batch carries Monte-Carlo returns-to-go (Cal-QL)
    needs_next_actions     every batch carries the dataset's next actions (ReBRAC); offline only
    has_critic             the agent is a `CriticAgent`: it learns Q and implements `q_values`
    utd_is_hyperparameter  the agent's `utd` field is the run's update-to-data ratio (SAC)
    discrete               the agent acts in a discrete action space (DQN): integer actions
                           in [0, spec.num_actions); otherwise actions in [-1, 1]^action_dim
    return_steps           (a property) n of the n-step returns in its batches (1: one step)
    model_based            the agent learns a dynamics model and learns from imagined rows too
    chunk_length           (a property) h of the action chunks in its batches (1: one action)
    action_chunk           (a property) actions `act` returns per call, executed open-loop
    critic_chunk           (a property) actions its critic's Q scores together (0: no critic;
                           1 for every `CriticAgent`; h for a critic of h-action chunks)

How an agent explores while it collects data is `explore(state, obs, key, env_step)`: by
default a sample of the stochastic policy; DQN overrides it with its epsilon-greedy schedule.

Every agent's state holds its policy network as `state.actor`, which policy export reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from valorl.critics import CriticHead, QEnsemble
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.errors import ValorlError

Metrics = dict[str, jax.Array]
Params = Any


@dataclasses.dataclass(frozen=True)
class Spec:
    """What an agent needs to know when it initialises."""

    obs_shape: tuple[int, ...]
    action_dim: int
    """Numbers per continuous action; 0 for discrete actions."""
    total_updates: int = 1_000_000
    """How many times `update` will be called in training, for learning-rate schedules."""
    num_actions: int | None = None
    """Size of a discrete action space (actions are integers in [0, num_actions)); None for
    continuous actions."""
    goal_dim: int = 0
    """Trailing features of each observation that are a goal (a goal-conditioned run's
    observations are [s, g]); 0 without goals."""

    @property
    def discrete(self) -> bool:
        return self.num_actions is not None


class Agent(Protocol):
    """What the library calls and reads on every agent (see the module docstring)."""

    name: ClassVar[str]
    needs_returns_to_go: ClassVar[bool]
    needs_next_actions: ClassVar[bool]
    separate_actor_goals: ClassVar[bool]
    has_critic: ClassVar[bool]
    utd_is_hyperparameter: ClassVar[bool]
    batch_size: int
    normalize_observations: bool
    reward_normalization: RewardNormalization

    @property
    def batches_per_update(self) -> int: ...

    @property
    def chunk_length(self) -> int: ...

    @property
    def segment_length(self) -> int: ...

    def without_planning(self) -> Agent: ...

    @property
    def action_chunk(self) -> int: ...

    @property
    def critic_chunk(self) -> int: ...

    def init(self, key: jax.Array, spec: Spec) -> Any: ...

    def update(self, state: Any, batch: Batch, key: jax.Array) -> tuple[Any, Metrics]: ...

    def act(
        self, state: Any, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array: ...


class CriticAgent(Agent, Protocol):
    """An agent with a learned Q-function, which value diagnostics, off-policy evaluation and
    adversarial data attacks read; `has_critic` is true exactly for these."""

    discount: float
    critic: CriticHead
    """How Q is represented and trained; its value support is fitted to the data when unset."""

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


def adam(
    learning_rate: float, cosine_steps: int | None = None, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Adam, optionally with the learning rate decayed to zero over `cosine_steps` (IQL's actor);
    `eps` is Adam's ε (DQN-style agents use a large one, see `valorl.agents.dqn`)."""
    if cosine_steps is None:
        return optax.adam(learning_rate, eps=eps)
    return optax.adam(optax.cosine_decay_schedule(learning_rate, cosine_steps), eps=eps)


LRSchedule = Literal["constant", "cosine"]
"""A learning rate held for the whole run, or decayed to zero over it by a cosine."""


def scheduled_adam(
    learning_rate: float, schedule: LRSchedule, total_updates: int
) -> optax.GradientTransformation:
    """Adam at `learning_rate`, held or decayed to zero over `total_updates` by a cosine."""
    return adam(learning_rate, total_updates if schedule == "cosine" else None)


def periodic_copy(params: Params, target: Params, step: jax.Array, period: int) -> Params:
    """target <- params when `step` is a multiple of `period`, else unchanged: DQN's hard
    target update (Mnih et al. 2015). A select, not a `lax.cond`, so it stays one cheap branch
    under a seed `vmap`."""
    copy = jnp.mod(step, period) == 0
    return jax.tree.map(lambda p, t: jnp.where(copy, p, t), params, target)


def prefix(part: str, metrics: Metrics) -> Metrics:
    return {f"{part}/{name}": value for name, value in metrics.items()}


# ---- shared implementations -----------------------------------------------------------------


class AgentBase:
    """The declared capabilities' defaults: what an agent is unless it says otherwise. They are
    class attributes (facts about the algorithm), not dataclass fields (hyperparameters), so
    they are neither parsed from the command line nor written to config.json."""

    batches_per_update: ClassVar[int] = 1
    """Batches one `update` consumes; more than one for delayed actors (TD3's `policy_freq`)."""
    needs_returns_to_go: ClassVar[bool] = False
    """Every batch must carry Monte-Carlo returns-to-go (`Batch.returns_to_go`) at the agent's
    discount, scaled like the rewards: Cal-QL bounds its conservative penalty with them."""
    needs_next_actions: ClassVar[bool] = False
    """Every batch must carry the dataset's action at the next observation
    (`Batch.next_actions`): ReBRAC penalises the bootstrapped action's distance to it. Such an
    agent trains offline only (replay buffers do not keep them)."""
    separate_actor_goals: ClassVar[bool] = False
    """In goal-conditioned training the actor may learn with goals of its own
    (`Batch.actor_observations`, `GoalSampling.actor_goals`): IQL's family."""
    has_critic: ClassVar[bool] = False
    """The agent learns Q and implements `CriticAgent` (`CriticAgentBase` sets it)."""
    utd_is_hyperparameter: ClassVar[bool] = False
    """The agent's own `utd` field sets how many batches (critic steps) one update consumes, so
    a run's update-to-data ratio sets that field instead of repeating updates (SAC, as REDQ and
    RLPD do: `utd` critic steps, then one actor step)."""
    discrete: ClassVar[bool] = False
    """The agent acts in a discrete action space: `act` returns integers in
    [0, spec.num_actions) and batches carry integer actions of shape (batch,)."""

    model_based: ClassVar[bool] = False
    """The agent learns a dynamics model (`state.model`, hyperparameters in its `model` and
    `rollouts` fields) and learns from a mix of real and imagined rows
    (`valorl.agents.model_based`); the run loop fits the model and imagines the rollouts."""

    @property
    def return_steps(self) -> int:
        """n of the n-step transitions the agent learns from: each batch row then carries the
        discounted sum of up to n rewards, the observation it bootstraps from, and in `masks`
        γ^(k−1)·(1 − terminal) for the k rewards summed, so that the one-step target
        r + γ·mask·V(s') is the n-step target (`valorl.data.nstep`). 1 for one-step."""
        return 1

    @property
    def chunk_length(self) -> int:
        """h of the action chunks the agent learns from (Q-chunking): each batch row then holds
        h consecutive actions, shape (h, action_dim), their h-step discounted reward sum and
        bootstrap (as `return_steps`), and `valid` (h,) (`valorl.data.nstep`). 1: one action."""
        return 1

    @property
    def segment_length(self) -> int:
        """Steps of the trajectory segments the agent learns from (a sequence model's context):
        each batch row then holds that many consecutive dataset rows, every field of shape
        (length, ...), and `valid` (length,) (`valorl.data.segments`). 1: single rows."""
        return 1

    @property
    def action_chunk(self) -> int:
        """How many actions one `act` call returns: 1, actions (batch, action_dim); more,
        chunks (batch, action_chunk, action_dim) that evaluation executes open-loop before
        it asks again (`valorl.envs.rollouts.Evaluator`)."""
        return 1

    @property
    def critic_chunk(self) -> int:
        """How many actions the critic's Q scores together: 0 without a critic, 1 for a
        `CriticAgent` (Q(s, a)), h for a critic of h-action chunks (Q-chunking), which
        `has_critic` does not declare because OPE and steering need a one-step Q; value
        diagnostics read any critic of the chunks the agent acts."""
        return 1 if self.has_critic else 0

    def warm_start(self, state: Any, pretrained: Any) -> Any:
        """`state` (freshly initialised) with what it keeps of `pretrained`, the state of a
        run of the same agent: fine-tuning from a pre-training run (`valorl train
        --init-from`). Agents that support it override this."""
        del state, pretrained
        raise ValorlError(f"{self.name} cannot start from another run's parameters")

    def without_planning(self) -> Any:
        """This agent acting without decision-time search (JOWA's beam search), for checks
        that bootstrap from its policy on every row of a dataset (value diagnostics)."""
        return self

    def explore(self, state: Any, obs: jax.Array, key: jax.Array, env_step: jax.Array):
        """The action taken while collecting data at environment step `env_step` (after any
        random warm-up): a sample of the stochastic policy unless the agent says otherwise."""
        return self.act(state, obs, key, deterministic=False)


class CriticAgentBase(AgentBase):
    """Base of the agents with a learned Q-ensemble: its train state is `state.critic`, the
    dataclass fields `critic` (the head), `ensemble`, `hidden_dims` and `critic_lr` define it."""

    has_critic: ClassVar[bool] = True

    critic: CriticHead
    ensemble: QEnsemble
    hidden_dims: tuple[int, ...]
    critic_lr: float

    def create_critic(self, key: jax.Array, spec: Spec) -> NetState:
        """The Q-ensemble's train state: `hidden_dims` torsos with the head's outputs for each
        member, optimised by Adam at `critic_lr`."""
        return create_train_state(
            self.ensemble.network(self.hidden_dims, self.critic.out_dim),
            key,
            (jnp.zeros((1, *spec.obs_shape)), jnp.zeros((1, spec.action_dim))),
            adam(self.critic_lr),
        )

    def critic_outputs(
        self, critic: NetState, params: Params, obs: jax.Array, actions: jax.Array
    ) -> jax.Array:
        """The head's raw outputs at (s, a) of every member, (members, batch, out_dim), with
        the critic's `params` (its own, a target's, or traced ones). Discrete agents read
        them off Q(s, ·) at the integer actions (`valorl.agents.discrete`)."""
        return apply(critic, params, obs, actions)

    def q_values(self, state: Any, obs: jax.Array, actions: jax.Array) -> jax.Array:
        """`CriticAgent.q_values`: Q(s, a) of every member, shape (members, batch)."""
        outputs = self.critic_outputs(state.critic, state.critic.params, obs, actions)
        return self.critic.value(outputs)

"""Value-guided policy steering: re-rank N samples of one policy with another run's critic.

V-GPS ("Steering Your Generalists", Nakamoto, Mees, Kumar & Levine, CoRL 2024, Sec. 4, Eq. 2)
leaves a trained policy untouched and, at every decision, draws N actions (or action chunks)
from it, scores each with an offline-RL critic Q(s, a), and executes the argmax (β = 0) or a
draw from softmax(Q / β). The samples come from the policy, so the critic only ranks actions
inside the data's support and its conservatism does no harm. The selection is
`valorl.critics.selection.choose`, the same operator as Q-chunking's best-of-N extraction.

Conventions here, each one a choice the paper's reference code (nakamotoo/V-GPS) also makes
or that valorl has to make on its own:

- Units. The two runs were trained with their own normalisers (`Normalizer`), so everything
  between them is in ENVIRONMENT units: the policy's samples are mapped to environment actions
  with the policy run's normaliser, then to the critic's [-1, 1] with the critic run's;
  observations are normalised with each run's own statistics. (V-GPS re-normalises the
  generalist's actions from its statistics to the critic's bounds, experiments/eval_vgps.py.)
  The scored action is exactly the executed one (not clipped to the critic's bounds).
- Chunks. A policy with `action_chunk` h > 1 returns (batch, h, action_dim); the one-step
  critic scores the chunk's FIRST action (as V-GPS scores the first action of an Octo chunk)
  and the whole chosen chunk is returned, to be executed open-loop as valorl's chunked agents
  are. V-GPS instead re-chooses at every step and executes Octo's temporal ensemble of its
  recent chunks, so the later actions of a chunk here are never scored.
- Ensemble. Q is the ensemble's minimum by default, as V-GPS's `get_q_values` takes
  (jaxrl_m/agents/continuous/cql.py and gc_iql.py: `jnp.min` over the critics); `"mean"`
  is the option. V-GPS reads its target critic; valorl's `q_values` reads the online one.
- Temperature. Scores are divided by the critic run's reward scale, so Q and β are in the
  environment's return units whatever reward normalisation the critic was trained with.
- Seeds. A policy run's seed i is steered by the critic run's seed i when both runs have the
  same number of seeds, otherwise every policy seed by the critic's first seed. A Python
  callable is one policy, steered by each critic seed in turn (`seed_index` picks which).
- Keys. One decision with key k draws the N samples with `jax.random.split(k, N + 1)[:N]`
  and selects with the last key, so with N = 1 the steered action is the policy's own sample
  with key `split(k, 2)[0]`.

Only continuous actions: a discrete policy or critic is refused. A deterministic policy (valorl's
`bc` is a mean-squared-error regressor) gives N identical samples, so steering it changes
nothing; steer a stochastic one (e.g. IQL's Gaussian actor with `--beta 0`, which is
Gaussian maximum-likelihood BC).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from valorl.agents import Agent
from valorl.critics.selection import choose
from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.eval.policy import Policy, load_policy, observation_batch
from valorl.training.evaluation import fresh_noise
from valorl.training.fused import compiled_cache

DEFAULT_SAMPLES = 10
"""N, as the reference's default (nakamotoo/V-GPS, experiments/eval_vgps.py `num_samples`)."""
DEFAULT_BETA = 1.0
"""β, as the reference's default action temperature ("the beta value in the paper",
eval_vgps.py `action_temp`): a draw from softmax(Q); 0 takes the argmax, which at large N
leans on the critic's errors (BENCHMARKS.md, V-GPS)."""
Reduction = Literal["min", "mean"]
REDUCTIONS: tuple[str, ...] = ("min", "mean")
SampleFn = Callable[[np.ndarray, jax.Array], Any]
"""A policy as a Python callable: `(observations (batch, *obs_shape), key) -> environment
actions (batch, action_dim)`, or chunks (batch, h, action_dim)."""


def critic_scores(
    agent: Agent,
    state: Any,
    normalizer: Normalizer,
    obs: jax.Array,
    actions: jax.Array,
    reduction: Reduction = "min",
) -> jax.Array:
    """Q of each of N environment actions per observation, in environment return units.

    `obs` (batch, *obs_shape) and `actions` (batch, N, action_dim) are in environment units;
    returns (batch, N): the ensemble reduced by `reduction`, divided by the reward scale.
    """
    batch, n = actions.shape[:2]
    unit_obs = jnp.repeat(normalizer.observations(obs), n, axis=0)
    unit_actions = normalizer.actions_to_unit(actions.reshape(batch * n, -1))
    q = agent.q_values(state, unit_obs, unit_actions)  # (members, batch * n)
    q = jnp.min(q, axis=0) if reduction == "min" else jnp.mean(q, axis=0)
    return (q / normalizer.reward_scale).reshape(batch, n)


def steer_candidates(
    critic: Agent,
    state: Any,
    normalizer: Normalizer,
    obs: jax.Array,
    candidates: jax.Array,
    beta: jax.Array,
    key: jax.Array,
    reduction: Reduction,
) -> jax.Array:
    """The chosen candidate per observation: `candidates` (batch, N, action_dim) or chunks
    (batch, N, h, action_dim) in environment units, scored at their first action."""
    first = candidates[:, :, 0] if candidates.ndim == 4 else candidates
    scores = critic_scores(critic, state, normalizer, obs, first, reduction)
    return choose(candidates, scores, beta, key)


def sample_candidates(
    agent: Agent, state: Any, normalizer: Normalizer, obs: jax.Array, keys: jax.Array
) -> jax.Array:
    """N stochastic samples of a run's policy with N `keys`, vmapped: environment actions
    (batch, N, action_dim) or chunks (batch, N, h, action_dim)."""
    unit_obs = normalizer.observations(obs)
    sample = lambda key: normalizer.actions_to_env(agent.act(state, unit_obs, key, False))
    return jnp.moveaxis(jax.vmap(sample)(keys), 0, 1)


@compiled_cache
def steered_run_policy(policy: Agent, critic: Agent, samples: int, reduction: Reduction):
    """jit(vmap over seeds) of one steered decision of a run's policy:
    `(policy_states, policy_normalizer, critic_states, critic_normalizer, obs, keys, beta)`,
    `obs` (seeds, batch, *obs_shape) in environment units, `keys` (seeds,) -> environment
    actions (seeds, batch, action_dim) or chunks (seeds, batch, h, action_dim). Sampling and
    scoring are one compiled call."""

    def one_seed(p_state, p_norm, c_state, c_norm, obs, key, beta):
        keys = jax.random.split(key, samples + 1)
        candidates = sample_candidates(policy, p_state, p_norm, obs, keys[:samples])
        return steer_candidates(critic, c_state, c_norm, obs, candidates, beta, keys[-1], reduction)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, 0, None, 0, 0, None)))


@compiled_cache
def steered_candidates(critic: Agent, reduction: Reduction):
    """jit(vmap over critic seeds) of `steer_candidates` for samples drawn outside (a Python
    callable's): `(critic_states, critic_normalizer, obs, candidates, keys, beta)`."""

    def one_seed(c_state, c_norm, obs, candidates, key, beta):
        return steer_candidates(critic, c_state, c_norm, obs, candidates, beta, key, reduction)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, 0, 0, 0, None)))


@dataclasses.dataclass
class SteeredPolicy:
    """A policy steered by another run's critic: `steered(obs)` returns environment actions
    (or chunks), like `valorl.eval.policy.Policy`. Build it with `steer`."""

    source: Policy | SampleFn
    """The steered policy: a loaded run, or a Python callable (`SampleFn`)."""
    critic: Policy
    """The critic run (its agent has a critic)."""
    samples: int
    beta: float
    reduction: Reduction = "min"
    seed: int = 0
    """Seed of the key stream used when a call passes no key."""
    _calls: int = dataclasses.field(default=0, init=False, repr=False)
    _picked: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    @property
    def seeds(self) -> list[int]:
        """The steered policy's seeds: the policy run's, or the critic's for a callable."""
        return self.source.seeds if isinstance(self.source, Policy) else self.critic.seeds

    @property
    def critic_indices(self) -> np.ndarray:
        """The critic seed that steers each of `seeds` (see the module docstring)."""
        n, c = len(self.seeds), len(self.critic.seeds)
        return np.arange(n) if n == c or not isinstance(self.source, Policy) else np.zeros(n, int)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.critic.obs_shape

    def __call__(self, obs: Any, seed_index: int = 0, key: jax.Array | None = None) -> np.ndarray:
        """Steered environment actions for one observation or a batch of them, with seed
        `seed_index`'s policy and critic; `key` defaults to the next key of this object's own
        stream."""
        batch, single, seed_index = observation_batch(obs, self.obs_shape, seed_index, self.seeds)
        key = self._next_key() if key is None else key
        actions = self.act_seeds(batch[None], key[None], [seed_index])[0]
        return actions[0] if single else actions

    def act_seeds(
        self, obs: np.ndarray, keys: jax.Array, seed_indices: list[int] | None = None
    ) -> np.ndarray:
        """One steered decision for several seeds at once: `obs` (seeds, batch, *obs_shape),
        `keys` (seeds,) -> (seeds, batch, action_dim) or chunks; `seed_indices` (default:
        all) picks the seeds, in the order of `obs`."""
        indices = tuple(range(len(self.seeds)) if seed_indices is None else seed_indices)
        policy_states, critic_states = self._states(indices)
        beta = jnp.asarray(self.beta, jnp.float32)
        critic, norm = self.critic.agent, self.critic.normalizer
        if isinstance(self.source, Policy):
            step = steered_run_policy(self.source.agent, critic, self.samples, self.reduction)
            out = step(
                policy_states, self.source.normalizer,
                critic_states, norm, jnp.asarray(obs), keys, beta,
            )  # fmt: skip
            return np.asarray(out)
        candidates, select_keys = [], []
        for s in range(len(indices)):  # a callable is one policy: sample it per seed's key
            keys_s = jax.random.split(keys[s], self.samples + 1)
            drawn = [self._callable_actions(obs[s], k) for k in keys_s[:-1]]
            candidates.append(np.stack(drawn, axis=1))
            select_keys.append(keys_s[-1])
        step = steered_candidates(critic, self.reduction)
        return np.asarray(
            step(critic_states, norm, jnp.asarray(obs), np.stack(candidates),
                 jnp.stack(select_keys), beta)
        )  # fmt: skip

    def _states(self, indices: tuple[int, ...]) -> tuple[Any, Any]:
        """The policy's and the critic's states of these seeds, gathered once (a state has
        many leaves, and a gather per leaf at every environment step would dominate)."""
        if indices not in self._picked:
            pick = lambda states, idx: jax.tree.map(lambda x: x[np.asarray(idx)], states)
            policy = pick(self.source.states, indices) if isinstance(self.source, Policy) else None
            critic = pick(self.critic.states, self.critic_indices[list(indices)])
            self._picked[indices] = (policy, critic)
        return self._picked[indices]

    def _callable_actions(self, obs: np.ndarray, key: jax.Array) -> np.ndarray:
        """One sample of the callable policy, checked: (batch, action_dim) or chunks."""
        actions = np.asarray(self.source(obs, key), np.float32)
        action_dim = self.critic.normalizer.action_low.shape[-1]
        if (
            actions.ndim not in (2, 3)
            or len(actions) != len(obs)
            or actions.shape[-1] != action_dim
        ):
            raise ValorlError(
                f"the policy callable returned actions of shape {actions.shape} for "
                f"{len(obs)} observations; the critic scores actions of {action_dim} numbers: "
                "return (batch, action_dim), or chunks (batch, h, action_dim)"
            )
        return actions

    def _next_key(self) -> jax.Array:
        """The next key of this object's own stream, fresh at every call."""
        self._calls += 1
        return jax.random.fold_in(jax.random.key(self.seed), self._calls - 1)

    def episode_act(self, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
        """`act(obs)` for `Evaluator`: every seed steered at once, with new keys at every
        decision (`fresh_noise`) from a stream seeded by `seed`."""
        return fresh_noise(self.act_seeds, jax.random.split(jax.random.key(seed), len(self.seeds)))


def steer(
    policy: str | os.PathLike | Policy | SampleFn,
    critic: str | os.PathLike | Policy,
    *,
    samples: int = DEFAULT_SAMPLES,
    beta: float = DEFAULT_BETA,
    reduction: Reduction = "min",
    seed: int = 0,
) -> SteeredPolicy:
    """`policy` steered by `critic` (V-GPS): at each decision draw `samples` actions or chunks
    from the policy, score them (the first action of a chunk) with the critic, and take the
    argmax (`beta` 0) or a draw from softmax(Q / beta), Q in environment return units.

    `policy` is a run directory, a loaded `Policy`, or a callable `(obs, key) -> environment
    actions`; `critic` is a run directory (or loaded run) of an agent with a critic.
    `reduction` combines the critic's ensemble: "min" (V-GPS) or "mean".
    """
    if samples < 1:
        raise ValorlError(f"--samples must be at least 1, got {samples}")
    if not beta >= 0:
        raise ValorlError(f"--beta must be at least 0 (0: argmax), got {beta}")
    if reduction not in REDUCTIONS:
        raise ValorlError(f"the reduction must be one of {', '.join(REDUCTIONS)}, got {reduction}")
    critic_name = str(critic) if not isinstance(critic, Policy) else critic.agent.name
    critic = critic if isinstance(critic, Policy) else load_policy(critic)
    if not critic.agent.has_critic:
        raise ValorlError(
            f"{critic_name} cannot steer: its agent ({critic.agent.name}) has no critic; "
            "use a run of an agent with one (iql, cql, calql, td3_bc, sac, ...)"
        )
    if critic.agent.chunk_length > 1:
        raise ValorlError(
            f"{critic_name} has a critic over chunks of {critic.agent.chunk_length} actions; "
            "steering scores one action with a one-step critic"
        )
    if isinstance(policy, (str, os.PathLike)):
        policy = load_policy(policy)
    elif not isinstance(policy, Policy) and not callable(policy):
        raise ValorlError(
            f"cannot steer a {type(policy).__name__}: pass a run directory, a Policy or a "
            "callable (obs, key) -> actions"
        )
    for name, run in (("the critic", critic), ("the policy", policy)):
        if isinstance(run, Policy) and (run.num_actions is not None or run.agent.discrete):
            raise ValorlError(
                f"{name} acts with discrete actions; steering supports continuous actions only"
            )
    if isinstance(policy, Policy):
        p, c = policy.normalizer, critic.normalizer
        if p.obs_mean.shape != c.obs_mean.shape:
            raise ValorlError(
                f"the policy sees observations of shape {tuple(p.obs_mean.shape)}, the critic "
                f"of shape {tuple(c.obs_mean.shape)}: steer with a critic of the same task"
            )
        if p.action_low.shape != c.action_low.shape:
            raise ValorlError(
                f"the policy acts with {p.action_low.shape[-1]} numbers per action, the critic "
                f"scores {c.action_low.shape[-1]}: steer with a critic of the same task"
            )
    return SteeredPolicy(policy, critic, samples, float(beta), reduction, seed)

"""The model-based parts of a run: fitting every seed's dynamics model, imagining rollouts into
its model buffer, and the fused offline chunk that alternates the two with updates.

For a model-based agent (`agent.model_based`; `valorl.agents.model_based`) the loop keeps one
model buffer per seed beside the agent states (and in the checkpoint). Offline (MOPO, MOBILE)
the models are fitted once on the dataset before the first update; each offline chunk is then a
`lax.scan` over rounds of [rollouts from dataset states with the current policy -> the model
buffer, `rollout_every` updates on `ModelMix` batches]. Online (MBPO) the environment phase,
every `rollout_every` environment steps, refits each seed's model on its replay buffer
(`refit_on_replay`), then imagines a round of rollouts from replayed states
(`imagine_from_replay`): two calls, so that each is timed.

A rollout ends where the environment's known termination rule (`valorl.models.termination`,
applied in environment units) or else the model's learned classifier says so.
"""

from __future__ import annotations

from typing import Any

import jax

from valorl.agents import Agent
from valorl.data import replay
from valorl.data.dataset import Batch, sample_batch
from valorl.data.replay import ReplayBuffer
from valorl.data.transforms import Normalizer
from valorl.models import add_valid, fit, rollout, termination_rule, termination_test
from valorl.training.fused import compiled_cache, over_seeds, scan_updates
from valorl.training.sources import ModelMix, dataset_source

FIT_KEYS = 0xF17
"""Tag folded into a seed's key for the keys of model fitting."""
ROLLOUT_KEYS = 0x6011
"""Tag folded into a seed's key for the keys of online rollouts."""
VAGRAM_MSE_STEPS = 1000
"""VaGraM's reference adds the plain squared error to its model loss for the first MBPO epoch
(1000 environment steps, `mbrl/algorithms/mbpo.py`: `add_mse`), while the critic whose
gradients weight the loss is still close to its random start."""


def fit_model(agent: Agent, state: Any, rows: Batch, size: jax.Array, key: jax.Array):
    """One seed's model refitted on the first `size` of `rows` (with VaGraM's weights from the
    agent's current critic when the model's loss asks for them, and the plain squared error
    too while the critic has learned for fewer than `VAGRAM_MSE_STEPS` environment steps)."""
    weights, plain = None, False
    if agent.model.model_loss == "vagram":
        weights = agent.value_weights(state)
        plain = state.critic.step < VAGRAM_MSE_STEPS * agent.utd
    model, metrics = fit(agent.model, state.model, rows, size, key, weights, plain)
    return state.replace(model=model), {f"model/{k}": v for k, v in metrics.items()}


def imagine(
    agent: Agent,
    state: Any,
    buffer: ReplayBuffer,
    start_obs: jax.Array,
    key: jax.Array,
    length: jax.Array,
    normalizer: Normalizer,
    env_id: str | None,
) -> tuple[ReplayBuffer, dict[str, jax.Array]]:
    """One round of rollouts of `length` from `start_obs` with the agent's sampling policy,
    added to one seed's model buffer."""
    terminated = termination_test(termination_rule(env_id), normalizer.observations_to_env)
    rows, valid, metrics = rollout(
        agent.model,
        state.model,
        lambda obs, k: agent.act(state, obs, k, deterministic=False),
        start_obs,
        key,
        length,
        agent.rollouts.rollout_length,
        terminated,
        agent.rollout_penalty,
    )
    return add_valid(buffer, rows, valid), {f"rollout/{k}": v for k, v in metrics.items()}


@compiled_cache
def fit_on_dataset(agent: Agent, num_seeds: int):
    """jit(vmap): `(states, keys, data) -> (states, metrics)`: every seed's model fitted to all
    rows of the dataset (shared)."""

    def one_seed(state, key, data):
        key = jax.random.fold_in(key, FIT_KEYS)
        return fit_model(agent, state, data, data.rewards.shape[0], key)

    return over_seeds(one_seed, (0, 0, None), num_seeds, donate=(0,))


@compiled_cache
def offline_model_chunk(agent: Agent, rounds: int, num_seeds: int, env_id: str | None):
    """jit(vmap): `(states, keys, model_buffers, data, normalizer) -> (states, keys,
    model_buffers, metrics)`: `rounds` × [rollouts from dataset states, `rollout_every` updates
    on batches of dataset rows and imagined rows]."""
    settings = agent.rollouts
    source = ModelMix(real=dataset_source(agent), real_rows=agent.real_rows)

    def one_seed(state, key, buffer, data, normalizer):
        def one_round(carry, _):
            state, key, buffer = carry
            key, key_start, key_rollout = jax.random.split(key, 3)
            start = sample_batch(data, key_start, settings.rollout_batch).observations
            length = settings.rollout_length  # the growing schedule is online only
            buffer, imagined = imagine(
                agent, state, buffer, start, key_rollout, length, normalizer, env_id
            )
            state, key, metrics = scan_updates(
                agent, source, settings.rollout_every, state, key, (None, buffer), data
            )
            return (state, key, buffer), {**metrics, **imagined}

        (state, key, buffer), metrics = jax.lax.scan(
            one_round, (state, key, buffer), None, length=rounds
        )
        return state, key, buffer, jax.tree.map(lambda x: x.mean(), metrics)

    return over_seeds(one_seed, (0, 0, 0, None, None), num_seeds, donate=(0, 1, 2))


@compiled_cache
def refit_on_replay(agent: Agent, num_seeds: int):
    """jit(vmap): `(states, keys, replay_buffers, env_step) -> (states, metrics)`: every seed's
    model refitted on its replay buffer (MBPO's model step, every `rollout_every` environment
    steps)."""

    def one_seed(state, key, buffer, env_step):
        key = jax.random.fold_in(jax.random.fold_in(key, FIT_KEYS), env_step)
        return fit_model(agent, state, buffer.data, buffer.size, key)

    return over_seeds(one_seed, (0, 0, 0, None), num_seeds, donate=(0,))


@compiled_cache
def imagine_from_replay(agent: Agent, num_seeds: int, env_id: str | None):
    """jit(vmap): `(states, keys, replay_buffers, model_buffers, normalizer, env_step) ->
    (model_buffers, metrics)`: one round of rollouts from replayed states at the schedule's
    length into every seed's model buffer."""
    settings = agent.rollouts

    def one_seed(state, key, buffer, model_buffer, normalizer, env_step):
        key = jax.random.fold_in(jax.random.fold_in(key, ROLLOUT_KEYS), env_step)
        key_start, key_rollout = jax.random.split(key)
        start = replay.sample(buffer, key_start, settings.rollout_batch).observations
        length = settings.length_at(env_step)
        return imagine(agent, state, model_buffer, start, key_rollout, length, normalizer, env_id)

    return over_seeds(one_seed, (0, 0, 0, 0, None, None), num_seeds, donate=(3,))

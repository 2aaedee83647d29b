"""How well a run's learned dynamics model predicts held-out episodes, one and several steps
ahead.

One-step error is what the model was fitted to; the error of open-loop predictions k steps
ahead (the model fed its own predictions and the logged actions) is what a rollout of length k
meets, and its growth with k is why MBPO keeps rollouts short (Janner et al. 2019, Sec. 4.2,
Fig. 3). The prediction is the mean over the elites of their means, in the environment's
units; errors are mean squared errors over observation dimensions, per seed and per k, on
held-out episodes (`valorl train --holdout`) when there are any, else on the training ones.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from valorl.data.dataset import Dataset
from valorl.data.transforms import Normalizer
from valorl.models import DynamicsModel

MAX_STARTS = 10_000
"""Start rows at most (the first ones), which bounds the cost on large datasets."""


def model_diagnostics(
    model: DynamicsModel,
    states: Any,
    normalizer: Normalizer,
    data: Dataset,
    horizon: int = 5,
    split: str = "heldout",
) -> dict[str, Any]:
    """k-step open-loop errors (k = 1..`horizon`) of every seed's model (`states`: the
    seed-stacked `ModelState`) on `data`'s episodes, and the one-step reward error."""
    n = min(len(data), MAX_STARTS)
    batch = normalizer.batch(data.to_batch())
    stop = np.empty(len(data), np.int64)  # first row after each row's episode
    for s in data.episode_slices():
        stop[s] = s.stop
    rows = np.arange(n)[:, None] + np.arange(horizon)[None]  # (starts, k)
    valid = rows < stop[:n, None]
    rows = np.minimum(rows, len(data) - 1)
    take = lambda x: jnp.asarray(np.asarray(x)[rows])
    obs_error, reward_error = _errors(model)(
        states,
        normalizer,
        batch.observations[:n],
        take(batch.actions),
        take(batch.next_observations),
        batch.rewards[:n],
    )
    valid_k = valid.sum(axis=0)
    mse = (np.asarray(obs_error) * valid[None]).sum(axis=1) / np.maximum(valid_k, 1)
    scale = float(normalizer.reward_scale)
    return {
        "split": split,
        "episodes": len(data.episode_slices()),
        "horizon": horizon,
        "starts": valid_k.tolist(),
        "obs_mse": mse.tolist(),
        "reward_mse": (np.asarray(reward_error).mean(axis=1) / scale**2).tolist(),
    }


@functools.cache
def _errors(model: DynamicsModel):
    """jit(vmap over seeds): squared errors (starts, k) of open-loop predictions, and the
    one-step squared reward errors (starts,)."""

    def one_seed(state, normalizer, obs, actions, next_obs, rewards):
        mean = lambda o, a: model.predict(state, o, a)

        def step(o, inputs):
            a, target = inputs
            p = mean(o, a)
            prediction = p.next_obs_mean[state.elites].mean(axis=0)
            to_env = normalizer.observations_to_env
            error = jnp.square(to_env(prediction) - to_env(target)).mean(axis=-1)
            return prediction, error

        _, errors = jax.lax.scan(step, obs, (actions.swapaxes(0, 1), next_obs.swapaxes(0, 1)))
        reward = model.predict(state, obs, actions[:, 0]).reward_mean[state.elites].mean(axis=0)
        return errors.T, jnp.square(reward - rewards)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None, None, None, None)))

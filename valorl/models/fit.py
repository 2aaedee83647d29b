"""Fitting a dynamics model to transitions: a held-out split, early stopping, elites.

MBPO's procedure (Janner et al. 2019; its `BNN.train`): hold out a random `model_holdout` share
of the rows (at most `model_max_holdout`); standardise inputs with the training rows' statistics
(and targets too: valorl's choice, so that one learning rate and one held-out error serve every
output; MBPO and OfflineRL-Kit standardise inputs only, so their elites are ranked by raw
errors); give every member its own bootstrap resample of the training rows (as many rows, drawn
with replacement, so that members differ by their data as well as their initialisation) and
train it on minibatches of that resample, an epoch being one pass worth of minibatches over the
training rows; after each epoch measure each member's held-out error and keep a snapshot of its
parameters when the error improved by more than 1%; stop when no member improved for
`model_patience` epochs (or at `model_max_epochs`), restore every member's best snapshot, and
make the `model_elites` members with the lowest held-out error the elites. Fitting again later
(MBPO refits every 250 environment steps) continues from the current parameters and optimiser.

The rows come as a fixed-size `Batch` of which the first `size` are real (a replay buffer fills
in that order), so the same compiled fit serves a growing buffer; it is a pure function of
arrays and vmaps over seeds (a `lax.while_loop` whose seeds stop at different epochs).

`value_weights` turns the loss into VaGraM's (Voelcker et al., "Value Gradient weighted
Model-Based Reinforcement Learning", ICLR 2022, the diagonal bound of the value-aware loss):
each next-state dimension's squared error is weighted by the square of the value function's
gradient along it at the observed next state, g_d² = (∂V/∂s'_d)², so the model spends its
capacity on the directions the value changes along. As its reference code (pairlab/vagram,
`mbrl/models/vaml_mlp.py`), the loss is (1/S)·Σ_d g_d²·e_d² + e_r² in the data's units (e the
error of next state and reward): on standardised targets that is the weight g_d²·σ_d² for
dimension d and S·σ_r² for the reward. `plain_mse` adds the unweighted squared error of the
standardised targets (the reference adds plain MSE while the critic is young).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from valorl.data.dataset import Batch
from valorl.models.dynamics import DynamicsModel, ModelState

ValueWeights = Callable[[jax.Array], jax.Array]
"""Next observations (..., S) -> VaGraM's weights g² at them (..., S): squared value gradients
in the data's units."""


def _moments(x: jax.Array, valid: jax.Array, size: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation of the valid rows of `x` (a constant dimension gets 1, as
    MBPO's scaler does)."""
    w = valid[:, None].astype(x.dtype)
    mean = (w * x).sum(axis=0) / size
    std = jnp.sqrt((w * jnp.square(x - mean)).sum(axis=0) / size)
    return mean, jnp.where(std < 1e-6, 1.0, std)


def bootstrap(key: jax.Array, members: int, n: int, low: jax.Array, high: jax.Array) -> jax.Array:
    """(members, n) draws with replacement from [low, high): member m's resample is the first
    high − low of its row (`n` is a static bound on high − low)."""
    return jax.random.randint(key, (members, n), low, high, jnp.int32)


def vagram_weights(
    squared_grads: jax.Array, target_std: jax.Array, plain_mse: jax.Array | bool = False
) -> jax.Array:
    """VaGraM's weights of each standardised target (next-state change, then reward) from the
    squared value gradients g² (..., S) (module docstring): g_d²·σ_d² for the next state,
    S·σ_r² for the reward, each + 1 with `plain_mse`."""
    state_w = squared_grads * jnp.square(target_std[:-1])
    reward_w = jnp.full_like(state_w[..., :1], state_w.shape[-1] * target_std[-1] ** 2)
    w = jnp.concatenate([state_w, reward_w], axis=-1)
    return w + jnp.asarray(plain_mse, w.dtype)


def fit(
    model: DynamicsModel,
    state: ModelState,
    data: Batch,
    size: jax.Array | int,
    key: jax.Array,
    value_weights: ValueWeights | None = None,
    plain_mse: jax.Array | bool = False,
) -> tuple[ModelState, dict[str, jax.Array]]:
    """Fit `state` to the first `size` rows of `data` (one-step transitions; `masks` 0 marks a
    termination). Returns the fitted state and metrics: epochs run, the elites' mean held-out
    error and the last epoch's training loss."""
    n = data.rewards.shape[0]
    size = jnp.asarray(size, jnp.int32)
    valid = jnp.arange(n) < size
    obs = data.observations.reshape(n, -1).astype(jnp.float32)
    next_obs = data.next_observations.reshape(n, -1).astype(jnp.float32)
    inputs = jnp.concatenate([obs, data.actions.reshape(n, -1)], axis=-1)
    targets = jnp.concatenate([next_obs - obs, data.rewards[:, None]], axis=-1)
    terminals = 1.0 - data.masks

    key_split, key_bootstrap, key_train = jax.random.split(key, 3)
    order = jnp.argsort(jnp.where(valid, jax.random.uniform(key_split, (n,)), 2.0))
    num_holdout = jnp.minimum(
        model.model_max_holdout, jnp.floor(model.model_holdout * size).astype(jnp.int32)
    )
    num_holdout = jnp.clip(num_holdout, 1, size - 1)
    # the statistics of the training rows: the valid rows after the held-out ones in `order`
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    train = valid & (rank >= num_holdout)
    input_mean, input_std = _moments(inputs, train, size - num_holdout)
    target_mean, target_std = _moments(targets, train, size - num_holdout)
    state = state.replace(
        input_mean=input_mean, input_std=input_std, target_mean=target_mean, target_std=target_std
    )
    inputs = (inputs - input_mean) / input_std
    targets = (targets - target_mean) / target_std
    holdout_rows = order[: min(model.model_max_holdout, n)]
    holdout_valid = jnp.arange(holdout_rows.shape[0]) < num_holdout
    batch = model.model_batch_size
    num_train = size - num_holdout
    steps_per_epoch = (num_train + batch - 1) // batch
    resamples = bootstrap(key_bootstrap, model.model_members, n, num_holdout, size)

    def weights(rows: jax.Array) -> jax.Array | None:
        if value_weights is None:
            return None
        return vagram_weights(value_weights(next_obs[rows]), target_std, plain_mse)

    def holdout_error(params) -> jax.Array:
        """(members,) mean squared error of the held-out standardised targets (weighted as
        the loss weights them)."""
        mean, _, _ = model.outputs(state, params, inputs[holdout_rows])
        error = jnp.square(mean - targets[holdout_rows])
        w = weights(holdout_rows)
        error = (error if w is None else w * error).mean(axis=-1)
        return (error * holdout_valid).sum(axis=-1) / num_holdout

    def train_step(_, carry):
        net, key, _ = carry
        key, key_rows = jax.random.split(key)
        positions = jax.random.randint(key_rows, (model.model_members, batch), 0, num_train)
        rows = order[jnp.take_along_axis(resamples, positions, axis=1)]
        (loss, _), grads = jax.value_and_grad(model.loss, has_aux=True)(
            net.params, state, inputs[rows], targets[rows], terminals[rows], weights(rows)
        )
        return net.apply_gradients(grads=grads), key, loss

    def epoch(carry):
        count, since, net, best_params, best_error, key, _ = carry
        net, key, loss = jax.lax.fori_loop(0, steps_per_epoch, train_step, (net, key, 0.0))
        error = holdout_error(net.params)
        improved = error < 0.99 * best_error
        keep = lambda new, old: jnp.where(improved.reshape(-1, *([1] * (new.ndim - 1))), new, old)
        best_params = jax.tree.map(keep, net.params, best_params)
        best_error = jnp.where(improved, error, best_error)
        since = jnp.where(improved.any(), 0, since + 1)
        return count + 1, since, net, best_params, best_error, key, loss

    def running(carry):
        count, since = carry[0], carry[1]
        return (since < model.model_patience) & (count < model.model_max_epochs)

    start = (
        jnp.int32(0),
        jnp.int32(0),
        state.net,
        state.net.params,
        jnp.full((model.model_members,), jnp.inf),
        key_train,
        jnp.float32(0.0),
    )
    epochs, _, net, best_params, best_error, _, loss = jax.lax.while_loop(running, epoch, start)
    elites = jnp.argsort(best_error)[: model.model_elites].astype(jnp.int32)
    state = state.replace(
        net=net.replace(params=best_params), elites=elites, holdout_error=best_error
    )
    metrics = {
        "epochs": epochs,
        "holdout_mse": best_error[elites].mean(),
        "train_loss": loss,
    }
    return state, metrics

"""TD(λ) targets for a token-level value of a frozen language model's own sampling distribution.

Value Augmented Sampling (Han et al. 2024, "Value Augmented Sampling for Language Model
Alignment and Personalization", arXiv:2405.06639) never changes the model: it fits V(prefix),
the expected final reward when the frozen model continues the prefix, on the model's own
completions, and at decoding time reweights the model's next-token probabilities by
exp(β·V). The value is learned by TD(λ) with γ = 1 and λ = 0.95: the λ-return mixes the
sampled outcome (λ = 1, Monte Carlo, unbiased but noisy) with the value's own prediction one
token later (λ = 0, one-step TD, low-variance but biased), and the reward arrives only once,
when the completion ends.

Convention, for completions of length L ≤ T padded to T:
    values[:, t]  = V(prompt + y_<t), the state before token t is emitted (t = 0..T−1);
    rewards[:, t] = the reward received after emitting token t (nonzero only at the last valid
                    token, the EOS or the length cap);
    mask[:, t]    = 1 where token t is a valid generated token: 1s then 0s in every row.
The state after the last valid token is terminal, with value 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from valorl.errors import ValorlError


def td_lambda_targets(
    values: jax.Array,
    rewards: jax.Array,
    mask: jax.Array,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> jax.Array:
    """The λ-return G_t = r_t + γ·[(1 − λ)·V_{t+1} + λ·G_{t+1}] of every valid token (Sutton &
    Barto 2018, Sec. 12.1, written recursively), with V and G of the terminal state after the
    last valid token 0; (B, T) -> (B, T), 0 at masked positions. Equal to GAE(γ, λ)
    advantages plus the values (Schulman et al. 2016, Eq. 16). λ = 1 gives the Monte Carlo
    return (the final reward when γ = 1), λ = 0 the one-step target r_t + γ·V_{t+1}.

    Values and rewards at masked positions are ignored. The targets carry no gradient.
    """
    if values.ndim != 2 or values.shape != rewards.shape or values.shape != mask.shape:
        raise ValorlError(
            f"values, rewards and mask must all be (B, T), got {values.shape}, "
            f"{rewards.shape} and {mask.shape}"
        )
    values = jax.lax.stop_gradient(values)
    mask = mask.astype(values.dtype)
    rewards = rewards.astype(values.dtype) * mask
    # V_{t+1}, 0 where token t + 1 is not valid: the state after the last token is terminal
    next_mask = jnp.pad(mask[:, 1:], ((0, 0), (0, 1)))
    next_values = jnp.pad(values[:, 1:], ((0, 0), (0, 1))) * next_mask

    def step(next_return: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        reward, next_value, valid = xs
        ret = (reward + gamma * ((1 - lam) * next_value + lam * next_return)) * valid
        return ret, ret

    _, returns = jax.lax.scan(
        step,
        jnp.zeros(values.shape[0], values.dtype),
        (rewards.T, next_values.T, mask.T),
        reverse=True,
    )
    return returns.T


def value_loss(predictions: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """0.5 · mean over valid tokens of (V − stopgrad(target))²: the TD(λ) regression of VAS."""
    if predictions.shape != targets.shape or predictions.shape != mask.shape:
        raise ValorlError(
            f"predictions, targets and mask shapes differ: {predictions.shape}, "
            f"{targets.shape} and {mask.shape}"
        )
    mask = mask.astype(predictions.dtype)
    err = predictions - jax.lax.stop_gradient(targets)
    return 0.5 * jnp.sum(err**2 * mask) / jnp.maximum(jnp.sum(mask), 1.0)

"""Normalizer: observation standardisation, action scaling to [-1, 1], reward scaling."""

from __future__ import annotations

import gymnasium as gym
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_dataset

from valorl.data.dataset import Dataset
from valorl.data.transforms import OBS_STD_EPS, Normalizer, action_bounds, fit_normalizer

PENDULUM_ACT = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def two_episodes(actions=None) -> Dataset:
    """Episode 1: rewards [1, 2, 3] (return 6), terminated; episode 2: rewards [10, 20]
    (return 30), truncated. Observations are [i, i^2] for row i."""
    i = np.arange(5.0)
    obs = np.stack([i, i**2], axis=1)
    return Dataset(
        observations=obs,
        actions=np.linspace(-0.5, 0.5, 5)[:, None] if actions is None else actions,
        rewards=np.array([1.0, 2.0, 3.0, 10.0, 20.0]),
        next_observations=obs + 1,
        terminals=np.array([0, 0, 1, 0, 0]),
        timeouts=np.array([0, 0, 0, 0, 1]),
    )


def fields_of(ds: Dataset) -> dict:
    names = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    return {name: getattr(ds, name) for name in names}


def fit(ds: Dataset, **kwargs) -> Normalizer:
    options = dict(normalize_observations=False, reward_normalization="none") | kwargs
    return fit_normalizer(ds, **options)


def test_observation_statistics():
    """normalize_observations=True stores the data mean and std + 1e-3 (TD3+BC's epsilon)."""
    ds = two_episodes()
    norm = fit(ds, normalize_observations=True)
    # column 0 = [0, 1, 2, 3, 4]: mean 2, population std sqrt(2)
    # column 1 = [0, 1, 4, 9, 16]: mean 6, variance (36 + 25 + 4 + 9 + 100) / 5 = 34.8
    np.testing.assert_allclose(norm.obs_mean, [2.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(norm.obs_std, np.sqrt([2.0, 34.8]) + 1e-3, rtol=1e-6)
    assert OBS_STD_EPS == 1e-3
    standardised = np.asarray(norm.observations(jnp.asarray(ds.observations)))
    np.testing.assert_allclose(standardised.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(standardised.std(axis=0), [1.0, 1.0], rtol=1e-3)


def test_observation_statistics_on_random_data():
    """On a larger sample the statistics match numpy's float64 mean and std."""
    ds = synthetic_dataset(n=200, obs_dim=4)
    norm = fit(ds, normalize_observations=True)
    obs = ds.observations.astype(np.float64)
    np.testing.assert_allclose(norm.obs_mean, obs.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.obs_std, obs.std(axis=0) + 1e-3, rtol=1e-5)


def test_no_observation_normalisation_is_identity():
    """normalize_observations=False gives mean 0 and std 1: observations pass unchanged."""
    ds = two_episodes()
    norm = fit(ds)
    np.testing.assert_array_equal(norm.obs_mean, [0.0, 0.0])
    np.testing.assert_array_equal(norm.obs_std, [1.0, 1.0])
    np.testing.assert_array_equal(norm.observations(jnp.asarray(ds.observations)), ds.observations)


def test_return_range_reward_scale():
    """reward_normalization='return_range' scales by 1000 / (max return - min return), as IQL
    does for locomotion; 'none' leaves rewards alone."""
    ds = two_episodes()
    np.testing.assert_array_equal(ds.episode_returns(), [6.0, 30.0])
    # span = 30 - 6 = 24 -> scale = 1000 / 24 = 41.666...
    norm = fit(ds, reward_normalization="return_range")
    assert float(norm.reward_scale) == pytest.approx(1000.0 / 24.0, rel=1e-6)
    assert float(fit(ds).reward_scale) == 1.0


def test_return_range_with_equal_returns():
    """Equal episode returns (span 0) fall back to scale 1 instead of dividing by zero."""
    ds = two_episodes()
    rewards = np.array([1.0, 2.0, 3.0, 3.0, 3.0])  # returns 6 and 6
    equal = Dataset(**{**fields_of(ds), "rewards": rewards})
    assert float(fit(equal, reward_normalization="return_range").reward_scale) == 1.0


def test_action_bounds_from_env_space():
    """The environment's bounds win, even when the data would fit in [-1, 1]."""
    low, high = action_bounds(two_episodes(), PENDULUM_ACT)
    np.testing.assert_array_equal(low, [-2.0])
    np.testing.assert_array_equal(high, [2.0])
    assert low.dtype == np.float32


def test_action_bounds_unit_box_when_data_fit():
    """Without an environment, data inside [-1, 1] keep the unit box (not the data range)."""
    low, high = action_bounds(two_episodes())  # actions in [-0.5, 0.5]
    np.testing.assert_array_equal(low, [-1.0])
    np.testing.assert_array_equal(high, [1.0])


def test_action_bounds_data_range_otherwise():
    """Data outside [-1, 1] use the per-dimension data range; a constant dimension gets a
    width of 1 so the scaling never divides by zero."""
    actions = np.array([[-3, 0.25, 5], [0.5, -0.5, 5], [1, 0, 5], [0, 0, 5], [0, 0, 5]])
    low, high = action_bounds(two_episodes(actions))
    np.testing.assert_array_equal(low, [-3.0, -0.5, 5.0])
    np.testing.assert_array_equal(high, [1.0, 0.25, 6.0])  # constant 5 -> [5, 5 + 1]


def test_action_maps_are_inverse():
    """actions_to_unit maps the bounds to -1/+1 and actions_to_env undoes it; out-of-range
    policy outputs are clipped to the bounds."""
    norm = fit(two_episodes(), action_space=gym.spaces.Box(-2.0, 4.0, (1,), np.float32))
    env_actions = jnp.array([[-2.0], [1.0], [4.0], [0.25]])
    # unit = 2 (a + 2) / 6 - 1: -2 -> -1, 1 -> 0, 4 -> 1, 0.25 -> -0.25
    unit = norm.actions_to_unit(env_actions)
    np.testing.assert_allclose(unit, [[-1.0], [0.0], [1.0], [-0.25]], rtol=1e-6)
    np.testing.assert_allclose(norm.actions_to_env(unit), env_actions, rtol=1e-6)
    np.testing.assert_allclose(norm.actions_to_env(jnp.array([[-3.0], [1.5]])), [[-2.0], [4.0]])


def test_batch_transforms_observations_and_next_observations_alike():
    """The same observation map is applied to s and s' (a mismatch would corrupt TD targets);
    actions go to [-1, 1] and rewards are scaled."""
    ds = two_episodes()
    norm = fit(
        ds,
        normalize_observations=True,
        reward_normalization="return_range",
        action_space=PENDULUM_ACT,
    )
    batch = ds.to_batch()
    out = norm.batch(batch.replace(next_observations=batch.observations))
    np.testing.assert_array_equal(out.observations, out.next_observations)
    np.testing.assert_allclose(
        out.observations, (ds.observations - norm.obs_mean) / norm.obs_std, rtol=1e-6
    )
    full = norm.batch(batch)
    np.testing.assert_allclose(
        full.next_observations, (ds.next_observations - norm.obs_mean) / norm.obs_std, rtol=1e-6
    )
    np.testing.assert_allclose(full.actions, ds.actions / 2.0, rtol=1e-6)  # bounds [-2, 2]
    np.testing.assert_allclose(full.rewards, ds.rewards * 1000.0 / 24.0, rtol=1e-6)
    np.testing.assert_array_equal(full.masks, batch.masks)
    np.testing.assert_array_equal(full.dones, batch.dones)


def test_identity_normalizer_is_a_no_op():
    """Normalizer.identity leaves a batch with actions in [-1, 1] exactly unchanged."""
    batch = two_episodes().to_batch()
    out = Normalizer.identity((2,), 1).batch(batch)
    for name in ("observations", "actions", "rewards", "next_observations", "masks", "dones"):
        np.testing.assert_array_equal(getattr(out, name), getattr(batch, name), err_msg=name)


def test_fit_without_normalisation_equals_identity():
    """Asking for nothing on data inside [-1, 1] fits exactly the identity normalizer."""
    fitted = fit(two_episodes())
    identity = Normalizer.identity((2,), 1)
    for name in ("obs_mean", "obs_std", "action_low", "action_high", "reward_scale"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(identity, name), err_msg=name)

"""JAX environments: the protocol, gymnax's MinAtar/CartPole behind it, sticky actions, automatic
resets, and the Gymnasium registration that steps them from Python."""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import valorl.envs  # noqa: F401  (registers the JAX environments with Gymnasium)
from valorl.envs.gymnax_envs import GymnaxEnv, make_jax_env
from valorl.envs.jax_env import auto_reset, episode_returns, reset_many, step_many
from valorl.errors import ValorlError


def _actions(env, steps, seed=1):
    return jax.random.randint(jax.random.key(seed), (steps,), 0, env.num_actions)


def _scan_trajectory(env, key, actions):
    obs, state = env.reset(key)

    def body(carry, inputs):
        obs, state = carry
        k, a = inputs
        t, obs, state = auto_reset(env, k, state, obs, a)
        return (obs, state), t

    keys = jax.random.split(jax.random.fold_in(key, 1), actions.shape[0])
    return jax.jit(lambda: jax.lax.scan(body, (obs, state), (keys, actions))[1])()


@pytest.mark.parametrize("env_id", ["Breakout-MinAtar", "gymnax/CartPole-v1"])
def test_stepping_inside_a_scan_equals_one_call_at_a_time(env_id):
    env = make_jax_env(env_id)
    key, actions = jax.random.key(7), _actions(make_jax_env(env_id), 300)
    scanned = _scan_trajectory(env, key, actions)

    obs, state = jax.jit(env.reset)(key)
    step = jax.jit(lambda k, s, o, a: auto_reset(env, k, s, o, a))
    keys = jax.random.split(jax.random.fold_in(key, 1), actions.shape[0])
    rows = []
    for k, a in zip(keys, actions, strict=True):
        t, obs, state = step(k, state, obs, a)
        rows.append(t)
    one_by_one = jax.tree.map(lambda *xs: np.stack(xs), *rows)
    for name in ("observations", "actions", "rewards", "next_observations", "terminated"):
        a, b = np.asarray(getattr(scanned, name)), np.asarray(getattr(one_by_one, name))
        if np.issubdtype(a.dtype, np.floating):  # CartPole's physics: the compiled programs
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # may round differently
        else:  # frames, actions, episode ends: exactly
            np.testing.assert_array_equal(a, b)
    assert bool(np.asarray(scanned.terminated | scanned.truncated).any())  # crossed a reset


def test_minatar_frames_are_uint8_and_episodes_reset_with_the_real_last_observation():
    env = make_jax_env("Breakout-MinAtar")
    assert (env.obs_shape, env.num_actions, env.obs_dtype) == ((10, 10, 4), 3, jnp.uint8)
    t = _scan_trajectory(env, jax.random.key(0), _actions(env, 400))
    assert t.observations.dtype == np.uint8 and set(np.unique(t.observations)) <= {0, 1}
    ends = np.flatnonzero(np.asarray(t.terminated))
    assert len(ends) and not np.asarray(t.truncated).any()
    end = ends[0]
    # The stored next observation is the game's last frame, not the reset one: the next
    # transition starts from a fresh game instead.
    assert not np.array_equal(t.next_observations[end], t.observations[end + 1])
    np.testing.assert_array_equal(t.next_observations[end - 1], t.observations[end])


def test_an_episode_cut_by_the_step_limit_is_a_truncation_not_a_termination():
    env = make_jax_env("Freeway-MinAtar")  # the chicken never dies: episodes run to the limit
    t = _scan_trajectory(env, jax.random.key(0), jnp.zeros(env.max_episode_steps, jnp.int32))
    truncated, terminated = np.asarray(t.truncated), np.asarray(t.terminated)
    assert env.max_episode_steps == 2500
    assert np.flatnonzero(truncated).tolist() == [env.max_episode_steps - 1]
    assert not terminated.any()


def test_sticky_actions_repeat_the_previous_action():
    always = GymnaxEnv("Breakout-MinAtar", sticky_actions=0.999999)
    never = GymnaxEnv("Breakout-MinAtar", sticky_actions=0.0)
    key = jax.random.key(3)
    _, state = always.reset(key)
    # The first action of an episode repeats the reset's "previous" action (0, no-op) with
    # probability p, and so does every later one: the chosen actions never take effect.
    for i in range(5):
        _, state, *_ = always.step(jax.random.fold_in(key, i), state, jnp.int32(2))
    assert int(state.last_action) == 0
    _, state = never.reset(key)
    _, state, *_ = never.step(key, state, jnp.int32(2))
    assert int(state.last_action) == 2


def test_sticky_action_rate_matches_its_probability():
    env = GymnaxEnv("SpaceInvaders-MinAtar", sticky_actions=0.25)
    _, state = env.reset(jax.random.key(0))

    def body(state, inputs):
        key, action = inputs
        previous = state.last_action
        _, state, *_ = env.step(key, state, action)
        return state, (state.last_action == previous) & (action != previous)

    n = 4000
    actions = jax.random.randint(jax.random.key(1), (n,), 0, env.num_actions)
    keys = jax.random.split(jax.random.key(2), n)
    _, repeated = jax.jit(lambda: jax.lax.scan(body, state, (keys, actions)))()
    changed = np.asarray(actions[1:] != actions[:-1]).mean()
    rate = np.asarray(repeated).mean() / changed  # repeats among steps that asked for a change
    assert abs(rate - 0.25) < 0.04


def test_defaults_and_bad_settings():
    assert make_jax_env("Asterix-MinAtar").sticky_actions == 0.1  # the original MinAtar's
    assert make_jax_env("gymnax/CartPole-v1").sticky_actions == 0.0
    with pytest.raises(ValorlError, match="unknown JAX environment 'Pong-MinAtar'"):
        make_jax_env("Pong-MinAtar")
    with pytest.raises(ValorlError, match=r"--sticky-actions must be in \[0, 1\)"):
        make_jax_env("Breakout-MinAtar", 1.0)


def test_vectors_of_environments_are_independent():
    env = make_jax_env("Asterix-MinAtar")
    obs, states = reset_many(env, jax.random.key(0), 4)
    assert obs.shape == (4, 10, 10, 4)
    step = jax.jit(lambda k, s, o: step_many(env, k, s, o, jnp.zeros(4, jnp.int32)))
    for i in range(20):  # the same actions everywhere; the games' own randomness differs
        t, obs, states = step(jax.random.key(i), states, obs)
    assert t.rewards.shape == (4,)
    assert len({np.asarray(o).tobytes() for o in obs}) > 1


def test_parallel_evaluation_counts_each_episode_once():
    env = make_jax_env("gymnax/CartPole-v1")
    always_left = lambda obs, key: jnp.zeros(obs.shape[0], jnp.int32)
    returns = jax.jit(lambda k: episode_returns(env, always_left, k, 6))(jax.random.key(0))
    # Pushing left the whole time topples the pole in about ten steps, one reward per step.
    assert returns.shape == (6,)
    assert np.all((np.asarray(returns) >= 8) & (np.asarray(returns) <= 12))


def test_registered_with_gymnasium_for_host_stepping():
    env = gym.make("Breakout-MinAtar")
    assert env.action_space == gym.spaces.Discrete(3)
    assert env.spec.kwargs["sticky_actions"] == 0.1
    obs, _ = env.reset(seed=5)
    assert obs.dtype == np.uint8 and obs.shape == (10, 10, 4)
    obs2, reward, *_ = env.step(1)
    assert obs2.shape == obs.shape and isinstance(reward, float)
    # Same seed, same actions: the same episode.
    again = gym.make("Breakout-MinAtar")
    np.testing.assert_array_equal(again.reset(seed=5)[0], obs)
    np.testing.assert_array_equal(again.step(1)[0], obs2)

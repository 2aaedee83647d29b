"""The three arms of Young et al. (ICML 2023): DQN's softmax exploration and plain-DQN target,
the binary model's NLL by hand, rollouts weighted by continuation (learned and true), perfect-
model rollouts equal to the true environment's trajectory, 320 transitions per Q update."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compiled_init

from valorl.agents import DQN, ModelDQN, PerfectModelDQN, Spec
from valorl.critics import QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.envs.gymnax_envs import make_jax_env
from valorl.errors import ValorlError
from valorl.models.binary import BinaryModel

LN2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def init(agent, spec, seed=0):
    return jax.jit(agent.init, static_argnums=1)(jax.random.key(seed), spec)


def constant_head(params, bias):
    """`params` of one MLP with its output layer (the last Dense) giving `bias` everywhere."""
    last = max((k for k in params if k.startswith("Dense_")), key=lambda k: int(k[6:]))
    dense = params[last]
    bias = jnp.broadcast_to(jnp.asarray(bias, jnp.float32), dense["bias"].shape)
    return {**params, last: {"kernel": jnp.zeros_like(dense["kernel"]), "bias": bias}}


def constant_model(state, next_obs, reward, continuation):
    p = dict(state.params)
    p["next_obs"] = constant_head(p["next_obs"], next_obs)
    p["reward"] = constant_head(p["reward"], reward)
    p["continuation"] = constant_head(p["continuation"], continuation)
    return state.replace(params=p)


def test_binary_model_nll_by_hand():
    """Bits at P(1) = 0.5 and 0.75, reward mean 1 (σ 1), continuation 0.5. A non-terminal
    transition to bits (1, 0) with r = 2: −ln .5 − ln .25 + (.5 + ½ln2π) + ln 2; a terminal one
    (r = 0): its bits are not modelled, (.5 + ½ln2π) + ln 2. The loss is their mean."""
    model = BinaryModel(model_hidden_dims=(4,))
    state = constant_model(compiled_init(model, (2,), 3), [0.0, math.log(3)], 1.0, 0.0)
    batch = Batch(
        observations=jnp.array([[0, 1], [1, 1]], jnp.uint8),
        actions=jnp.array([0, 2], jnp.int32),
        rewards=jnp.array([2.0, 0.0]),
        next_observations=jnp.array([[1, 0], [1, 1]], jnp.uint8),
        masks=jnp.array([1.0, 0.0]),
        dones=jnp.array([0.0, 1.0]),
    )
    loss, metrics = jax.jit(lambda: model.nll(state, state.params, batch))()
    first = 3 * LN2 + 0.5 + HALF_LOG_2PI + LN2
    second = 0.5 + HALF_LOG_2PI + LN2
    np.testing.assert_allclose(loss, (first + second) / 2, rtol=1e-5)
    np.testing.assert_allclose(metrics["obs_nll"], 3 * LN2 / 2, rtol=1e-5)
    # sampling draws bits from sigmoid(logits): bit 0 at 1/2, bit 1 at 3/4
    obs = jnp.zeros((4000, 2), jnp.uint8)
    bits, reward, cont = model.sample(state, jax.random.key(1), obs, jnp.zeros(4000, jnp.int32))
    assert bits.dtype == jnp.uint8 and bits.shape == (4000, 2)
    np.testing.assert_allclose(np.asarray(bits).mean(0), [0.5, 0.75], atol=0.03)
    np.testing.assert_allclose(reward, 1.0, rtol=1e-6)
    np.testing.assert_allclose(cont, 0.5, rtol=1e-6)


def test_the_model_learns_a_deterministic_bit_flip():
    """A few hundred NLL steps on s' = 1 − s, r = s_0, never terminal: the model's prediction
    becomes right (a smoke check that the gradient flows through all three networks)."""
    model = BinaryModel(model_hidden_dims=(32,), model_lr=1e-2)
    state = compiled_init(model, (4,), 2)
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.integers(0, 2, (64, 4)), jnp.uint8)
    batch = Batch(
        obs, jnp.zeros(64, jnp.int32), obs[:, 0].astype(jnp.float32), 1 - obs, jnp.ones(64),
        jnp.zeros(64),
    )  # fmt: skip

    @jax.jit
    def fit(state):
        return jax.lax.fori_loop(0, 300, lambda _, s: model.update(s, batch)[0], state)

    state = fit(state)
    p = model.predict(state, state.params, obs, batch.actions)
    np.testing.assert_array_equal(np.asarray(p.next_obs_logits > 0), np.asarray(1 - obs) == 1)
    np.testing.assert_allclose(p.reward, batch.rewards, atol=0.1)
    assert (jax.nn.sigmoid(p.continuation_logit) > 0.95).all()


# ---- DQN's options for the paper's arms ----------------------------------------------------------

VECTOR = Spec((4,), 0, total_updates=10, num_actions=3)


def with_constant_q(state, online, target):
    critic = state.critic.replace(params={"net": constant_head(state.critic.params["net"], online)})
    target = {"net": constant_head(state.target_critic["net"], target)}
    return state.replace(critic=critic, target_critic=target)


def test_softmax_exploration_samples_softmax_q_over_temperature():
    agent = DQN(hidden_dims=(4,), critic=Scalar(), exploration="softmax", temperature=0.5)
    # Q/T = (0, ln 2, ln 3): probabilities 1/6, 2/6, 3/6
    q = [0.0, 0.5 * LN2, 0.5 * math.log(3)]
    state = with_constant_q(init(agent, VECTOR), q, q)
    obs = jnp.zeros((6000, 4))
    actions = jax.jit(agent.explore)(state, obs, jax.random.key(2), jnp.int32(0))
    freq = np.bincount(np.asarray(actions), minlength=3) / 6000
    np.testing.assert_allclose(freq, [1 / 6, 2 / 6, 3 / 6], atol=0.02)
    sampled = jax.jit(agent.act, static_argnums=3)(state, obs, jax.random.key(3), False)
    np.testing.assert_allclose(np.bincount(np.asarray(sampled)) / 6000, freq, atol=0.03)
    assert (np.asarray(agent.act(state, obs[:3], jax.random.key(4), True)) == 2).all()
    assert DQN().exploration == "epsilon" and DQN().double_q  # DQN's defaults unchanged
    with pytest.raises(ValorlError, match="temperature"):
        DQN(temperature=0.0)


def test_plain_dqn_target_takes_the_target_networks_max():
    """double_q false: y = r + γ·m·max_a Q̂(s', a) = r + γ·m·9 (Double DQN would take 4)."""
    agent = DQN(hidden_dims=(4,), critic=Scalar(), discount=0.9, double_q=False)
    state = with_constant_q(init(agent, VECTOR), [1, 3, 2], [5, 4, 9])
    batch = Batch(
        jnp.zeros((2, 4)), jnp.zeros(2, jnp.int32), jnp.array([1.0, 0.5]), jnp.zeros((2, 4)),
        jnp.array([1.0, 0.5]), jnp.zeros(2),
    )  # fmt: skip
    np.testing.assert_allclose(
        jax.jit(agent.td_target)(state, batch, jax.random.key(0)), [1 + 8.1, 0.5 + 0.45 * 9]
    )


# ---- rollouts ----------------------------------------------------------------------------------

MAZE = "ProcMaze-4x4-p0.0-v0"  # no spontaneous teleports: the dynamics are deterministic


def maze_start(seeds):
    env = make_jax_env(MAZE)
    return env, jnp.stack([env.reset(jax.random.key(s))[0] for s in seeds])


def test_learned_model_rollouts_weight_each_step_by_the_continuation_so_far():
    """Continuation probability 1/4 everywhere: masks 1/4, weights 1, 1/4, 1/16, ...; 32 starts
    x 10 steps = 320 transitions, step-major."""
    agent = ModelDQN(hidden_dims=(8,), model=BinaryModel(model_hidden_dims=(8,)))
    env, _ = maze_start([0])
    spec = Spec(env.obs_shape, 0, total_updates=10, num_actions=5)
    state = init(agent, spec)
    state = state.replace(model=constant_model(state.model, 0.0, -1.0, math.log(1 / 3)))
    _, start = maze_start(range(32))
    rollouts, weights = jax.jit(agent.rollouts)(state, start, jax.random.key(1))
    assert len(rollouts) == 320 and rollouts.observations.dtype == jnp.uint8
    np.testing.assert_allclose(rollouts.masks, 0.25, rtol=1e-6)
    np.testing.assert_allclose(rollouts.rewards, -1.0, rtol=1e-6)
    want = np.repeat(0.25 ** np.arange(10), 32)
    np.testing.assert_allclose(weights, want, rtol=1e-5)
    np.testing.assert_array_equal(rollouts.observations[:32], start)
    np.testing.assert_array_equal(rollouts.observations[32:], rollouts.next_observations[:-32])


def test_perfect_model_rollouts_are_the_true_trajectory_and_stop_at_termination():
    agent = PerfectModelDQN(hidden_dims=(8,), simulator=MAZE, temperature=100.0)
    env, start = maze_start(range(8))
    state = init(agent, Spec(env.obs_shape, 0, total_updates=10, num_actions=5))
    rollouts, weights = jax.jit(agent.rollouts)(state, start, jax.random.key(3))
    # the same actions through the true environment, from the state the observation describes
    shape = lambda x: np.asarray(x).reshape(10, 8, *np.shape(x)[1:])
    obs, actions = shape(rollouts.observations), shape(rollouts.actions)
    next_obs, rewards = shape(rollouts.next_observations), shape(rollouts.rewards)
    masks, w = shape(rollouts.masks), shape(weights)
    step = jax.jit(env.step)
    ended_somewhere = False
    for b in range(8):
        s = env.state_from_obs(start[b])
        alive = 1.0
        for k in range(10):
            o, s, r, term, _ = step(jax.random.key(k), s, actions[k, b])
            np.testing.assert_array_equal(next_obs[k, b], o)
            assert rewards[k, b] == r == -1.0 and masks[k, b] == 1.0 - float(term)
            assert w[k, b] == alive  # 1 until the first termination, then 0
            alive *= 1.0 - float(term)
            ended_somewhere |= bool(term)
        np.testing.assert_array_equal(obs[0, b], start[b])
    assert ended_somewhere  # some rollout reached its goal (near-uniform actions, 4x4 mazes)


def test_each_update_trains_q_on_320_imagined_transitions_and_the_model_on_32():
    env, start = maze_start(range(32))
    spec = Spec(env.obs_shape, 0, total_updates=10, num_actions=5)
    batch = Batch(
        start, jnp.zeros(32, jnp.int32), -jnp.ones(32), start, jnp.ones(32), jnp.zeros(32)
    )
    for agent in (
        ModelDQN(hidden_dims=(8,), model=BinaryModel(model_hidden_dims=(8,))),
        PerfectModelDQN(hidden_dims=(8,), simulator=MAZE),
    ):
        state = init(agent, spec)
        new, metrics = jax.jit(agent.update)(state, batch, jax.random.key(0))
        assert int(new.critic.step) == 1 and np.isfinite(metrics["critic/loss"])
        assert 0 < float(metrics["rollout/weight"]) <= 1
        if agent.name == "model_dqn":
            assert int(new.model.step) == 1 and np.isfinite(metrics["model/loss"])
            # a model that continues with probability 1/4: 10 imagined steps from each of the
            # 32 rows, weighted 1, 1/4, ..., (1/4)^9, are what the logged mean weight averages
            # (to 0.1%: the model takes its one gradient step before it rolls out)
            fixed = state.replace(model=constant_model(state.model, 0.0, -1.0, math.log(1 / 3)))
            _, metrics = jax.jit(agent.update)(fixed, batch, jax.random.key(0))
            np.testing.assert_allclose(
                float(metrics["rollout/weight"]), np.mean(0.25 ** np.arange(10)), rtol=1e-3
            )


def test_perfect_model_needs_a_simulator_that_matches_the_run():
    with pytest.raises(ValorlError, match="needs --simulator"):
        PerfectModelDQN().init(jax.random.key(0), VECTOR)
    with pytest.raises(ValorlError, match="JAX environment"):
        PerfectModelDQN(simulator="Hopper-v5")
    with pytest.raises(ValorlError, match="state_from_obs"):
        PerfectModelDQN(simulator="gymnax/CartPole-v1")
    with pytest.raises(ValorlError, match="observations"):
        PerfectModelDQN(simulator="PanFlute-v0").init(jax.random.key(0), VECTOR)


def test_the_q_network_can_use_elu_as_the_paper():
    """Same parameters (the nonlinearity has none), different outputs; DQN keeps ReLU and the
    rollout agents default to ELU."""
    relu = DQN(hidden_dims=(8,), ensemble=QEnsemble(num_qs=1))
    elu = DQN(hidden_dims=(8,), ensemble=QEnsemble(num_qs=1, activation="elu"))
    a, b = init(relu, VECTOR), init(elu, VECTOR)
    obs = jax.random.normal(jax.random.key(1), (16, 4))
    q_relu = relu.all_q_values(a, obs)
    q_elu = elu.all_q_values(b.replace(critic=b.critic.replace(params=a.critic.params)), obs)
    assert q_relu.shape == q_elu.shape and not np.allclose(q_relu, q_elu)
    assert DQN().ensemble.activation == "relu" and ModelDQN().ensemble.activation == "elu"

"""The discrete-action agents (DQN, discrete CQL, BC and IQL): hand-checked Double-DQN targets,
CQL's log-sum-exp over actions and IQL's policy loss; every critic head trains DQN; the agent
contract on frame observations (CNN torsos), seeds vmapped, n-step batches."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

from valorl.agents import (
    AGENTS,
    DQN,
    DiscreteBC,
    DiscreteCQL,
    DiscreteIQL,
    Spec,
    make_agent,
)
from valorl.agents.discrete import epsilon_greedy, linear_epsilon
from valorl.config import from_dict, to_dict
from valorl.critics import HEADS, Categorical, QEnsemble, Quantile, Scalar, resolve_support
from valorl.data.dataset import Batch
from valorl.errors import ValorlError
from valorl.losses import discrete_cql_gap
from valorl.training.fused import init_seeds, seed_keys, update_chunk

NUM_ACTIONS = 3
VECTOR = Spec((4,), 0, total_updates=20, num_actions=NUM_ACTIONS)
FRAMES = Spec((5, 5, 2), 0, total_updates=20, num_actions=NUM_ACTIONS)
DISCRETE = sorted(name for name, cls in AGENTS.items() if cls.discrete and name != "jowa")
"""JOWA reads tokenised multi-game observations, not frames: tests/test_jowa.py trains it."""


def batch_for(spec: Spec, n: int = 16, seed: int = 0) -> Batch:
    """n transitions with observations of `spec` (frames as uint8, as datasets store them)."""
    rng = np.random.default_rng(seed)
    if len(spec.obs_shape) == 3:
        obs = rng.integers(0, 2, size=(n + 1, *spec.obs_shape)).astype(np.uint8)
    else:
        obs = rng.normal(size=(n + 1, *spec.obs_shape)).astype(np.float32)
    dones = (np.arange(n) % 5 == 4).astype(np.float32)
    return Batch(
        observations=jnp.asarray(obs[:-1]),
        actions=jnp.asarray(rng.integers(0, spec.num_actions, size=n), jnp.int32),
        rewards=jnp.asarray(rng.normal(size=n), jnp.float32),
        next_observations=jnp.asarray(obs[1:]),
        masks=jnp.asarray(1.0 - dones * (np.arange(n) % 2)),
        dones=jnp.asarray(dones),
    )


def init(agent, spec: Spec, seed: int = 0):
    """`agent.init` compiled in one piece (cheaper than running it op by op)."""
    return jax.jit(agent.init, static_argnums=1)(jax.random.key(seed), spec)


def constant_output(params, bias):
    """`params` with the output layer (`Dense_0` at this level) set to give `bias` for every
    observation: kernel zero, bias as given (broadcast over a leading member axis)."""
    dense = params["Dense_0"]
    bias = jnp.broadcast_to(jnp.asarray(bias, jnp.float32), dense["bias"].shape)
    return {**params, "Dense_0": {"kernel": jnp.zeros_like(dense["kernel"]), "bias": bias}}


def with_constant_q(agent, state, online, target):
    """A DQN state whose online and target networks output `online` and `target` (flattened
    num_actions × out_dim outputs of one member) whatever the observation."""
    critic = state.critic.replace(
        params={"net": constant_output(state.critic.params["net"], online)}
    )
    target = {"net": constant_output(state.target_critic["net"], target)}
    return state.replace(critic=critic, target_critic=target)


# ---- targets and losses by hand ----------------------------------------------------------------


def test_double_dqn_target_by_hand():
    """The online network picks argmax_a Q(s', a) = 1 (values 1, 3, 2), the target network
    values it: y = r + γ·m·Q_target(s', 1) = r + γ·m·4, not the target's own maximum (9)."""
    agent = DQN(hidden_dims=(4,), critic=Scalar(), discount=0.9)
    state = with_constant_q(agent, init(agent, VECTOR), [1, 3, 2], [5, 4, 9])
    batch = batch_for(VECTOR, 4).replace(
        rewards=jnp.array([1.0, -1.0, 0.5, 0.0]), masks=jnp.array([1.0, 0.0, 0.81, 1.0])
    )
    target = jax.jit(agent.td_target)(state, batch, jax.random.key(1))
    np.testing.assert_allclose(target, [1 + 0.9 * 4, -1.0, 0.5 + 0.9 * 0.81 * 4, 0.9 * 4])


@pytest.mark.parametrize("head", [Quantile(bins=2), Categorical(bins=3, vmin=-2.0, vmax=2.0)])
def test_distributional_double_dqn_target_follows_the_online_argmax(head):
    """For c51 and quantile heads the target is the head's backup of the target network's
    distribution at the online network's greedy action."""
    agent = DQN(hidden_dims=(4,), critic=head, discount=0.9)
    d = head.out_dim
    # online values per action: action 2 is greedy for both heads (uniform logits / quantiles)
    online = np.zeros((NUM_ACTIONS, d))
    online[2] = 1.0 if isinstance(head, Quantile) else [0.0, 0.0, 5.0]
    target = np.arange(NUM_ACTIONS * d, dtype=np.float32).reshape(NUM_ACTIONS, d) / 10
    state = with_constant_q(agent, init(agent, VECTOR), online.ravel(), target.ravel())
    batch = batch_for(VECTOR, 2).replace(rewards=jnp.array([1.0, 0.0]), masks=jnp.ones(2))
    got = jax.jit(agent.td_target)(state, batch, jax.random.key(1))
    want = head.backup(jnp.broadcast_to(target[2], (2, d)), batch.rewards, 0.9 * batch.masks)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cql_logsumexp_gap_by_hand():
    """log Σ_a exp Q(s, a) − Q(s, a_data) on fixed values, and CQL's critic loss is DQN's plus
    α times its batch mean."""
    q = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    gap = discrete_cql_gap(q, jnp.array([2, 1]))
    np.testing.assert_allclose(
        gap, [np.log(np.e + np.e**2 + np.e**3) - 3.0, np.log(3.0)], rtol=1e-6
    )
    cql = DiscreteCQL(hidden_dims=(4,), critic=Scalar(), cql_alpha=2.0)
    dqn = DQN(hidden_dims=(4,), critic=Scalar())
    state = init(cql, VECTOR)
    batch = batch_for(VECTOR, 8)
    target = jax.jit(dqn.td_target)(state, batch, jax.random.key(1))
    loss_cql, metrics = jax.jit(cql.critic_loss)(state.critic.params, state, batch, target)
    loss_dqn, _ = jax.jit(dqn.critic_loss)(state.critic.params, state, batch, target)
    q_all = np.asarray(cql.all_q_values(state, batch.observations))[0]  # one member
    a = np.asarray(batch.actions)
    by_hand = np.mean(np.log(np.exp(q_all).sum(-1)) - q_all[np.arange(8), a])
    np.testing.assert_allclose(float(metrics["cql_gap"]), by_hand, rtol=1e-5)
    np.testing.assert_allclose(float(loss_cql - loss_dqn), 2.0 * by_hand, rtol=1e-5)


def test_discrete_iql_policy_loss_by_hand():
    """−mean(min(exp(β·(Q − V)), 100) · log softmax(logits)[a]) with fixed logits (0, 1, 2),
    V = 0.5 and Q given: one weight is clipped at 100."""
    agent = DiscreteIQL(hidden_dims=(4,), beta=3.0)
    state = init(agent, VECTOR)
    state = state.replace(
        actor=state.actor.replace(params=constant_output(state.actor.params, [0.0, 1.0, 2.0])),
        value=state.value.replace(params=constant_output(state.value.params, [0.5])),
    )
    batch = batch_for(VECTOR, 3).replace(actions=jnp.array([0, 2, 1]))
    q = jnp.array([0.5, 0.0, 10.0])
    loss, metrics = jax.jit(agent.actor_loss)(state.actor.params, state, batch, q)
    log_pi = np.array([0.0, 1.0, 2.0]) - np.log(1 + np.e + np.e**2)
    weights = np.minimum(np.exp(3.0 * (np.array([0.5, 0.0, 10.0]) - 0.5)), 100.0)
    assert weights[2] == 100.0
    by_hand = -np.mean(weights * log_pi[[0, 2, 1]])
    np.testing.assert_allclose(float(loss), by_hand, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["weight_mean"]), weights.mean(), rtol=1e-6)


# ---- exploration ---------------------------------------------------------------------------------


def test_linear_epsilon_schedule_and_epsilon_greedy():
    """ε decays linearly from start to end over the decay steps and then holds; ε = 0 is greedy,
    ε = 1 uniform over the actions."""
    eps = [float(linear_epsilon(s, 1.0, 0.1, 100)) for s in (0, 50, 100, 1000)]
    np.testing.assert_allclose(eps, [1.0, 0.55, 0.1, 0.1], rtol=1e-6)
    greedy = jnp.full((4000,), 2, jnp.int32)
    np.testing.assert_array_equal(epsilon_greedy(jax.random.key(0), greedy, 4, 0.0), greedy)
    uniform = np.asarray(epsilon_greedy(jax.random.key(0), greedy, 4, 1.0))
    np.testing.assert_allclose(np.bincount(uniform, minlength=4) / 4000, 0.25, atol=0.03)
    half = np.asarray(epsilon_greedy(jax.random.key(1), greedy, 4, 0.5))
    assert abs((half != 2).mean() - 0.5 * 3 / 4) < 0.04


def test_dqn_explores_on_its_schedule_and_acts_greedily():
    agent = DQN(hidden_dims=(4,), eps_start=1.0, eps_end=0.0, eps_decay_steps=10)
    state = init(agent, VECTOR)
    obs = batch_for(VECTOR, 256).observations
    greedy = np.asarray(agent.act(state, obs, jax.random.key(1), True))
    np.testing.assert_array_equal(greedy, np.argmax(agent.all_q_values(state, obs)[0], -1))
    late = agent.explore(state, obs, jax.random.key(2), jnp.int32(10))
    np.testing.assert_array_equal(late, greedy)
    early = np.asarray(agent.explore(state, obs, jax.random.key(2), jnp.int32(0)))
    assert set(early.tolist()) == {0, 1, 2} and (early != greedy).mean() > 0.4


# ---- training ------------------------------------------------------------------------------


@pytest.mark.parametrize("head_name", list(HEADS))
def test_every_head_trains_dqn(head_name):
    """With a fixed target network, 30 updates on one fixed batch lower DQN's loss, finitely,
    for every critic head (distributional ones through their backup; a cross-entropy cannot
    fall below the target's entropy, so the test asks for a steady decrease, not a ratio)."""
    head = resolve_support(HEADS[head_name], -5.0, 5.0)
    agent = DQN(hidden_dims=(8,), critic=head, critic_lr=1e-2, target_update_every=10_000)
    state = init(agent, VECTOR)
    batch = batch_for(VECTOR, 16)

    @jax.jit
    def train(state):
        step = lambda s, key: agent.update(s, batch, key)
        return jax.lax.scan(step, state, jax.random.split(jax.random.key(1), 30))

    _, metrics = train(state)
    losses = np.asarray(metrics["critic/loss"])
    assert np.all(np.isfinite(losses))
    assert losses[-5:].mean() < losses[:5].mean() and losses[-1] < losses[0] - 0.05, losses


# DQN in the harness: frames (its Q-network on the CNN torso), 3-step returns (n-step batches
# drawn inside the compiled chunk) and two members; the others on vector observations.
# The perfect model rolls out a 3-pipe PanFlute (6 bits, 3 actions, as VECTOR's actions).
HARNESS = {
    "dqn": (FRAMES, dict(n_step=3, ensemble=QEnsemble(num_qs=2))),
    "perfect_model_dqn": (
        Spec((6,), 0, total_updates=20, num_actions=NUM_ACTIONS),
        dict(simulator="PanFlute-3pipes-v0"),
    ),
}


@pytest.fixture(scope="module", params=DISCRETE)
def trained(request):
    """Each discrete agent (tiny): 2 seeds initialised and trained 3 fused updates together."""
    spec, options = HARNESS.get(request.param, (VECTOR, {}))
    agent = make_agent(request.param, **TINY[request.param], **options)
    data = batch_for(spec, 40)
    init_keys, train_keys, _ = seed_keys([0, 1])
    states0 = init_seeds(agent, spec)(init_keys)
    copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)
    states, _, metrics = update_chunk(agent, 3)(copy(states0), train_keys, data)
    return agent, data, states0, states, metrics


def test_discrete_agents_train_act_and_round_trip(trained):
    """Finite "<part>/<name>" metrics, moved and diverging seeds, int32 actions in range
    (deterministic, not, and exploring), q_values = all_q_values at the actions, and a JSON
    round trip of the hyperparameters."""
    agent, data, states0, states, metrics = trained
    assert type(agent).discrete and agent.name in AGENTS
    for key, value in metrics.items():
        assert "/" in key and value.shape == (2,) and np.all(np.isfinite(value)), key
    assert any(k.endswith("/loss") for k in metrics)
    before, after = jax.tree.leaves(states0.actor.params), jax.tree.leaves(states.actor.params)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert not np.allclose(after[-1][0], after[-1][1])  # seeds differ

    @jax.jit
    def probe(state, obs, actions, key):
        out = dict(
            greedy=agent.act(state, obs, key, True),
            sampled=agent.act(state, obs, key, False),
            explored=agent.explore(state, obs, key, jnp.int32(0)),
        )
        if agent.has_critic:
            out.update(q_all=agent.all_q_values(state, obs), q=agent.q_values(state, obs, actions))
        return out

    state = jax.tree.map(lambda x: x[0], states)
    out = probe(state, data.observations[:7], data.actions[:7], jax.random.key(3))
    for name in ("greedy", "sampled", "explored"):
        actions = np.asarray(out[name])
        assert actions.shape == (7,) and actions.dtype == np.int32, name
        assert np.all((actions >= 0) & (actions < NUM_ACTIONS)), name
    if agent.has_critic:
        assert out["q_all"].shape == (agent.ensemble.num_qs, 7, NUM_ACTIONS)
        chosen = out["q_all"][:, np.arange(7), np.asarray(data.actions[:7])]
        np.testing.assert_array_equal(out["q"], chosen)
    assert from_dict(type(agent), json.loads(json.dumps(to_dict(agent)))) == agent


def test_frame_observations_go_through_the_cnn():
    """Rank-3 observations give every network of discrete IQL (Q, V, policy) the convolutional
    torso: 16 filters 3x3, VALID, then the dense layers on the flattened 3x3x16 features. (The
    harness trains DQN on uint8 frames; vectors go straight to the MLP.)"""
    agent = DiscreteIQL(**TINY["iql_discrete"])
    state = init(agent, FRAMES)
    for params in (state.critic.params["net"], state.value.params, state.actor.params):
        assert params["Torso_0"]["Conv3x3_0"]["kernel"].shape[-2:] == (2, 16)
        assert params["Torso_0"]["MLP_0"]["Dense_0"]["kernel"].shape[-2:] == (3 * 3 * 16, 8)
    assert HARNESS["dqn"][0] is FRAMES and batch_for(FRAMES).observations.dtype == jnp.uint8


def test_target_network_is_copied_every_period():
    """The target network stays put between copies and equals the online one after every
    `target_update_every`-th update."""
    agent = DQN(target_update_every=2, **TINY["dqn"])
    state = init(agent, VECTOR)
    batch = batch_for(VECTOR, 16)
    update = jax.jit(agent.update)
    first, _ = update(state, batch, jax.random.key(1))
    same = jax.tree.map(np.array_equal, first.target_critic, state.target_critic)
    assert all(jax.tree.leaves(same))
    second, _ = update(first, batch, jax.random.key(2))
    copied = jax.tree.map(np.array_equal, second.target_critic, second.critic.params)
    assert all(jax.tree.leaves(copied))


def test_bad_discrete_settings_are_one_line_errors():
    with pytest.raises(ValorlError, match="needs a discrete action space"):
        DQN().init(jax.random.key(0), Spec((3,), 2))
    with pytest.raises(ValorlError, match="needs a discrete action space"):
        DiscreteBC().init(jax.random.key(0), Spec((3,), 2))
    with pytest.raises(ValorlError, match="--n-step must be at least 1"):
        DQN(n_step=0)
    with pytest.raises(ValorlError, match="--eps-end must be in"):
        DQN(eps_end=1.5)
    with pytest.raises(ValorlError, match="needs --q-reduce min or subset-min"):
        DiscreteCQL(ensemble=QEnsemble(num_qs=2, q_reduce="mean"))
    assert dataclasses.replace(DQN(), n_step=2).return_steps == 2

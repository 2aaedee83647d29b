"""The agent contract, checked the same way for every registered agent.

One harness per agent (module-scoped, so each agent compiles its init and update chunks once):
three seeds initialised together, a few fused updates, and one seed trained on its own.
"""

from __future__ import annotations

import dataclasses
import json
import re
from types import SimpleNamespace

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, synthetic_dataset

from valorl.agents import AGENTS, IQL, TD3BC, CriticAgentBase, Spec, make_agent
from valorl.agents.base import apply, grad_step, polyak
from valorl.agents.steps import critic_steps
from valorl.config import from_dict, to_dict
from valorl.critics import CriticHead
from valorl.data.dataset import sample_batch
from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.nets import tanh_gaussian_sample
from valorl.training import checkpoint, plan
from valorl.training.fused import init_seeds, seed_keys, update_chunk

OBS_DIM, ACTION_DIM = 3, 2
SPEC = Spec((OBS_DIM,), ACTION_DIM, total_updates=100)
K = 3  # updates per scanned chunk
GROUP = [0, 1, 2]
PARTS = {
    "bc": {"actor"},
    "td3_bc": {"critic", "actor"},
    "iql": {"value", "critic", "actor"},
    "riql": {"value", "critic", "actor"},
    "sac": {"critic", "actor", "temperature"},
    "cql": {"critic", "actor", "temperature"},
    "calql": {"critic", "actor", "temperature"},
    "dsac_t": {"critic", "actor", "temperature"},
    "flow_bc": {"actor"},
    "fql": {"critic", "flow", "actor"},
    "qc": {"critic", "actor"},
    "dqc": {"critic", "action_critic", "value", "actor"},
    "rebrac": {"critic", "actor"},
}
TIGHT = dict(rtol=1e-5, atol=1e-6)


def fresh(tree):
    """A copy of `tree` on new buffers: `update_chunk` donates (deletes) its inputs."""
    return jax.tree.map(lambda x: x.copy(), tree)


def run_chunk(agent, n, states, keys, data):
    return update_chunk(agent, n)(fresh(states), fresh(keys), data)


def seed(tree, i):
    """Seed `i` of a seed-stacked pytree."""
    return jax.tree.map(lambda x: x[i], tree)


def key_data(keys) -> np.ndarray:
    return np.asarray(jax.random.key_data(keys))


def assert_trees_close(a, b, **tol):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TIGHT))


def kernels(tree):
    """(path, leaf) of every weight matrix in a pytree of agent states."""
    return [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if "kernel" in jax.tree_util.keystr(path) and "opt_state" not in jax.tree_util.keystr(path)
    ]


CONTINUOUS = sorted(
    name for name, cls in AGENTS.items() if not cls.discrete and not cls.model_based
)
"""The agents this harness checks (continuous actions; tests/test_discrete_agents.py checks the
discrete ones, tests/test_model_based.py the model-based ones, which are SAC checked here)."""


@pytest.fixture(scope="module", params=CONTINUOUS)
def h(request):
    """An agent with TINY settings: 3 seeds initialised and trained K updates together."""
    name = request.param
    agent = make_agent(name, **TINY[name])
    # with Monte-Carlo returns-to-go (Cal-QL) and next actions (ReBRAC); the others ignore them
    data = synthetic_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM).to_batch(
        discount=0.99, next_actions=True
    )
    init_keys, train_keys, _ = seed_keys(GROUP)
    states0 = init_seeds(agent, SPEC)(init_keys)
    states, keys, metrics = run_chunk(agent, K, states0, train_keys, data)
    return SimpleNamespace(
        name=name,
        agent=agent,
        data=data,
        train_keys=train_keys,
        states0=states0,
        states=states,
        keys=keys,
        metrics=metrics,
    )


FUSION_CHECKED = {"iql", "qc"}
"""Agents whose fused updates are checked against unfused ones and a lone seed in `make test`
(a value network and an advantage-weighted actor; chunks and best-of-N sampling); every agent,
delayed actors and temperatures included, in `make test-all`."""


def fusion_agents():
    return [
        pytest.param(name, marks=() if name in FUSION_CHECKED else pytest.mark.expensive)
        for name in CONTINUOUS
    ]


def alone(h):
    """Seed 1 initialised and trained K updates alone."""
    init_keys, train_keys, _ = seed_keys([1])
    states0 = init_seeds(h.agent, SPEC)(init_keys)
    states, keys, _ = run_chunk(h.agent, K, states0, train_keys, h.data)
    return SimpleNamespace(states0=states0, train_keys=train_keys, states=states, keys=keys)


# ---- construction ----------------------------------------------------------------------------


def test_registry_names_match_classes():
    """AGENTS maps each agent's own `name` to its class, so configs can rebuild agents."""
    assert set(AGENTS) == {
        *("bc", "td3_bc", "iql", "riql", "sac", "cql", "calql", "dsac_t"),
        *("dqn", "cql_discrete", "bc_discrete", "iql_discrete", "jowa"),
        *("mbpo", "mopo", "mobile"),
        *("model_dqn", "perfect_model_dqn"),
        *("flow_bc", "fql", "qc", "dqc", "rebrac"),
    }
    for name, cls in AGENTS.items():
        assert cls.name == name


def test_init_gives_finite_seed_stacked_arrays(h):
    """init gives a pytree of finite arrays, each with a leading axis of one entry per seed."""
    leaves = jax.tree.leaves(h.states0)
    assert leaves
    for leaf in leaves:
        assert isinstance(leaf, jax.Array)
        assert leaf.shape[0] == len(GROUP)
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_agent_is_hashable_frozen_dataclass(h):
    """Agents are static jit arguments: frozen dataclasses, equal and equally hashed by value."""
    assert dataclasses.is_dataclass(h.agent)
    twin = make_agent(h.name, **TINY[h.name])
    assert twin == h.agent and hash(twin) == hash(h.agent)
    assert dataclasses.replace(h.agent, batch_size=17) != h.agent
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.agent.batch_size = 3  # type: ignore[misc]


def test_config_json_round_trip(h):
    """to_dict -> JSON -> from_dict rebuilds an equal agent (tuples survive as lists)."""
    agent = dataclasses.replace(h.agent, hidden_dims=(5, 7), batch_size=9)
    text = json.dumps(to_dict(agent))
    back = from_dict(type(agent), json.loads(text))
    assert back == agent
    assert back.hidden_dims == (5, 7)


# ---- declared capabilities -------------------------------------------------------------------


def test_has_critic_agents_implement_q_values(h):
    """`has_critic` is declared exactly by the agents that implement `CriticAgent`: q_values of
    every member, (members, batch), finite, from the state's critic; a discount and a head."""
    state, obs = seed(h.states, 0), observations()
    actions = jnp.tanh(jax.random.normal(jax.random.key(3), (7, ACTION_DIM)))
    if not h.agent.has_critic:
        assert h.name in ("bc", "flow_bc")
        assert not isinstance(h.agent, CriticAgentBase) and not hasattr(h.agent, "q_values")
        return
    q = np.asarray(h.agent.q_values(state, obs, actions))
    assert q.shape == (h.agent.ensemble.num_qs, 7)
    assert np.all(np.isfinite(q))
    expected = h.agent.critic.value(apply(state.critic, state.critic.params, obs, actions))
    np.testing.assert_array_equal(q, np.asarray(expected))
    assert isinstance(h.agent.critic, CriticHead) and 0 < h.agent.discount <= 1


def test_utd_is_hyperparameter_means_utd_sets_the_batches_per_update(h):
    """`utd_is_hyperparameter` is declared exactly by the agents with a `utd` field, and that
    field is the number of batches one update consumes."""
    fields = {f.name for f in dataclasses.fields(h.agent)}
    assert h.agent.utd_is_hyperparameter == ("utd" in fields)
    if h.agent.utd_is_hyperparameter:
        assert dataclasses.replace(h.agent, utd=3).batches_per_update == 3


def test_returns_to_go_are_required_only_where_declared(h):
    """A `needs_returns_to_go` agent refuses a batch without returns-to-go with a ValorlError
    saying so; every other agent updates without them (traced, not compiled)."""
    batch = sample_batch(h.data, jax.random.key(0), h.agent.batch_size, h.agent.batches_per_update)
    batch = batch.replace(returns_to_go=None)
    trace = lambda: jax.eval_shape(h.agent.update, seed(h.states0, 0), batch, jax.random.key(1))
    if h.agent.needs_returns_to_go:
        with pytest.raises(ValorlError, match="needs Monte-Carlo returns-to-go in every batch"):
            trace()
    else:
        _, metrics = trace()
        assert set(metrics) == set(h.metrics)


def test_capabilities_are_class_attributes_not_hyperparameters(h):
    """Capabilities are facts about the algorithm: readable on the class (or, for whether a
    chunk critic is a one-step Q, a property of its horizon), never dataclass fields (so never
    command-line flags or config.json entries)."""
    cls = type(h.agent)
    for name in ("needs_returns_to_go", "has_critic", "utd_is_hyperparameter"):
        assert isinstance(getattr(h.agent, name), bool)
        assert isinstance(getattr(cls, name), bool | property)
        assert name not in to_dict(h.agent)
    assert isinstance(h.agent.batches_per_update, int) and h.agent.batches_per_update >= 1


BEST_OF_N = {"qc": "critic", "dqc": "action_critic"}
"""Agents that act by the best of N policy samples, and the critic that scores them."""


def test_every_state_holds_its_policy_as_actor(h):
    """Every agent's state holds its policy network as `state.actor` (policy export reads it),
    and acting deterministically depends only on it (and, for best-of-N policies, on the
    critic that scores their samples)."""
    state, obs = seed(h.states, 0), observations()
    assert "MLP_0" in state.actor.params
    scrambled = jax.tree.map(jnp.zeros_like, state).replace(actor=state.actor)
    if h.name in BEST_OF_N:
        part = BEST_OF_N[h.name]
        scrambled = scrambled.replace(**{part: getattr(state, part)})
    np.testing.assert_array_equal(
        np.asarray(h.agent.act(scrambled, obs, jax.random.key(1), True)),
        np.asarray(h.agent.act(state, obs, jax.random.key(1), True)),
    )


# ---- updates ---------------------------------------------------------------------------------


def test_update_metrics_are_named_finite_scalars(h):
    """Metrics are "<part>/<name>" with a "<part>/loss" per part, one finite value per seed."""
    parts = {key.split("/")[0] for key in h.metrics}
    assert parts == PARTS[h.name]
    for key, value in h.metrics.items():
        assert re.fullmatch(r"[a-z_]+/[a-z_]+", key), key
        assert value.shape == (len(GROUP),), key
        assert np.all(np.isfinite(np.asarray(value))), key
    for part in parts:
        assert f"{part}/loss" in h.metrics
        assert f"{part}/grad_norm" in h.metrics


def test_updates_change_params_and_stay_finite(h):
    """K updates move every network's weights and leave the state finite."""
    for (path, before), (_, after) in zip(kernels(h.states0), kernels(h.states), strict=True):
        assert not np.array_equal(np.asarray(before), np.asarray(after)), path
        assert np.all(np.isfinite(np.asarray(after))), path


@pytest.mark.parametrize("h", fusion_agents(), indirect=True)
def test_scanned_updates_equal_single_updates(h):
    """One chunk of K scanned updates equals K chunks of one update from the same state and key:
    fusing changes speed, never results."""
    one = alone(h)
    states, keys = one.states0, one.train_keys
    for _ in range(K):
        states, keys, _ = run_chunk(h.agent, 1, states, keys, h.data)
    assert_trees_close(states, one.states)
    np.testing.assert_array_equal(key_data(keys), key_data(one.keys))


def test_vmapped_seeds_diverge(h):
    """Seeds 0 and 1 start from different weights and stay different after training."""
    for tree in (h.states0, h.states):
        for path, leaf in kernels(tree):
            assert not np.allclose(np.asarray(leaf[0]), np.asarray(leaf[1])), path
    assert not np.array_equal(key_data(h.keys[0]), key_data(h.keys[1]))


@pytest.mark.parametrize("h", fusion_agents(), indirect=True)
def test_seed_in_group_equals_seed_alone(h):
    """Seed 1 trained with seeds 0 and 2 equals seed 1 trained alone (init and updates)."""
    one = alone(h)
    for a, b in zip(jax.tree.leaves(h.states0), jax.tree.leaves(one.states0), strict=True):
        np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[0]))
    assert_trees_close(seed(h.states, 1), seed(one.states, 0))
    np.testing.assert_array_equal(key_data(h.keys[1]), key_data(one.keys[0]))


# ---- acting ----------------------------------------------------------------------------------


def observations(n=7):
    return jax.random.normal(jax.random.key(42), (n, OBS_DIM))


@pytest.mark.parametrize("deterministic", [True, False])
def test_act_shape_and_bounds(h, deterministic):
    """act gives (B, action_dim) finite actions in [-1, 1], deterministic or not."""
    actions = np.asarray(
        h.agent.act(seed(h.states, 0), observations(), jax.random.key(1), deterministic)
    )
    assert actions.shape == (7, ACTION_DIM)
    assert np.all(np.isfinite(actions))
    assert np.all((actions >= -1.0) & (actions <= 1.0))


FLOW_POLICIES = {"flow_bc", "fql", "qc", "dqc"}
"""Agents whose policy is a flow: it has no mode, so it draws a sample when it evaluates too
(as FQL and QC evaluate), from the key it is given."""


def test_deterministic_act_is_reproducible(h):
    """Deterministic acting depends on the observation only, not on the key."""
    if h.name in FLOW_POLICIES:
        pytest.skip("a flow policy samples when it evaluates; test_stochastic_act checks it")
    state, obs = seed(h.states, 0), observations()
    a = h.agent.act(state, obs, jax.random.key(1), True)
    b = h.agent.act(state, obs, jax.random.key(2), True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # ... and it is a function of each row alone (no batch coupling)
    one = h.agent.act(state, obs[2:3], jax.random.key(1), True)
    np.testing.assert_allclose(np.asarray(one[0]), np.asarray(a[2]), **TIGHT)


def test_stochastic_act(h):
    """Stochastic acting is reproducible per key and differs across keys (IQL, TD3+BC); BC's
    policy (and RIQL's default deterministic actor) ignores the flag and the key."""
    state, obs = seed(h.states, 0), observations()
    mean = np.asarray(h.agent.act(state, obs, jax.random.key(1), True))
    a1 = np.asarray(h.agent.act(state, obs, jax.random.key(1), False))
    a1_again = np.asarray(h.agent.act(state, obs, jax.random.key(1), False))
    a2 = np.asarray(h.agent.act(state, obs, jax.random.key(2), False))
    np.testing.assert_array_equal(a1, a1_again)
    if h.name == "bc" or getattr(h.agent, "deterministic_actor", False):
        np.testing.assert_array_equal(a1, mean)
        np.testing.assert_array_equal(a2, mean)
    elif h.name in FLOW_POLICIES:  # a flow has no mode: both draw the key's sample
        np.testing.assert_array_equal(a1, mean)
        assert not np.allclose(a1, a2)
    else:
        assert not np.allclose(a1, a2)
        assert not np.allclose(a1, mean)


# ---- checkpoints -----------------------------------------------------------------------------


def templates(agent, seeds=GROUP):
    """The restore templates a run rebuilds from its config (shapes only, nothing computed)."""
    return plan.state_templates(agent, SPEC, seeds)


@pytest.fixture(scope="module")
def normalizer():
    return Normalizer(
        obs_mean=jnp.array([0.5, -1.0, 2.0]),
        obs_std=jnp.array([1.5, 0.25, 3.0]),
        action_low=jnp.array([-2.0, 0.0]),
        action_high=jnp.array([2.0, 1.0]),
        reward_scale=jnp.asarray(0.125),
    )


SUCCESSES = np.arange(12).reshape(3, 2, 2) % 3 == 0


def encoded(h, normalizer, successes: np.ndarray | None = SUCCESSES) -> bytes:
    return checkpoint.encode(
        checkpoint.Checkpoint(
            step=7,
            states=h.states,
            keys=h.keys,
            normalizer=normalizer,
            eval_steps=np.array([4, 7]),
            eval_returns=np.arange(12.0).reshape(3, 2, 2),
            eval_successes=successes,
        )
    )


def test_checkpoint_round_trip(h, normalizer):
    """encode/decode restores every state leaf, the RNG keys, the normalizer and the history
    exactly."""
    ckpt = checkpoint.decode(encoded(h, normalizer), *templates(h.agent))
    assert ckpt.step == 7
    restored, original = jax.tree.leaves(ckpt.states), jax.tree.leaves(h.states)
    assert len(restored) == len(original)
    for a, b in zip(restored, original, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(key_data(ckpt.keys), key_data(h.keys))
    for field in dataclasses.fields(Normalizer):
        np.testing.assert_array_equal(
            np.asarray(getattr(ckpt.normalizer, field.name)),
            np.asarray(getattr(normalizer, field.name)),
        )
    np.testing.assert_array_equal(ckpt.eval_steps, [4, 7])
    np.testing.assert_array_equal(ckpt.eval_returns, np.arange(12.0).reshape(3, 2, 2))
    np.testing.assert_array_equal(ckpt.eval_successes, SUCCESSES)
    # a run in an environment that reports no success stores none
    without = checkpoint.decode(encoded(h, normalizer, None), *templates(h.agent))
    assert without.eval_successes is None


def test_checkpoint_restores_a_usable_state(h, normalizer):
    """A restored state acts exactly like the state that was saved."""
    ckpt = checkpoint.decode(encoded(h, normalizer), *templates(h.agent))
    obs = observations()
    np.testing.assert_array_equal(
        np.asarray(h.agent.act(seed(ckpt.states, 2), obs, jax.random.key(0), True)),
        np.asarray(h.agent.act(seed(h.states, 2), obs, jax.random.key(0), True)),
    )


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not a checkpoint", "ckpt is damaged (not a valorl checkpoint)"),
        (b"", "ckpt is damaged (not a valorl checkpoint)"),
        (flax.serialization.msgpack_serialize({"format": "x/1"}), "ckpt is not a valorl-"),
        (flax.serialization.msgpack_serialize([1, 2]), "ckpt is not a valorl-checkpoint/1 file"),
    ],
)
def test_checkpoint_rejects_garbage(h, data, message):
    """Bytes that are not a valorl checkpoint give a ValorlError saying so."""
    with pytest.raises(ValorlError, match=re.escape(message)):
        checkpoint.decode(data, *templates(h.agent), where="ckpt")


def test_checkpoint_rejects_truncated_file(h, normalizer):
    """A checkpoint cut short (a partial copy) is reported as damaged."""
    data = encoded(h, normalizer)
    with pytest.raises(ValorlError, match=re.escape("ckpt is damaged")):
        checkpoint.decode(data[: len(data) // 2], *templates(h.agent), where="ckpt")


@pytest.mark.parametrize(
    "hidden_dims, seeds, detail",
    [
        ((16, 16), GROUP, "an array has shape (3, 8), expected (3, 16)"),
        ((8,), GROUP, ""),
        ((8, 8, 8), GROUP, ""),
        ((8, 8), [0, 1], "an array has shape (3,), expected (2,)"),
    ],
)
def test_checkpoint_rejects_other_architecture(h, normalizer, hidden_dims, seeds, detail):
    """Restoring into another architecture or seed count is a ValorlError naming the mismatch,
    never a silently wrong state."""
    other = dataclasses.replace(h.agent, hidden_dims=hidden_dims)
    with pytest.raises(ValorlError, match=re.escape("ckpt does not match this run's agent")) as e:
        checkpoint.decode(encoded(h, normalizer), *templates(other, seeds), where="ckpt")
    assert detail in str(e.value)


def test_checkpoint_rejects_other_normalizer_shape(h, normalizer):
    """A normalizer for another observation size is refused too."""
    states, _ = templates(h.agent)
    with pytest.raises(ValorlError, match="does not match this run's agent"):
        checkpoint.decode(encoded(h, normalizer), states, Normalizer.identity((4,), ACTION_DIM))


# ---- agent specifics -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def td3():
    """TD3+BC with TINY settings (policy_freq=2), one initialised seed and the data."""
    agent = TD3BC(**TINY["td3_bc"], policy_freq=2)
    state = seed(init_seeds(agent, SPEC)(seed_keys([0])[0]), 0)
    return agent, state, synthetic_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM).to_batch()


def test_td3_bc_delayed_actor(td3):
    """policy_freq=2: one update consumes a (2, B) batch, takes two critic steps (on batch 0,
    then batch 1) and one actor step on the last batch with the updated critic, then moves
    both targets once."""
    agent, state, data = td3
    assert agent.batches_per_update == 2
    batch = sample_batch(data, jax.random.key(3), agent.batch_size, 2)
    assert batch.observations.shape == (2, agent.batch_size, OBS_DIM)
    key = jax.random.key(4)

    @jax.jit
    def by_hand(state, batch, key):
        keys, critic_losses = jax.random.split(key, 2), []
        new = state
        for i in range(2):
            sub = seed(batch, i)
            critic, m = grad_step(
                new.critic, lambda p, s=new, b=sub, k=keys[i]: agent.critic_loss(p, s, b, k)
            )
            critic_losses.append(m["loss"])
            new = new.replace(critic=critic)
        actor, _ = grad_step(new.actor, lambda p: agent.actor_loss(p, new, seed(batch, 1)))
        new = new.replace(
            actor=actor,
            target_actor=polyak(actor.params, state.target_actor, agent.tau),
            target_critic=polyak(new.critic.params, state.target_critic, agent.tau),
        )
        return new, jnp.mean(jnp.stack(critic_losses))

    new, metrics = jax.jit(agent.update)(state, batch, key)
    expected, critic_loss = by_hand(state, batch, key)
    assert int(new.critic.step) == 2 and int(new.actor.step) == 1
    for field in ("critic", "actor"):
        assert_trees_close(getattr(new, field).params, getattr(expected, field).params)
    assert_trees_close(new.target_actor, expected.target_actor)
    assert_trees_close(new.target_critic, expected.target_critic)
    np.testing.assert_allclose(float(metrics["critic/loss"]), float(critic_loss), rtol=1e-5)


def test_td3_bc_policy_freq_one_takes_a_plain_batch(td3):
    """policy_freq=1: one (B, ...) batch per update, one critic and one actor step."""
    agent, state, data = td3
    agent = dataclasses.replace(agent, policy_freq=1)
    assert agent.batches_per_update == 1
    batch = sample_batch(data, jax.random.key(3), agent.batch_size)
    assert batch.observations.shape == (agent.batch_size, OBS_DIM)
    new, metrics = jax.jit(agent.update)(state, batch, jax.random.key(4))
    assert int(new.critic.step) == 1 and int(new.actor.step) == 1
    assert all(np.isfinite(float(v)) and np.shape(v) == () for v in metrics.values())


def test_iql_value_loss_by_hand():
    """IQL's value loss (as `update` reports it) is the τ-expectile loss of (min over the
    *target* ensemble of Q − V), recomputed here in numpy from the networks' outputs."""
    base = IQL(**TINY["iql"])
    states = init_seeds(base, SPEC)(seed_keys(GROUP)[0])  # compiled by the harness already
    agent = dataclasses.replace(base, expectile=0.8)
    # A target critic unlike the online one (another seed's), so using the wrong one would show.
    target = seed(states, 1).critic.params
    state = seed(states, 0).replace(target_critic=target)
    data = synthetic_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM).to_batch()
    batch = sample_batch(data, jax.random.key(5), 64)
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.key(6))

    q = np.asarray(apply(state.critic, target, batch.observations, batch.actions), np.float64)
    assert q.shape == (agent.ensemble.num_qs, 64, 1)  # (members, batch, head outputs)
    v = np.asarray(apply(state.value, state.value.params, batch.observations), np.float64)
    assert v.shape == (64,)
    diff = q[..., 0].min(axis=0) - v
    assert (diff > 0).any() and (diff < 0).any()  # both sides of the asymmetric loss are used
    expected = np.mean(np.where(diff > 0, 0.8, 0.2) * diff**2)
    np.testing.assert_allclose(float(metrics["value/loss"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["value/v_mean"]), v.mean(), rtol=1e-5, atol=1e-7)

    online = np.asarray(
        apply(state.critic, state.critic.params, batch.observations, batch.actions)
    )[..., 0].min(axis=0)
    wrong = np.mean(np.where(online - v > 0, 0.8, 0.2) * (online - v) ** 2)
    assert not np.isclose(wrong, expected, rtol=1e-3)


@pytest.mark.parametrize("name, settings", [("sac", dict(utd=3)), ("dsac_t", {})])
def test_critic_steps_equal_a_loop_of_critic_steps(name, settings):
    """The shared critic-steps scan is a loop over the batch's leading axis: step i sees batch i
    and the i-th key split from the update's key, in order; metrics are averaged over the
    steps, and the last batch is handed on to the actor."""
    agent = make_agent(name, **TINY[name], **settings)
    n = agent.batches_per_update
    assert n > 1
    state = agent.init(jax.random.key(0), SPEC)
    data = synthetic_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM).to_batch()
    batch = sample_batch(data, jax.random.key(1), agent.batch_size, n)
    key = jax.random.key(2)

    @jax.jit
    def loop(state, batch, key):
        losses = []
        for i, sub_key in enumerate(jax.random.split(key, n)):
            state, metrics = agent.critic_step(state, seed(batch, i), sub_key)
            losses.append(metrics["loss"])
        return state, jnp.mean(jnp.stack(losses))

    scanned, metrics, last = jax.jit(lambda s, b, k: critic_steps(agent.critic_step, s, b, k, n))(
        state, batch, key
    )
    expected, loss = loop(state, batch, key)
    assert int(scanned.critic.step) == n
    assert_trees_close(scanned, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-6)
    assert_trees_close(last, seed(batch, n - 1), rtol=0, atol=0)


def test_bc_run_exports_a_policy_file(tmp_path):
    """BC's state holds its policy as `actor` like every agent's, so a BC run exports a policy
    file (`valorl datasets export-policy`) that acts as the run does."""
    import valorl
    from valorl.cli.main import main
    from valorl.collection import PolicyFile

    run = tmp_path / "bc"
    valorl.train(
        "bc", synthetic_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM), steps=10, log_every=10,
        eval_every=10, eval_episodes=0, seeds=2, progress=False, out=run, **TINY["bc"],
    )  # fmt: skip
    out = tmp_path / "bc.npz"
    assert (
        main(["datasets", "export-policy", str(run), "--seed-index", "1", "--out", str(out)]) == 0
    )
    exported = PolicyFile.load(out)
    assert exported.provenance["agent"] == "bc" and exported.provenance["step"] == 10
    obs = np.random.default_rng(0).normal(size=(16, OBS_DIM)).astype(np.float32)
    policy = valorl.load_policy(run)
    np.testing.assert_allclose(exported(obs), policy(obs, seed_index=1), atol=1e-5)
    assert not np.allclose(exported(obs), policy(obs, seed_index=0), atol=1e-3)


@pytest.mark.parametrize(
    "name, settings, over_members",
    [
        ("sac", {}, "min"),
        ("sac", dict(actor_q="mean"), "mean"),
        ("cql", {}, "min"),
        ("dsac_t", {}, "min"),
    ],
)
def test_soft_actor_step_by_hand(name, settings, over_members):
    """The maximum-entropy actor step that SAC, CQL and DSAC-T share, written out: ã from the
    squashed Gaussian with the first key of a split, J_π = mean(α·log π(ã|s) − Q̂(s, ã)) with
    Q̂ the min (or mean) over the two members, then J(α) = α·(H − H̄), H̄ = −|A|."""
    agent = make_agent(name, **TINY[name], **settings)
    state = agent.init(jax.random.key(0), SPEC)
    data = synthetic_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM).to_batch()
    batch = sample_batch(data, jax.random.key(1), agent.batch_size)
    key = jax.random.key(2)

    @jax.jit
    def by_hand(state, batch, key):
        alpha = jnp.exp(state.temperature.params["log_alpha"])

        def actor_loss(params):
            mean, log_std = apply(state.actor, params, batch.observations)
            actions, log_prob = tanh_gaussian_sample(jax.random.split(key)[0], mean, log_std)
            outputs = apply(state.critic, state.critic.params, batch.observations, actions)
            values = agent.critic.value(outputs)
            q = values.min(axis=0) if over_members == "min" else values.mean(axis=0)
            return (alpha * log_prob - q).mean(), {"entropy": -log_prob.mean()}

        actor, metrics = grad_step(state.actor, actor_loss)
        entropy = metrics["entropy"]
        temperature, _ = grad_step(
            state.temperature,
            lambda p: (jnp.exp(p["log_alpha"]) * (entropy + ACTION_DIM), {}),
        )
        return actor, temperature, metrics

    actor, temperature, metrics = jax.jit(agent.actor_step)(state, batch, key)
    expected_actor, expected_temperature, expected = by_hand(state, batch, key)
    assert_trees_close(actor.params, expected_actor.params, rtol=1e-6, atol=1e-7)
    assert_trees_close(temperature.params, expected_temperature.params, rtol=1e-6, atol=1e-7)
    for part in ("loss", "entropy"):
        np.testing.assert_allclose(float(metrics[f"actor/{part}"]), float(expected[part]), 1e-6)
    assert set(metrics) >= {"actor/q_mean", "temperature/alpha", "temperature/loss"}

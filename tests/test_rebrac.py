"""ReBRAC: the dataset's next actions, the penalised critic target and the actor loss by hand,
its small first actions, and the refusal to train online."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import TINY, compiled_init, synthetic_dataset

import valorl
from valorl.agents import TD3BC, ReBRAC, Spec
from valorl.agents.base import apply
from valorl.data.dataset import sample_batch
from valorl.errors import ValorlError


def test_next_actions_are_the_following_rows_within_an_episode():
    data = synthetic_dataset(n=20, obs_dim=2, action_dim=1, episode_len=5)
    batch = data.to_batch(next_actions=True)
    actions, following = np.asarray(data.actions[:, 0]), np.asarray(batch.next_actions[:, 0])
    ends = np.asarray(data.dones, bool)
    np.testing.assert_array_equal(following[~ends], actions[1:][~ends[:-1]])
    np.testing.assert_array_equal(following[ends], actions[ends])  # the row's own at an end
    assert data.to_batch().next_actions is None


def test_rebrac_target_and_actor_loss_by_hand():
    """With no smoothing noise: y = r + γ·m·(min_i Q̄_i(s', π̄(s')) − β_c·‖π̄(s') − a'‖²), the
    loss Σ_i mean (Q_i − y)²; the actor: −mean(Q/mean|Q|) + β_a·mean ‖π(s) − a‖², Q the
    minimum over the critics at π(s)."""
    agent = ReBRAC(**TINY["rebrac"], policy_noise=0.0, actor_bc_coef=0.3, critic_bc_coef=0.7)
    spec = Spec(obs_shape=(3,), action_dim=2)
    state = jax.jit(agent.init, static_argnums=1)(jax.random.key(0), spec)
    other = jax.jit(agent.init, static_argnums=1)(jax.random.key(1), spec)
    state = state.replace(target_actor=other.actor.params, target_critic=other.critic.params)
    data = synthetic_dataset(obs_dim=3, action_dim=2).to_batch(next_actions=True)
    batch = sample_batch(data, jax.random.key(2), 32)
    losses = jax.jit(
        lambda s, b: (agent.critic_loss(s.critic.params, s, b, jax.random.key(3))[0],
                      agent.actor_loss(s.actor.params, s, b)[0])
    )  # fmt: skip
    critic_loss, actor_loss = losses(state, batch)

    @jax.jit
    def networks(s, b):
        next_a = apply(s.actor, s.target_actor, b.next_observations)
        next_q = apply(s.critic, s.target_critic, b.next_observations, next_a)[..., 0]
        q = apply(s.critic, s.critic.params, b.observations, b.actions)[..., 0]
        pi = apply(s.actor, s.actor.params, b.observations)
        q_pi = apply(s.critic, s.critic.params, b.observations, pi)[..., 0]
        return next_a, next_q, q, pi, q_pi

    next_a, next_q, q, pi, q_pi = (np.asarray(x, np.float64) for x in networks(state, batch))
    b = jax.tree.map(lambda x: np.asarray(x, np.float64), batch)
    penalty = 0.7 * ((next_a - b.next_actions) ** 2).sum(-1)
    y = b.rewards + 0.99 * b.masks * (next_q.min(0) - penalty)
    assert float(critic_loss) == pytest.approx(((q - y) ** 2).mean(-1).sum(), rel=1e-4)
    q_min = q_pi.min(0)
    expected = -(q_min / np.abs(q_min).mean()).mean() + 0.3 * ((pi - b.actions) ** 2).sum(-1).mean()
    assert float(actor_loss) == pytest.approx(expected, rel=1e-4)


def test_rebracs_first_actions_lie_near_zero():
    """ReBRAC's actor starts with an output layer 100 times smaller (FQL's `actor_fc_scale`
    0.01) than TD3+BC's, whose first actions are spread over (−1, 1)."""
    obs = jax.random.normal(jax.random.key(1), (64, 6))
    spec = Spec(obs_shape=(6,), action_dim=3)
    spread = {}
    for agent in (ReBRAC(hidden_dims=(32, 32)), TD3BC(hidden_dims=(32, 32))):
        state = compiled_init(agent, spec)
        spread[agent.name] = np.abs(np.asarray(agent.act(state, obs, None, True))).mean()
    assert spread["td3_bc"] > 0.2 and spread["rebrac"] < spread["td3_bc"] / 5


def test_rebrac_trains_offline_only():
    with pytest.raises(ValorlError, match="trains offline only"):
        valorl.train_online("rebrac", env="Pendulum-v1", online_steps=10)

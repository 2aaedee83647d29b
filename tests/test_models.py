"""Dynamics models, imagined rollouts, and the model-based penalties and losses, by hand."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compiled_init

from valorl.agents import MBPO, MOBILE, MOPO, Spec
from valorl.agents.sac import SAC
from valorl.critics.lipschitz import lipschitz_estimate, robust_loss, worst_perturbation
from valorl.data import replay
from valorl.data.dataset import Batch
from valorl.errors import ValorlError
from valorl.models import DynamicsModel, Prediction, Rollouts, add_valid, fit, rollout
from valorl.models.fit import bootstrap, vagram_weights
from valorl.models.termination import termination_rule

S, A = 3, 2


def linear_data(n: int = 2000, seed: int = 0):
    """Transitions of s' = M s + N a, r = c·s (no terminations), and (M, N, c)."""
    rng = np.random.default_rng(seed)
    m, nm, c = rng.normal(size=(S, S)) * 0.3, rng.normal(size=(S, A)), rng.normal(size=S)
    obs = rng.normal(size=(n, S)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, A)).astype(np.float32)
    batch = Batch(
        observations=jnp.asarray(obs),
        actions=jnp.asarray(act),
        rewards=jnp.asarray(obs @ c, jnp.float32),
        next_observations=jnp.asarray(obs @ m.T + act @ nm.T, jnp.float32),
        masks=jnp.ones(n),
        dones=jnp.zeros(n),
    )
    return batch, (m, nm, c)


def linear_model(**kw) -> DynamicsModel:
    """Members without hidden layers: linear maps of standardised inputs."""
    settings = dict(model_members=1, model_elites=1, model_kind="deterministic")
    settings |= dict(model_hidden_dims=(), model_weight_decay=(0.0,), model_batch_size=64)
    return DynamicsModel(**(settings | kw))


def test_a_model_fitted_to_a_linear_system_recovers_it():
    data, (m, nm, c) = linear_data()
    model = linear_model(model_lr=1e-2, model_max_epochs=100, model_patience=100)
    state, metrics = jax.jit(lambda s, k: fit(model, s, data, 2000, k))(
        model.init(jax.random.key(0), S, A), jax.random.key(1)
    )
    assert metrics["holdout_mse"] < 1e-4
    obs, act = jnp.ones((1, S)) * 0.5, jnp.full((1, A), -0.25)
    jac_s = jax.jacobian(lambda s: model.predict(state, s, act).next_obs_mean[0, 0])(obs)[:, 0]
    jac_a = jax.jacobian(lambda a: model.predict(state, obs, a).next_obs_mean[0, 0])(act)[:, 0]
    jac_r = jax.grad(lambda s: model.predict(state, s, act).reward_mean[0, 0])(obs)[0]
    np.testing.assert_allclose(jac_s, m, atol=1e-2)
    np.testing.assert_allclose(jac_a, nm, atol=1e-2)
    np.testing.assert_allclose(jac_r, c, atol=1e-2)


def test_elites_are_the_members_with_the_lowest_held_out_error():
    """Four linear members, set by hand to the true map plus noise of different sizes, are
    not trained (learning rate 0): the elites are the two least perturbed, in order."""
    data, _ = linear_data()
    model = linear_model(model_members=4, model_elites=2, model_lr=0.0, model_max_epochs=1)
    exact, _ = jax.jit(
        lambda s, k: fit(linear_model(model_lr=1e-2, model_max_epochs=100), s, data, 2000, k)
    )(linear_model().init(jax.random.key(0), S, A), jax.random.key(1))
    state = compiled_init(model, S, A, seed=2)
    noise = jnp.array([0.3, 0.0, 0.5, 0.1])  # member 1 exact, then 3, 0, 2
    params = jax.tree.map(
        lambda exact_p, p: exact_p[0] + noise.reshape(-1, *[1] * (p.ndim - 1)) * jnp.ones_like(p),
        exact.net.params,
        state.net.params,
    )
    state = state.replace(net=state.net.replace(params=params))
    fitted, _ = fit(model, state, data, 2000, jax.random.key(3))
    np.testing.assert_array_equal(fitted.elites, [1, 3])
    errors = np.asarray(fitted.holdout_error)
    assert errors[1] < errors[3] < errors[0] < errors[2]


def test_each_member_trains_on_its_own_bootstrap_resample():
    """MBPO's bootstrap: each member's rows are a resample with replacement of the training
    rows, so about 1 − 1/e of them, different for each member."""
    draws = np.asarray(
        jax.jit(bootstrap, static_argnums=(1, 2))(jax.random.key(0), 3, 6000, 1000, 5000)
    )
    used = draws[:, :4000]  # the resample: as many draws as training rows
    assert used.min() >= 1000 and used.max() < 5000
    distinct = [len(np.unique(row)) / 4000 for row in used]
    np.testing.assert_allclose(distinct, 1 - np.exp(-1), atol=0.015)
    assert len(np.intersect1d(np.unique(used[0]), np.unique(used[1]))) < 0.45 * 4000


def test_fit_uses_only_the_first_size_rows():
    """Rows beyond `size` (an unfilled replay buffer) never reach the fit: garbage there
    changes nothing."""
    data, _ = linear_data(512)
    garbage = jax.tree.map(lambda x: x.at[256:].set(1e6), data)
    model = linear_model(model_max_epochs=3)
    run = jax.jit(
        lambda d: fit(model, model.init(jax.random.key(0), S, A), d, 256, jax.random.key(1))
    )
    a, b = run(data), run(garbage)
    jax.tree.map(np.testing.assert_array_equal, a[0].net.params, b[0].net.params)


def step_model(reward: float = 2.0) -> tuple[DynamicsModel, object]:
    """A deterministic one-member model that predicts s' = s + 1 and reward `reward` whatever
    (s, a), and never terminates by its classifier."""
    model = linear_model()
    state = compiled_init(model, 1, 1)
    params = {
        "layer_0": {
            "kernel": jnp.zeros((1, 2, 3)),
            "bias": jnp.array([[1.0, reward, -10.0]]),
        }
    }
    return model, state.replace(net=state.net.replace(params=params))


def test_rollouts_stop_at_terminations_and_after_their_length():
    model, state = step_model()
    start = jnp.array([[0.0], [1.5], [-10.0]])
    ends = lambda next_obs, prob, key: next_obs[:, 0] >= 3.0
    policy = lambda obs, key: jnp.zeros((obs.shape[0], 1))
    rows, valid, metrics = rollout(
        model, state, policy, start, jax.random.key(0), 4, 6, ends, lambda p: jnp.ones(3) * 0.5
    )
    valid = np.asarray(valid).reshape(6, 3)  # step-major
    # from 0: s' = 1, 2, 3 (terminal); from 1.5: 2.5, 3.5 (terminal); from −10: 4 steps (length)
    np.testing.assert_array_equal(valid.sum(axis=0), [3, 2, 4])
    masks = np.asarray(rows.masks).reshape(6, 3)
    np.testing.assert_array_equal(masks[:, 0][:3], [1, 1, 0])
    np.testing.assert_array_equal(masks[:, 2][:4], [1, 1, 1, 1])
    dones = np.asarray(rows.dones).reshape(6, 3)
    np.testing.assert_array_equal(dones[:4, 2], [0, 0, 0, 1])  # the rollout's last step
    rewards = np.asarray(rows.rewards).reshape(6, 3)
    np.testing.assert_allclose(rewards[valid], 2.0 - 0.5)  # penalised
    np.testing.assert_array_equal(rewards[~valid], 0.0)  # steps past the length: not computed
    assert float(metrics["length"]) == pytest.approx(3.0)
    assert float(metrics["penalty"]) == pytest.approx(0.5)


def test_a_diverged_prediction_ends_its_rollout_unkept():
    """A model whose reward is infinite: no row is kept, and no rollout goes on."""
    model, state = step_model(reward=np.inf)
    policy = lambda obs, key: jnp.zeros((obs.shape[0], 1))
    never = lambda next_obs, prob, key: jnp.zeros(next_obs.shape[0], bool)
    rows, valid, metrics = rollout(
        model, state, policy, jnp.zeros((2, 1)), jax.random.key(0), 3, 3, never
    )
    assert not np.asarray(valid).any() and float(metrics["length"]) == 0.0
    assert np.isfinite(np.asarray(rows.rewards)).all()


def test_imagined_rows_enter_the_buffer_in_order_and_wrap_within_its_capacity():
    model, state = step_model()
    start = jnp.array([[0.0], [1.5]])
    ends = lambda next_obs, prob, key: next_obs[:, 0] >= 3.0
    policy = lambda obs, key: jnp.zeros((obs.shape[0], 1))
    rows, valid, _ = rollout(model, state, policy, start, jax.random.key(0), 5, 5, ends)
    buffer = replay.init(4, (1,), 1)
    buffer = add_valid(buffer, rows, valid)  # 5 valid rows into 4: the first is overwritten
    assert int(buffer.size) == 4 and int(buffer.position) == 1
    # valid rows in step-major order: s = 0, 1.5, 1, 2.5, 2  ->  the last four kept, wrapped
    np.testing.assert_array_equal(np.asarray(buffer.data.observations[:, 0]), [2.0, 1.5, 1.0, 2.5])


def test_a_growing_rollout_schedule_and_real_rows():
    r = Rollouts(rollout_length=15, rollout_start_length=1, rollout_schedule=(20_000, 100_000))
    assert [int(r.length_at(s)) for s in (0, 20_000, 60_000, 100_000, 10**6)] == [1, 1, 8, 15, 15]
    assert int(Rollouts(rollout_length=5).length_at(10**6)) == 5
    assert r.real_rows(256) == 13 and r.capacity == 50_000 * 15 * 5
    # batches see the rounds kept at the length of the last round (MBPO's pool size): after
    # 60,000 steps the last round was at 59,000 (length 7), one step later at 60,000 (8)
    every = dataclasses.replace(r, rollout_every=1000)
    assert [int(every.kept_rows(s)) for s in (1, 60_000, 60_001)] == [
        50_000 * h * 5 for h in (1, 7, 8)
    ]
    with pytest.raises(ValorlError, match="--rollout-start-length must be between 1"):
        Rollouts(rollout_length=3, rollout_start_length=4)
    with pytest.raises(ValorlError, match="--model-elites must be between 1 and --model-members"):
        DynamicsModel(model_members=2, model_elites=3)


def test_online_batches_draw_imagined_rows_from_the_rounds_kept_at_the_current_length():
    """A model buffer of 12 rows holding rows 9..20 (1..20 added): with rounds of 2 rollouts
    and 2 rounds kept, batches draw the newest 2·h·2 rows at the rollout length h of the last
    round (1 early in the schedule, 3 after it), and real rows come first."""
    from valorl.training.sources import ModelMix, Replay, ReplayInputs

    def rows(values):
        v = jnp.asarray(values, jnp.float32)
        return Batch(v[:, None], v[:, None], v, v[:, None], v, v)

    schedule = dict(rollout_start_length=1, rollout_schedule=(100, 200), rollout_every=10)
    rollouts = Rollouts(rollout_batch=2, rollout_length=3, rollout_retain=2, **schedule)
    model_buffer = replay.add(replay.init(rollouts.capacity, (1,), 1), rows(np.arange(1, 21)))
    real = replay.add(replay.init(4, (1,), 1), rows([-1.0] * 4))
    mix = ModelMix(real=Replay(), real_rows=1, rollouts=rollouts)
    draw = jax.jit(lambda step: mix.sample((real, model_buffer), ReplayInputs(None, step),
                                           jax.random.key(0), 400, 1).rewards)  # fmt: skip
    early, late = np.asarray(draw(jnp.int32(5))), np.asarray(draw(jnp.int32(500)))
    assert early[0] == late[0] == -1
    assert set(early[1:].tolist()) == {17, 18, 19, 20}
    assert set(late[1:].tolist()) == set(range(9, 21))


def test_known_termination_rules():
    hopper = termination_rule("Hopper-v5")
    obs = jnp.array([[1.2, 0.0, 0, 0], [0.6, 0.0, 0, 0], [1.2, 0.3, 0, 0], [1.2, 0.0, 200, 0]])
    np.testing.assert_array_equal(hopper(obs), [False, True, True, True])
    walker = termination_rule("Walker2d-v5")
    np.testing.assert_array_equal(walker(jnp.array([[1.0, 0.5], [2.5, 0.0]])), [False, True])
    assert termination_rule("HalfCheetah-v5")(jnp.ones((2, 17))).sum() == 0
    assert termination_rule("Ant-v5") is None  # the learned classifier


def test_the_inverted_double_pendulum_rule_matches_the_simulator():
    """The tip-height rule on observations agrees with Gymnasium's own termination."""
    import gymnasium as gym

    env = gym.make("InvertedDoublePendulum-v5")
    obs, _ = env.reset(seed=0)
    rows, ended = [], []
    for _ in range(300):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        rows.append(obs)
        ended.append(terminated)
        if terminated or truncated:
            obs, _ = env.reset()
    rule = termination_rule("InvertedDoublePendulum-v5")
    assert any(ended)
    np.testing.assert_array_equal(rule(jnp.asarray(np.array(rows))), ended)


def test_a_learned_termination_is_drawn_from_its_probability():
    from valorl.models import termination_test

    test = termination_test(None, lambda x: x)
    prob = jnp.full(20_000, 0.1)
    ended = test(jnp.zeros((20_000, 1)), prob, jax.random.key(0))
    assert abs(float(ended.mean()) - 0.1) < 0.01


def test_the_mopo_penalty_by_hand():
    """λ · max over members of ‖(σ_s', σ_r)‖₂: member stds (3, 4 | 0) and (1, 1 | 1)."""
    prediction = Prediction(
        next_obs_mean=jnp.zeros((2, 1, 2)),
        reward_mean=jnp.zeros((2, 1)),
        next_obs_std=jnp.array([[[3.0, 4.0]], [[1.0, 1.0]]]),
        reward_std=jnp.array([[0.0], [1.0]]),
        terminal_prob=jnp.zeros((2, 1)),
    )
    np.testing.assert_allclose(MOPO(penalty_coef=2.0).rollout_penalty(prediction), [10.0])


def test_the_vagram_loss_by_hand():
    """Weighted squared error of each target dimension, mean over dimensions and rows."""
    model = linear_model(model_weight_decay=(0.0,))
    state = compiled_init(model, 1, 1)
    params = {"layer_0": {"kernel": jnp.zeros((1, 2, 3)), "bias": jnp.array([[1.0, 0.0, -50.0]])}}
    inputs = jnp.zeros((1, 2, 2))
    targets = jnp.array([[[0.0, 1.0], [3.0, 2.0]]])  # errors (1, −1) and (−2, −2)
    weights = jnp.array([[[2.0, 1.0], [0.5, 0.0]]])
    loss, _ = model.loss(params, state, inputs, targets, jnp.zeros((1, 2)), weights)
    by_hand = ((2 * 1 + 1 * 1) / 2 + (0.5 * 4 + 0) / 2) / 2
    assert float(loss) == pytest.approx(by_hand, abs=1e-6)  # termination BCE ≈ 2e-22


def test_vagram_weights_by_hand():
    """On standardised targets the reference's (1/S)·Σ g_d²·e_d² + e_r² (raw units) weighs
    dimension d by g_d²·σ_d² and the reward by S·σ_r²; the plain error adds 1 to each."""
    g2 = jnp.array([[4.0, 0.0], [1.0, 9.0]])  # two rows, S = 2
    std = jnp.array([0.5, 2.0, 3.0])  # σ of the two state changes, then of the reward
    expected = np.array([[1.0, 0.0, 18.0], [0.25, 36.0, 18.0]])
    np.testing.assert_allclose(vagram_weights(g2, std), expected)
    np.testing.assert_allclose(vagram_weights(g2, std, jnp.bool_(True)), expected + 1)


def test_mbpo_value_weights_average_squared_gradients_of_online_and_target_members():
    """VaGraM's reference (`use_all_vf`): the mean over the online and target critics' members
    of (∂Q_i(s', a')/∂s')², the action a' = tanh μ(s') held fixed."""
    agent = MBPO(hidden_dims=(8,), batch_size=4, model=DynamicsModel(model_hidden_dims=(4,)))
    state = compiled_init(agent, Spec(obs_shape=(3,), action_dim=2))
    target = jax.tree.map(lambda x: 1.5 * x + 0.1, state.critic.params)  # unlike the online one
    state = state.replace(target_critic=target)
    next_obs = jax.random.normal(jax.random.key(3), (5, 3))
    weights = np.asarray(jax.jit(lambda s, o: agent.value_weights(s)(o))(state, next_obs))
    actions = agent.act(state, next_obs, None, deterministic=True)
    by_member = []  # row by row, member by member, each critic set in turn
    for params in (state.critic.params, target):
        online = state.replace(critic=state.critic.replace(params=params))
        for i in range(agent.ensemble.num_qs):
            q = lambda o, a, i=i, s=online: agent.q_values(s, o[None], a[None])[i, 0]
            by_member.append(jax.jit(jax.vmap(jax.grad(q)))(next_obs, actions))
    np.testing.assert_allclose(weights, np.square(np.asarray(by_member)).mean(0), rtol=1e-5)


def test_vagram_adds_the_plain_error_for_the_first_1000_environment_steps(monkeypatch):
    """As its reference's first MBPO epoch: while the critic has taken fewer than 1000·UTD
    updates, the fit gets `plain_mse`; the weights come from the agent's critic."""
    import valorl.training.model_based as training

    seen = []
    monkeypatch.setattr(
        training, "fit", lambda *args: seen.append((args[5], bool(args[6]))) or (args[1], {})
    )
    agent = MBPO(hidden_dims=(8,), batch_size=4, utd=2,
                 model=DynamicsModel(model_hidden_dims=(4,), model_loss="vagram"))  # fmt: skip
    state = compiled_init(agent, Spec(obs_shape=(3,), action_dim=2))
    for updates in (0, 1999, 2000):
        aged = state.replace(critic=state.critic.replace(step=jnp.int32(updates)))
        training.fit_model(agent, aged, None, 10, jax.random.key(0))
    assert [plain for _, plain in seen] == [True, True, False]
    assert all(callable(weights) for weights, _ in seen)


def test_vagram_fits_the_directions_the_value_changes_along():
    """With a value that depends on the first state dimension only, the fitted model learns
    that dimension's dynamics and not the second's."""
    data, _ = linear_data(2000)
    model = linear_model(model_lr=1e-2, model_max_epochs=60, model_patience=60)
    state = compiled_init(model, S, A)
    value_weights = lambda s: jnp.broadcast_to(jnp.array([1.0, 0.0, 0.0]), s.shape)
    fitted, _ = jax.jit(lambda s, k: fit(model, s, data, 2000, k, value_weights))(
        state, jax.random.key(1)
    )
    p = model.predict(fitted, data.observations, data.actions)
    error = np.abs(np.asarray(p.next_obs_mean[0] - data.next_observations)).mean(axis=0)
    assert error[0] < 0.02 and error[1] > 0.2


def test_the_robust_loss_finds_the_worst_case_of_known_functions():
    """Linear Q = w·s: the worst δ in the box is ε·sign(w) (or its negative), change (ε‖w‖₁)²;
    quadratic Q = ‖s‖² at s = 0: a corner, change (ε²·S)²."""
    eps, w = 0.1, jnp.array([1.0, -2.0, 0.5])
    linear = lambda s, a: (s @ w)[None]
    obs, act = jnp.zeros((4, 3)), jnp.zeros((4, 1))
    delta = worst_perturbation(linear, obs, act, eps, 3, jnp.ones(3), jax.random.key(0))
    np.testing.assert_allclose(jnp.abs(delta @ jnp.sign(w)), eps * 3, rtol=1e-5)
    loss = robust_loss(linear, obs, act, eps, 3, jnp.ones(3), jax.random.key(0))
    assert float(loss) == pytest.approx((eps * 3.5) ** 2, rel=1e-5)
    quadratic = lambda s, a: jnp.square(s).sum(axis=-1)[None]
    delta = worst_perturbation(quadratic, obs, act, eps, 5, jnp.ones(3), jax.random.key(1))
    np.testing.assert_allclose(jnp.abs(delta), eps, rtol=1e-5)
    # δ in standardised units: a scale of 2 doubles the perturbation of the state
    loss = robust_loss(linear, obs, act, eps, 3, jnp.full(3, 2.0), jax.random.key(0))
    assert float(loss) == pytest.approx((2 * eps * 3.5) ** 2, rel=1e-5)


def test_the_lipschitz_estimate_of_linear_critics():
    """Members w·s and 3·w·s: the largest gradient norm is 3‖w‖₂."""
    w = jnp.array([1.0, -2.0, 2.0])
    q = lambda s, a: jnp.stack([s @ w, 3 * s @ w])
    estimate = lipschitz_estimate(q, jnp.ones((5, 3)), jnp.zeros((5, 1)))
    assert float(estimate) == pytest.approx(9.0)


def test_the_mobile_penalty_by_hand():
    """Two elites that predict s' = s + 0.5 and s' = s − 0.5 without noise, and critics that
    ignore the action: u = the standard deviation (n − 1) of min_j Q̄_j at the two next
    states; the target drops by β·u on imagined rows only."""
    agent = MOBILE(
        hidden_dims=(8,),
        batch_size=4,
        model=DynamicsModel(
            model_members=2, model_elites=2, model_kind="deterministic", model_hidden_dims=()
        ),
        rollouts=Rollouts(real_ratio=0.5),
        penalty_coef=2.0,
        penalty_samples=3,
    )
    state = compiled_init(agent, Spec(obs_shape=(1,), action_dim=1))
    bias = jnp.array([[0.5, 0.0, -50.0], [-0.5, 0.0, -50.0]])
    model_params = {"layer_0": {"kernel": jnp.zeros((2, 2, 3)), "bias": bias}}
    # the critics' first layer sees (s, a): zero the action's row so that Q̄(s', a') = Q̄(s')
    target = jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[:, 1].set(0.0) if "Dense_0" in str(path) and x.ndim == 3 else x,
        state.target_critic,
    )
    state = state.replace(
        model=state.model.replace(net=state.model.net.replace(params=model_params)),
        target_critic=target,
    )
    obs = jnp.array([[0.1], [0.2], [0.3], [-0.4]])
    batch = Batch(
        observations=obs,
        actions=jnp.zeros((4, 1)),
        rewards=jnp.full(4, 100.0),
        next_observations=obs,
        masks=jnp.ones(4),
        dones=jnp.zeros(4),
    )
    target_params = state.replace(critic=state.critic.replace(params=target))
    q_values, uncertainty = jax.jit(agent.q_values), jax.jit(agent.bellman_uncertainty)
    q_next = lambda s: np.asarray(q_values(target_params, s, jnp.zeros((2, 1))).min(axis=0))
    expected = np.array(
        [np.std(q_next(obs[i] + jnp.array([[0.5], [-0.5]])), ddof=1) for i in (2, 3)]
    )
    key = jax.random.key(1)
    u = uncertainty(state, obs[2:], batch.actions[2:], key)
    np.testing.assert_allclose(u, expected, rtol=1e-5)
    key_target, key_penalty = jax.random.split(key)
    plain, _ = jax.jit(lambda *a: SAC.critic_target(agent, *a))(state, batch, key_target)
    got, logged = jax.jit(agent.critic_target)(state, batch, key)
    penalty = uncertainty(state, obs[2:], batch.actions[2:], key_penalty)
    np.testing.assert_allclose(got[:2], plain[:2], rtol=1e-6)
    np.testing.assert_allclose(got[2:], plain[2:] - 2.0 * penalty, rtol=1e-6)
    np.testing.assert_allclose(logged["penalty"], 2.0 * penalty.mean(), rtol=1e-6)


def test_model_based_agents_refuse_discrete_actions_and_images():
    with pytest.raises(ValorlError, match="mopo models flat observations and continuous actions"):
        MOPO().init(jax.random.key(0), Spec(obs_shape=(10, 10, 4), action_dim=0, num_actions=3))
    with pytest.raises(ValorlError, match="--robust-steps"):
        dataclasses.replace(MOPO(), robust_steps=0)


def test_mbpo_takes_utd_full_sac_updates_and_mobile_needs_two_elites():
    """MBPO's `utd` repeats whole SAC updates (its n_train_repeat): 3 critic and 3 actor
    steps, where SAC's `utd` 3 is 3 critic steps and one actor step (tests/test_sac.py)."""
    from valorl.agents import MBPO

    model = DynamicsModel(model_members=2, model_elites=2, model_hidden_dims=(4,))
    spec = Spec(obs_shape=(2,), action_dim=1)
    batch = Batch(
        observations=jnp.ones((3, 8, 2)), actions=jnp.zeros((3, 8, 1)), rewards=jnp.ones((3, 8)),
        next_observations=jnp.ones((3, 8, 2)), masks=jnp.ones((3, 8)), dones=jnp.zeros((3, 8)),
    )  # fmt: skip
    agent = MBPO(utd=3, hidden_dims=(4,), batch_size=8, model=model)
    state = compiled_init(agent, spec)
    state, metrics = agent.update(state, batch, jax.random.key(1))
    assert int(state.critic.step) == 3 and int(state.actor.step) == 3  # SAC's utd 3: 3 and 1
    assert np.isfinite(float(metrics["critic/lipschitz"]))
    with pytest.raises(ValorlError, match="needs --model-elites of at least 2"):
        MOBILE(model=DynamicsModel(model_members=1, model_elites=1))

"""JOWA-mini: the patch tokeniser, the causal transformer, segments, the masked Double-DQN target
and CQL gap by hand, the two training stages, and beam search on a hand-made model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compiled_init

from valorl.agents.jowa import (
    JOWA,
    double_dqn_target,
    masked_bc_loss,
    masked_cql_gap,
    split_observation,
)
from valorl.agents.jowa_decoding import Decoder
from valorl.agents.jowa_planning import beam_search
from valorl.critics.heads import Categorical, Scalar
from valorl.data.dataset import Batch
from valorl.data.frame_tokens import CHANNELS, fit_patch_code, pad_channels
from valorl.data.segments import sample_segments
from valorl.errors import ValorlError
from valorl.nets.transformer import CausalTransformer


def random_frames(n: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 10, 10, channels)) < 0.05).astype(np.uint8)


# ---- tokeniser -----------------------------------------------------------------------------


def test_patch_code_round_trips_frames_and_codes_unknown_patches_by_nearest():
    frames = random_frames(50, 4)
    code = fit_patch_code(frames, vocab_size=512, reserve=64)
    tokens = code.encode(frames)
    assert tokens.shape == (50, 25) and code.tokens_per_frame == 25
    np.testing.assert_array_equal(code.decode(tokens), pad_channels(frames))
    assert code.encode(np.zeros((1, 10, 10, 4), np.uint8)).max() == 0  # the empty patch is 0
    # a patch never seen (all 40 bits set) is coded as a used code at the least Hamming distance
    full = np.ones((1, 10, 10, CHANNELS), np.uint8)
    token = int(code.encode(full)[0, 0])
    assert token < code.used
    assert code.codes[token].sum() == code.codes[: code.used].sum(axis=1).max()


def test_patch_code_is_deterministic_and_extends_into_reserved_slots():
    frames = random_frames(30, 4, seed=1)
    a, b = fit_patch_code(frames, 256, 128), fit_patch_code(frames.copy(), 256, 128)
    np.testing.assert_array_equal(a.codes, b.codes)
    other = random_frames(10, 6, seed=2)  # a new game: more channels, new patterns
    extended = a.extend(other)
    assert extended.used > a.used
    np.testing.assert_array_equal(extended.codes[: a.used], a.codes[: a.used])
    np.testing.assert_array_equal(extended.decode(extended.encode(other)), pad_channels(other))
    with pytest.raises(ValorlError, match="reserve must be in"):
        fit_patch_code(frames, 16, 16)


# ---- transformer ---------------------------------------------------------------------------


def test_transformer_is_causal():
    """Changing tokens after position t leaves every hidden state up to t unchanged."""
    net = CausalTransformer(vocab_size=20, num_tasks=3, max_length=12, width=16, depth=2, heads=2)
    tokens = jnp.arange(12)[None] % 20
    params = net.init(jax.random.key(0), tokens, jnp.zeros(1, jnp.int32))
    h = net.apply(params, tokens, jnp.zeros(1, jnp.int32))
    changed = tokens.at[:, 7:].set(3)
    h2 = net.apply(params, changed, jnp.zeros(1, jnp.int32))
    np.testing.assert_allclose(h[:, :7], h2[:, :7], atol=1e-6)
    assert not np.allclose(h[:, 7:], h2[:, 7:])
    h3 = net.apply(params, tokens, jnp.ones(1, jnp.int32))  # the task embedding reaches all
    assert not np.allclose(h[:, 0], h3[:, 0])


def test_cached_decoding_gives_the_full_causal_pass_token_by_token():
    net = CausalTransformer(vocab_size=20, num_tasks=3, max_length=12, width=16, depth=2, heads=2)
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 20)
    tasks = jnp.array([0, 2])
    params = net.init(jax.random.key(0), tokens, tasks)
    full = net.apply(params, tokens, tasks)
    stepper = net.clone(decode=True)
    cache = stepper.init(jax.random.key(0), tokens, tasks)["cache"]
    for t in range(12):
        h, variables = stepper.apply(
            {**params, "cache": cache}, tokens[:, t : t + 1], tasks, mutable=["cache"]
        )
        cache = variables["cache"]
        np.testing.assert_allclose(h[:, 0], full[:, t], atol=1e-5)


# ---- segments ------------------------------------------------------------------------------


def test_segments_are_consecutive_rows_masked_after_the_episode_end():
    n = 6
    data = Batch(
        observations=jnp.arange(n, dtype=jnp.float32)[:, None],
        actions=jnp.arange(n),
        rewards=jnp.arange(n, dtype=jnp.float32),
        next_observations=jnp.arange(1, n + 1, dtype=jnp.float32)[:, None],
        masks=jnp.ones(n),
        dones=jnp.array([0, 0, 1, 0, 0, 1], jnp.float32),  # episodes: rows 0-2, 3-5
    )
    batch = sample_segments(data, jax.random.key(3), batch_size=64, length=3)
    start = np.asarray(batch.rewards[:, 0]).astype(int)
    for s, rewards, valid in zip(
        start, np.asarray(batch.rewards), np.asarray(batch.valid), strict=True
    ):
        np.testing.assert_array_equal(rewards, np.minimum(np.arange(s, s + 3), n - 1))
        end = 2 if s <= 2 else 5
        np.testing.assert_array_equal(valid, np.arange(s, s + 3) <= end)
    many = sample_segments(data, jax.random.key(3), batch_size=4, length=3, num_batches=2)
    assert many.rewards.shape == (2, 4, 3) and many.valid.shape == (2, 4, 3)


# ---- the target and the penalty by hand ----------------------------------------------------


def test_double_dqn_target_chooses_among_valid_actions_by_the_online_mean():
    # 2 members, 1 row, 3 actions; scalar head: outputs (M, B, A, 1)
    online = jnp.array([[[[5.0], [1.0], [9.0]]], [[[3.0], [2.0], [9.0]]]])  # means 4, 1.5, 9
    target = jnp.array([[[[10.0], [20.0], [30.0]]], [[[11.0], [21.0], [31.0]]]])
    valid = jnp.array([[True, True, False]])  # action 2 (mean 9) is not the game's
    got = double_dqn_target(Scalar(), online, target, valid, jnp.array([1.0]), jnp.array([0.5]))
    np.testing.assert_allclose(got, [[1 + 0.5 * 10], [1 + 0.5 * 11]])  # action 0, per member
    # C51: the chosen member distribution shifted by r + γz and projected
    head = Categorical(bins=3, vmin=0.0, vmax=2.0)
    logits = jnp.log(jnp.array([[[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]]) + 1e-12)  # (1,1,2,3)
    got = double_dqn_target(
        head, logits, logits, jnp.array([[True, True]]), jnp.array([1.0]), jnp.array([0.0])
    )
    np.testing.assert_allclose(got, [[[0.0, 1.0, 0.0]]], atol=1e-6)  # terminal: all mass at r=1
    # not terminal (r 0, γ 0.5): action 1 (all mass at z = 2, mean 2) is chosen over action 0
    # (mass at 0), so the mass lands at 0.5·2 = 1; with action 1 invalid, at 0.5·0 = 0
    for valid, want in (([True, True], [0.0, 1.0, 0.0]), ([True, False], [1.0, 0.0, 0.0])):
        got = double_dqn_target(
            head, logits, logits, jnp.array([valid]), jnp.array([0.0]), jnp.array([0.5])
        )
        np.testing.assert_allclose(got, [[want]], atol=1e-6)


def test_masked_cql_gap_by_hand():
    values = jnp.array([[1.0, 2.0, 100.0]])
    valid = jnp.array([[True, True, False]])
    got = masked_cql_gap(values, valid, jnp.array([0]))
    np.testing.assert_allclose(got, [np.log(np.e**1 + np.e**2) - 1.0], rtol=1e-6)


def test_masked_bc_loss_by_hand():
    # 2 members, 1 row, 2 steps, 3 actions; action 2 is not the game's; step 1 is padding
    logits = jnp.array([[[[0.0, 1.0, 50.0], [9.0, 9.0, 9.0]]], [[[2.0, 0.0, 50.0], [0.0] * 3]]])
    valid = jnp.array([[[True, True, False]] * 2])
    loss, metrics = masked_bc_loss(logits, valid, jnp.array([[1, 0]]), jnp.array([[True, False]]))
    ce = [np.log(1 + np.e) - 1.0, np.log(np.e**2 + 1) - 0.0]  # -log softmax at action 1
    np.testing.assert_allclose(float(loss), sum(ce), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["bc_loss"]), sum(ce) / 2, rtol=1e-6)
    assert float(metrics["bc_accuracy"]) == 0.0  # mean logits (1, 0.5): action 0, not 1


# ---- the agent -----------------------------------------------------------------------------

TINY = dict(vocab_size=16, num_tasks=2, context=2, width=16, depth=1, heads=2, q_hidden=8)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def segment_batch(key, batch=4, context=2, frame_tokens=3, num_actions=3):
    k1, k2, k3 = jax.random.split(key, 3)
    frames = jax.random.randint(k1, (batch, context, frame_tokens), 0, 16).astype(jnp.float32)
    game = jnp.zeros((batch, context, 1))
    valid = jnp.ones((batch, context, num_actions)).at[..., -1].set(0.0)
    obs = jnp.concatenate([frames, game, valid], axis=-1)
    return Batch(
        observations=obs,
        actions=jax.random.randint(k2, (batch, context), 0, num_actions - 1),
        rewards=jax.random.bernoulli(k3, 0.5, (batch, context)).astype(jnp.float32),
        next_observations=obs,
        masks=jnp.ones((batch, context)),
        dones=jnp.zeros((batch, context)),
        valid=jnp.ones((batch, context), bool),
    )


def tiny_agent(**overrides):
    from valorl.agents.base import Spec

    agent = JOWA(**(TINY | {"critic": Categorical(bins=11, vmin=0.0, vmax=5.0)} | overrides))
    spec = Spec(obs_shape=(3 + 1 + 3,), action_dim=0, num_actions=3)
    return agent, compiled_init(agent, spec)


def test_observations_split_into_tokens_game_and_valid_actions():
    obs = jnp.array([[4.0, 7.0, 1.0, 1.0, 0.0, 1.0]])
    tokens, game, valid = split_observation(obs, 3)
    np.testing.assert_array_equal(tokens, [[4, 7]])
    np.testing.assert_array_equal(game, [1])
    np.testing.assert_array_equal(valid, [[True, False, True]])


def loss_grads(agent: JOWA, batch: Batch):
    """(params, state) -> (gradient of the loss for every parameter, the loss's metrics),
    compiled (eager is slow)."""
    return jax.jit(jax.grad(lambda p, s: agent.loss(p, s, batch), has_aux=True))


def at_step(state, step: int):
    return state.replace(model=state.model.replace(step=jnp.asarray(step)))


def test_world_model_stage_leaves_the_q_head_untrained_then_joint_stage_trains_it():
    agent, state = tiny_agent(world_model_steps=1)
    grads_at = loss_grads(agent, segment_batch(jax.random.key(1)))
    grads, metrics = grads_at(state.model.params, at_step(state, 0))
    assert float(metrics["joint_stage"]) == 0.0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["q_head"]))
    grads, metrics = grads_at(state.model.params, at_step(state, 1))
    assert float(metrics["joint_stage"]) == 1.0
    assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads["q_head"]))
    assert np.isfinite(float(metrics["td_loss"])) and float(metrics["cql_gap"]) > 0.0


@pytest.mark.parametrize("joint", [True, False])
def test_td_gradient_reaches_the_backbone_only_when_joint(joint):
    agent, state = tiny_agent(
        world_model_steps=0, supervised_weight=0.0, cql_alpha=0.0, joint=joint
    )
    batch = segment_batch(jax.random.key(1))
    grads, _ = loss_grads(agent, batch)(state.model.params, at_step(state, 0))
    backbone = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["backbone"]))
    assert (backbone > 0.0) == joint


def test_behaviour_cloning_trains_the_heads_and_backbone_as_a_policy_and_refuses_planning():
    agent, state = tiny_agent(world_model_steps=0, supervised_weight=0.0, behaviour_cloning=True)
    grads, metrics = loss_grads(agent, segment_batch(jax.random.key(1)))(
        state.model.params, at_step(state, 0)
    )
    assert "td_loss" not in metrics and float(metrics["bc_loss"]) > 0.0
    for part in ("backbone", "q_head"):
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[part])) > 0.0
    with pytest.raises(ValorlError, match="--plan-depth scores paths by Q"):
        JOWA(**TINY, behaviour_cloning=True, plan_depth=1)


def test_act_is_greedy_over_valid_actions_and_plans_when_asked():
    agent, state = tiny_agent()
    obs = segment_batch(jax.random.key(4), batch=32).observations[:, 0]
    actions = np.asarray(jax.jit(agent.act)(state, obs, jax.random.key(0)))
    assert actions.shape == (32,) and set(actions) == {0, 1}
    # greedy: the valid action (0 or 1 in this game) with the larger ensemble-mean Q
    q = np.stack([agent.q_values(state, obs, jnp.full(32, a)) for a in range(3)], axis=-1)
    np.testing.assert_array_equal(actions, q[..., :2].mean(axis=0).argmax(axis=-1))
    # the rows tell the rules apart: the invalid action 2 has the largest mean Q on some rows,
    # and member 0 alone, or the members' maximum, would choose otherwise on others
    assert (q.mean(axis=0).argmax(axis=-1) == 2).any()
    assert (q[0, :, :2].argmax(axis=-1) != actions).any()
    assert (q[..., :2].max(axis=0).argmax(axis=-1) != actions).any()
    planner = JOWA(**(TINY | {"critic": agent.critic, "plan_width": 2, "plan_depth": 1}))
    planned = jax.jit(planner.act)(state, obs[:4], jax.random.key(0))
    assert planned.shape == (4,) and set(np.asarray(planned)) <= {0, 1}
    assert agent.q_values(state, obs, actions).shape == (3, 32)


# ---- the model stepped as an environment ---------------------------------------------------


@jax.jit
def full_hidden(state, tokens, games):
    return state.model.apply_fn({"params": state.model.params}, tokens, games, method="hidden")


@functools.partial(jax.jit, static_argnames="method")
def apply_model(state, *inputs, method):
    return state.model.apply_fn({"params": state.model.params}, *inputs, method=method)


def full_pass_step(agent, state, tokens, game, action):
    """The reference for `Decoder.step`: full causal passes over the growing token list, the
    next frame's tokens generated greedily one pass per token; with Q at the new frame."""

    def last_hidden(tokens):
        """At the last of `tokens`, from one full-length pass (later padding cannot reach it:
        the transformer is causal), so every call has one shape and compiles once."""
        padded = jnp.zeros((1, agent.context * 4), jnp.int32).at[0, : len(tokens)].set(tokens)
        return full_hidden(state, padded, jnp.array([game]))[0, len(tokens) - 1]

    tokens = [*tokens, agent.vocab_size + action]
    _, reward_logits, done_logits = apply_model(state, last_hidden(tokens), method="world")
    probs = jax.nn.softmax(reward_logits)
    frame = []
    for _ in range(3):
        logits, _, _ = apply_model(state, last_hidden(tokens), method="world")
        frame.append(int(jnp.argmax(logits)))
        tokens.append(frame[-1])
    q = agent.critic.value(apply_model(state, last_hidden(tokens), method="q")).mean(axis=0)
    done = bool(jax.nn.softmax(done_logits)[1] > 0.5)
    return float(probs[2] - probs[0]), done, frame, tokens, q


def scrambled(state, scale=8.0, seed=3):
    """The state with its parameters drawn afresh at `scale` times the size, so that an
    untrained model's predictions differ clearly between tokens."""
    params = redrawn(state.model.params, jax.random.key(seed), scale)
    return state.replace(model=state.model.replace(params=params))


@jax.jit
def redrawn(params, key, scale):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [scale * 0.1 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, noisy)


def test_decoder_steps_the_model_as_full_passes_predict():
    agent, state = tiny_agent(context=3)
    state = scrambled(state)
    decoder = Decoder.of(agent, state)
    frame, game = [5, 1, 9], 1
    step, q_at = jax.jit(decoder.step), jax.jit(decoder.q)
    cursor = jax.jit(decoder.start)(jnp.array([frame]), jnp.array([game]))
    tokens = list(frame)
    for action in (2, 0):  # two steps: the cache keeps what the first wrote
        reward, done, frame_next, cursor = step(cursor, jnp.array([action]))
        ref_reward, ref_done, ref_frame, tokens, ref_q = full_pass_step(
            agent, state, tokens, game, action
        )
        np.testing.assert_allclose(float(reward[0]), ref_reward, atol=1e-4)
        assert bool(done[0]) == ref_done
        np.testing.assert_array_equal(frame_next[0], ref_frame)
        q = q_at(cursor, jnp.ones((1, 3), bool))[0]
        np.testing.assert_allclose(q, ref_q, atol=1e-4)
    assert len(set(tokens)) > 3  # the generated frames are not one repeated token


def test_plan_takes_the_first_action_with_the_best_full_pass_score():
    """Width = every action and depth 1: the planner's choice is the argmax over valid a of
    r̂(s, a) + γ·(1 − done)·max_a' Q(s'_a, a') computed by full passes."""
    agent, state = tiny_agent(context=3)
    planner = JOWA(
        **(TINY | {"critic": agent.critic, "context": 3, "plan_width": 3, "plan_depth": 1})
    )
    valid = np.array([True, True, False])
    plan_act, greedy_act = jax.jit(planner.act), jax.jit(agent.act)
    agree = 0
    for seed in range(6):
        s = scrambled(state, seed=seed)
        frame = [int(t) for t in jax.random.randint(jax.random.key(seed), (3,), 0, 16)]
        scores = []
        for action in (0, 1):
            r, done, _, _, q = full_pass_step(agent, s, frame, 0, action)
            scores.append(r + (0.0 if done else agent.discount * float(q[valid].max())))
        obs = jnp.array([[*frame, 0.0, *valid.astype(float)]])
        planned = int(plan_act(s, obs, jax.random.key(0))[0])
        assert planned == int(np.argmax(scores))
        greedy = int(greedy_act(s, obs, jax.random.key(0))[0])
        agree += planned == greedy
    assert agree < 6  # the model's predictions change some choices


# ---- imagination ---------------------------------------------------------------------------


def test_imagined_rows_continue_their_first_frame_in_the_model():
    agent, state = tiny_agent(context=3, world_model_steps=0, imagine_batch=2, imagine_epsilon=0.0)
    state = scrambled(state)
    batch = segment_batch(jax.random.key(2), batch=4, context=3)
    mixed = jax.jit(agent.with_imagined)(state, batch, jax.random.key(5))
    for field in ("observations", "actions", "rewards", "masks", "valid"):
        np.testing.assert_array_equal(getattr(mixed, field)[:2], getattr(batch, field)[:2])
    np.testing.assert_array_equal(mixed.observations[2:, 0], batch.observations[2:, 0])
    np.testing.assert_array_equal(  # the game and its valid actions stay
        mixed.observations[2:, :, 3:], batch.observations[2:, :, 3:]
    )
    assert not np.array_equal(mixed.observations[2:, 1:], batch.observations[2:, 1:])
    actions = np.asarray(mixed.actions[2:])
    assert set(actions.ravel()) <= {0, 1}  # action 2 is not valid in this game
    # ε = 0: the first action is greedy in Q at the real frame
    greedy = jax.jit(agent.act)(state, batch.observations[2:, 0], jax.random.key(0))
    np.testing.assert_array_equal(actions[:, 0], greedy)
    assert np.all(np.abs(np.asarray(mixed.rewards[2:])) <= 1.0)
    ended = np.asarray(mixed.dones[2:]) > 0
    np.testing.assert_array_equal(np.asarray(mixed.masks[2:]), 1.0 - ended)
    alive = np.asarray(mixed.valid[2:])
    assert np.all(alive[:, 0]) and np.all(alive[:, 1:] <= ~np.cumsum(ended, 1)[:, :-1].astype(bool))


def test_imagined_rows_train_q_only_and_imagination_refusals():
    agent, state = tiny_agent(context=3, world_model_steps=0, imagine_batch=2)
    batch = segment_batch(jax.random.key(2), batch=4, context=3)
    other = batch.replace(observations=batch.observations.at[2:, :, :3].set(7.0))
    _, metrics = loss_grads(agent, batch)(state.model.params, state)
    _, metrics_other = loss_grads(agent, other)(state.model.params, state)
    assert float(metrics["world_loss"]) == pytest.approx(float(metrics_other["world_loss"]))
    assert float(metrics["td_loss"]) != pytest.approx(float(metrics_other["td_loss"]))
    _, update_metrics = jax.jit(agent.update)(state, batch, jax.random.key(1))
    assert np.isfinite(float(update_metrics["model/td_loss"]))
    with pytest.raises(ValorlError, match="--imagine-batch must be in"):
        JOWA(**TINY, world_model_steps=0, imagine_batch=32)
    with pytest.raises(ValorlError, match="needs --world-model-steps 0"):
        JOWA(**TINY, imagine_batch=2)
    with pytest.raises(ValorlError, match="no --behaviour-cloning"):
        JOWA(**TINY, world_model_steps=0, behaviour_cloning=True, imagine_batch=2)


# ---- planning ------------------------------------------------------------------------------


def chain_model(rewards: dict[tuple[int, int], float], q: dict[int, list[float]], done=()):
    """A hand-made model: node = state id; step(s, a) = (reward, done, 2s + a + 1)."""
    table_r = jnp.zeros((16, 2))
    for (s, a), r in rewards.items():
        table_r = table_r.at[s, a].set(r)
    table_q = jnp.zeros((32, 2))
    for s, values in q.items():
        table_q = table_q.at[s].set(jnp.array(values))
    ends = jnp.zeros(32, bool)
    for s in done:
        ends = ends.at[s].set(True)

    def step_fn(s, a):
        nxt = 2 * s + a + 1
        return table_r[s, a], ends[nxt], nxt

    return (lambda s: table_q[s]), step_fn


def test_beam_search_corrects_a_wrong_q_with_the_model():
    # Q at the root prefers action 0; the model says action 1 pays 10 at once.
    q_fn, step_fn = chain_model({(0, 0): 0.0, (0, 1): 10.0}, {0: [1.0, 0.0]})
    assert int(beam_search(0, q_fn, step_fn, width=2, depth=0, discount=0.9)) == 0
    assert int(beam_search(0, q_fn, step_fn, width=2, depth=1, discount=0.9)) == 1


def test_beam_search_finds_a_reward_two_steps_deep_and_stops_at_terminations():
    # root 0 -> 1 (a=0) or 2 (a=1); from 1, a=1 reaches 4 with reward 5; from 2, nothing
    q_fn, step_fn = chain_model({(1, 1): 5.0}, {0: [0.0, 1.0], 2: [0.5, 0.5]})
    assert int(beam_search(0, q_fn, step_fn, width=2, depth=1, discount=0.9)) == 1
    # two beams keep node 2's children (0.45 > 0) and prune the path to the reward; four keep all
    assert int(beam_search(0, q_fn, step_fn, width=2, depth=2, discount=0.9)) == 1
    assert int(beam_search(0, q_fn, step_fn, width=4, depth=2, discount=0.9)) == 0
    # a termination at node 1 ends that path before its reward
    q_fn, step_fn = chain_model({(1, 1): 5.0}, {0: [0.0, 1.0], 2: [0.5, 0.5]}, done=(1,))
    assert int(beam_search(0, q_fn, step_fn, width=4, depth=2, discount=0.9)) == 1
    # invalid actions (−1e9) are never expanded
    q_only_1 = lambda s: jnp.array([-1e9, 0.0])
    assert int(beam_search(0, q_only_1, step_fn, width=2, depth=2, discount=0.9)) == 1


# ---- through the run loop ------------------------------------------------------------------


def tiny_games() -> list:
    """Two small 'games' with MinAtar's shapes and action sets: Breakout (4 channels, 3
    actions) and Asterix (4 channels, 5 actions), episodes of 5 steps (both games end soon
    under a poor policy, so evaluating in them is quick)."""
    from valorl.data.dataset import Dataset, DatasetInfo

    games = []
    for seed, env_id, actions in ((4, "Breakout-MinAtar", 3), (6, "Asterix-MinAtar", 5)):
        n = 40
        frames = random_frames(n + 1, 4, seed=seed)
        rng = np.random.default_rng(seed)
        games.append(
            Dataset(
                observations=frames[:-1],
                actions=rng.integers(0, actions, n),
                rewards=rng.integers(0, 2, n).astype(np.float32),
                next_observations=frames[1:],
                terminals=(np.arange(n) % 5 == 4),
                timeouts=np.zeros(n, bool),
                info=DatasetInfo(name=env_id.lower(), env_id=env_id),
                num_actions=actions,
            )
        )
    return games


def test_multigame_dataset_maps_actions_into_the_full_set_with_game_and_valid_flags():
    from valorl.data.multigame import multigame_dataset

    breakout, asterix = tiny_games()
    code = fit_patch_code([breakout.observations, asterix.observations], 512, 64)
    data = multigame_dataset([breakout, asterix], code)
    assert len(data) == 80 and data.num_actions == 6 and data.obs_shape == (25 + 1 + 6,)
    tokens, game, valid = split_observation(jnp.asarray(data.observations), 6)
    np.testing.assert_array_equal(code.decode(tokens[:40]), pad_channels(breakout.observations))
    np.testing.assert_array_equal(game, [0] * 40 + [1] * 40)
    np.testing.assert_array_equal(valid[0], [1, 1, 0, 1, 0, 0])  # Breakout: 0, 1, 3
    np.testing.assert_array_equal(valid[40], [1, 1, 1, 1, 1, 0])  # Asterix: 0-4
    np.testing.assert_array_equal(data.actions[:40], np.array([0, 1, 3])[breakout.actions])
    assert data.timeouts[39] and data.timeouts[79]  # segments never cross games


# ---- the multi-game environment and command line --------------------------------------------


@pytest.fixture
def saved_games():
    """The two tiny games written as local Minari datasets: their ids."""
    from valorl.data.sources import save_minari

    ids = ["valorl/tiny-breakout-v0", "valorl/tiny-asterix-v0"]
    for dataset_id, data in zip(ids, tiny_games(), strict=True):
        save_minari(data, dataset_id)
    return ids


def test_token_environment_plays_each_game_in_tokens_of_the_data_code(saved_games):
    import gymnasium as gym

    from valorl.data.sources import make_env
    from valorl.envs.token_games import ENV_ID, load_multigame

    data = load_multigame(saved_games, vocab_size=512, reserve=64)
    assert data.info.env_id == ENV_ID and data.obs_shape == (32,)
    env = make_env(data.info)
    for game, env_id, actions in ((1, "Asterix-MinAtar", 5), (0, "Breakout-MinAtar", 3)):
        obs, _ = env.reset(seed=7, options={"game": game})
        frame, _ = gym.make(env_id).reset(seed=7)
        tokens, index, valid = split_observation(jnp.asarray(obs[None]), 6)
        assert int(index[0]) == game and int(valid[0].sum()) == actions
        code = env.unwrapped.code
        expected = code.decode(code.encode(frame[None]))  # nearest codes where unseen
        np.testing.assert_array_equal(code.decode(np.asarray(tokens)), expected)
        obs, reward, *_ = env.step(5)  # fire: neither game has it, so a no-op
        assert obs.shape == (32,) and np.isfinite(reward)
    with pytest.raises(ValorlError, match="game 2 is not one of the 2 games"):
        env.reset(options={"game": 2})
    env.close()


@pytest.mark.expensive  # ~35 s: three runs and evaluations; pieces: the tests around it
def test_a_multigame_run_from_the_command_line_evaluates_each_game_and_resumes_exactly(
    saved_games, tmp_path, monkeypatch
):
    """`valorl train jowa --datasets A,B`: one evaluation episode per game and seed, the world
    model alone then joint training, and an interrupted run resumed to the same parameters."""
    from conftest import interrupt_on_call

    from valorl.launch.train import train_from_args, train_parser
    from valorl.training.restore import load_checkpoint
    from valorl.training.run_dir import RunDir

    flags = "--steps 4 --log-every 2 --checkpoint-every 2 --eval-every 4 --eval-episodes 2 "
    flags += "--seeds 2 --width 16 --depth 1 --heads 2 --q-hidden 8 --batch-size 4 "
    flags += "--world-model-steps 2 --target-update-every 2 --vocab-size 512 --quiet"
    argv = [*flags.split(), "--datasets", ",".join(saved_games)]
    train = lambda out: train_from_args(train_parser("jowa").parse_args([*argv, "--out", out]))
    result = train(str(tmp_path / "whole"))
    assert result.returns.shape == (2, 1, 2)  # seeds, rounds, episodes: one per game
    metrics = RunDir(tmp_path / "whole").metrics()
    assert [m["model/joint_stage"] for m in metrics if "model/joint_stage" in m] == [[0, 0], [1, 1]]
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, RunDir, "write_checkpoint", 2)
        with pytest.raises(KeyboardInterrupt):
            train(str(tmp_path / "cut"))
    train(str(tmp_path / "cut"))
    whole = load_checkpoint(tmp_path / "whole")[1]
    cut = load_checkpoint(tmp_path / "cut")[1]
    jax.tree.map(np.testing.assert_array_equal, whole.states, cut.states)
    from valorl.eval.evaluate import evaluate_run

    planned = evaluate_run(tmp_path / "whole", episodes=2, plan=(2, 1))  # valorl eval --plan 2,1
    assert planned.returns.shape == (2, 2)
    with pytest.raises(ValorlError, match="plan-depth in"):
        evaluate_run(tmp_path / "whole", episodes=2, plan=(2, 4))  # deeper than the context


def test_datasets_flag_refusals(saved_games):
    from valorl.launch.train import train_from_args, train_parser

    games = ",".join(saved_games)
    for agent, extra, message in (
        ("jowa", ["--eval-episodes", "3"], "must be a multiple of 2"),
        ("jowa", ["--dataset", saved_games[0]], "give --dataset or --datasets, not both"),
        ("iql", [], "which iql does not read"),
        ("jowa", ["--mode", "online", "--env", "Breakout-MinAtar"], "--datasets applies to"),
    ):
        argv = ["--datasets", games, "--vocab-size", "512", *extra] if agent == "jowa" else []
        argv = argv or ["--datasets", games]
        with pytest.raises(ValorlError, match=message):
            train_from_args(train_parser(agent).parse_args(argv))


def test_per_game_returns_take_every_gth_episode(saved_games):
    from valorl.envs.token_games import load_multigame, per_game

    spec = load_multigame(saved_games, vocab_size=512).info.env_spec_json
    returns = np.array([[1.0, 10.0, 3.0, 30.0], [5.0, 50.0, 7.0, 70.0]])  # (seeds, episodes)
    (first, r0, s0), (second, r1, _) = per_game(spec, returns)
    assert (first, second) == tuple(saved_games)
    np.testing.assert_array_equal(r0, [2.0, 6.0])
    np.testing.assert_array_equal(r1, [20.0, 60.0])
    assert s0 is None  # the tiny datasets name no reference returns


def test_a_new_game_extends_the_pretraining_code_and_numbering(saved_games):
    from valorl.envs.token_games import games_code, load_multigame

    pre = load_multigame(saved_games[:1], vocab_size=512, reserve=64)
    new = load_multigame(saved_games[1:], 512, 64, base=saved_games[:1], episodes=2)
    assert len(new) == 10 and set(new.observations[:, -7]) == {1.0}  # 2 episodes, game 1
    base_code, _, _ = games_code(tuple(saved_games[:1]), 512, 64)
    code, env_ids, first = games_code(tuple(saved_games[1:]), 512, 64, tuple(saved_games[:1]), 2)
    assert first == 1 and env_ids == ["Asterix-MinAtar"] and code.used > base_code.used
    np.testing.assert_array_equal(code.codes[: base_code.used], base_code.codes[: base_code.used])
    np.testing.assert_array_equal(
        pre.observations[:, :25], base_code.encode(tiny_games()[0].observations)
    )


def test_warm_start_keeps_the_pretrained_network_with_a_fresh_optimiser():
    agent, fresh = tiny_agent()
    _, other = tiny_agent()
    pretrained = other.replace(
        model=other.model.replace(
            params=jax.tree.map(lambda x: x + 1.0, other.model.params), step=jnp.asarray(7)
        ),
        target_q=jax.tree.map(lambda x: x - 1.0, other.target_q),
    )
    started = agent.warm_start(fresh, pretrained)
    jax.tree.map(np.testing.assert_array_equal, started.model.params, pretrained.model.params)
    jax.tree.map(np.testing.assert_array_equal, started.target_q, pretrained.target_q)
    assert int(started.model.step) == 0
    jax.tree.map(np.testing.assert_array_equal, started.model.opt_state, fresh.model.opt_state)


@pytest.mark.expensive  # ~25 s: three small runs; their pieces have the two tests above
def test_fine_tuning_starts_from_the_pretrained_network_on_a_new_game(saved_games, tmp_path):
    """Pre-train on one game, fine-tune on another from its first 2 episodes: the new game is
    game 1 under the pre-training code extended into its reserved slots, and with a zero
    learning rate the fine-tuned network is exactly the pre-trained one."""
    from valorl.launch.train import train_from_args, train_parser
    from valorl.training.restore import load_checkpoint
    from valorl.training.run_dir import RunDir

    tiny = "--width 16 --depth 1 --heads 2 --q-hidden 8 --batch-size 4 --vocab-size 512 "
    tiny += "--steps 2 --log-every 2 --eval-episodes 0 --seeds 2 --quiet"
    run = lambda *extra: train_from_args(train_parser("jowa").parse_args([*tiny.split(), *extra]))
    run("--datasets", saved_games[0], "--out", str(tmp_path / "pre"))
    fine = ["--datasets", saved_games[1], "--init-from", str(tmp_path / "pre")]
    run(*fine, "--episodes-per-game", "2", "--learning-rate", "0", "--out", str(tmp_path / "ft"))
    pre, ft = load_checkpoint(tmp_path / "pre")[1], load_checkpoint(tmp_path / "ft")[1]
    jax.tree.map(np.testing.assert_array_equal, pre.states.model.params, ft.states.model.params)
    np.testing.assert_array_equal(ft.states.model.step, [2, 2])  # its own schedule
    record = RunDir(tmp_path / "ft").config()["data"]
    assert record["init_from"] == str(tmp_path / "pre") and record["transitions"] == 10
    with pytest.raises(ValorlError, match="other shapes than this run's"):
        run(*fine, "--width", "32", "--out", str(tmp_path / "wide"))
    with pytest.raises(ValorlError, match="itself fine-tuned"):
        run("--datasets", saved_games[0], "--init-from", str(tmp_path / "ft"))

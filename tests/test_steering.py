"""Value-guided steering (V-GPS): samples of one policy re-ranked by another run's critic.

Most checks use hand-made agents whose Q and samples are known in closed form, so the chosen
action can be found by hand among the very same N samples; one tiny trained IQL run checks the
path through real checkpoints, `valorl eval --steer-with` and `valorl.steer`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import train_tiny_run

import valorl
from valorl.agents.base import AgentBase
from valorl.cli.main import main
from valorl.data.dataset import DatasetInfo
from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.eval.evaluate import evaluate_run
from valorl.eval.policy import Policy
from valorl.eval.steering import DEFAULT_BETA, DEFAULT_SAMPLES, critic_scores, steer

OBS_DIM, ACTION_DIM = 3, 2


@dataclasses.dataclass(frozen=True)
class UniformPolicy(AgentBase):
    """Samples uniform in [-1, 1]^d (agent units); one action, or chunks of `h`."""

    name: ClassVar[str] = "uniform"
    h: int = 1

    @property
    def action_chunk(self) -> int:
        return self.h

    def act(self, state, obs, key, deterministic=True):
        shape = (obs.shape[0], ACTION_DIM) if self.h == 1 else (obs.shape[0], self.h, ACTION_DIM)
        return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)


@dataclasses.dataclass(frozen=True)
class LinearCritic(AgentBase):
    """Two members, Q = w·a and w·a + 1 in agent units: the min is w·a, the mean w·a + 0.5."""

    name: ClassVar[str] = "linear"
    has_critic: ClassVar[bool] = True

    def q_values(self, state, obs, actions):
        q = actions @ state["w"]
        return jnp.stack([q, q + 1.0])


@dataclasses.dataclass(frozen=True)
class TargetCritic(AgentBase):
    """Q = −‖a − s[:2]‖² in ENVIRONMENT units, computed from agent units by undoing the
    critic's own normaliser, whose constants its state holds."""

    name: ClassVar[str] = "target"
    has_critic: ClassVar[bool] = True

    def q_values(self, state, obs, actions):
        env_obs = obs * state["obs_std"] + state["obs_mean"]
        env_actions = state["low"] + 0.5 * (actions + 1.0) * (state["high"] - state["low"])
        return -jnp.sum((env_actions - env_obs[:, :ACTION_DIM]) ** 2, axis=-1)[None]


def run_of(agent, states, normalizer=None, seeds=(0,), num_actions=None) -> Policy:
    """A loaded run built by hand: states carry a leading seed axis."""
    normalizer = normalizer or Normalizer.identity((OBS_DIM,), ACTION_DIM)
    states = {k: jnp.stack([jnp.asarray(v, jnp.float32)] * len(seeds)) for k, v in states.items()}
    return Policy(agent, states, normalizer, list(seeds), DatasetInfo(), 0, num_actions)


def normalizer(obs_mean, obs_std, low, high, reward_scale=1.0) -> Normalizer:
    f = lambda x: jnp.asarray(x, jnp.float32)
    return Normalizer(f(obs_mean), f(obs_std), f(low), f(high), f(reward_scale))


def own_samples(policy: Policy, obs, key, n) -> np.ndarray:
    """The policy's own stochastic samples with the keys steering uses: (batch, n, ...)."""
    keys = jax.random.split(key, n + 1)[:n]
    return np.stack([policy(obs, key=k, deterministic=False) for k in keys], axis=1)


@pytest.fixture
def obs():
    return np.random.default_rng(0).normal(size=(5, OBS_DIM)).astype(np.float32)


# ---- selection among the policy's own samples ----------------------------------------------------


def test_one_sample_is_the_policy_own_sample(obs):
    """With N = 1 there is nothing to choose: the steered action is the policy's sample with
    the first of the decision's keys."""
    policy = run_of(UniformPolicy(), {})
    critic = run_of(LinearCritic(), {"w": [1.0, 0.0]})
    key = jax.random.key(3)
    steered = steer(policy, critic, samples=1)(obs, key=key)
    np.testing.assert_array_equal(steered, own_samples(policy, obs, key, 1)[:, 0])


def test_argmax_picks_the_largest_component_by_hand(obs):
    """Q grows along the first action number, so β = 0 picks, among the very same N samples
    the policy draws, the one with the largest first number (checked row by row)."""
    policy = run_of(UniformPolicy(), {}, normalizer(np.zeros(3), np.ones(3), [-2, -2], [2, 2]))
    critic = run_of(LinearCritic(), {"w": [1.0, 0.0]})
    key = jax.random.key(7)
    chosen = steer(policy, critic, samples=8, beta=0.0)(obs, key=key)
    candidates = own_samples(policy, obs, key, 8)  # (5, 8, 2), in [-2, 2]
    expected = candidates[np.arange(5), candidates[:, :, 0].argmax(axis=1)]
    np.testing.assert_array_equal(chosen, expected)
    assert len(np.unique(candidates[:, :, 0].argmax(axis=1))) > 1  # not always one index
    # a callable policy gives the same choice from the same samples
    sample = lambda o, k: np.asarray(policy(o, key=k, deterministic=False))
    chosen_by_callable = steer(sample, critic, samples=8, beta=0.0)(obs, key=key)
    np.testing.assert_array_equal(chosen_by_callable, expected)


def test_softmax_returns_one_of_the_samples(obs):
    """β > 0 draws one of the N samples (not a blend), and a large β is not always the argmax."""
    policy = run_of(UniformPolicy(), {})
    critic = run_of(LinearCritic(), {"w": [1.0, 0.0]})
    key = jax.random.key(1)
    chosen = steer(policy, critic, samples=6, beta=100.0)(obs, key=key)
    candidates = own_samples(policy, obs, key, 6)
    matches = np.all(candidates == chosen[:, None], axis=-1)  # (5, 6)
    assert np.all(matches.sum(axis=1) == 1)
    assert np.any(matches.argmax(axis=1) != candidates[:, :, 0].argmax(axis=1))


def test_ensemble_reduction_min_and_mean():
    """The members are w·a and w·a + 1: min gives w·a, mean w·a + 0.5 (divided by the
    critic's reward scale, so scores are in return units)."""
    critic = LinearCritic()
    state = {"w": jnp.asarray([2.0, 0.0])}
    norm = normalizer(np.zeros(3), np.ones(3), [-1, -1], [1, 1], reward_scale=4.0)
    actions = jnp.asarray([[[0.5, 0.0], [-1.0, 0.3]]])  # (batch 1, N 2, 2)
    obs = jnp.zeros((1, OBS_DIM))
    np.testing.assert_allclose(critic_scores(critic, state, norm, obs, actions), [[0.25, -0.5]])
    np.testing.assert_allclose(
        critic_scores(critic, state, norm, obs, actions, "mean"), [[0.375, -0.375]]
    )


# ---- units between the two runs -----------------------------------------------------------------


def test_critic_scores_environment_actions_through_its_own_normaliser(obs):
    """Two critics that hold the same function of ENVIRONMENT (s, a) behind different
    normalisers give the same scores; steering a policy with yet other bounds picks the
    sample nearest to s[:2] in environment units, found by hand."""
    stretched = normalizer([1.0, -1.0, 0.5], [2.0, 0.5, 1.0], [0.0, -3.0], [4.0, 1.0])
    plain = Normalizer.identity((OBS_DIM,), ACTION_DIM)
    state = lambda n: {
        "obs_mean": n.obs_mean, "obs_std": n.obs_std, "low": n.action_low, "high": n.action_high
    }  # fmt: skip
    env_actions = jnp.asarray(np.random.default_rng(1).uniform(-2, 2, size=(5, 4, ACTION_DIM)))
    by_hand = -np.sum((np.asarray(env_actions) - obs[:, None, :ACTION_DIM]) ** 2, axis=-1)
    for n in (stretched, plain):
        scores = critic_scores(TargetCritic(), state(n), n, jnp.asarray(obs), env_actions)
        np.testing.assert_allclose(scores, by_hand, rtol=1e-5, atol=1e-5)

    policy_norm = normalizer(np.zeros(3), np.ones(3), [-2.0, -2.0], [2.0, 2.0])
    policy = run_of(UniformPolicy(), {}, policy_norm)
    critic = run_of(TargetCritic(), state(stretched), stretched)
    key = jax.random.key(11)
    chosen = steer(policy, critic, samples=16, beta=0.0)(obs, key=key)
    candidates = own_samples(policy, obs, key, 16)
    distance = np.sum((candidates - obs[:, None, :ACTION_DIM]) ** 2, axis=-1)
    np.testing.assert_allclose(chosen, candidates[np.arange(5), distance.argmin(axis=1)])


def test_chunks_are_scored_by_their_first_action_and_returned_whole(obs):
    """A chunk policy (h = 3): the chunk whose FIRST action has the largest first number is
    chosen, and all three of its actions come back."""
    policy = run_of(UniformPolicy(h=3), {})
    critic = run_of(LinearCritic(), {"w": [1.0, 0.0]})
    key = jax.random.key(5)
    chosen = steer(policy, critic, samples=8, beta=0.0)(obs, key=key)
    candidates = own_samples(policy, obs, key, 8)  # (5, 8, 3, 2)
    assert chosen.shape == (5, 3, ACTION_DIM)
    best_first = candidates[:, :, 0, 0].argmax(axis=1)
    assert np.any(best_first != candidates[:, :, 1, 0].argmax(axis=1))  # a later step differs
    np.testing.assert_array_equal(chosen, candidates[np.arange(5), best_first])


def test_seed_pairing():
    """Seed i is steered by critic seed i when the counts match, else by critic seed 0."""
    critic = run_of(LinearCritic(), {"w": [1.0, 0.0]}, seeds=(0, 1))
    paired = steer(run_of(UniformPolicy(), {}, seeds=(0, 1)), critic)
    first = steer(run_of(UniformPolicy(), {}, seeds=(0, 1, 2)), critic)
    assert paired.critic_indices.tolist() == [0, 1]
    assert first.critic_indices.tolist() == [0, 0, 0]
    # critic seeds that disagree (Q = a₀ and Q = −a₀): each policy seed follows its own
    opposite = Policy(
        LinearCritic(), {"w": jnp.array([[1.0, 0.0], [-1.0, 0.0]])},
        Normalizer.identity((OBS_DIM,), ACTION_DIM), [0, 1], DatasetInfo(), 0, None,
    )  # fmt: skip
    for policies, signs in (((0, 1), [1, -1]), ((0, 1, 2), [1, 1, 1])):
        steered = steer(run_of(UniformPolicy(), {}, seeds=policies), opposite, samples=64, beta=0)
        for index, sign in enumerate(signs):
            action = steered(np.zeros((1, OBS_DIM)), seed_index=index)
            assert sign * action[0, 0] > 0.8, (policies, index, action)
    assert first(np.zeros(OBS_DIM), seed_index=2).shape == (ACTION_DIM,)
    # without a key, each call draws fresh samples from the object's own key stream
    assert not np.array_equal(first(np.zeros(OBS_DIM)), first(np.zeros(OBS_DIM)))


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, phrase",
    [
        (lambda p, c: steer(p, c, samples=0), "--samples must be at least 1"),
        (lambda p, c: steer(p, c, beta=-1.0), "--beta must be at least 0"),
        (lambda p, c: steer(p, c, reduction="max"), "reduction must be one of"),
        (lambda p, c: steer(p, p), "has no critic"),
        (lambda p, c: steer(p, run_of(LinearCritic(), {"w": [1.0]}, num_actions=3)), "discrete"),
        (
            lambda p, c: steer(
                run_of(UniformPolicy(), {}, Normalizer.identity((4,), ACTION_DIM)), c
            ),
            "observations of shape (4,)",
        ),
        (
            lambda p, c: steer(run_of(UniformPolicy(), {}, Normalizer.identity((3,), 1)), c),
            "acts with 1 numbers per action",
        ),
        (lambda p, c: steer(lambda o, k: np.zeros((len(o), 5)), c)(np.zeros(3)), "callable"),
        (lambda p, c: steer(3, c), "cannot steer a int"),
    ],
)
def test_bad_input_is_one_line(make, phrase):
    policy, critic = run_of(UniformPolicy(), {}), run_of(LinearCritic(), {"w": [1.0, 0.0]})
    with pytest.raises(ValorlError) as error:
        make(policy, critic)
    assert phrase in str(error.value) and "\n" not in str(error.value)


# ---- a trained run, the Python API and the command line -----------------------------------------


@pytest.fixture(scope="module")
def iql_run(tmp_path_factory, pendulum_dataset):
    """A tiny IQL run (Gaussian actor and a critic) with two seeds: it steers itself."""
    out = tmp_path_factory.mktemp("steer-run") / "iql"
    train_tiny_run(pendulum_dataset, out, agent="iql")
    return out


def test_trained_run_one_sample_matches_its_policy(iql_run):
    """Through real checkpoints: `valorl.steer` with N = 1 is the run's own sample."""
    policy = valorl.load_policy(iql_run)
    obs = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    key = jax.random.key(0)
    steered = valorl.steer(iql_run, iql_run, samples=1)
    for seed in (0, 1):
        np.testing.assert_allclose(
            steered(obs, seed_index=seed, key=key),
            policy(obs, seed_index=seed, key=jax.random.split(key, 2)[0], deterministic=False),
            rtol=1e-6,
        )


def test_cli_eval_steered(iql_run, capsys):
    """`valorl eval RUN --steer-with CRITIC --samples 4 --json` evaluates every seed steered
    and says how; `--samples` without `--steer-with` is a one-line error."""
    assert main(["eval", str(iql_run), "--steer-with", str(iql_run), "--samples", "4",
                 "--episodes", "1", "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["steering"] == dict(
        steer_with=str(iql_run), samples=4, beta=DEFAULT_BETA, reduction="min"
    )
    with pytest.raises(SystemExit):  # the defaults `--help` states are the ones used
        main(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {DEFAULT_SAMPLES}, as V-GPS's code)" in help_text
    assert f"(default: {DEFAULT_BETA}, as V-GPS's code)" in help_text
    assert len(summary["return_per_seed"]) == 2
    assert main(["eval", str(iql_run), "--samples", "4"]) == 2
    assert capsys.readouterr().err.strip() == (
        "valorl: error: --samples and --beta steer a policy: give the critic with --steer-with"
    )


def test_evaluate_run_refuses_a_critic_without_critic(tmp_path, pendulum_dataset, iql_run):
    """A BC run has no critic to steer with: one line, before any episode runs."""
    bc = tmp_path / "bc"
    train_tiny_run(pendulum_dataset, bc, agent="bc", seeds=1)
    with pytest.raises(ValorlError, match="has no critic"):
        evaluate_run(iql_run, steer_with=bc, samples=2)

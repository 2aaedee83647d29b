"""Collecting datasets from behaviour policies: determinism, shares, reference returns, behaviour
specs, run directories as behaviours, the scripted controller, and writing Minari datasets."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import TINY, synthetic_dataset, train_tiny_run

import valorl
from valorl.collection import Behaviour, collect, mean_return
from valorl.collection.controllers import pendulum_swingup
from valorl.data.catalog import read_entry
from valorl.data.sources import minari_root
from valorl.errors import ValorlError


def quick(env_id, behaviours, steps, **kw):
    """`collect` without a progress bar and with few reference episodes."""
    kw.setdefault("reference_episodes", 2)
    return collect(env_id, behaviours, steps, progress=False, **kw)


def files_under(path):
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


@pytest.fixture
def bc_run(pendulum_dataset):
    """A tiny two-seed BC run on Pendulum-v1 data, in `r` of the test's directory."""
    train_tiny_run(pendulum_dataset, "r")
    return "r"


# ---- determinism --------------------------------------------------------------------------------


def test_same_seed_same_data_other_seed_other_data():
    """Collection is a function of the seed: equal fingerprints for the same seed (noise and
    reset streams included), different data for another seed."""
    specs = ["random", "pendulum-swingup:noise=0.3"]
    a = quick("Pendulum-v1", specs, 300, seed=5)
    b = quick("Pendulum-v1", specs, 300, seed=5)
    c = quick("Pendulum-v1", specs, 300, seed=6)
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.observations[0], c.observations[0])


# ---- shares and budgets -------------------------------------------------------------------------


def test_shares_split_the_steps_and_are_recorded():
    """share=3 against the default share of 1 gives 600 of 800 steps to random and 200 to the
    controller; the Minari metadata records that provenance."""
    ds = quick(
        "Pendulum-v1",
        ["random:share=3", "pendulum-swingup"],
        800,
        seed=1,
        dataset_id="valorl/shares-v0",
    )
    assert len(ds) == 800
    meta = json.loads((minari_root() / "valorl/shares-v0/data/metadata.json").read_text())
    prov = meta["valorl_collect"]
    assert prov["steps"] == 800 and prov["seed"] == 1 and prov["reference_episodes"] == 2
    assert [(b["behaviour"], b["steps"], b["episodes"]) for b in prov["behaviours"]] == [
        ("random:share=3", 600, 3),
        ("pendulum-swingup", 200, 1),
    ]
    returns = ds.episode_returns()
    assert prov["behaviours"][0]["mean_return"] == pytest.approx(returns[:3].mean(), rel=1e-5)
    assert prov["behaviours"][1]["mean_return"] == pytest.approx(returns[3], rel=1e-5)
    assert meta["description"] == "Pendulum-v1: random:share=3, pendulum-swingup"
    assert meta["algorithm_name"] == "valorl collect"


def test_last_episode_is_cut_to_the_budget_as_a_truncation():
    """460 steps at 3:1 give budgets floor(345) and 115: random runs 200 + 145 steps, the
    controller 115; each cut episode ends in a truncation, none in a termination."""
    ds = quick("Pendulum-v1", ["random:share=3", "pendulum-swingup"], 460)
    lengths = [s.stop - s.start for s in ds.episode_slices()]
    assert lengths == [200, 145, 115]
    ends = np.cumsum(lengths) - 1
    assert np.flatnonzero(ds.timeouts).tolist() == ends.tolist()
    assert not ds.terminals.any()
    # the controller's episode is its own: it starts from a fresh reset, not random's last state
    assert not np.array_equal(ds.observations[345], ds.next_observations[344])


# ---- reference returns --------------------------------------------------------------------------


def hand_mean_return(act, episodes, seed, random=False):
    """Mean return by a plain loop on the documented reference seeds (SeedSequence([seed, 7919]),
    whose generator also draws the random actions)."""
    seq = np.random.SeedSequence([seed, 7919])
    rng = np.random.default_rng(seq)
    env = gym.make("Pendulum-v1")
    totals = []
    for s in seq.generate_state(episodes).tolist():
        obs, _ = env.reset(seed=s)
        total, done = 0.0, False
        while not done:
            action = rng.uniform(-2.0, 2.0, (1,)).astype(np.float32) if random else act(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        totals.append(total)
    env.close()
    return float(np.mean(totals))


def test_reference_returns():
    """ref_min_score is the random policy's mean return and ref_max_score the noise-free
    controller's (the collection noise is dropped), over `reference_episodes` seeded episodes."""
    ds = quick(
        "Pendulum-v1", ["random", "pendulum-swingup:noise=0.3"], 100, seed=3, reference_episodes=3
    )
    env = gym.make("Pendulum-v1")
    random_ref = mean_return(env, Behaviour("random").build(env), 3, 3)
    controller_ref = mean_return(env, Behaviour("pendulum-swingup").build(env), 3, 3)
    env.close()
    assert ds.info.ref_min_score == random_ref
    assert ds.info.ref_max_score == controller_ref
    assert random_ref == pytest.approx(hand_mean_return(None, 3, 3, random=True), rel=1e-5)
    assert controller_ref == pytest.approx(hand_mean_return(pendulum_swingup, 3, 3), rel=1e-5)
    assert controller_ref > random_ref + 500


def test_explicit_ref_max_is_kept_and_random_only_has_none():
    """A given ref_max_score is recorded as is (also in Minari metadata); data from random actions
    alone has no best behaviour, so ref_max_score is None and normalised scores are unavailable."""
    given = quick(
        "Pendulum-v1", ["pendulum-swingup"], 50, ref_max_score=-42.5, dataset_id="valorl/g-v0"
    )
    assert given.info.ref_max_score == -42.5
    assert valorl.load_dataset("valorl/g-v0").info.ref_max_score == -42.5
    random_only = quick("Pendulum-v1", ["random"], 50, dataset_id="valorl/r-v0")
    assert random_only.info.ref_min_score is not None
    assert random_only.info.ref_max_score is None
    assert random_only.info.normalized_score([0.0]) is None
    meta = read_entry(minari_root() / "valorl/r-v0").metadata
    assert "ref_max_score" not in meta and meta["ref_min_score"] == random_only.info.ref_min_score


# ---- behaviour specs ----------------------------------------------------------------------------


def test_behaviour_parse_options():
    """Options after the colon set noise, share and the run's seed index."""
    assert Behaviour.parse("runs/x:noise=0.1,index=2") == Behaviour("runs/x", 0.1, 1.0, 2)
    assert Behaviour.parse("random:share=3") == Behaviour("random", share=3.0)
    assert Behaviour.parse("pendulum-swingup") == Behaviour("pendulum-swingup")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("random:bogus=1", "behaviour 'random:bogus=1': unknown option 'bogus=1'; "
         "use noise=, share= or index="),
        ("random:noise", "behaviour 'random:noise': unknown option 'noise'; "
         "use noise=, share= or index="),
        ("random:noise=abc", "behaviour 'random:noise=abc': noise must be a number"),
        ("r:index=1.5", "behaviour 'r:index=1.5': index must be a number"),
        ("random:noise=-0.1", "behaviour 'random:noise=-0.1': noise must be >= 0 and share > 0"),
        ("random:share=0", "behaviour 'random:share=0': noise must be >= 0 and share > 0"),
    ],
)  # fmt: skip
def test_behaviour_parse_errors(spec, message):
    """Each malformed spec is a ValorlError with this exact one-line message."""
    with pytest.raises(ValorlError) as info:
        Behaviour.parse(spec)
    assert str(info.value) == message


@pytest.mark.parametrize("spec", ["random:share=inf", "random:share=nan", "x:noise=nan"])
def test_behaviour_parse_rejects_non_finite(spec):
    """NaN or infinite shares and noise are rejected when parsed, not turned into NaN budgets
    ("no episodes") or NaN actions after collecting."""
    with pytest.raises(ValorlError, match="noise must be >= 0 and share > 0"):
        Behaviour.parse(spec)


@pytest.mark.parametrize(
    ("env_id", "spec", "message"),
    [
        ("Pendulum-v1", "nope", "unknown behaviour 'nope': use random, a run directory, a "
         "policy file (.npz), or one of: mountaincar-pump, pendulum-swingup"),
        ("MountainCarContinuous-v0", "pendulum-swingup", "controller 'pendulum-swingup' drives "
         "Pendulum-v1, not MountainCarContinuous-v0"),
        ("CartPole-v1", "pendulum-swingup", "behaviour 'pendulum-swingup' cannot act in "
         "CartPole-v1's Discrete(2) action space: use random, a run directory of a discrete "
         "agent or a discrete policy file (.npz)"),
    ],
)  # fmt: skip
def test_behaviour_does_not_fit_environment(env_id, spec, message):
    """Unknown behaviours, controllers for another environment and continuous controllers in a
    discrete action space are refused before anything is collected or written."""
    with pytest.raises(ValorlError) as info:
        quick(env_id, [spec], 10, dataset_id="valorl/never-v0")
    assert str(info.value) == message
    assert files_under(minari_root()) == []


def test_collect_argument_errors():
    """No steps, no behaviours, or an unknown environment are one-line ValorlErrors."""
    with pytest.raises(ValorlError, match="--steps must be at least 1, got 0"):
        quick("Pendulum-v1", ["random"], 0)
    with pytest.raises(ValorlError, match="at least one --policy"):
        quick("Pendulum-v1", [], 10)
    with pytest.raises(ValorlError, match="cannot make environment 'Nope-v0'"):
        quick("Nope-v0", ["random"], 10)


# ---- a valorl run as behaviour ------------------------------------------------------------------


def test_run_directory_as_behaviour(bc_run):
    """A run directory acts with its trained policy: noise-free actions equal `load_policy`'s
    (clipped to the action space), index= picks the seed, and noise perturbs the actions."""
    policy = valorl.load_policy(bc_run)
    clean = quick("Pendulum-v1", [bc_run], 60)
    np.testing.assert_allclose(
        clean.actions, np.clip(policy(clean.observations), -2, 2), rtol=1e-5, atol=1e-5
    )
    second = quick("Pendulum-v1", [f"{bc_run}:index=1"], 60)
    np.testing.assert_allclose(
        second.actions, policy(second.observations, seed_index=1), rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(second.actions, policy(second.observations, seed_index=0))
    noisy = quick("Pendulum-v1", [f"{bc_run}:noise=0.1"], 60)
    assert len(noisy) == 60
    deviation = noisy.actions - np.clip(policy(noisy.observations), -2, 2)
    assert 0.02 < np.abs(deviation).mean() < 0.5  # noise std 0.1 × half-range 2 = 0.2
    assert np.all(np.abs(noisy.actions) <= 2.0)
    with pytest.raises(ValorlError, match="r has 2 seeds; index=2 is out of range"):
        quick("Pendulum-v1", [f"{bc_run}:index=2"], 10)


def test_run_directory_with_other_observation_shape():
    """A run trained on 4-dimensional observations cannot drive Pendulum-v1 (3-dimensional)."""
    valorl.train(
        "bc",
        synthetic_dataset(n=100, obs_dim=4),
        steps=10,
        log_every=10,
        eval_episodes=0,
        progress=False,
        out="r4",
        **TINY["bc"],
    )
    with pytest.raises(ValorlError) as info:
        quick("Pendulum-v1", ["r4"], 10)
    assert str(info.value) == (
        "r4 was trained on observations of shape (4,), but Pendulum-v1 has (3,)"
    )


# ---- the scripted controller --------------------------------------------------------------------


def test_pendulum_controller_swings_up():
    """The energy-pumping controller scores far above random actions on the same starts."""
    env = gym.make("Pendulum-v1")
    controller = mean_return(env, Behaviour("pendulum-swingup").build(env), 5, 0)
    random = mean_return(env, Behaviour("random").build(env), 5, 0)
    env.close()
    assert controller > -300
    assert random < -900


def test_pendulum_controller_actions_in_bounds():
    """Actions stay in [-2, 2] for any observation, including fast spins, and in collected data."""
    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi, np.pi, 500)
    speeds = rng.uniform(-8, 8, 500)
    for t, w in zip(theta, speeds, strict=True):
        action = pendulum_swingup(np.array([np.cos(t), np.sin(t), w], np.float32))
        assert action.shape == (1,) and action.dtype == np.float32
        assert -2.0 <= action[0] <= 2.0
    ds = quick("Pendulum-v1", ["pendulum-swingup:noise=0.5"], 200)
    assert ds.actions.min() >= -2.0 and ds.actions.max() <= 2.0
    assert ds.actions.min() == -2.0 and ds.actions.max() == 2.0  # noise saturates at the bounds


# ---- writing ------------------------------------------------------------------------------------


def test_written_dataset_round_trips(tmp_path):
    """With a dataset id the Minari dataset is written under the local root (or under `out`) and
    loads back with the same fingerprint and reference returns."""
    ds = quick("Pendulum-v1", ["random", "pendulum-swingup"], 250, dataset_id="valorl/w-v0")
    path = minari_root() / "valorl/w-v0"
    assert (path / "data" / "metadata.json").is_file()
    assert ds.info.source == str(path)
    loaded = valorl.load_dataset("valorl/w-v0")
    assert loaded.fingerprint() == ds.fingerprint()
    assert loaded.info.env_id == "Pendulum-v1"
    assert (loaded.info.ref_min_score, loaded.info.ref_max_score) == pytest.approx(
        (ds.info.ref_min_score, ds.info.ref_max_score), rel=1e-6
    )
    elsewhere = quick("Pendulum-v1", ["random"], 30, dataset_id="valorl/o-v0", out="mine/o")
    assert not (minari_root() / "valorl/o-v0").exists()
    assert valorl.load_dataset(tmp_path / "mine/o").fingerprint() == elsewhere.fingerprint()


def test_existing_dataset_is_refused_and_kept():
    """Collecting into an existing id (or --out) fails before collecting and leaves it as is."""
    quick("Pendulum-v1", ["random"], 30, dataset_id="valorl/e-v0")
    before = {p: p.read_bytes() for p in files_under(minari_root())}
    with pytest.raises(ValorlError, match="'valorl/e-v0' already exists"):
        quick("Pendulum-v1", ["pendulum-swingup"], 30, dataset_id="valorl/e-v0")
    assert {p: p.read_bytes() for p in files_under(minari_root())} == before
    with pytest.raises(ValorlError, match="already exists; choose another --out"):
        quick("Pendulum-v1", ["random"], 30, dataset_id="valorl/x-v0", out=minari_root())


def test_failed_write_leaves_nothing(monkeypatch):
    """If writing the episodes fails, neither the dataset nor its temporary directory remain."""
    from minari.dataset._storages.hdf5_storage import HDF5Storage

    def broken(self, episodes):
        next(iter(episodes))  # the data were on their way
        raise OSError("disk full")

    monkeypatch.setattr(HDF5Storage, "update_episodes", broken)
    with pytest.raises(OSError, match="disk full"):
        quick("Pendulum-v1", ["random"], 30, dataset_id="valorl/f-v0")
    assert files_under(minari_root()) == []
    assert not (minari_root() / "valorl/f-v0").exists()


@pytest.mark.parametrize("dataset_id", ["bad id", "valorl/no-version"])
def test_invalid_dataset_id_is_a_valorl_error(dataset_id):
    """A malformed Minari id is reported as a ValorlError naming the expected form, and nothing
    is written."""
    with pytest.raises(ValorlError, match="invalid Minari dataset id"):
        quick("Pendulum-v1", ["random"], 20, dataset_id=dataset_id)
    assert files_under(minari_root()) == []

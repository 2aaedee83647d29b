"""Data corruption (Yang et al. 2023): exactly the recorded rows of exactly one field change, by
the paper's definitions; records round-trip through Minari; adversarial attacks lower the
attacked Q more than random noise of the same size; `valorl corrupt` refuses bad input."""

from __future__ import annotations

import json
import re

import minari
import numpy as np
import pytest
from conftest import synthetic_dataset, train_tiny_run

from valorl.cli.main import main
from valorl.corruption import (
    KINDS,
    Attack,
    corrupt,
    decode_indices,
    encode_indices,
    read_corruption,
    save_corrupted,
)
from valorl.data.dataset import FLAG_FIELDS, FLOAT_FIELDS
from valorl.data.sources import load_dataset, minari_root, save_minari, save_npz
from valorl.errors import ValorlError

ALL_FIELDS = FLOAT_FIELDS + FLAG_FIELDS
N = 200
DATA = synthetic_dataset(n=N, obs_dim=3, action_dim=2)


def changed_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.flatnonzero((a != b).reshape(len(a), -1).any(axis=1))


@pytest.mark.parametrize("kind", list(KINDS))
def test_random_corruption_touches_exactly_the_recorded_rows_of_one_field(kind):
    """round(rate·N) rows of the named field change, those are the recorded indices, every
    other field is byte-identical, and the changes follow the paper's definition."""
    result = corrupt(DATA, kind, "random", rate=0.3, scale=0.5, seed=3)
    field = KINDS[kind]
    indices = result.indices
    assert result.record["corrupted"] == len(indices) == 60
    assert result.record["field"] == field
    new, old = getattr(result.dataset, field), getattr(DATA, field)
    np.testing.assert_array_equal(changed_rows(new, old), indices)
    for other in ALL_FIELDS:
        if other != field:
            assert getattr(result.dataset, other).tobytes() == getattr(DATA, other).tobytes()
    if kind == "rewards":  # replaced by U[-30·S, 30·S]
        assert np.all(np.abs(new[indices]) <= 30 * 0.5)
        assert np.abs(new[indices]).max() > 2 * np.abs(old).max()
    else:  # x + λ·std(x), λ ~ U[-S, S] per dimension
        std = old.astype(np.float64).std(axis=0)
        np.testing.assert_allclose(result.record["std"], std)
        lam = (new[indices] - old[indices]) / std
        assert np.all(np.abs(lam) <= 0.5 + 1e-5)
        assert lam.min() < -0.4 and lam.max() > 0.4  # spread over the whole box


def test_reproducible_by_seed_and_different_across_seeds():
    a = corrupt(DATA, "obs", rate=0.3, seed=1)
    b = corrupt(DATA, "obs", rate=0.3, seed=1)
    c = corrupt(DATA, "obs", rate=0.3, seed=2)
    assert a.dataset.fingerprint() == b.dataset.fingerprint()
    assert a.record == b.record
    assert a.dataset.fingerprint() != c.dataset.fingerprint()
    assert not np.array_equal(a.indices, c.indices)
    assert a.record["source"]["fingerprint"] == DATA.fingerprint()


@pytest.mark.parametrize("rate, count", [(0.0, 0), (0.1, 20), (0.333, 67), (1.0, N)])
def test_the_count_is_round_rate_times_n(rate, count):
    result = corrupt(DATA, "rewards", rate=rate, seed=0)
    assert len(result.indices) == count == result.record["corrupted"]
    assert len(changed_rows(result.dataset.rewards, DATA.rewards)) == count


def test_corrupted_actions_stay_within_the_bounds():
    """Random and large: every corrupted action is clipped to the bounds ([-1, 1] here)."""
    result = corrupt(DATA, "actions", rate=1.0, scale=5.0, seed=0)
    actions = result.dataset.actions
    assert actions.min() == -1.0 and actions.max() == 1.0
    assert result.record["action_low"] == [-1.0, -1.0]


def test_adversarial_rewards_are_negated_and_scaled():
    """The paper's adversarial reward corruption r -> -S·r needs no Q-function."""
    result = corrupt(DATA, "rewards", "adversarial", rate=0.3, scale=2.0, seed=0)
    i = result.indices
    np.testing.assert_array_equal(result.dataset.rewards[i], -2.0 * DATA.rewards[i])
    rest = np.setdiff1d(np.arange(N), i)
    assert result.dataset.rewards[rest].tobytes() == DATA.rewards[rest].tobytes()


def test_index_encoding_round_trips():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 1000):
        indices = np.sort(rng.choice(n, size=rng.integers(0, n + 1), replace=False))
        record = {"indices": encode_indices(indices, n), "transitions": n}
        np.testing.assert_array_equal(decode_indices(record), indices)
    with pytest.raises(ValorlError, match="damaged corruption record"):
        decode_indices({"indices": "not base64!", "transitions": 3})


def test_record_round_trips_through_minari(isolated):
    """save_corrupted writes a Minari dataset whose metadata holds the exact record; Minari and
    valorl load it, and the data equal the corrupted dataset exactly: where corrupted
    observations break the s' -> s chain, Minari's layout must cut the episode, and the loader
    undoes those cuts from the rows the writer recorded."""
    result = corrupt(DATA, "obs", rate=0.3, scale=1.0, seed=5)
    path = save_corrupted(result, "test/corrupt-obs-v0")
    assert path == minari_root() / "test/corrupt-obs-v0"
    record = read_corruption("test/corrupt-obs-v0")
    assert record == json.loads(json.dumps(result.record))
    np.testing.assert_array_equal(decode_indices(record), result.indices)
    assert read_corruption(path) == record
    assert minari.load_dataset("test/corrupt-obs-v0").storage.metadata["valorl_corruption"] == (
        record
    )
    back = load_dataset("test/corrupt-obs-v0")
    assert len(result.dataset.split_rows()) > 0  # the chain is broken somewhere
    for field in (*FLOAT_FIELDS, "terminals", "timeouts"):
        assert getattr(back, field).tobytes() == getattr(result.dataset, field).tobytes(), field
    assert back.fingerprint() == result.dataset.fingerprint()
    assert read_corruption(save_corrupted(corrupt(DATA, "actions"), "test/plain-v0")) is not None
    assert read_corruption(minari_root() / "test/plain-v0")["kind"] == "actions"


def test_clean_minari_dataset_has_no_record(isolated):
    save_minari(DATA, "test/clean-v0")
    assert read_corruption("test/clean-v0") is None
    with pytest.raises(ValorlError, match="cannot read the metadata"):
        read_corruption("test/missing-v0")


def test_non_finite_data_is_refused(isolated):
    """Loading a dataset with a NaN is refused with the field and index; a corruption whose
    values overflow float32 is refused the same way, before anything is written."""
    fields = {f: getattr(DATA, f).copy() for f in ALL_FIELDS}
    fields["observations"][7, 1] = np.nan
    np.savez("nan.npz", **fields)
    with pytest.raises(ValorlError, match=re.escape("observations[7, 1] is nan: all values")):
        load_dataset("nan.npz")
    with pytest.raises(ValorlError, match="is inf: all values must be finite"):
        corrupt(DATA, "obs", rate=0.5, scale=1e39)


def test_settings_are_checked():
    with pytest.raises(ValorlError, match="unknown corruption kind 'states'"):
        corrupt(DATA, "states")
    with pytest.raises(ValorlError, match=re.escape("--rate must be between 0 and 1, got -0.1")):
        corrupt(DATA, "obs", rate=-0.1)
    with pytest.raises(ValorlError, match="--scale must be a positive number"):
        corrupt(DATA, "obs", scale=0.0)
    with pytest.raises(ValorlError, match="name a valorl run of a critic agent"):
        corrupt(DATA, "obs", "adversarial")


# ---- adversarial attacks on a trained critic ------------------------------------------------


@pytest.fixture(scope="module")
def attacked(pendulum_dataset, tmp_path_factory):
    """A tiny IQL run trained on Pendulum data, as the attacked Q-function."""
    run = tmp_path_factory.mktemp("attack") / "iql"
    train_tiny_run(pendulum_dataset, run, agent="iql", seeds=1)
    return pendulum_dataset, Attack.from_run(run)


@pytest.mark.parametrize("kind", ["obs", "actions", "dynamics"])
def test_adversarial_attack_lowers_q_more_than_random_noise(attacked, kind):
    """On the same rows and in the same box (|δ| <= S·std), the attack lowers the attacked
    value — Q(s, a), or Q(s', π(s')) for dynamics — well below where random noise puts it."""
    data, attack = attacked
    field = KINDS[kind]
    random = corrupt(data, kind, "random", rate=0.3, scale=0.5, seed=0)
    adversarial = corrupt(data, kind, "adversarial", rate=0.3, scale=0.5, seed=0, attack=attack)
    i = adversarial.indices
    np.testing.assert_array_equal(i, random.indices)

    def value(d):
        if kind == "dynamics":
            return np.asarray(attack.q_of_policy(d.next_observations[i]))
        return np.asarray(attack.q(d.observations[i], d.actions[i]))

    clean, noisy, attacked_q = value(data), value(random.dataset), value(adversarial.dataset)
    gap_random, gap_attack = (clean - noisy).mean(), (clean - attacked_q).mean()
    assert gap_attack > 0 and gap_attack > 2 * abs(gap_random)
    assert (attacked_q < clean).mean() > 0.9  # almost every row loses value
    old, new = getattr(data, field), getattr(adversarial.dataset, field)
    std = old.astype(np.float64).std(axis=0)
    assert np.all(np.abs(new[i] - old[i]) <= 0.5 * std + 1e-5)  # stays in the box
    changed = changed_rows(new, old)
    if kind == "actions":  # an action on a bound, pushed outwards, is clipped back to it
        assert np.all(np.isin(changed, i)) and len(changed) >= 0.95 * len(i)
    else:
        np.testing.assert_array_equal(changed, i)
    record = adversarial.record
    assert record["attack"]["agent"] == "iql" and record["attack"]["steps"] == 100
    for other in ALL_FIELDS:
        if other != field:
            assert getattr(adversarial.dataset, other).tobytes() == getattr(data, other).tobytes()


def test_attack_needs_a_critic_agent(pendulum_dataset, isolated):
    train_tiny_run(pendulum_dataset, "bc", agent="bc", seeds=1)
    with pytest.raises(ValorlError, match="trained bc, which has no Q-function"):
        Attack.from_run("bc")


# ---- the command line --------------------------------------------------------------------------


def test_cli_writes_the_dataset_and_its_record(isolated, capsys):
    save_npz(DATA, "data.npz")
    argv = ["corrupt", "data.npz", "--kind", "dynamics", "--rate", "0.25", "--scale", "0.5"]
    assert main([*argv, "--seed", "4", "--id", "test/dyn-v0", "--quiet"]) == 0
    assert "50 of 200 transitions have corrupted next_observations" in capsys.readouterr().out
    record = read_corruption("test/dyn-v0")
    assert (record["kind"], record["mode"], record["rate"], record["scale"], record["seed"]) == (
        "dynamics",
        "random",
        0.25,
        0.5,
        4,
    )
    expected = corrupt(load_dataset("data.npz"), "dynamics", rate=0.25, scale=0.5, seed=4)
    np.testing.assert_array_equal(decode_indices(record), expected.indices)
    assert record["source"]["fingerprint"] == DATA.fingerprint()
    back = load_dataset("test/dyn-v0")
    assert back.next_observations.tobytes() == expected.dataset.next_observations.tobytes()


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--kind", "states"], "argument --kind: invalid choice: 'states'"),
        (["--kind", "obs", "--rate", "1.5"], "--rate must be between 0 and 1, got 1.5"),
        (["--kind", "obs", "--rate", "-0.2"], "--rate must be between 0 and 1, got -0.2"),
        (["--kind", "obs", "--scale", "-1"], "--scale must be a positive number"),
        (["--kind", "obs", "--mode", "adversarial"], "--attack-run RUN_DIR"),
        (["--kind", "obs", "--attack-run", "r"], "--attack-run is not used by random"),
        (["--kind", "obs", "--id", "bad id"], "invalid Minari dataset id 'bad id'"),
        (["--kind", "obs", "--id", "test/exists-v0"], "'test/exists-v0' already exists"),
    ],
    ids=["kind", "rate>1", "rate<0", "scale", "no-attack-run", "needless-run", "bad-id", "exists"],
)
def test_cli_bad_input_is_one_line_exit_2_nothing_written(isolated, capsys, flags, phrase):
    save_npz(DATA, "data.npz")
    save_corrupted(corrupt(DATA, "rewards"), "test/exists-v0")
    before = sorted(p for p in isolated.rglob("*"))
    argv = ["corrupt", "data.npz", "--id", "test/new-v0", *flags]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and phrase in err, err
    assert err.startswith("valorl")
    assert sorted(p for p in isolated.rglob("*")) == before

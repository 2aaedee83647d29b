"""The dataset zoo: recipes, deterministic builds, checksums, policy files and kept checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import h5py
import minari
import numpy as np
import pytest

import valorl
from valorl import zoo
from valorl.cli.main import main
from valorl.collection import LOG_PROB_KEY, PolicyFile, collect, export_policy
from valorl.data import checksum as checksum_module
from valorl.errors import ValorlError
from valorl.training.run_dir import RunDir
from valorl.zoo import recipe as recipe_module
from valorl.zoo.references import reference_returns

SMALL = "pendulum-medium-v0"


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    """SMALL built once for the module (a build takes seconds); `built_small` copies it."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patched:
        patched.setenv("MINARI_DATASETS_PATH", str(root))
        return zoo.build(SMALL, progress=False)


@pytest.fixture
def built_small(small_build):
    """SMALL as `zoo.build` leaves it, in this test's Minari root (file times kept, so its
    remembered checksum stays valid)."""
    path = zoo.dataset_path(zoo.get(SMALL))
    shutil.copytree(small_build, path)
    return path


def _tamper(name: str) -> None:
    file = zoo.dataset_path(zoo.get(name)) / "data" / "main_data.hdf5"
    with h5py.File(file, "r+") as f:
        f["episode_3"]["rewards"][5] += 1.0


# ---- recipes ------------------------------------------------------------------------------


def test_every_recipe_is_complete_and_its_policies_exist():
    found = zoo.recipes()
    assert {"pendulum-medium-v0", "pendulum-expert-v0", "invertedpendulum-expert-v0"} <= set(found)
    for recipe in found.values():
        assert recipe.sha256 is not None and len(recipe.sha256) == 64, recipe.name
        if recipe.ogbench:  # scored by success rate, no reference returns
            assert recipe.ref_random is None and recipe.episodes > 0, recipe.name
            assert recipe.steps == 1000 * recipe.episodes, recipe.name
            continue
        assert recipe.ref_expert > recipe.ref_random, recipe.name
        for spec in recipe.behaviours:
            kind = spec.partition(":")[0]
            assert kind == "random" or (recipe_module.POLICIES / kind).is_file(), spec
        if recipe.concat:
            assert recipe.steps == sum(zoo.get(p).steps for p in recipe.concat)


def test_recipe_names_resolve_with_or_without_the_namespace():
    assert zoo.find("valorl/pendulum-expert-v0") is zoo.find("pendulum-expert-v0")
    assert zoo.find("hopper-imaginary-v0") is None
    with pytest.raises(ValorlError, match=r"no dataset recipe called 'nope-v0'.*pendulum"):
        zoo.get("nope-v0")


@pytest.mark.parametrize(
    "entry, message",
    [
        ('behaviours = ["sloppy:noise=0.1"]\nsteps = 10', "names no policy"),
        ('behaviours = ["random"]\nconcat = ["x-v0"]', "not a recipe defined before it"),
        ("steps = 10", "one of behaviours, concat or ogbench"),
        ('ogbench = "expert"\nepisodes = 1', "must be 'play' or 'noisy'"),
    ],
)
def test_bad_recipes_are_refused_with_the_reason(tmp_path, monkeypatch, entry, message):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "toy.toml").write_text(
        f'env = "Pendulum-v1"\n[reference]\nrandom = -1\nexpert = 1\n[datasets.toy-v0]\n{entry}\n'
    )
    monkeypatch.setattr(recipe_module, "RECIPES", folder)
    recipe_module._families.cache_clear()
    recipe_module.recipes.cache_clear()
    try:
        with pytest.raises(ValorlError, match=message):
            zoo.recipes()
    finally:
        recipe_module._families.cache_clear()
        recipe_module.recipes.cache_clear()


def test_recorded_reference_returns_are_what_the_measurement_gives():
    recipe = zoo.get(SMALL)
    expert = PolicyFile.load(recipe_module.POLICIES / "pendulum-sac-step20000.npz")
    random, best = reference_returns(recipe.env_id, expert, episodes=100, seed=0)
    assert (random, best) == (recipe.ref_random, recipe.ref_expert)


# ---- building and checking ---------------------------------------------------------------


def test_building_twice_gives_the_recorded_checksum_both_times(tmp_path, small_build):
    recipe = zoo.get(SMALL)
    path = zoo.build(SMALL, progress=False)  # the second build; the module's was the first
    assert path == tmp_path / "minari" / "valorl" / SMALL
    assert zoo.status(recipe) == "verified"
    assert [zoo.content_checksum(p) for p in (small_build, path)] == [recipe.sha256] * 2
    assert not list(path.parent.glob(".*"))  # no staging directory left


def test_a_killed_builds_staging_folder_is_removed_and_a_running_builds_kept(built_small):
    """Of this host's staging folders, a gone process's is removed and a running one's kept;
    another host's is kept whatever its pid (pids are per host)."""
    killed = subprocess.Popen([sys.executable, "-c", ""])  # a build's process, now gone
    killed.wait()
    prefix = f".{built_small.name}.build-{socket.gethostname()}-"
    abandoned = built_small.with_name(f"{prefix}{killed.pid}")
    running = built_small.with_name(f"{prefix}{os.getppid()}")
    elsewhere = built_small.with_name(f".{built_small.name}.build-another-host-{killed.pid}")
    for folder in (abandoned, running, elsewhere):
        (folder / "data").mkdir(parents=True)
    assert zoo.build(SMALL, progress=False) == built_small  # already built: used as it is
    assert not abandoned.exists()
    assert (running / "data").is_dir() and (elsewhere / "data").is_dir()


def test_a_tampered_dataset_is_detected_and_only_force_replaces_it(built_small, capsys):
    recipe = zoo.get(SMALL)
    _tamper(SMALL)
    assert zoo.status(recipe) == "modified"
    with pytest.raises(ValorlError, match=r"does not match its recipe.*--force"):
        valorl.load_dataset(SMALL)  # every load of a zoo dataset is checked
    with pytest.raises(ValorlError, match="does not match its recipe"):
        zoo.build(SMALL, progress=False)
    assert main(["datasets", "build", SMALL, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valorl datasets build pendulum-medium-v0 --force" in err
    assert main(["datasets", "build", SMALL, "--force", "--quiet"]) == 0
    assert zoo.status(recipe) == "verified"


def test_the_checksum_is_remembered_until_the_file_changes(built_small, monkeypatch):
    recipe, path = zoo.get(SMALL), built_small
    assert json.loads((path / checksum_module.STAMP).read_text())["sha256"] == recipe.sha256

    def unexpected(path):
        raise AssertionError("re-hashed an unchanged dataset")

    with monkeypatch.context() as patched:
        patched.setattr(checksum_module, "content_checksum", unexpected)
        assert zoo.status(recipe) == "verified"
    _tamper(SMALL)  # a write changes the file's time (and here its content)
    assert zoo.status(recipe) == "modified"


def test_a_build_that_differs_from_the_recipe_is_discarded(monkeypatch):
    recipe = zoo.get(SMALL)
    monkeypatch.setitem(recipe_module.recipes(), SMALL, dataclasses.replace(recipe, seed=1))
    with pytest.raises(ValorlError, match=r"gave content checksum .* not the recorded"):
        zoo.build(SMALL, progress=False)
    assert not zoo.dataset_path(recipe).exists()
    assert not list(zoo.dataset_path(recipe).parent.glob(".*"))


def test_a_differing_build_is_kept_only_when_accepted_and_trusted_while_unchanged(
    monkeypatch, capsys
):
    recipe = dataclasses.replace(zoo.get(SMALL), seed=1, steps=2_000)  # as another CPU's would
    monkeypatch.setitem(recipe_module.recipes(), SMALL, recipe)
    path = zoo.dataset_path(recipe)
    assert main(["datasets", "build", SMALL, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"valorl datasets build {SMALL} --accept-local-build" in err
    assert not path.exists()
    assert main(["datasets", "build", SMALL, "--quiet", "--accept-local-build"]) == 0
    assert f"{SMALL}: built, 2,000 transitions, this machine's build" in capsys.readouterr().out
    assert zoo.status(recipe) == "local"
    record = json.loads((path / zoo.builder.LOCAL_BUILD).read_text())
    assert record == {"recorded": recipe.sha256, "built": zoo.content_checksum(path)}
    assert record["built"] != recipe.sha256
    assert len(valorl.load_dataset(SMALL)) == recipe.steps  # used as it is
    assert main(["datasets", "build", SMALL, "--quiet"]) == 0
    assert "already built, 2,000 transitions, this machine's build" in capsys.readouterr().out
    with pytest.raises(ValorlError, match="gave content checksum"):  # --force, not accepted:
        zoo.build(SMALL, force=True, progress=False)
    assert zoo.status(recipe) == "local"  # the local build survives the failed rebuild
    (path / zoo.builder.LOCAL_BUILD).write_text("{")  # a damaged record is not trusted
    assert zoo.status(recipe) == "modified"
    (path / zoo.builder.LOCAL_BUILD).write_text(json.dumps(record))
    _tamper(SMALL)
    assert zoo.status(recipe) == "modified"
    with pytest.raises(ValorlError, match="does not match its recipe"):
        valorl.load_dataset(SMALL)


def test_an_ogbench_build_runs_in_a_child_and_a_mismatch_names_the_cpu(monkeypatch):
    recipe = dataclasses.replace(zoo.get("cube-single-noisy-v0"), episodes=1, sha256="0" * 64)
    monkeypatch.setitem(recipe_module.recipes(), recipe.name, recipe)
    with pytest.raises(ValorlError, match=r"not the recorded 000000000000….*x86-64 CPUs with AVX2"):
        zoo.build(recipe.name, progress=False)
    assert not zoo.dataset_path(recipe).exists()
    assert not list(zoo.dataset_path(recipe).parent.glob(".*"))


def test_minari_reads_a_built_dataset_with_the_recipe_references(built_small):
    recipe = zoo.get(SMALL)
    theirs = minari.load_dataset(recipe.dataset_id)
    ours = valorl.load_dataset(SMALL)
    assert theirs.total_steps == len(ours) == recipe.steps
    assert theirs.storage.metadata["ref_min_score"] == recipe.ref_random
    assert theirs.storage.metadata["ref_max_score"] == recipe.ref_expert
    assert theirs.storage.metadata["valorl_recipe"]["recipe"] == SMALL
    first = next(theirs.iterate_episodes())
    n = len(first.rewards)
    np.testing.assert_array_equal(first.observations[:-1], ours.observations[:n])
    np.testing.assert_array_equal(first.actions, ours.actions[:n])
    log_probs = first.infos[LOG_PROB_KEY]
    assert np.isnan(log_probs[0]) and np.isfinite(log_probs[1:]).all()


@pytest.mark.expensive  # 18 s: builds three recipes
def test_medium_expert_is_medium_then_expert_exactly():
    both = valorl.load_dataset("pendulum-medium-expert-v0")  # builds its parts first
    medium, expert = valorl.load_dataset(SMALL), valorl.load_dataset("pendulum-expert-v0")
    for field in ("observations", "actions", "rewards", "next_observations", "timeouts"):
        np.testing.assert_array_equal(
            getattr(both, field), np.concatenate([getattr(medium, field), getattr(expert, field)])
        )
    assert zoo.status(zoo.get("pendulum-medium-expert-v0")) == "verified"


def test_normalised_scores_use_the_recipe_references_by_hand(built_small):
    info = valorl.load_dataset(SMALL).info
    random, expert = -1242.852294921875, -153.42218017578125  # pendulum.toml
    assert (info.ref_min_score, info.ref_max_score) == (random, expert)
    span = expert - random  # 1089.43...
    np.testing.assert_allclose(
        info.normalized_score([random, expert, -698.137, -1500.0]),
        [0.0, 100.0, 100 * (-698.137 - random) / span, 100 * (-1500.0 - random) / span],
    )
    np.testing.assert_allclose(info.normalized_score(-698.1372383117676), 50.0, atol=1e-9)


def test_training_on_a_recipe_name_builds_it_first(capsys):
    assert not zoo.dataset_path(zoo.get(SMALL)).exists()
    args = ["train", "bc", "--dataset", SMALL, "--steps", "20", "--log-every", "10"]
    assert main([*args, "--hidden-dims", "8,8", "--batch-size", "16", "--eval-episodes", "0"]) == 0
    assert zoo.status(zoo.get(SMALL)) == "verified"


def test_datasets_list_and_info_show_recipes_and_their_state(built_small, capsys):
    assert main(["datasets", "list"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if f"│ {SMALL} " in line)
    assert "20,000" in row and "verified" in row and "-1242.9 .. -153.4" in row
    expert_row = next(line for line in listing.splitlines() if "│ pendulum-expert-v0 " in line)
    assert "no" in expert_row
    assert main(["datasets", "info", SMALL]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["recipe"]["status"] == "verified"
    assert shown["recipe"]["behaviours"] == ["policies/pendulum-sac-step3000.npz:noise=0.1"]
    assert (
        shown["total_steps"] == 20_000 and shown["valorl_recipe"]["sha256"] == zoo.get(SMALL).sha256
    )
    assert main(["datasets", "build"]) == 2
    assert "name the recipes" in capsys.readouterr().err


# ---- policy files and kept checkpoints ----------------------------------------------------


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    """A short online SAC run on Pendulum with every checkpoint kept."""
    out = tmp_path_factory.mktemp("sac") / "run"
    valorl.train_online(
        "sac",
        env="Pendulum-v1",
        online_steps=300,
        start_steps=100,
        log_every=100,
        eval_every=300,
        checkpoint_every=100,
        eval_episodes=0,
        hidden_dims=(8, 8),
        batch_size=16,
        keep_checkpoints=True,
        out=out,
        progress=False,
    )
    return out


def test_every_checkpoint_is_kept_and_loads_by_step(sac_run):
    kept = RunDir(sac_run).kept_checkpoints()
    assert list(kept) == [100, 200, 300]
    assert kept[300].samefile(sac_run / "checkpoint.msgpack")  # a hard link, not a copy
    early, late = valorl.load_policy(sac_run, step=100), valorl.load_policy(sac_run)
    assert (early.step, late.step) == (100, 300)
    obs = np.array([1.0, 0.0, 0.0], np.float32)
    assert not np.array_equal(early(obs), late(obs))
    with pytest.raises(ValorlError, match=r"no checkpoint at step 150 \(kept: 100, 200, 300\)"):
        valorl.load_policy(sac_run, step=150)


def test_a_policy_file_acts_like_the_run_and_round_trips_exactly(sac_run, tmp_path):
    exported = export_policy(sac_run, step=200, provenance={"note": "test"})
    policy = valorl.load_policy(sac_run, step=200)
    obs = np.random.default_rng(3).normal(size=(32, 3)).astype(np.float32)
    np.testing.assert_allclose(exported(obs), policy(obs), atol=1e-5)
    loaded = PolicyFile.load(exported.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(loaded(obs), exported(obs))
    assert loaded.provenance == {
        "run": str(sac_run),
        "agent": "sac",
        "seed": 0,
        "step": 200,
        "note": "test",
    }
    assert loaded(obs[0]).shape == (1,) and loaded(obs[0]).dtype == np.float32


def test_collect_rolls_out_a_policy_file_and_checks_its_shapes(sac_run, tmp_path):
    path = export_policy(sac_run).save(tmp_path / "p.npz")
    ds = collect("Pendulum-v1", [f"{path}:noise=0.1"], 300, ref_max_score=0.0, progress=False)
    assert len(ds) == 300
    with pytest.raises(ValorlError, match=r"maps observations of shape \(3,\).*\(4,\)"):
        collect("InvertedPendulum-v5", [str(path)], 10, progress=False)


def test_not_a_policy_file_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValorlError, match="not a valorl policy file"):
        PolicyFile.load(tmp_path / "x.npz")
    (tmp_path / "y.npz").write_text("garbage")
    with pytest.raises(ValorlError, match="not a readable policy file"):
        PolicyFile.load(tmp_path / "y.npz")


def test_export_policy_cli_records_the_measured_return(sac_run, tmp_path, capsys):
    out = tmp_path / "policy.npz"
    cmd = ["datasets", "export-policy", str(sac_run), "--step", "100", "--out", str(out)]
    assert main([*cmd, "--episodes", "2"]) == 0
    provenance = PolicyFile.load(out).provenance
    assert provenance["step"] == 100 and provenance["return_episodes"] == 2
    assert provenance["config"]["schedule"]["online_steps"] == 300
    assert f"mean return {provenance['mean_return']:.1f} over 2 episodes" in capsys.readouterr().out


@pytest.mark.expensive  # 17 s; the MuJoCo recipes' checksum tests cover the same builder
def test_a_minatar_recipe_builds_to_its_recorded_checksum():
    """The MinAtar recipes rebuild bit for bit: gymnax's game (JAX's counter-based random
    numbers), stepped from Python with sticky actions 0.1, and the collection's own seeds."""
    recipe = zoo.get("breakout-minatar-random-v0")
    path = zoo.build(recipe.name, progress=False)
    assert zoo.status(recipe) == "verified"
    data = valorl.load_dataset(str(path))
    assert data.num_actions == 3 and data.observations.dtype == np.uint8
    assert len(data) == recipe.steps == 15_000

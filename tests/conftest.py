"""Shared fixtures: every test runs in its own temporary directory with its own Minari root,
on the CPU, with tiny networks.

Most of the suite's time is XLA compiling tiny networks, so compilation is made cheap (no LLVM
optimisation passes, the older fusion code generators: see XLA_FLAGS below) and compiled
programs are kept: in memory for the length of a test module (tests in a module share agents and
shapes), and on disk in `.jax-cache/` at the repository root (JAX's persistent compilation
cache), where the other pytest-xdist worker, a later module that builds the same program after
the in-memory cache was dropped, the `valorl` subprocesses of end-to-end tests, and the next run
find them. Set JAX_COMPILATION_CACHE_DIR to keep the cache elsewhere.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Through the environment, so that `valorl` subprocesses share the cache. Every program is
# cached, however small or quick to compile: the suite's are all tiny.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parents[1] / ".jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# Tiny networks run in microseconds whatever the optimisation level, while compiling is most of
# the suite's time on the CPU. Skipping LLVM's optimisation passes makes the suite about a third
# faster; XLA's older fusion code generators (instead of the MLIR-based emitters, XLA's
# default) compile a small program in about half the time, another third off the suite
# (BENCHMARKS.md, "Test suite"). Results stay IEEE-exact (no fast-math); only the generated code
# is slower. The user's own XLA_FLAGS come first, and each flag is added once (subprocesses
# inherit them).
os.environ["XLA_FLAGS"] = " ".join(
    dict.fromkeys(
        [
            *os.environ.get("XLA_FLAGS", "").split(),
            "--xla_backend_optimization_level=0",
            "--xla_llvm_disable_expensive_passes=true",
            "--xla_cpu_use_fusion_emitters=false",
        ]
    )
)

import gymnasium as gym
import jax
import numpy as np
import pytest

from valorl.data.dataset import Dataset, DatasetInfo
from valorl.models.binary import BinaryModel
from valorl.training.fused import free_compiled

TINY = {
    "bc": dict(hidden_dims=(8, 8), batch_size=16),
    "td3_bc": dict(hidden_dims=(8, 8), batch_size=16),
    "iql": dict(hidden_dims=(8, 8), batch_size=16),
    "riql": dict(hidden_dims=(8, 8), batch_size=16),
    "sac": dict(hidden_dims=(8, 8), batch_size=16),
    "cql": dict(hidden_dims=(8, 8), batch_size=16, cql_n_actions=2),
    "calql": dict(hidden_dims=(8, 8), batch_size=16, cql_n_actions=2),
    "dsac_t": dict(hidden_dims=(8, 8), batch_size=16),
    "dqn": dict(hidden_dims=(8,), batch_size=16),
    "cql_discrete": dict(hidden_dims=(8,), batch_size=16),
    "bc_discrete": dict(hidden_dims=(8,), batch_size=16),
    "iql_discrete": dict(hidden_dims=(8,), batch_size=16),
    "model_dqn": dict(
        hidden_dims=(8,), batch_size=4, rollout_length=3, model=BinaryModel(model_hidden_dims=(8,))
    ),
    "perfect_model_dqn": dict(hidden_dims=(8,), batch_size=4, rollout_length=3),
    "flow_bc": dict(hidden_dims=(8, 8), batch_size=16, flow_steps=2),
    "fql": dict(hidden_dims=(8, 8), batch_size=16, flow_steps=2),
    "qc": dict(hidden_dims=(8, 8), batch_size=16, flow_steps=2, samples=2, horizon=1),
    "rebrac": dict(hidden_dims=(8, 8), batch_size=16),
    "dqc": dict(
        hidden_dims=(8, 8), batch_size=16, flow_steps=2, samples=2, horizon=1, action_horizon=1
    ),
}
"""Hyperparameters that make every agent fast enough for unit tests."""


def compiled_init(obj, *args, seed: int = 0):
    """`obj.init(jax.random.key(seed), *args)` compiled as one program: run op by op, an
    initialisation compiles each of its operations separately (BENCHMARKS.md, "Test suite")."""
    return _jitted_init(obj, args)(jax.random.key(seed))


@functools.cache
def _jitted_init(obj, args: tuple):
    """One compiled `init` per object and arguments, so a test module's repeated
    initialisations trace and compile once."""
    return jax.jit(lambda key: obj.init(key, *args))


@pytest.fixture(scope="module", autouse=True)
def free_compiled_code():
    """Drop JAX's in-memory compiled executables after each test module: a worker that kept
    every module's agents would grow by gigabytes over the suite, while clearing after each
    test would recompile what a module's tests share (module-scoped trained runs, one agent
    checked several ways). The on-disk cache keeps them for later modules."""
    yield
    free_compiled()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Run in a fresh directory (MuJoCo writes MUJOCO_LOG.TXT into the working directory) with
    a private Minari root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path


def synthetic_dataset(
    n: int = 200,
    obs_dim: int = 3,
    action_dim: int = 1,
    episode_len: int = 50,
    seed: int = 0,
    info: DatasetInfo | None = None,
) -> Dataset:
    """Random but well-formed transitions: consecutive rows chain (next_obs[t] == obs[t+1])
    within episodes of `episode_len`; odd episodes end in a termination, even ones in a
    timeout."""
    rng = np.random.default_rng(seed)
    episodes = []
    for start in range(0, n, episode_len):
        steps = min(episode_len, n - start)
        terminated = (start // episode_len) % 2 == 1
        episodes.append(
            dict(
                observations=rng.normal(size=(steps + 1, obs_dim)).astype(np.float32),
                actions=rng.uniform(-1, 1, size=(steps, action_dim)).astype(np.float32),
                rewards=rng.normal(size=steps).astype(np.float32),
                terminations=np.eye(steps, dtype=bool)[-1] & terminated,
                truncations=np.eye(steps, dtype=bool)[-1] & (not terminated),
            )
        )
    return Dataset.from_episodes(episodes, info or DatasetInfo(name="synthetic"))


def train_tiny_run(dataset: Dataset, out, agent: str = "bc", seeds: int = 2):
    """A 20-step run of a tiny agent with one evaluation episode per seed, in `out`."""
    import valorl

    return valorl.train(
        agent,
        dataset,
        steps=20,
        log_every=10,
        eval_every=20,
        eval_episodes=1,
        seeds=seeds,
        progress=False,
        out=out,
        **TINY[agent],
    )


def train_two_widths(dataset: Dataset, root) -> list:
    """Two tiny IQL runs (2 seeds, two evaluations each) that differ only in their hidden
    layers (8 and 16 units), as `root/iql-8` and `root/iql-16`: material for reports."""
    import valorl

    paths = []
    for width in (8, 16):
        path = root / f"iql-{width}"
        valorl.train(
            "iql", dataset, steps=20, log_every=10, eval_every=10, eval_episodes=1, seeds=2,
            progress=False, out=path, **(TINY["iql"] | {"hidden_dims": (width, width)}),
        )  # fmt: skip
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def pendulum_dataset() -> Dataset:
    """2,000 real Pendulum-v1 transitions (random + scripted controller), with reference
    returns, so evaluation and normalised scores work."""
    from valorl.collection import collect

    return collect(
        "Pendulum-v1",
        ["random", "pendulum-swingup:noise=0.3"],
        2000,
        seed=0,
        reference_episodes=2,
        progress=False,
    )


@pytest.fixture
def pendulum_env() -> gym.Env:
    env = gym.make("Pendulum-v1")
    yield env
    env.close()


def interrupt_on_call(monkeypatch, owner, name, call):
    """Make `owner.name` raise KeyboardInterrupt on its `call`-th call (1-based)."""
    original = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)

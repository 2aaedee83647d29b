"""The `valorl` command end to end: help, the demo, collect -> train -> eval, resuming killed
and interrupted runs, and one-line errors for bad input.

Runs that train, or that must be killed, use subprocesses, as does one test of the installed
console script; checks of help and bad input call `valorl.cli.main.main` in the test's own
process (`run_main`), which sees the same arguments, environment and working directory and
saves starting Python and JAX each time."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import synthetic_dataset

import valorl
from valorl.cli.main import main
from valorl.collection import collect
from valorl.data.catalog import read_entry
from valorl.data.sources import save_npz

VALORL_SCRIPT = Path(sys.executable).parent / "valorl"


def run_cli(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `valorl ARGS` in a subprocess in the test's directory with its Minari root."""
    env = {**os.environ, "MINARI_DATASETS_PATH": os.environ["MINARI_DATASETS_PATH"]}
    env.setdefault("JAX_PLATFORMS", "cpu")
    return subprocess.run(
        [sys.executable, "-m", "valorl.cli.main", *map(str, args)],
        cwd=Path.cwd(),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def run_main(*args) -> subprocess.CompletedProcess:
    """Run `valorl ARGS` in this process, as the console script would: the exit status is what
    `main` returns or what argparse exits with; stdout and stderr are captured (not through
    pytest's capsys, so that a test can call it several times)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit_:
            status = exit_.code
    return subprocess.CompletedProcess(args, status, stdout.getvalue(), stderr.getvalue())


def one_line_error(result: subprocess.CompletedProcess, phrase: str) -> str:
    """Assert the command failed as a user error: status 2, one line on stderr, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("valorl"), lines[0]
    assert phrase in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def step_list(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---- help ---------------------------------------------------------------------------------------


def test_top_level_help():
    """The installed console script prints usage, every command and the examples, exit 0."""
    result = subprocess.run([VALORL_SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: valorl")
    for command in ("demo", "train", "eval", "collect", "datasets", "bench"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command
    assert "examples:" in result.stdout
    assert result.stderr == ""


def test_train_iql_help_lists_every_hyperparameter():
    """`valorl train iql --help` documents each IQL field as a flag with its default, so the
    dataclass is the single source of truth."""
    result = run_main("train", "iql", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "(default: 0.7)" in text and "--expectile" in text
    hyper = text.index("iql hyperparameters:")
    fields = []  # (name, default) of every flag: nested settings contribute their own fields
    for field in dataclasses.fields(valorl.IQL):
        if field.name == "critic":
            fields.append(("critic", field.default.name))
        elif dataclasses.is_dataclass(field.default):
            fields += [(f.name, f.default) for f in dataclasses.fields(field.default)]
        else:
            fields.append((field.name, field.default))
    for name, default in fields:
        flag = "--" + name.replace("_", "-")
        at = text.index(flag + " ", hyper)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        following = text[at : text.index(")", text.index("(default:", at)) + 1]
        assert following.endswith(f"(default: {shown})"), (flag, following)
    assert "--critic {mse,huber,bce,hl-gauss,two-hot,c51,quantile,gaussian}" in text
    assert "--actor-lr-schedule {constant,cosine}" in text
    for run_flag in ("--dataset", "--steps", "--seeds", "--log-every", "--eval-episodes"):
        assert run_flag in text


# ---- the demo -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_tiny_budget_and_rerun(isolated):
    """The demo builds its dataset, trains and evaluates BC and IQL and prints their scores;
    re-running it reuses the data and the finished runs without touching them (in this process:
    test_collect_train_eval runs the console script in a subprocess)."""
    first = run_main("demo", "--out", "d", "--steps", 200, "--seeds", 2, "--quiet")
    assert first.returncode == 0, first.stderr
    assert "normalised score" in first.stdout
    data = isolated / "d/data/pendulum-mixed-v0"
    entry = read_entry(data)
    assert entry.dataset_id == "valorl/pendulum-mixed-v0"
    assert entry.env_id == "Pendulum-v1"
    assert entry.steps == 60_000
    assert entry.ref_min_score < entry.ref_max_score
    rows = {}
    for agent in ("bc", "iql"):
        run = isolated / f"d/runs/{agent}-200steps-2seeds"
        result = json.loads((run / "result.json").read_text())
        assert result["step"] == 200 and result["seeds"] == [0, 1]
        assert len(result["final_score_per_seed"]) == 2
        [row] = [line for line in first.stdout.splitlines() if re.match(rf"\W+{agent}\s", line)]
        assert f"{result['final_score']['mean']:.1f} [" in row
        rows[agent] = run
    watched = [data / "data/metadata.json"] + [
        r / f for r in rows.values() for f in ("checkpoint.msgpack", "metrics.jsonl")
    ]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in watched}

    again = run_main("demo", "--out", "d", "--steps", 200, "--seeds", 2, "--quiet")
    assert again.returncode == 0, again.stderr
    for agent in ("bc", "iql"):
        assert f"d/runs/{agent}-200steps-2seeds already finished" in again.stderr
    assert again.stdout == first.stdout
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in watched} == before


@pytest.mark.parametrize(
    ("flags", "phrase"), [(["--steps", 0], "--steps"), (["--seeds", 0], "--seeds")]
)
def test_demo_rejects_empty_budget(isolated, flags, phrase):
    """`--steps 0` or `--seeds 0` is refused up front (not silently the 30,000-step default, nor
    after building the 60,000-step dataset) and nothing is written."""
    result = run_main("demo", "--out", "d", "--quiet", *flags)
    one_line_error(result, phrase)
    assert not (isolated / "d").exists()


# ---- collect -> train -> eval -------------------------------------------------------------------


@pytest.mark.slow
def test_collect_train_eval(isolated):
    """A dataset collected on Pendulum-v1 is listed and described, a BC run trains on it, and
    `eval --json` reports per-seed scores normalised by the dataset's reference returns. The
    collection runs the console script in a subprocess; the rest runs in this process."""
    result = run_cli(
        "collect", "--env", "Pendulum-v1", "--policy", "random",
        "--policy", "pendulum-swingup:noise=0.3", "--steps", 1000, "--id", "valorl/p-v0",
        "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote valorl/p-v0" in result.stdout and "1000 transitions" in result.stdout

    listed = run_main("datasets", "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "valorl/p-v0" in line]
    assert "Pendulum-v1" in row and "1,000" in row

    shown = run_main("datasets", "info", "valorl/p-v0")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["dataset_id"] == "valorl/p-v0"
    assert info["env_id"] == "Pendulum-v1"
    assert info["total_steps"] == 1000
    assert isinstance(info["ref_min_score"], float) and isinstance(info["ref_max_score"], float)
    assert info["ref_min_score"] < info["ref_max_score"]
    assert [b["steps"] for b in info["valorl_collect"]["behaviours"]] == [500, 500]

    trained = run_main(
        "train", "bc", "--dataset", "valorl/p-v0", "--steps", 40, "--log-every", 20,
        "--eval-every", 40, "--eval-episodes", 2, "--seeds", 2, "--out", "r", "--quiet",
        "--hidden-dims", "8,8", "--batch-size", 16,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert step_list(isolated / "r") == [20, 40]
    assert json.loads((isolated / "r/result.json").read_text())["seeds"] == [0, 1]

    evaluated = run_main("eval", "r", "--episodes", 2, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert len(evaluated.stdout.splitlines()) == 1
    summary = json.loads(evaluated.stdout)
    assert summary["run"] == "r" and summary["step"] == 40 and summary["seeds"] == [0, 1]
    assert len(summary["score_per_seed"]) == 2
    lo, hi = info["ref_min_score"], info["ref_max_score"]
    expected = [100 * (r - lo) / (hi - lo) for r in summary["return_per_seed"]]
    assert summary["score_per_seed"] == pytest.approx(expected, rel=1e-9)
    assert summary["score"]["mean"] == pytest.approx(np.mean(expected), rel=1e-9)
    assert summary["score"]["low"] < summary["score"]["mean"] < summary["score"]["high"]


# ---- resuming -----------------------------------------------------------------------------------


TRAIN_IQL = (
    "train", "iql", "--dataset", "data.npz", "--steps", 4000, "--log-every", 100,
    "--eval-episodes", 0, "--out", "r", "--quiet", "--hidden-dims", "64,64",
    "--batch-size", 256, "--checkpoint-every", 100,
)  # fmt: skip
"""A run of 40 chunks, each slow enough (tens of ms, even on a loaded machine) that the run
can be stopped midway."""


def start_and_wait(run: Path, timeout: float = 240) -> subprocess.Popen:
    """Start TRAIN_IQL and return once it has a checkpoint and two chunks of metrics."""
    save_npz(synthetic_dataset(n=500), "data.npz")
    proc = subprocess.Popen(
        [sys.executable, "-m", "valorl.cli.main", *map(str, TRAIN_IQL)],
        cwd=Path.cwd(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline:
        if (
            (run / "checkpoint.msgpack").is_file()
            and metrics.is_file()
            and len(metrics.read_text().splitlines()) >= 2
        ):
            return proc
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("no checkpoint within the timeout")


def resumed_from(stderr: str) -> int:
    match = re.search(r"resuming r from step (\d+)", stderr)
    assert match, stderr
    return int(match.group(1))


@pytest.mark.slow
@pytest.mark.expensive  # resume is checked in process (test_train, test_lm_train); ~29 s here
def test_resume_after_sigkill(isolated):
    """A run killed with SIGKILL resumes from its last checkpoint when the command is re-run:
    metrics cover every chunk once, in order, up to 4000, and the run finishes."""
    run = isolated / "r"
    proc = start_and_wait(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "result.json").exists(), "the run finished before it could be killed"
    killed_steps = step_list(run)
    assert killed_steps[-1] < 4000
    killed_lines = (run / "metrics.jsonl").read_text().splitlines()

    result = run_cli(*TRAIN_IQL)
    assert result.returncode == 0, result.stderr
    start = resumed_from(result.stderr)
    assert 100 <= start <= killed_steps[-1] and start % 100 == 0
    steps = step_list(run)
    assert steps == list(range(100, 4001, 100))
    # chunks up to the checkpoint keep their records; later ones are redone, not duplicated
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[: start // 100] == killed_lines[: start // 100]
    assert json.loads((run / "result.json").read_text())["step"] == 4000


@pytest.mark.slow
@pytest.mark.expensive  # 30 s; in process: test_train.py::test_ctrl_c_stops_right_after_...
def test_resume_after_ctrl_c(isolated):
    """Ctrl-C exits with status 130 and a single line saying how to resume; re-running the same
    command resumes the run and finishes it."""
    run = isolated / "r"
    proc = start_and_wait(run)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.splitlines() == [
        "valorl: interrupted; run the same command again to resume from the last checkpoint"
    ]
    assert not (run / "result.json").exists()

    result = run_cli(*TRAIN_IQL)
    assert result.returncode == 0, result.stderr
    assert resumed_from(result.stderr) >= 100
    assert step_list(run) == list(range(100, 4001, 100))
    assert (run / "result.json").is_file()


# ---- bad input ----------------------------------------------------------------------------------


def write_d4rl_hdf5(path: str, n: int = 100) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, 3)).astype(np.float32)
        f["actions"] = rng.uniform(-2, 2, (n, 1)).astype(np.float32)
        f["rewards"] = rng.normal(size=n).astype(np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = np.zeros(n, bool)


def truncated_hdf5() -> None:
    write_d4rl_hdf5("full.hdf5")
    data = Path("full.hdf5").read_bytes()
    Path("data.hdf5").write_bytes(data[: len(data) // 2])
    Path("full.hdf5").unlink()


def foreign_hdf5() -> None:
    with h5py.File("data.hdf5", "w") as f:
        f["images"] = np.zeros((4, 8, 8), np.uint8)


def d4rl_npz(obs_dim: int = 3, nan_reward_at: int | None = None) -> None:
    n = 50
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    rewards = rng.normal(size=n).astype(np.float32)
    if nan_reward_at is not None:
        rewards[nan_reward_at] = np.nan
    np.savez(
        "data.npz",
        observations=obs[:-1],
        next_observations=obs[1:],
        actions=rng.uniform(-2, 2, (n, 1)).astype(np.float32),
        rewards=rewards,
        terminals=np.zeros(n, bool),
        timeouts=np.eye(n, dtype=bool)[-1],
    )


BAD_INPUT = {
    "missing-id": (None, ["bc", "--dataset", "valorl/nope-v0"], "not found"),
    "missing-file": (None, ["bc", "--dataset", "nowhere/data.hdf5"], "not found"),
    "truncated-hdf5": (truncated_hdf5, ["bc", "--dataset", "data.hdf5"], "could not read"),
    "foreign-hdf5": (foreign_hdf5, ["bc", "--dataset", "data.hdf5"], "not in D4RL layout"),
    "nan-reward": (
        lambda: d4rl_npz(nan_reward_at=7),
        ["bc", "--dataset", "data.npz"],
        "rewards[7] is nan",
    ),
    "obs-size": (
        lambda: d4rl_npz(obs_dim=4),
        ["bc", "--dataset", "data.npz", "--env", "Pendulum-v1"],
        "expects (3,)",
    ),
    "unknown-agent": (None, ["nosuch", "--dataset", "x"], "invalid choice"),
    "unknown-flag": (None, ["bc", "--dataset", "x", "--bogus", "1"], "unrecognized arguments"),
    "bad-value": (None, ["iql", "--dataset", "x", "--expectile", "abc"], "--expectile"),
    "zero-seeds": (d4rl_npz, ["bc", "--dataset", "data.npz", "--seeds", "0"], "--seeds"),
    "zero-batch": (
        d4rl_npz,
        ["bc", "--dataset", "data.npz", "--batch-size", "0", "--eval-episodes", "0"],
        "--batch-size",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_one_line(isolated, case):
    """Each bad input exits with status 2 and one `valorl...` line naming the problem, without a
    traceback and without leaving a run directory behind."""
    setup, args, phrase = BAD_INPUT[case]
    if setup is not None:
        setup()
    before = sorted(os.listdir(isolated))
    # --steps 10: should the error ever be missed, the run stays short
    result = run_main("train", *args, "--out", "r", "--steps", 10)
    one_line_error(result, phrase)
    assert not (isolated / "r").exists() and not (isolated / "runs").exists()
    assert sorted(os.listdir(isolated)) == before


def test_debug_shows_traceback():
    """`--debug` lets a ValorlError escape `main`, so Python prints its full traceback, instead
    of the one-line message."""
    with pytest.raises(valorl.ValorlError, match="not found"):
        run_main("--debug", "train", "bc", "--dataset", "valorl/nope-v0", "--out", "r")
    assert not Path("r").exists()


def test_collect_refuses_existing_dataset(isolated):
    """`valorl collect` into an existing dataset id fails with status 2 and leaves it unchanged."""
    collect(
        "Pendulum-v1",
        ["random"],
        50,
        dataset_id="valorl/p-v0",
        reference_episodes=1,
        progress=False,
    )
    root = isolated / "minari"
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    result = run_main(
        "collect", "--env", "Pendulum-v1", "--policy", "pendulum-swingup", "--steps", 100,
        "--id", "valorl/p-v0", "--quiet",
    )  # fmt: skip
    one_line_error(result, "'valorl/p-v0' already exists")
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before

"""Sweeps: spec expansion and grouping, the local backend end to end (re-runs do no work), and
a Ray cluster on 127.0.0.1 with token authentication surviving a killed worker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from valorl.cli.main import main
from valorl.errors import ValorlError
from valorl.sweep import expand, run_sweep
from valorl.sweep.spec import Group

TINY = {"hidden_dims": [8, 8], "batch_size": 16}


def spec(**extra) -> dict:
    base = {"agents": ["bc", "iql"], "datasets": ["valorl/a-v0"], "seeds": 3}
    return base | extra


# ---- expansion and grouping --------------------------------------------------------------------


def test_one_group_per_agent_source_mode_and_grid_point_with_all_seeds_inside():
    groups = expand(
        spec(
            datasets=["valorl/a-v0", "data/b"],
            settings={"steps": 100, "discount": 0.95},
            grid={"batch_size": [16, 32], "expectile": [0.7, 0.9]},
        )
    )
    # bc: 2 datasets x 2 batch sizes (expectile is not bc's); iql: 2 x 2 x 2
    assert len(groups) == 4 + 8
    assert all(g.seeds == [0, 1, 2] for g in groups)
    names = [g.name for g in groups]
    assert names[:4] == [
        "bc-a-v0-batch_size=16",
        "bc-a-v0-batch_size=32",
        "bc-b-batch_size=16",
        "bc-b-batch_size=32",
    ]
    assert "iql-b-batch_size=32-expectile=0.9" in names
    iql = next(g for g in groups if g.name == "iql-b-batch_size=32-expectile=0.9")
    assert iql.command(Path("out") / iql.name) == [
        "train", "iql", "--dataset", "data/b", "--mode", "offline", "--seeds", "3",
        "--seed", "0", "--steps", "100", "--discount", "0.95", "--batch-size", "32",
        "--expectile", "0.9", "--out", "out/iql-b-batch_size=32-expectile=0.9", "--quiet",
    ]  # fmt: skip
    assert iql.point == {"batch_size": 32, "expectile": 0.9}
    assert iql.total_steps == 100


def test_per_agent_settings_modes_envs_and_flag_spelling():
    groups = expand(
        {
            "agents": ["sac", "iql"],
            "envs": ["Pendulum-v1"],
            "datasets": ["d"],
            "modes": ["online", "offline-to-online"],
            "seed": 4,
            "seeds": 2,
            "settings": {"hidden_dims": [64, 64], "layer_norm": True},
            "agent": {"iql": {"offline_steps": 30, "online_steps": 50, "grid": {"utd": [1, 2]}}},
        }
    )
    by_name = {g.name: g for g in groups}
    assert set(by_name) == {
        "sac-Pendulum-v1-online",
        "sac-d-offline-to-online",
        "iql-Pendulum-v1-online-utd=1",
        "iql-Pendulum-v1-online-utd=2",
        "iql-d-offline-to-online-utd=1",
        "iql-d-offline-to-online-utd=2",
    }
    sac = by_name["sac-Pendulum-v1-online"]
    assert sac.argv[:2] == ("--env", "Pendulum-v1") and sac.seeds == [4, 5]
    assert "64,64" in sac.argv and sac.argv[sac.argv.index("--layer-norm") + 1] == "true"
    o2o = by_name["iql-d-offline-to-online-utd=2"]
    assert (o2o.total_steps, o2o.offline_steps) == (80, 30)


def test_sources_with_the_same_short_name_keep_their_full_names():
    names = [g.name for g in expand(spec(agents=["bc"], datasets=["a/x", "b/x"]))]
    assert names == ["bc-a_x", "bc-b_x"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"agent_list": ["bc"]}, "unknown sweep key 'agent_list'"),
        ({"agents": ["bcc"]}, "unknown agent 'bcc'"),
        ({"agents": []}, "`agents` must be a non-empty list"),
        ({"modes": ["online"]}, "the sweep spec needs `envs`"),
        ({"modes": ["offline", "batch"]}, "unknown mode 'batch'"),
        ({"seeds": 0}, "`seeds` must be an integer of at least 1"),
        ({"grid": {"expectile": 0.7}}, "[grid] expectile must be a non-empty list"),
        ({"grid": {"expectilee": [0.7]}}, "'expectilee' is not a flag of `valorl train`"),
        ({"settings": {"seeds": 5}}, "'seeds' cannot be set per run: set `seeds` at the top"),
        ({"settings": {"out": "x"}}, "'out' cannot be set per run"),
        ({"settings": {"expectile": "high"}}, "iql on valorl/a-v0 (offline): --expectile"),
        ({"agent": {"sac": {}}}, "[agent.sac] names an agent not in `agents`"),
        ({"agent": {"bc": {"expectile": 0.8}}}, "[agent.bc] 'expectile' is not a flag"),
        (
            {"settings": {"steps": 10}, "grid": {"steps": [10, 20]}},
            "'steps' is both a fixed setting and a grid axis",
        ),
    ],
)
def test_bad_specs_fail_before_anything_trains_with_one_line(bad, message):
    with pytest.raises(ValorlError, match=re.escape(message)) as info:
        expand(spec(**bad))
    assert "\n" not in str(info.value)


def test_dry_run_prints_every_group_command(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('agents = ["bc"]\ndatasets = ["d1", "d2"]\nseeds = 2\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("2 groups, 4 runs")
    assert lines[1] == (
        f"valorl train bc --dataset d1 --mode offline --seeds 2 --seed 0 "
        f"--out {tmp_path / 'o' / 'bc-d1'} --quiet"
    )
    assert not (tmp_path / "o").exists()


def test_invalid_toml_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text("agents = [bc\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"valorl: error: {path} is not valid TOML") and err.count("\n") == 1


# ---- local backend -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pendulum_dir(pendulum_dataset, tmp_path_factory) -> Path:
    from valorl.data.sources import save_minari

    return save_minari(
        pendulum_dataset, "valorl/sweep-pendulum-v0", tmp_path_factory.mktemp("d") / "pendulum"
    )


def tiny_spec(data: Path, agents=("bc", "iql"), steps=20, **settings) -> dict:
    return {
        "agents": list(agents),
        "datasets": [str(data)],
        "seeds": 2,
        "settings": TINY | {"steps": steps, "log_every": 10, "eval_episodes": 1} | settings,
    }


def snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_local_sweep_trains_reports_and_a_rerun_does_no_work(pendulum_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    result = run_sweep(tiny_spec(pendulum_dir, eval_every=10), out, progress=False)
    assert [g.name for g in result.groups] == ["bc-pendulum", "iql-pendulum"]
    assert result.trained == ["bc-pendulum", "iql-pendulum"] and not result.failures
    for name in result.trained:
        config = json.loads((out / name / "config.json").read_text())
        assert config["seeds"] == [0, 1] and config["agent"]["hyperparameters"]["hidden_dims"] == [
            8,
            8,
        ]
        assert (out / name / "result.json").is_file()
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert sorted(r["algorithm"] for r in summary["runs"]) == ["bc", "iql"]
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["groups"][0]["command"].startswith("valorl train bc --dataset")

    before = snapshot(out)
    capsys.readouterr()
    again = run_sweep(tiny_spec(pendulum_dir, eval_every=10), out, progress=False)
    assert again.trained == [] and snapshot(out) == before
    assert "all 2 groups of the sweep" in capsys.readouterr().err


def test_a_failing_group_is_reported_and_the_others_finish(pendulum_dir, tmp_path, capsys):
    spec_dict = tiny_spec(pendulum_dir, agents=["bc"])
    spec_dict["datasets"].append(str(tmp_path / "missing"))
    path = tmp_path / "s.toml"
    path.write_text(
        "\n".join(f"{k} = {json.dumps(v)}" for k, v in spec_dict.items() if k != "settings")
        + "\n[settings]\n"
        + "\n".join(f"{k} = {json.dumps(v)}" for k, v in spec_dict["settings"].items())
    )
    out = tmp_path / "o"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 3
    printed = capsys.readouterr().out
    assert "failed bc-missing: dataset" in printed and "not found" in printed
    assert (out / "bc-pendulum" / "result.json").is_file()
    assert (out / "bc-missing.error.log").is_file()
    assert (out / "report" / "report.html").is_file()


def test_an_interrupted_sweep_resumes_the_group_it_stopped_in(pendulum_dir, tmp_path, monkeypatch):
    """Ctrl-C inside a group stops the sweep after that group's checkpoint; the re-run skips
    the finished group and continues the interrupted one, logging every step once."""
    from valorl.training.run_dir import RunDir

    out = tmp_path / "o"
    spec_dict = tiny_spec(pendulum_dir, steps=40, eval_every=20)
    write = RunDir.write_checkpoint
    calls = []

    def interrupted_at_second_group(self, data, step):  # Ctrl-C during iql's first chunk
        write(self, data, step)
        calls.append(self.path.name)
        if self.path.name == "iql-pendulum" and calls.count("iql-pendulum") == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "write_checkpoint", interrupted_at_second_group)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec_dict, out, progress=False)
    assert (out / "bc-pendulum" / "result.json").is_file()
    assert not (out / "iql-pendulum" / "result.json").exists()
    monkeypatch.setattr(RunDir, "write_checkpoint", write)
    calls.clear()
    result = run_sweep(spec_dict, out, progress=False)
    assert result.trained == ["iql-pendulum"] and not result.failures
    lines = (out / "iql-pendulum" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [10, 20, 30, 40]


# ---- Ray ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    """A Ray head on 127.0.0.1 only, with token authentication (a token of its own)."""
    if os.environ.get("CI"):
        import ray  # noqa: F401  (in CI, Ray must be installed: a skip would hide that)
    else:
        pytest.importorskip("ray")
    token = tmp_path / "ray-token"
    token.write_text(os.urandom(16).hex())
    env = os.environ | {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node address = loopback (see backends.py)
    }
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 (the head outlives this block)
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert head.poll() is None and time.time() < deadline, (tmp_path / "head.log").read_text()
        time.sleep(0.2)
    yield f"127.0.0.1:{port}", env
    os.killpg(head.pid, signal.SIGKILL)  # the head's session: GCS, raylet, workers
    head.wait(timeout=30)
    log.close()


@pytest.mark.expensive  # 18 s: a fresh process importing Ray
def test_a_cluster_valorl_starts_takes_the_loopback_address():
    """`--backend ray` without --address starts Ray with 127.0.0.1 as the node address, so its
    servers listen on loopback only (checked in a fresh process: Ray reads it on import)."""
    pytest.importorskip("ray")
    code = (
        "from valorl.sweep.backends import import_ray\n"
        "import_ray(loopback=True)\n"
        "from ray._private.services import get_node_ip_address\n"
        "print(get_node_ip_address())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "127.0.0.1", result.stderr


@pytest.mark.expensive  # ~110 s: a Ray cluster and 2 x 12 evaluation rounds; make test-all
def test_ray_sweep_survives_a_killed_worker(ray_cluster, pendulum_dir, tmp_path):
    """2 agents x 2 seeds on a loopback cluster; one group's worker is killed (SIGKILL) after
    its first checkpoint; Ray retries it, it resumes, and every run finishes exactly once."""
    address, env = ray_cluster
    steps, every = 600, 50
    path = tmp_path / "s.toml"
    spec_dict = tiny_spec(pendulum_dir, steps=steps, eval_every=every, log_every=every)
    settings = spec_dict.pop("settings")
    path.write_text(
        "\n".join(f"{k} = {json.dumps(v)}" for k, v in spec_dict.items())
        + "\n[settings]\n"
        + "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    )
    out = tmp_path / "o"
    command = [sys.executable, "-m", "valorl.cli.main", "sweep", str(path), "--out", str(out),
               "--backend", "ray", "--address", address, "--quiet"]  # fmt: skip
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim = out / "iql-pendulum"
    killed = None
    deadline = time.time() + 240
    while killed is None and driver.poll() is None and time.time() < deadline:
        metrics = victim / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("\n") >= 1:
            assert not (victim / "result.json").exists(), "the run finished before the kill"
            killed = int((victim / ".lock").read_text())
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _, stderr = driver.communicate(timeout=300)
    assert killed is not None, stderr.decode()[-2000:]
    assert driver.returncode == 0, stderr.decode()[-2000:]

    assert sorted(p.name for p in out.iterdir()) == [
        "bc-pendulum", "iql-pendulum", "report", "sweep.json"
    ]  # fmt: skip
    for name in ("bc-pendulum", "iql-pendulum"):
        run = out / name
        lines = (run / "metrics.jsonl").read_text().splitlines()
        steps_logged = [json.loads(line)["step"] for line in lines]
        assert steps_logged == list(range(every, steps + 1, every)), name
        evals = np.load(run / "evaluations.npz")
        assert evals["steps"].tolist() == list(range(every, steps + 1, every))
        assert evals["returns"].shape[:2] == (2, steps // every)
        assert json.loads((run / "result.json").read_text())["seeds"] == [0, 1]
    assert int((victim / ".lock").read_text()) != killed  # a new worker finished it


@pytest.mark.expensive  # ~50 s: a Ray cluster and a client timing out; make test-all
def test_ray_refuses_a_client_without_the_cluster_token(ray_cluster, pendulum_dir, tmp_path):
    address, env = ray_cluster
    wrong = tmp_path / "wrong-token"
    wrong.write_text("0" * 32)
    path = tmp_path / "s.toml"
    path.write_text(f'agents = ["bc"]\ndatasets = ["{pendulum_dir}"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "valorl.cli.main", "sweep", str(path), "--out",
         str(tmp_path / "o"), "--backend", "ray", "--address", address],
        env=env | {"RAY_AUTH_TOKEN_PATH": str(wrong)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"valorl: error: cannot connect to the Ray cluster at {address}" in result.stderr
    assert not (tmp_path / "o" / "bc-pendulum").exists()


def test_group_is_a_plain_dataclass():
    """A group is plain data (it pickles and compares equal), so any backend can ship it."""
    import pickle

    group = expand(spec(agents=["bc"]))[0]
    assert isinstance(group, Group) and pickle.loads(pickle.dumps(group)) == group

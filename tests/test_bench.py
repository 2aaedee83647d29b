"""`valorl bench throughput` names the device it ran on, and benchmarks/gpu_throughput.py turns
its JSON cells into the Markdown table of BENCHMARKS.md."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax

import valorl.bench
from valorl.cli.main import main

TINY = ["--agent", "bc", "--hidden-dims", "8", "--batch-size", "4", "--steps-per-call", "2"]


def test_throughput_names_its_device_in_json_and_text(monkeypatch, capsys):
    """One real measurement (JSON); the text form of the same result names the same device."""
    device = jax.devices()[0]
    name = f"{device.platform}:{device.device_kind}"
    assert main(["bench", "throughput", *TINY, "--calls", "1", "--seeds", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device"] == name == "cpu:cpu"  # the suite runs on the CPU (conftest.py)
    assert (result["hidden_dims"], result["batch_size"], result["seeds"]) == ([8], 4, 2)
    # each rounded to 0.1: they differ by at most 0.1 + 2 × 0.05
    assert abs(result["updates_per_s"] - 2 * result["updates_per_s_per_seed"]) <= 0.2 + 1e-9

    monkeypatch.setattr(valorl.bench, "throughput", lambda agent, **kwargs: result)
    assert main(["bench", "throughput", *TINY]) == 0
    assert capsys.readouterr().out.startswith(
        f"bc hidden [8] batch 4, 2 seed(s) on {name}: {result['updates_per_s']:,.0f} steps/s total"
    )


def load_script():
    path = Path(__file__).parents[1] / "benchmarks" / "gpu_throughput.py"
    spec = importlib.util.spec_from_file_location("gpu_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_throughput_table_has_a_row_per_agent_and_a_column_per_seed_count():
    common = dict(
        hidden_dims=[256, 256],
        batch_size=256,
        steps_per_call=1000,
        calls=5,
        device="gpu:NVIDIA H200",
        jax="0.10.2",
    )
    rates = {("iql", 1): 900.0, ("iql", 20): 12000.0, ("bc", 1): 3000.5, ("bc", 20): 40000.0}
    results = {
        (agent, n): common | {"updates_per_s": r, "updates_per_s_per_seed": r / n}
        for (agent, n), r in rates.items()
    }
    assert load_script().table(results, ["iql", "bc"], [1, 20]).splitlines() == [
        "Device: gpu:NVIDIA H200; jax 0.10.2; hidden [256, 256], batch 256, 1000 steps per "
        "compiled call, 5 timed calls. Cells: gradient steps/s summed over seeds (per seed in "
        "parentheses).",
        "",
        "| agent | 1 seed | 20 seeds |",
        "|---|---:|---:|",
        "| `iql` | 900.0 (900.0) | 12,000.0 (600.0) |",
        "| `bc` | 3,000.5 (3,000.5) | 40,000.0 (2,000.0) |",
    ]

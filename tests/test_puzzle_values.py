"""benchmarks/puzzle_values.py counts a puzzle episode's presses and refuses runs that are not on
a puzzle task before reading any Q."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def puzzle_values(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("puzzle_values")


def test_presses_count_the_steps_that_change_the_buttons(puzzle_values):
    states = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1]])
    assert puzzle_values.presses(states) == 2
    assert puzzle_values.presses(states[:2]) == 0


def test_a_run_not_on_a_puzzle_task_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"env_id": "Pendulum-v1"}}))
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "puzzle_values.py"), str(run)],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(BENCHMARKS), "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {run} did not train on a single-task puzzle dataset"

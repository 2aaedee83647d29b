#!/usr/bin/env bash
# Creates benchmarks/vs_d3rlpy/.venv, the environment d3rlpy_side.py runs in.
#
# d3rlpy 2.8.1 pins gymnasium 1.0.0, so it cannot share valorl's environment. torch is named
# in the same pip command so that the resolver takes the CPU wheel available here instead of
# pulling gigabytes of CUDA packages for d3rlpy's unpinned torch requirement. Minari's HDF5
# backend imports pillow without declaring it; gymnasium[mujoco] evaluates on Hopper & co.
#
#     bash benchmarks/vs_d3rlpy/setup.sh            # PYTHON=python3.11 to pick the interpreter
#
# Idempotent: does nothing when the environment already has these exact versions.
set -euo pipefail

venv="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.venv"
packages=(torch==2.13.0 d3rlpy==2.8.1 "gymnasium[mujoco]==1.0.0" "minari[hdf5]==0.5.4" pillow)

installed() {
    "$venv/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version

assert version("torch").split("+")[0] == "2.13.0"
assert version("d3rlpy") == "2.8.1"
assert version("minari") == "0.5.4"
import h5py, mujoco, PIL  # what minari[hdf5], gymnasium[mujoco] and pillow provide
PY
}

if [[ -x "$venv/bin/python" ]] && installed; then
    echo "$venv: d3rlpy 2.8.1, torch 2.13.0 and minari 0.5.4 already installed"
    exit 0
fi
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install --quiet "${packages[@]}"
installed || { echo "setup.sh: $venv was installed but fails its version check" >&2; exit 1; }
echo "$venv: installed $("$venv/bin/pip" freeze | grep -E '^(torch|d3rlpy|minari|gymnasium)==' | tr '\n' ' ')"

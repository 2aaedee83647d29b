"""Checkpoints as msgpack: arrays and plain values only, so loading one cannot run code.

A checkpoint holds everything a run needs to continue exactly where it stopped: the step, the
seed-stacked agent states (optimiser state included), the per-seed RNG keys, the data
normaliser and the evaluation history. Restoring needs a template of the state's structure,
which the run's config rebuilds, and every restored array is checked against it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError

FORMAT = "valorl-checkpoint/1"
FIELDS = ("step", "states", "keys", "normalizer", "eval_steps", "eval_returns")


@dataclasses.dataclass
class Checkpoint:
    step: int
    states: Any
    keys: jax.Array
    normalizer: Normalizer
    eval_steps: np.ndarray
    """(num_evals,) training step of each evaluation."""
    eval_returns: np.ndarray
    """(seeds, num_evals, episodes) undiscounted returns."""


def encode(ckpt: Checkpoint) -> bytes:
    return flax.serialization.msgpack_serialize(
        {
            "format": FORMAT,
            "step": int(ckpt.step),
            "states": jax.device_get(flax.serialization.to_state_dict(ckpt.states)),
            "keys": np.asarray(jax.random.key_data(ckpt.keys)),
            "normalizer": jax.device_get(flax.serialization.to_state_dict(ckpt.normalizer)),
            "eval_steps": np.asarray(ckpt.eval_steps, np.int64),
            "eval_returns": np.asarray(ckpt.eval_returns, np.float64),
        }
    )


def decode(
    data: bytes, states_template: Any, normalizer_template: Normalizer, where: str = "checkpoint"
) -> Checkpoint:
    """Parse and check a checkpoint against the expected structure; ValorlError if it differs."""
    try:
        raw = flax.serialization.msgpack_restore(data)
    except Exception:
        raise ValorlError(f"{where} is damaged (not a valorl checkpoint)") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValorlError(f"{where} is not a {FORMAT} file")
    missing = [k for k in FIELDS if k not in raw]
    if missing:
        raise ValorlError(f"{where} is incomplete: missing {', '.join(missing)}")
    states = _restore(states_template, raw["states"], where)
    normalizer = _restore(normalizer_template, raw["normalizer"], where)
    return Checkpoint(
        step=int(raw["step"]),
        states=states,
        keys=jax.random.wrap_key_data(jnp.asarray(raw["keys"])),
        normalizer=normalizer,
        eval_steps=np.asarray(raw["eval_steps"]),
        eval_returns=np.asarray(raw["eval_returns"]),
    )


def _restore(template: Any, state_dict: Any, where: str) -> Any:
    try:
        restored = flax.serialization.from_state_dict(template, state_dict)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValorlError(f"{where} does not match this run's agent: {exc}") from None
    expected = jax.tree.leaves(template)
    got = jax.tree.leaves(restored)
    for want, have in zip(expected, got, strict=True):
        if tuple(want.shape) != tuple(np.shape(have)):
            raise ValorlError(
                f"{where} does not match this run's agent: an array has shape "
                f"{np.shape(have)}, expected {tuple(want.shape)}"
            )
    return jax.tree.map(jnp.asarray, restored)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, flush it to disk, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

"""Checkpoints as msgpack: arrays and plain values only, so loading one cannot run code.

A checkpoint holds everything a run needs to continue exactly where it stopped: the step, the
seed-stacked agent states (optimiser state included), the per-seed RNG keys, the data
normaliser and the evaluation history. Restoring needs a template of the state's structure,
which the run's config rebuilds, and every restored array is checked against it.

Online runs add an `online` section (`OnlineProgress`): the environment steps taken, the
episodes each seed's environment has started, and every seed's replay buffer, stored up to
its filled rows only; runs in the compiled loop also store their JAX environments' states
(`env_carry`), so they resume inside the same episodes. Checkpoints without an online
section (offline runs) read as before.
"""

from __future__ import annotations

import dataclasses
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
    online: OnlineProgress | None = None
    """Where an online phase stands (online and hybrid runs only)."""
    model_buffers: Any = None
    """The seed-stacked buffers of imagined rows (model-based agents only)."""
    eval_successes: np.ndarray | None = None
    """(seeds, num_evals, episodes) whether each evaluation episode ended in success, for
    environments that report `info["success"]`; None otherwise."""


@dataclasses.dataclass
class OnlineProgress:
    """What an online run needs beyond the agents to continue: its environment steps, episode
    counters and replay buffers."""

    env_step: int
    """Environment steps taken by each seed in the online phase."""
    episodes: np.ndarray
    """(seeds,) episodes each seed's environment has started (their reset seeds follow it)."""
    buffers: Any
    """The seed-stacked `ReplayBuffer`."""
    env_carry: Any = None
    """The compiled loop's seed-stacked JAX environments (`training.compiled.EnvCarry`)."""


def encode(ckpt: Checkpoint) -> bytes:
    raw = {
        "format": FORMAT,
        "step": int(ckpt.step),
        "states": jax.device_get(flax.serialization.to_state_dict(ckpt.states)),
        "keys": np.asarray(jax.random.key_data(ckpt.keys)),
        "normalizer": jax.device_get(flax.serialization.to_state_dict(ckpt.normalizer)),
        "eval_steps": np.asarray(ckpt.eval_steps, np.int64),
        "eval_returns": np.asarray(ckpt.eval_returns, np.float64),
    }
    if ckpt.online is not None:
        raw["online"] = {
            "env_step": int(ckpt.online.env_step),
            "episodes": np.asarray(ckpt.online.episodes, np.int64),
            "buffers": _encode_buffers(ckpt.online.buffers),
        }
        if ckpt.online.env_carry is not None:
            carry = flax.serialization.to_state_dict(ckpt.online.env_carry)
            raw["online"]["env_carry"] = jax.device_get(carry)
    if ckpt.model_buffers is not None:
        raw["model_buffers"] = _encode_buffers(ckpt.model_buffers)
    if ckpt.eval_successes is not None:
        raw["eval_successes"] = np.asarray(ckpt.eval_successes, bool)
    return flax.serialization.msgpack_serialize(raw)


def _encode_buffers(buffers: Any) -> dict[str, Any]:
    """Seed-stacked replay buffers, without the rows no seed has filled yet (still zeros)."""
    filled = int(jnp.max(buffers.size))
    data = jax.tree.map(lambda x: x[:, :filled], buffers.data)
    return {
        "data": jax.device_get(flax.serialization.to_state_dict(data)),
        "position": np.asarray(buffers.position),
        "size": np.asarray(buffers.size),
    }


def decode(
    data: bytes,
    states_template: Any,
    normalizer_template: Normalizer,
    where: str = "checkpoint",
    buffers_template: Any = None,
    carry_template: Any = None,
    model_buffers_template: Any = None,
) -> Checkpoint:
    """Parse and check a checkpoint against the expected structure; ValorlError if it differs.

    With `buffers_template` (the seed-stacked replay buffers' shapes), an online section is
    restored too; without it, or in a checkpoint that has none, `online` is None. With
    `carry_template`, the compiled loop's environments are restored as well, and with
    `model_buffers_template` a model-based agent's buffers of imagined rows.
    """
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
    online = None
    if buffers_template is not None and isinstance(raw.get("online"), dict):
        online = _restore_online(raw["online"], buffers_template, where)
        if carry_template is not None:
            if "env_carry" not in raw["online"]:
                raise ValorlError(f"{where} holds no environment states for the compiled loop")
            online.env_carry = _restore(carry_template, raw["online"]["env_carry"], where)
    model_buffers = None
    if model_buffers_template is not None:
        if not isinstance(raw.get("model_buffers"), dict):
            raise ValorlError(f"{where} holds no model buffers")
        model_buffers = _decode_buffers(raw["model_buffers"], model_buffers_template, where)
    return Checkpoint(
        step=int(raw["step"]),
        states=states,
        keys=jax.random.wrap_key_data(jnp.asarray(raw["keys"])),
        normalizer=normalizer,
        eval_steps=np.asarray(raw["eval_steps"]),
        eval_returns=np.asarray(raw["eval_returns"]),
        online=online,
        model_buffers=model_buffers,
        eval_successes=(
            np.asarray(raw["eval_successes"], bool) if "eval_successes" in raw else None
        ),
    )


def _restore_online(raw: dict[str, Any], template: Any, where: str) -> OnlineProgress:
    """The online section, with the replay buffers restored against `template`."""
    try:
        progress = OnlineProgress(
            env_step=int(raw["env_step"]),
            episodes=np.array(raw["episodes"], np.int64),  # a writable copy
            buffers=None,
        )
        stored = raw["buffers"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValorlError(f"{where} has a damaged replay buffer: {exc}") from None
    progress.buffers = _decode_buffers(stored, template, where)
    return progress


def _decode_buffers(stored: Any, template: Any, where: str) -> Any:
    """Buffers written by `_encode_buffers`, each padded back to its capacity."""
    try:
        capacity = template.data.rewards.shape[1]

        def pad(x: Any) -> np.ndarray:
            x = np.asarray(x)
            if x.ndim < 2 or x.shape[1] > capacity:
                raise ValueError(f"a stored buffer field has shape {x.shape}")
            return np.pad(x, [(0, 0), (0, capacity - x.shape[1])] + [(0, 0)] * (x.ndim - 2))

        state_dict = {
            "data": jax.tree.map(pad, stored["data"]),
            "position": stored["position"],
            "size": stored["size"],
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValorlError(f"{where} has a damaged replay buffer: {exc}") from None
    return _restore(template, state_dict, where)


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

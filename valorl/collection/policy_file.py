"""Behaviour policies as plain arrays: the small, committed checkpoints the dataset zoo rolls out.

A policy file is an `.npz` (read with `allow_pickle=False`, so loading it cannot run code)
holding one ReLU MLP and the affine maps around it:

    a_env = low + (tanh(MLP((s − obs_mean) / obs_std))[:action_dim] + 1) · (high − low) / 2

which is the deterministic action of every valorl actor built on `nets.MLP`: SAC's
tanh-Gaussian (the tanh of its mean), the deterministic policies of BC, TD3+BC and RIQL, and
IQL's Gaussian policy (its mean). A discrete policy (DQN's greedy policy in a scalar-head
Q-network) is stored the same way with `num_actions` set and, for frame observations, the
convolution in front of the MLP (`nets.torsos.Torso`); its action is

    a = argmax(MLP(flatten(relu(conv3x3(s)))))     (or argmax(MLP(s)) for vector observations)

The forward pass runs in float64 NumPy and rounds to float32
at the end, so a dataset rolled out with it is the same bit for bit on any machine: the float32
result of a float64 computation does not depend on the BLAS kernel's summation order (an XLA
float32 pass on another CPU could differ in the last bit, and a rollout amplifies that). The
file also carries its provenance (the training command, seed, step and returns) as JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from valorl.data.files import atomic_write
from valorl.errors import ValorlError
from valorl.eval.policy import load_policy

FORMAT = "valorl-policy/1"


@dataclasses.dataclass(frozen=True)
class PolicyFile:
    """A deterministic policy: raw observation -> action in environment units (float32)."""

    kernels: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    obs_mean: np.ndarray
    obs_std: np.ndarray
    action_low: np.ndarray
    action_high: np.ndarray
    provenance: dict[str, Any]
    num_actions: int | None = None
    """Discrete actions: the greedy action among this many outputs; None: continuous."""
    conv_kernel: np.ndarray | None = None
    """(3, 3, channels, filters) kernel of the frame torso's convolution (VALID, stride 1)."""
    conv_bias: np.ndarray | None = None

    @property
    def obs_dim(self) -> int:
        return self.kernels[0].shape[0]

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """One observation's shape (frames keep theirs: the input of the convolution)."""
        return tuple(int(n) for n in self.obs_mean.shape)

    @property
    def action_dim(self) -> int:
        return self.action_low.shape[0]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions for one observation (obs_dim,) or a batch (n, obs_dim); discrete policies
        take frames (H, W, C) or a batch of them and return int64 actions."""
        x = (np.asarray(obs, np.float64) - self.obs_mean) / self.obs_std
        if self.conv_kernel is not None:
            x = _conv3x3_relu(x, self.conv_kernel, self.conv_bias)
        if self.num_actions is not None:
            x = x.reshape(*x.shape[: x.ndim - len(self.obs_shape)], -1)
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            x = x @ kernel + bias
            if i < len(self.kernels) - 1:
                x = np.maximum(x, 0.0)
        if self.num_actions is not None:
            return np.argmax(x[..., : self.num_actions], axis=-1).astype(np.int64)
        unit = np.tanh(x[..., : self.action_dim])
        env = self.action_low + 0.5 * (unit + 1.0) * (self.action_high - self.action_low)
        return env.astype(np.float32)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the file atomically (float32 weights, float64 maps) and return its path."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "provenance": np.array(json.dumps(self.provenance, sort_keys=True)),
            "obs_mean": self.obs_mean,
            "obs_std": self.obs_std,
            "action_low": self.action_low,
            "action_high": self.action_high,
        }
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            arrays[f"kernel_{i}"] = kernel.astype(np.float32)
            arrays[f"bias_{i}"] = bias.astype(np.float32)
        if self.num_actions is not None:
            arrays["num_actions"] = np.array(self.num_actions)
        if self.conv_kernel is not None:
            arrays["conv_kernel"] = self.conv_kernel.astype(np.float32)
            arrays["conv_bias"] = self.conv_bias.astype(np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PolicyFile:
        """Read a policy file; ValorlError with the reason if it is not one."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            raise ValorlError(f"{path} is not a readable policy file: {exc}") from None
        if str(arrays.get("format", "")) != FORMAT:
            raise ValorlError(f"{path} is not a valorl policy file (format {FORMAT!r})")
        layers = sum(1 for k in arrays if k.startswith("kernel_"))
        as64 = lambda k: np.asarray(arrays[k], np.float64)
        return cls(
            kernels=tuple(as64(f"kernel_{i}") for i in range(layers)),
            biases=tuple(as64(f"bias_{i}") for i in range(layers)),
            obs_mean=as64("obs_mean"),
            obs_std=as64("obs_std"),
            action_low=as64("action_low"),
            action_high=as64("action_high"),
            provenance=json.loads(str(arrays["provenance"])),
            num_actions=int(arrays["num_actions"]) if "num_actions" in arrays else None,
            conv_kernel=as64("conv_kernel") if "conv_kernel" in arrays else None,
            conv_bias=as64("conv_bias") if "conv_bias" in arrays else None,
        )


def export_policy(
    run_dir: str | os.PathLike,
    step: int | None = None,
    seed_index: int = 0,
    provenance: dict[str, Any] | None = None,
) -> PolicyFile:
    """The deterministic policy of one seed of a valorl run, at its latest checkpoint or at a
    kept one (`step`), as a PolicyFile.

    Checked on export: the actor must be a plain `nets.MLP` (no LayerNorm or spectral norm),
    and the file's actions must match the run's own policy on random observations.
    """
    policy = load_policy(run_dir, step=step)
    if policy.agent.discrete:
        return _export_discrete(policy, run_dir, seed_index, provenance)
    mlp = policy.states.actor.params.get("MLP_0")  # every agent's state holds `actor`
    dense = sorted(mlp or {}, key=lambda name: int(name.rsplit("_", 1)[-1]))
    obs_dim = int(np.prod(policy.obs_shape))
    if (
        not dense
        or any(not name.startswith("Dense_") for name in dense)
        or mlp[dense[0]]["kernel"].shape[-2] != obs_dim  # inputs beyond s: noise, flow time
    ):
        raise ValorlError(
            f"{run_dir}: {policy.agent.name}'s actor is not a plain MLP of Dense layers on "
            "the observation; only such policies export to a policy file"
        )

    take = functools.partial(_seed_weights, seed_index=seed_index)
    norm = policy.normalizer
    exported = PolicyFile(
        kernels=tuple(take(mlp[name]["kernel"]) for name in dense),
        biases=tuple(take(mlp[name]["bias"]) for name in dense),
        obs_mean=np.asarray(norm.obs_mean, np.float64),
        obs_std=np.asarray(norm.obs_std, np.float64),
        action_low=np.asarray(norm.action_low, np.float64),
        action_high=np.asarray(norm.action_high, np.float64),
        provenance={
            "run": str(run_dir),
            "agent": policy.agent.name,
            "seed": policy.seeds[seed_index],
            "step": policy.step,
            **(provenance or {}),
        },
    )
    probe = np.random.default_rng(0).normal(size=(64, *policy.obs_shape)).astype(np.float32)
    expected = policy(probe, seed_index=seed_index)
    if not np.allclose(exported(probe), expected, atol=1e-4):
        raise ValorlError(
            f"{run_dir}: the exported policy's actions differ from the run's own (largest "
            f"difference {np.abs(exported(probe) - expected).max():.2g}); "
            f"{policy.agent.name}'s actor is not supported by policy files"
        )
    return exported


def _seed_weights(x: jax.Array, seed_index: int) -> np.ndarray:
    """One seed's weights, float32 held as float64 (as a loaded policy file holds them)."""
    return np.asarray(jax.device_get(x[seed_index]), np.float32).astype(np.float64)


def _export_discrete(policy, run_dir, seed_index: int, provenance) -> PolicyFile:
    """The greedy policy of a discrete agent: argmax of DQN's Q-network (one network, a scalar
    critic head) or of a categorical policy's logits (discrete BC and IQL)."""
    params = policy.states.actor.params
    take = functools.partial(_seed_weights, seed_index=seed_index)
    if "Torso_0" not in params.get("net", params) or "Dense_0" not in params.get("net", params):
        raise ValorlError(
            f"{run_dir}: {policy.agent.name}'s network is not a torso and an output layer "
            "(nets.Torso, as DQN's and discrete BC's and IQL's); only such policies export to a "
            "policy file"
        )
    if "net" in params:  # a Q-ensemble: a member axis after the seed axis
        members = jax.tree.leaves(params)[0].shape[1]
        outputs = params["net"]["Dense_0"]["kernel"].shape[-1]
        if members != 1 or outputs != policy.num_actions:
            raise ValorlError(
                f"{run_dir}: only a single Q-network with a scalar critic head (mse, huber) "
                f"exports to a policy file; this one has {members} network(s) with "
                f"{outputs // policy.num_actions} output(s) per action"
            )
        params = params["net"]
        take1 = take
        take = lambda x: take1(x)[0]
    torso = params["Torso_0"]
    dense = sorted(torso["MLP_0"], key=lambda name: int(name.rsplit("_", 1)[-1]))
    layers = [torso["MLP_0"][name] for name in dense] + [params["Dense_0"]]
    conv = torso.get("Conv3x3_0")
    norm = policy.normalizer
    exported = PolicyFile(
        kernels=tuple(take(layer["kernel"]) for layer in layers),
        biases=tuple(take(layer["bias"]) for layer in layers),
        obs_mean=np.asarray(norm.obs_mean, np.float64),
        obs_std=np.asarray(norm.obs_std, np.float64),
        action_low=np.zeros(0),
        action_high=np.zeros(0),
        provenance={
            "run": str(run_dir),
            "agent": policy.agent.name,
            "seed": policy.seeds[seed_index],
            "step": policy.step,
            **(provenance or {}),
        },
        num_actions=policy.num_actions,
        conv_kernel=None if conv is None else take(conv["kernel"]),
        conv_bias=None if conv is None else take(conv["bias"]),
    )
    rng = np.random.default_rng(0)
    probe = (rng.random((64, *policy.obs_shape)) < 0.2).astype(np.float32)
    expected = policy(probe, seed_index=seed_index)
    if not np.array_equal(exported(probe), expected):
        raise ValorlError(
            f"{run_dir}: the exported policy's actions differ from the run's own on "
            f"{int((exported(probe) != expected).sum())} of 64 observations; "
            f"{policy.agent.name}'s network is not supported by policy files"
        )
    return exported


def _conv3x3_relu(frames: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """relu(VALID 3x3 convolution, stride 1) of frames (..., H, W, C) with a flax `nn.Conv`
    kernel (3, 3, C, F): (..., H − 2, W − 2, F), in float64."""
    windows = np.lib.stride_tricks.sliding_window_view(frames, (3, 3), axis=(-3, -2))
    # windows: (..., H-2, W-2, C, 3, 3) -> (..., H-2, W-2, 3, 3, C), the kernel's order
    patches = np.moveaxis(windows, -3, -1)
    out = np.einsum("...ijc,ijcf->...f", patches, kernel) + bias
    return np.maximum(out, 0.0)

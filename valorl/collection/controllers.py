"""Scripted behaviour policies for environments where a textbook controller does well.

They give valorl datasets with a known-good behaviour without any training (D4RL's maze2d
data came from a scripted controller in the same way), which makes them ideal for the demo
and for tests. Each maps one raw observation to one action in environment units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Controller:
    env_ids: tuple[str, ...]
    act: Callable[[np.ndarray], np.ndarray]
    description: str


def pendulum_swingup(obs: np.ndarray) -> np.ndarray:
    """Energy pumping far from upright, PD stabilisation near it (Åström & Furuta 2000).

    Pendulum-v1 obeys θ̈ = 15·sin θ + 3u, so E = θ̇²/2 + 15·cos θ changes as dE/dt = 3uθ̇ and
    equals 15 at rest upright. Far from the top, u = k·(15 − E)·θ̇ pumps energy towards that
    level; within about 30° of the top a PD law holds the pendulum there. Mean return about
    −138 over seeded starts (uniform random actions: about −1250).
    """
    cos, sin, theta_dot = obs
    theta = np.arctan2(sin, cos)
    if cos > 0.85:
        u = -10.0 * theta - 2.0 * theta_dot
    else:
        energy = 0.5 * theta_dot**2 + 15.0 * cos
        u = 0.5 * (15.0 - energy) * theta_dot
    return np.clip(np.array([u], np.float32), -2.0, 2.0)


def mountaincar_pump(obs: np.ndarray) -> np.ndarray:
    """Full force in the direction the car is moving, which adds energy on every swing until
    it crests the hill. MountainCarContinuous-v0: return about 89 in about 106 steps (uniform
    random actions never reach the goal: about −33 over the full 999 steps)."""
    return np.array([1.0 if obs[1] >= 0 else -1.0], np.float32)


CONTROLLERS: dict[str, Controller] = {
    "pendulum-swingup": Controller(
        ("Pendulum-v1",), pendulum_swingup, "energy-based swing-up with PD balance"
    ),
    "mountaincar-pump": Controller(
        ("MountainCarContinuous-v0",), mountaincar_pump, "push in the direction of motion"
    ),
}

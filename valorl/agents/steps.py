"""Updates that consume several batches: critic steps, each on its own batch, then one actor
step.

TD3 delays its actor and targets by `policy_freq` critic steps (Fujimoto, van Hoof & Meger
2018, Sec. 5.2), DSAC-T its actor, temperature and targets by `delay_update` (Duan et al.
2025), and SAC with an update-to-data ratio takes `utd` critic steps per actor step (REDQ,
Chen et al. 2021; RLPD, Ball et al. 2023). Such an agent's `update` receives a batch with a
leading axis of `batches_per_update`, runs its critic step over that axis in one `lax.scan`
with a key per step, and gives the actor the last batch, which the updated critic has seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp

from valorl.agents.base import Metrics
from valorl.data.dataset import Batch

State = TypeVar("State")


def critic_steps(
    step: Callable[[State, Batch, jax.Array], tuple[State, Metrics]],
    state: State,
    batch: Batch,
    key: jax.Array,
    num_steps: int,
) -> tuple[State, Metrics, Batch]:
    """`num_steps` applications of `step(state, batch_i, key_i)`, one per leading row of
    `batch` (a plain batch when `num_steps` is 1), with keys split from `key`.

    Returns the state after the last step, the steps' metrics averaged over the steps, and
    the last batch, for the actor step that follows.
    """
    if num_steps == 1:
        batch = jax.tree.map(lambda x: x[None], batch)
    keys = jax.random.split(key, num_steps)
    state, metrics = jax.lax.scan(lambda s, inputs: step(s, *inputs), state, (batch, keys))
    last = jax.tree.map(lambda x: x[-1], batch)
    return state, jax.tree.map(jnp.mean, metrics), last

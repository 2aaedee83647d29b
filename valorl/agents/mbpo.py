"""MBPO: Model-Based Policy Optimization (Janner, Fu, Zhang & Levine, "When to Trust Your
Model", NeurIPS 2019, Alg. 2).

Online: every `rollout_every` environment steps the dynamics ensemble is refitted on the replay
buffer and `rollout_batch` branched rollouts of length h start from replayed states; after every
environment step SAC takes `utd` full updates (critic, actor, temperature), each on its own
batch of 5% real and 95% imagined rows. h
follows a linear schedule over environment steps (Sec. 4.1: short rollouts bound the model's
compounding error). Defaults are the paper's Hopper configuration (App. C and its
`examples/config/hopper.py`): 7 members, 5 elites, 4×200 swish layers, refit every 250 steps,
100k rollouts per round, h from 1 to 15 over environment steps 20k to 100k, one epoch (4
rounds) of imagined data kept, 20 critic steps per environment step (its released code grows h
until epoch 150). Batches draw imagined rows from the newest rounds at the current h
(`Rollouts.kept_rows`), as MBPO's pool. MBPO's code sets SAC's target entropy per environment
(Hopper −1, InvertedDoublePendulum −0.5, HalfCheetah and Walker2d −3, Ant −4, Humanoid −2)
where valorl's default is SAC's −|A|: pass `--target-entropy`. The rollout batch and UTD
dominate the cost on a CPU: benchmarks scale them down and say by how much.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from valorl.agents.base import Metrics
from valorl.agents.model_based import ModelBasedSAC, ModelBasedState
from valorl.data.dataset import Batch
from valorl.models import Rollouts


@dataclasses.dataclass(frozen=True)
class MBPO(ModelBasedSAC):
    """SAC on a refitted model's short branched rollouts (online)."""

    name: ClassVar[str] = "mbpo"

    utd: int = 20
    """Full SAC updates (critic, actor and temperature steps, each on its own batch) per
    environment step: MBPO's `n_train_repeat` (SAC's `utd` counts critic steps per actor
    step instead)."""
    rollouts: Rollouts = Rollouts(
        rollout_batch=100_000,
        rollout_length=15,
        rollout_start_length=1,
        rollout_schedule=(20_000, 100_000),
        rollout_every=250,
        rollout_retain=4,
    )
    """Imagined data: 100k rollouts every 250 environment steps, length 1 -> 15, one epoch kept."""

    def sac_update(
        self, state: ModelBasedState, batch: Batch, key: jax.Array
    ) -> tuple[ModelBasedState, Metrics]:
        """`utd` full SAC updates in a row, each on its own batch (MBPO's training repeats)."""
        single = dataclasses.replace(self, utd=1)
        batches = batch if self.utd > 1 else jax.tree.map(lambda x: x[None], batch)
        keys = jax.random.split(key, self.utd)
        step = lambda s, inputs: ModelBasedSAC.sac_update(single, s, *inputs)
        state, metrics = jax.lax.scan(step, state, (batches, keys))
        return state, jax.tree.map(jnp.mean, metrics)

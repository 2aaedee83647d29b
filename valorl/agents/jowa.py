"""JOWA: one transformer trained as a world model and as a distributional Q-function.

Cheng et al. 2024, "Scaling Offline Model-Based RL via Jointly-Optimized World-Action Model
Pretraining" (JOWA; reference code CJReinforce/JOWA), at MinAtar scale ("JOWA-mini").

A batch is `context` consecutive steps of a trajectory (`valorl.data.segments`). Each step is a
block of tokens: the frame's `tokens_per_frame` patch codes (`valorl.data.frame_tokens`) and
one action token over the union action set (codes `vocab_size + a`). A causal transformer
(`valorl.nets.transformer`) with a task embedding per game reads the blocks; its heads are

- next frame token at every position whose next token is a frame token (the world model's
  observation prediction, Sec. 3.2), and at each action token the reward's sign (3 classes)
  and termination (2 classes), as JOWA;
- Q at the last frame token of each block: an ensemble of `q_members` MLPs returning the
  critic head's outputs for every action (C51 on 51 atoms as JOWA, or any valorl head, e.g.
  hl-gauss), trained by the Double-DQN distributional backup from the next block of the same
  segment, with the greedy next action chosen among the game's valid actions by the online
  head and evaluated by a target head copied every `target_update_every` steps (Sec. 3.3), plus
  CQL's penalty `cql_alpha`·(log Σ_{valid a} exp Q(s, a) − Q(s, a_data)) (Eq. 4).

Training has two stages (Sec. 3.4): the world-model loss alone for `world_model_steps`, then
`supervised_weight`·world-model loss + TD loss + CQL penalty, the TD gradient reaching the
shared backbone (`joint`, JOWA's "jointly optimised") or stopped at it (the ablation). With
`behaviour_cloning` the same heads are trained instead as a policy, by cross-entropy to the data's
action over the valid ones: multi-task BC on the same backbone (JOWA's MTBC baseline, Table 1).

Observations are flat vectors: the frame's tokens, the game's index, and the game's valid
actions as 0/1 (`observation_layout`), so one dataset and one policy serve several games.
Acting is greedy in Q over valid actions from the current frame, or with `plan_depth` > 0 a
beam search of width `plan_width` in the learned model (`valorl.agents.jowa_planning`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from valorl.agents.base import (
    AgentBase,
    Metrics,
    NetState,
    Params,
    Spec,
    create_train_state,
    grad_step,
    periodic_copy,
    prefix,
)
from valorl.agents.discrete import require_discrete
from valorl.agents.jowa_decoding import INVALID, Decoder
from valorl.agents.jowa_planning import plan
from valorl.config import require_at_least_one
from valorl.critics import CriticHead
from valorl.critics.heads import Categorical
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.errors import ValorlError
from valorl.losses import discrete_cql_gap
from valorl.nets.transformer import CausalTransformer


def observation_layout(obs_dim: int, num_actions: int) -> int:
    """Frame tokens per observation of `obs_dim` numbers: tokens, game index, valid actions."""
    tokens = obs_dim - 1 - num_actions
    if tokens < 1:
        raise ValorlError(
            f"jowa reads observations of frame tokens, a game index and {num_actions} valid-"
            f"action flags; these have only {obs_dim} numbers"
        )
    return tokens


def split_observation(obs: jax.Array, num_actions: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(..., D) observations -> frame tokens (..., T) int32, game (...,) int32, valid (..., A)."""
    tokens = obs[..., : -1 - num_actions].astype(jnp.int32)
    game = obs[..., -1 - num_actions].astype(jnp.int32)
    return tokens, game, obs[..., -num_actions:] > 0.5


class QHeads(nn.Module):
    """An ensemble of MLPs on the hidden state: (..., width) -> (members, ..., actions, out)."""

    members: int
    hidden: int
    num_actions: int
    out_dim: int

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        mlp = nn.vmap(
            _QMLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            axis_size=self.members,
        )
        out = mlp(self.hidden, self.num_actions * self.out_dim)(h)
        return out.reshape(*out.shape[:-1], self.num_actions, self.out_dim)


class _QMLP(nn.Module):
    hidden: int
    out: int

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        h = nn.relu(nn.Dense(self.hidden)(h))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.out)(h)


class WorldActionModel(nn.Module):
    """The backbone and its heads; `__call__` runs all of them (for initialisation)."""

    vocab_size: int
    num_actions: int
    num_tasks: int
    max_length: int
    width: int
    depth: int
    heads: int
    q_members: int
    q_hidden: int
    q_out: int
    decode: bool = False
    """The backbone steps through a key/value cache (`valorl.agents.jowa_decoding`)."""

    def setup(self) -> None:
        self.backbone = CausalTransformer(
            self.vocab_size + self.num_actions,
            self.num_tasks,
            self.max_length,
            self.width,
            self.depth,
            self.heads,
            decode=self.decode,
        )
        self.frame_head = nn.Dense(self.vocab_size)
        self.reward_head = nn.Dense(3)
        self.done_head = nn.Dense(2)
        self.q_head = QHeads(self.q_members, self.q_hidden, self.num_actions, self.q_out)

    def __call__(self, tokens: jax.Array, tasks: jax.Array):
        h = self.hidden(tokens, tasks)
        return self.world(h), self.q(h)

    def hidden(self, tokens: jax.Array, tasks: jax.Array) -> jax.Array:
        return self.backbone(tokens, tasks)

    def world(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Next-frame-token, reward-sign and termination logits at every position."""
        return self.frame_head(h), self.reward_head(h), self.done_head(h)

    def q(self, h: jax.Array) -> jax.Array:
        return self.q_head(h)


class JOWAState(flax.struct.PyTreeNode):
    model: NetState
    target_q: Params
    """The target Q head's parameters (a copy of `model.params["q_head"]`)."""


@dataclasses.dataclass(frozen=True)
class JOWA(AgentBase):
    """JOWA-mini (module docstring): a world-action model over frame and action tokens."""

    name: ClassVar[str] = "jowa"
    has_critic: ClassVar[bool] = True
    discrete: ClassVar[bool] = True
    vocab_size: int = 1024
    """Frame codes (the patch code's vocabulary); action tokens follow them."""
    num_tasks: int = 8
    """Games the task embedding has room for."""
    context: int = 4
    """Steps (blocks of frame tokens and an action token) per training sequence."""
    width: int = 128
    """Transformer width (JOWA-150M: 768)."""
    depth: int = 4
    """Transformer blocks (JOWA-150M: 12)."""
    heads: int = 4
    """Attention heads (JOWA-150M: 12)."""
    q_members: int = 3
    """MLPs in the Q head's ensemble (JOWA: 3)."""
    q_hidden: int = 256
    """Width of the Q head's two hidden layers (JOWA-150M: 1792)."""
    critic: CriticHead = Categorical(bins=51)
    """How Q is represented and trained (JOWA: C51 on 51 atoms)."""
    discount: float = 0.99
    """Discount factor γ."""
    cql_alpha: float = 0.1
    """Weight of CQL's penalty over the valid actions (JOWA: 0.1)."""
    supervised_weight: float = 0.1
    """Weight of the world-model loss once the Q loss trains (JOWA: 0.1)."""
    world_model_steps: int = 1000
    """Updates of the world model alone before joint training (JOWA: 250k of 1.75M)."""
    joint: bool = True
    """The TD loss's gradient reaches the shared backbone; false: only the Q head learns from it."""
    behaviour_cloning: bool = False
    """Train the Q head's per-action values (a distributional head's means) as a policy's logits
    (cross-entropy to the data's action) instead of by TD and CQL: multi-task BC with the same
    network (MTBC)."""
    target_update_every: int = 1000
    """Updates between copies of the Q head to its target (JOWA: 1000)."""
    learning_rate: float = 1e-4
    """AdamW learning rate of the world-model stage, halved when joint training starts (JOWA:
    1e-4, then 5e-5)."""
    weight_decay: float = 0.01
    """AdamW weight decay (JOWA: 0.01)."""
    plan_width: int = 1
    """Beams kept by the planner (JOWA: 2-4 per game); used when plan_depth > 0."""
    plan_depth: int = 0
    """Steps the planner looks ahead in the learned model; 0: greedy in Q (JOWA: 2)."""
    batch_size: int = 32
    """Sequences per update (JOWA: 512 across 15 games)."""
    imagine_batch: int = 0
    """Sequences of each batch replaced by rollouts in the learned model for the Q loss (JOWA's
    optional data synthesis when fine-tuning: 16 of 32); 0: real data only."""
    imagine_epsilon: float = 0.1
    """Exploration of the ε-greedy policy in Q that acts in imagination (JOWA's alternative to
    beam search there, annealed from 1.0 to 0.1 over 20k of its fine-tuning steps; fine-tuning
    runs here are shorter)."""
    normalize_observations: bool = False
    """Standardise observations (never: they are token ids, a game index and flags)."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling (none: the reward head predicts MinAtar's reward signs)."""

    def __post_init__(self) -> None:
        require_at_least_one(self, "vocab_size", "num_tasks", "context", "width", "depth", "heads")
        if self.context < 2:
            raise ValorlError("--context must be at least 2: the TD target reads the next block")
        if self.normalize_observations or self.reward_normalization != "none":
            raise ValorlError(
                "jowa reads token ids and reward signs: leave both normalisations off"
            )
        if self.width % self.heads:
            raise ValorlError(
                f"--width ({self.width}) must be a multiple of --heads ({self.heads})"
            )
        if self.behaviour_cloning and self.plan_depth > 0:
            raise ValorlError(
                "--plan-depth scores paths by Q, which --behaviour-cloning does not learn"
            )
        if not 0 <= self.imagine_batch < self.batch_size:
            raise ValorlError(
                f"--imagine-batch must be in [0, --batch-size = {self.batch_size}): real "
                "sequences train the world model"
            )
        if self.imagine_batch and (self.world_model_steps or self.behaviour_cloning):
            raise ValorlError(
                "--imagine-batch rolls out Q's policy in a trained model: it needs "
                "--world-model-steps 0 (fine-tuning, as JOWA) and no --behaviour-cloning"
            )
        if self.plan_width < 1 or not 0 <= self.plan_depth < self.context:
            raise ValorlError(
                "--plan-width must be at least 1 and --plan-depth in [0, --context): the "
                f"planner's steps must fit in the model's context of {self.context} steps"
            )

    @property
    def segment_length(self) -> int:
        return self.context

    # ---- networks -----------------------------------------------------------------------

    def module(self, spec: Spec) -> WorldActionModel:
        tokens = observation_layout(spec.obs_shape[-1], spec.num_actions)
        return WorldActionModel(
            vocab_size=self.vocab_size,
            num_actions=spec.num_actions,
            num_tasks=self.num_tasks,
            max_length=self.context * (tokens + 1),
            width=self.width,
            depth=self.depth,
            heads=self.heads,
            q_members=self.q_members,
            q_hidden=self.q_hidden,
            q_out=getattr(self.critic, "out_dim", 1),
        )

    def init(self, key: jax.Array, spec: Spec) -> JOWAState:
        num_actions = require_discrete(self.name, spec)
        tokens = observation_layout(spec.obs_shape[-1], num_actions)
        schedule = optax.piecewise_constant_schedule(
            self.learning_rate, {self.world_model_steps: 0.5}
        )
        tx = optax.adamw(schedule, weight_decay=self.weight_decay)
        example = (jnp.zeros((1, self.context * (tokens + 1)), jnp.int32), jnp.zeros(1, jnp.int32))
        model = create_train_state(self.module(spec), key, example, tx)
        return JOWAState(model=model, target_q=model.params["q_head"])

    def _call(self, state: JOWAState, params: Params, method: str, *inputs: jax.Array) -> Any:
        return state.model.apply_fn({"params": params}, *inputs, method=method)

    @staticmethod
    def num_actions(state: JOWAState) -> int:
        return state.model.apply_fn.__self__.num_actions

    # ---- sequences ----------------------------------------------------------------------

    def sequence(self, state: JOWAState, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        """A (B, L, D) segment batch -> tokens (B, L·(T+1)), games (B,), valid actions (B, L, A)."""
        frames, games, valid = split_observation(batch.observations, self.num_actions(state))
        actions = self.vocab_size + batch.actions.astype(jnp.int32)
        blocks = jnp.concatenate([frames, actions[..., None]], axis=-1)
        return blocks.reshape(blocks.shape[0], -1), games[:, 0], valid

    # ---- the loss -----------------------------------------------------------------------

    def loss(self, params: Params, state: JOWAState, batch: Batch) -> tuple[jax.Array, Metrics]:
        """The world-model loss alone before `world_model_steps` updates, then the joint loss
        (module docstring), on a (B, L, ...) segment batch."""
        tokens, games, valid = self.sequence(state, batch)
        num_blocks = batch.rewards.shape[1]
        per_block = tokens.shape[1] // num_blocks
        h = self._call(state, params, "hidden", tokens, games)  # (B, L·(T+1), W)
        step_valid = self.steps_valid(batch)  # (B, L)
        # imagined sequences (the last `imagine_batch` rows) train Q only
        real = jnp.arange(tokens.shape[0])[:, None] < tokens.shape[0] - self.imagine_batch

        world, world_metrics = self.world_model_loss(
            state, params, h, tokens, batch, step_valid & real
        )

        frame_end = h.reshape(h.shape[0], num_blocks, per_block, -1)[:, :, -2]  # (B, L, W)
        q_input = frame_end if self.joint else jax.lax.stop_gradient(frame_end)
        outputs = self._call(state, params, "q", q_input)  # (M, B, L, A, D)
        if self.behaviour_cloning:
            values = self.critic.value(outputs)  # (M, B, L, A): the policy's logits
            control, control_metrics = masked_bc_loss(values, valid, batch.actions, step_valid)
        else:
            control, control_metrics = self.q_loss(
                state, params, frame_end, outputs, valid, batch, step_valid
            )

        joint_stage = jnp.asarray(state.model.step) >= self.world_model_steps
        total = jnp.where(joint_stage, self.supervised_weight * world + control, world)
        return total, {
            "world_loss": world,
            "joint_stage": joint_stage.astype(jnp.float32),
            **world_metrics,
            **control_metrics,
        }

    def q_loss(
        self,
        state: JOWAState,
        params: Params,
        frame_end: jax.Array,
        outputs: jax.Array,
        valid: jax.Array,
        batch: Batch,
        step_valid: jax.Array,
    ) -> tuple[jax.Array, Metrics]:
        """The TD loss from the next blocks plus `cql_alpha` times CQL's gap, both summed over
        the ensemble's members, from the hidden states at each block's last frame token
        (B, L, W) and the Q head's outputs there (M, B, L, A, D)."""
        next_h = jax.lax.stop_gradient(frame_end[:, 1:])
        target = self.td_target(state, params, next_h, valid[:, 1:], batch)
        td, q_metrics = self.td_loss(outputs[:, :, :-1], batch, target, step_valid)
        gap = masked_cql_gap(self.critic.value(outputs), valid, batch.actions)  # (M, B, L)
        cql = _masked_mean(gap, step_valid).sum()
        return td + self.cql_alpha * cql, {
            "td_loss": td,
            "cql_gap": cql / self.q_members,
            **q_metrics,
        }

    def steps_valid(self, batch: Batch) -> jax.Array:
        """(B, L): the segment's steps inside its first episode (`Batch.valid`, all when absent)."""
        if batch.valid is None:
            return jnp.ones(batch.rewards.shape, bool)
        return batch.valid > 0

    def world_model_loss(
        self, state: JOWAState, params: Params, h: jax.Array, tokens: jax.Array, batch, step_valid
    ) -> tuple[jax.Array, Metrics]:
        """Cross-entropy of the next frame token (at positions followed by a frame token of a
        valid step), of the reward's sign and of termination (at valid steps' action tokens)."""
        frame_logits, reward_logits, done_logits = self._call(state, params, "world", h)
        b, length = tokens.shape
        num_blocks = batch.rewards.shape[1]
        per_block = length // num_blocks
        is_frame = (jnp.arange(length) % per_block) < per_block - 1
        block_valid = jnp.repeat(step_valid, per_block, axis=1)  # (B, T)
        next_is_frame = is_frame[1:] & block_valid[:, 1:]  # predict token p+1 from p
        target = jnp.clip(tokens[:, 1:], 0, self.vocab_size - 1)
        frame_ce = optax.softmax_cross_entropy_with_integer_labels(frame_logits[:, :-1], target)
        frame = _masked_mean(frame_ce, next_is_frame)
        at_action = (
            reward_logits.reshape(b, num_blocks, per_block, 3)[:, :, -1],
            done_logits.reshape(b, num_blocks, per_block, 2)[:, :, -1],
        )
        sign = (jnp.sign(batch.rewards) + 1).astype(jnp.int32)
        terminal = (batch.masks == 0).astype(jnp.int32)
        reward = _masked_mean(
            optax.softmax_cross_entropy_with_integer_labels(at_action[0], sign), step_valid
        )
        done = _masked_mean(
            optax.softmax_cross_entropy_with_integer_labels(at_action[1], terminal), step_valid
        )
        return frame + reward + done, {"frame_ce": frame, "reward_ce": reward, "done_ce": done}

    def td_target(
        self, state: JOWAState, params: Params, next_h: jax.Array, next_valid, batch: Batch
    ) -> jax.Array:
        """The Double-DQN target from the next block's hidden states (`double_dqn_target`)."""
        online = self._call(state, params, "q", next_h)  # (M, B, L-1, A, D)
        target_params = {**params, "q_head": state.target_q}
        next_out = self._call(state, target_params, "q", next_h)
        rewards, discounts = batch.rewards[:, :-1], self.discount * batch.masks[:, :-1]
        return double_dqn_target(self.critic, online, next_out, next_valid, rewards, discounts)

    def td_loss(
        self, outputs: jax.Array, batch: Batch, target: jax.Array, step_valid: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """The head's loss at the data's actions of blocks 0..L−2, summed over members; a block
        counts when it is valid and its episode did not end by a time limit there (the next
        block then belongs to another episode)."""
        actions = batch.actions[:, :-1].astype(jnp.int32)
        at_data = jnp.take_along_axis(outputs, actions[None, ..., None, None], axis=-2)[..., 0, :]
        if self.critic.distributional:
            loss = self.critic.backup_loss(at_data, target)
        else:
            loss = self.critic.loss(at_data, target)
        timeout = (batch.dones[:, :-1] > 0) & (batch.masks[:, :-1] > 0)
        weight = step_valid[:, :-1] & ~timeout
        td = _masked_mean(loss, weight).sum()
        return td, {"q_mean": _masked_mean(self.critic.value(at_data).mean(0), weight)}

    # ---- updates and acting -------------------------------------------------------------

    def update(self, state: JOWAState, batch: Batch, key: jax.Array) -> tuple[JOWAState, Metrics]:
        if self.imagine_batch:
            batch = self.with_imagined(state, batch, key)
        model, metrics = grad_step(state.model, lambda p: self.loss(p, state, batch))
        target_q = periodic_copy(
            model.params["q_head"], state.target_q, model.step, self.target_update_every
        )
        return JOWAState(model=model, target_q=target_q), prefix("model", metrics)

    def with_imagined(self, state: JOWAState, batch: Batch, key: jax.Array) -> Batch:
        """The batch with its last `imagine_batch` sequences replaced by rollouts in the model:
        each keeps its first frame and continues it `context` − 1 steps by ε-greedy in Q,
        with the model's sampled frames, expected reward signs and terminations (JOWA's data
        synthesis, `Decoder.rollout`)."""
        rows = slice(batch.rewards.shape[0] - self.imagine_batch, None)
        frames, games, valid = split_observation(
            batch.observations[rows, 0], self.num_actions(state)
        )
        dream = Decoder.of(self, state).rollout(frames, games, valid, self.imagine_epsilon, key)
        first = batch.observations[rows, :1, frames.shape[-1] :]  # game index, valid actions
        extra = jnp.broadcast_to(first, (*dream.frames.shape[:2], first.shape[-1]))
        observations = jnp.concatenate([dream.frames.astype(extra.dtype), extra], axis=-1)
        ends = dream.dones.astype(batch.dones.dtype)
        imagined = dataclasses.replace(
            batch,
            observations=observations,
            next_observations=jnp.concatenate([observations[:, 1:], observations[:, -1:]], axis=1),
            actions=dream.actions.astype(batch.actions.dtype),
            rewards=dream.rewards.astype(batch.rewards.dtype),
            masks=1 - ends,
            dones=ends,
            valid=dream.alive.astype(batch.valid.dtype),
        )

        def join(real, dreamt):
            return jnp.concatenate([real[: rows.start], dreamt])

        return jax.tree.map(join, batch, imagined)

    def warm_start(self, state: JOWAState, pretrained: JOWAState) -> JOWAState:
        """The pre-trained network and target head with a fresh optimiser and step count
        (JOWA's fine-tuning starts its own schedule)."""
        model = state.model.replace(params=pretrained.model.params)
        return JOWAState(model=model, target_q=pretrained.target_q)

    def without_planning(self) -> JOWA:
        return dataclasses.replace(self, plan_depth=0)

    def frame_values(self, state: JOWAState, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Every member's Q-values (members, B, A) from the current frame of observations
        (B, D) alone, and the valid actions (B, A)."""
        frames, games, valid = split_observation(obs, self.num_actions(state))
        h = self._call(state, state.model.params, "hidden", frames, games)[:, -1]
        return self.critic.value(self._call(state, state.model.params, "q", h)), valid

    def act(
        self, state: JOWAState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        del key, deterministic
        if self.plan_depth == 0:
            values, valid = self.frame_values(state, obs)
            return jnp.argmax(jnp.where(valid, values.mean(axis=0), INVALID), axis=-1)
        return plan(self, state, *split_observation(obs, self.num_actions(state)))

    def q_values(self, state: JOWAState, obs: jax.Array, actions: jax.Array) -> jax.Array:
        """Q(s, a) of every member (members, B) from the current frame alone."""
        values, _ = self.frame_values(state, obs)
        return jnp.take_along_axis(values, actions.astype(jnp.int32)[None, :, None], -1)[..., 0]


def double_dqn_target(
    critic: CriticHead,
    online: jax.Array,
    target: jax.Array,
    valid: jax.Array,
    rewards: jax.Array,
    discounts: jax.Array,
) -> jax.Array:
    """Stop-gradient Double-DQN targets per member over valid actions only: the next action
    maximises the online heads' ensemble-mean value among `valid` (..., A), and each target
    member's outputs (M, ..., A, D) at it are backed up (a distributional head's projected
    distribution, else the scalar r + γ·m·Q)."""
    values = jnp.where(valid, critic.value(online).mean(axis=0), INVALID)
    best = jnp.argmax(values, axis=-1)
    chosen = jnp.take_along_axis(target, best[None, ..., None, None], axis=-2)[..., 0, :]
    if critic.distributional:
        backed_up = critic.backup(chosen, rewards, discounts)
    else:
        backed_up = rewards + discounts * critic.value(chosen)
    return jax.lax.stop_gradient(backed_up)


def masked_cql_gap(values: jax.Array, valid: jax.Array, actions: jax.Array) -> jax.Array:
    """CQL's gap log Σ_{valid a} exp Q(s, a) − Q(s, a_data) (Kumar et al. 2020, Eq. 4) from
    values (..., A), the valid actions (..., A) and the data's actions (...)."""
    return discrete_cql_gap(jnp.where(valid, values, INVALID), actions.astype(jnp.int32))


def masked_bc_loss(
    logits: jax.Array, valid: jax.Array, actions: jax.Array, step_valid: jax.Array
) -> tuple[jax.Array, Metrics]:
    """Multi-task BC: the cross-entropy of the data's actions (B, L) under softmax policies over
    the valid actions (B, L, A) of each member's logits (M, B, L, A), averaged over valid steps
    and summed over members; with the ensemble-mean policy's accuracy."""
    logits = jnp.where(valid, logits, INVALID)
    actions = actions.astype(jnp.int32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, actions[None])  # (M, B, L)
    hit = (jnp.argmax(logits.mean(axis=0), axis=-1) == actions).astype(jnp.float32)
    loss = _masked_mean(ce, step_valid).sum()
    return loss, {"bc_loss": loss / logits.shape[0], "bc_accuracy": _masked_mean(hit, step_valid)}


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `x` over its trailing axes where `mask` (broadcast to them) holds."""
    mask = jnp.broadcast_to(mask, x.shape[-mask.ndim :]).astype(x.dtype)
    axes = tuple(range(x.ndim - mask.ndim, x.ndim))
    return (x * mask).sum(axis=axes) / jnp.maximum(mask.sum(), 1.0)

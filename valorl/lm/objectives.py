"""What one training step of each language-model stage does, as pure functions of arrays.

Every stage's step takes the seed's train state, the task's arrays (on the device, shared by all
seeds) and a key, and returns the new state and its metrics; `valorl/lm/train.py` scans it over
many steps and vmaps it over seeds, as the rest of valorl does with agents.

- `NextToken`: maximum likelihood of demonstrations, the whole text (pre-training) or the answer
  only (SFT, the unified estimator with SFT's settings).
- `PolicyGradient`: n rollouts per prompt scored by the verifier, then gradient steps of a
  unified policy-gradient estimator (Lv et al. 2025, "Towards a Unified View of Large Language
  Model Post-Training", the UPGE); with `hpt_gate` each prompt's group either trains by RL or is
  replaced by SFT on its demonstration, as HPT's Algorithm 1 and its released switch.
- `ValueLearning`: a value model of a frozen policy's samples, by TD(λ) with γ = 1 (VAS, Han et
  al. 2024, Sec. 4.1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from valorl.errors import ValorlError
from valorl.lm import policy_gradient as pg
from valorl.lm.model import DecoderLM, forward, token_logprobs
from valorl.lm.sampling import generate
from valorl.lm.tokenizer import PAD
from valorl.lm.value_targets import td_lambda_targets, value_loss


class TaskArrays(flax.struct.PyTreeNode):
    """A problem set on the device: left-padded prompts (N, P) and right-padded targets
    (N, A): the answer, EOS, then PAD. A demonstration is their concatenation."""

    prompts: jax.Array
    targets: jax.Array

    @property
    def demonstrations(self) -> jax.Array:
        return jnp.concatenate([self.prompts, self.targets], axis=1)


def exact_match(tokens: jax.Array, targets: jax.Array) -> jax.Array:
    """The verifier inside the compiled step: 1 where a completion (PAD after its EOS) equals
    the answer and its EOS token for token. Equal to `tasks.rewards` (the string verifier) on
    the same completions, since both compare with the answer the task computes (tested)."""
    return jnp.all(tokens == targets, axis=-1).astype(jnp.float32)


class Rollouts(flax.struct.PyTreeNode):
    """`rollouts` samples of each of `prompts` training prompts, with the verifier's reward."""

    rows: jax.Array  # (G,) the prompts' rows in the task's arrays
    sequences: jax.Array  # (G·n, P + A) prompt then completion; a prompt's samples adjacent
    mask: jax.Array  # (G·n, A) the completion's valid tokens
    reward: jax.Array  # (G·n,) 1 for an exact answer


def sample_rollouts(
    policy: DecoderLM, params, data: TaskArrays, key, prompts: int, rollouts: int, temperature
) -> Rollouts:
    key_rows, key_sample = jax.random.split(key)
    rows = jax.random.randint(key_rows, (prompts,), 0, data.prompts.shape[0])
    prompt_tokens = jnp.repeat(data.prompts[rows], rollouts, axis=0)
    targets = jnp.repeat(data.targets[rows], rollouts, axis=0)
    sampled = generate(policy, params, prompt_tokens, key_sample, targets.shape[1], temperature)
    sequences = jnp.concatenate([prompt_tokens, sampled.tokens], axis=1)
    return Rollouts(rows, sequences, sampled.mask, exact_match(sampled.tokens, targets))


def _completion_logprobs(model: DecoderLM, params: Any, sequences: jax.Array, prompt_length):
    """log π of every completion token of (prompt | completion) rows: (B, A)."""
    return token_logprobs(model, params, sequences)[:, prompt_length - 1 :]


def _answer_mask(demonstrations: jax.Array, prompt_length: int) -> jax.Array:
    """(B, T − 1) float: which next-token targets of (prompt | answer, EOS) rows are the
    answer's tokens and its EOS, aligned with `token_logprobs`."""
    targets = demonstrations[:, 1:]
    answer = jnp.arange(targets.shape[1]) >= prompt_length - 1
    return ((targets != PAD) & answer).astype(jnp.float32)


def _apply(state: TrainState, loss_fn) -> tuple[TrainState, dict[str, jax.Array]]:
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics["train/grad_norm"] = optax.tree.norm(grads)
    return state.apply_gradients(grads=grads), metrics


@dataclasses.dataclass(frozen=True)
class NextToken:
    """Maximum likelihood on `batch` demonstrations a step: every token after the first
    (`answer_only` False: pre-training a base model) or the answer and its EOS only (SFT)."""

    answer_only: bool
    batch: int = 64

    def step(self, model: DecoderLM, state: TrainState, data: TaskArrays, frozen, key):
        rows = jax.random.randint(key, (self.batch,), 0, data.prompts.shape[0])
        sequences = data.demonstrations[rows]
        if self.answer_only:
            mask = _answer_mask(sequences, data.prompts.shape[1])
        else:  # every real token predicted from a real one
            mask = ((sequences[:, 1:] != PAD) & (sequences[:, :-1] != PAD)).astype(jnp.float32)

        def loss_fn(params):  # the estimator with SFT's settings, with a readable value
            loss = pg.sft_loss(token_logprobs(model, params, sequences), mask)
            return loss, {"train/nll": loss}

        state, metrics = _apply(state, loss_fn)
        metrics["train/tokens"] = mask.sum()
        return state, metrics


@dataclasses.dataclass(frozen=True)
class PolicyGradient:
    """`prompts` prompts a step, `rollouts` samples each at `temperature`, rewarded by exact
    match; `epochs` gradient steps of `estimator` on them (π_old: the parameters that sampled).

    With `hpt_gate` set (Hybrid Post-Training, Lv et al. 2025, Alg. 1): a prompt with at most
    `hpt_gate` correct rollouts trains by SFT on its demonstration (weight `sft_weight`), the
    others by RL on their rollouts (`hpt_mode` "switch", the released code's rule; "soft" mixes
    both by the table in `policy_gradient.hpt_coefficients`)."""

    estimator: pg.Estimator = pg.GRPO
    prompts: int = 32
    rollouts: int = 8
    temperature: float = 1.0
    epochs: int = 1
    hpt_gate: int | None = None
    hpt_mode: str = "switch"
    sft_weight: float = 1.0

    def __post_init__(self):
        if self.rollouts < 2 and self.estimator.advantage.startswith("group"):
            raise ValorlError("group advantages need at least 2 rollouts per prompt")
        if self.hpt_gate is not None and not 0 <= self.hpt_gate <= self.rollouts:
            raise ValorlError(f"the HPT gate {self.hpt_gate} is not in [0, {self.rollouts}]")

    def step(self, model: DecoderLM, state: TrainState, data: TaskArrays, frozen, key):
        groups, n = self.prompts, self.rollouts
        prompt_length = data.prompts.shape[1]
        batch = sample_rollouts(model, state.params, data, key, groups, n, self.temperature)
        sequences, rewards, rows = batch.sequences, batch.reward, batch.rows
        logp_old = _completion_logprobs(model, state.params, sequences, prompt_length)
        advantages = pg.advantages(self.estimator, rewards.reshape(groups, n)).reshape(-1)
        correct = rewards.reshape(groups, n).sum(axis=1)
        if self.hpt_gate is None:
            rl_weight, sft_weight = jnp.ones(groups), jnp.zeros(groups)
        else:
            rl_weight, sft_weight = pg.hpt_coefficients(correct, n, self.hpt_gate, self.hpt_mode)
        rl_mask = batch.mask * jnp.repeat(rl_weight, n)[:, None]
        demonstrations = data.demonstrations[rows]
        sft_mask = _answer_mask(demonstrations, prompt_length) * sft_weight[:, None]

        def loss_fn(params):
            logp = _completion_logprobs(model, params, sequences, prompt_length)
            loss, metrics = pg.surrogate_loss(self.estimator, logp, logp_old, advantages, rl_mask)
            if self.hpt_gate is not None:
                demo_logp = token_logprobs(model, params, demonstrations)
                sft = pg.sft_loss(demo_logp, sft_mask)
                loss = loss + self.sft_weight * sft
                metrics = metrics | {"hpt/sft_loss": sft}
            return loss, metrics

        metrics = {}
        for _ in range(self.epochs):
            state, metrics = _apply(state, loss_fn)
        metrics |= {
            "train/reward": rewards.mean(),
            "train/tokens": batch.mask.sum(),
            "train/answer_length": batch.mask.sum(axis=1).mean(),
        }
        if self.hpt_gate is not None:
            metrics["hpt/sft_fraction"] = (sft_weight > 0).mean()
        return state, metrics


@dataclasses.dataclass(frozen=True)
class ValueLearning:
    """V(prefix) of the frozen policy `frozen` (its params, one per seed; the value model has
    its architecture with a scalar head): `prompts` × `rollouts` samples a step, rewarded by
    exact match; targets are TD(λ) returns with γ = 1 for the states before each token, and the
    reward itself for the state after the last token (the value of a complete answer is its
    reward, which makes V a learned verifier for best-of-N)."""

    prompts: int = 32
    rollouts: int = 4
    lam: float = 0.95
    temperature: float = 1.0
    epochs: int = 2

    def step(self, model: DecoderLM, state: TrainState, data: TaskArrays, frozen, key):
        policy = model.clone(outputs=None)
        batch = sample_rollouts(
            policy, frozen, data, key, self.prompts, self.rollouts, self.temperature
        )
        reward, sequences = batch.reward, batch.sequences
        prompt_length = data.prompts.shape[1]

        def values_of(params):  # V(s_0) at the prompt's last column, V(s_t) at token t's
            return forward(model, params, sequences)[:, prompt_length - 1 :, 0]

        values = values_of(state.params)
        targets_all, state_mask = value_targets(values, reward, batch.mask, self.lam)

        def loss_fn(params):
            loss = value_loss(values_of(params), targets_all, state_mask)
            return loss, {"value/loss": loss}

        metrics = {}
        for _ in range(self.epochs):
            state, metrics = _apply(state, loss_fn)
        final = jnp.sum(values * (state_mask - jnp.pad(batch.mask, ((0, 0), (0, 1)))), axis=1)
        return state, metrics | {
            "train/reward": reward.mean(),
            "train/tokens": batch.mask.sum(),
            "value/verifier_accuracy": jnp.mean((final > 0.5) == (reward > 0.5)),
            "value/prompt_value": values[:, 0].mean(),
        }


def value_targets(
    values: jax.Array, reward: jax.Array, mask: jax.Array, lam: float
) -> tuple[jax.Array, jax.Array]:
    """Targets and mask for the states s_0..s_A of completions of A columns: `values` (B, A + 1)
    V(s_t), `reward` (B,) the verifier's, `mask` (B, A) the valid tokens (L of them).

    s_t for t < L: the TD(λ) return with γ = 1 and the reward after the last token
    (`value_targets.td_lambda_targets`); s_L, the complete answer: the reward itself; later
    states are masked. Both agree on s_{L−1}, whose λ-return is the reward."""
    length = mask.sum(axis=1).astype(jnp.int32)
    last_token = jax.nn.one_hot(length - 1, mask.shape[1])
    after_last = jax.nn.one_hot(length, mask.shape[1] + 1)
    td = td_lambda_targets(values[:, :-1], reward[:, None] * last_token, mask, 1.0, lam)
    targets = jnp.where(after_last > 0, reward[:, None], jnp.pad(td, ((0, 0), (0, 1))))
    return targets, jnp.pad(mask, ((0, 0), (0, 1))) + after_last

"""SFT, REINFORCE, PPO and GRPO as one gradient estimator with four swappable parts.

Lv et al. 2025 ("Towards a Unified View of Large Language Model Post-Training",
arXiv:2509.04419) write the gradient of every common post-training method as the Unified
Policy Gradient Estimator (UPGE)

    grad_uni = 1_stable · (1 / π_ref) · Â · ∇π_θ

and tell the methods apart only by the parts: the stabilisation mask 1_stable (PPO's clip,
GSPO's sequence clip, or none), the reference-policy denominator π_ref (π_θ itself for SFT and
REINFORCE, the rollout policy π_old for PPO and GRPO, 1 for the off-policy LUFFY and SRFT),
the advantage estimate Â (1 for SFT, the reward, the group-relative reward of GRPO) and the
likelihood gradient ∇π_θ. Building the estimator from those parts, rather than one loss per
method, makes a comparison between methods a change of one field, and lets Hybrid
Post-Training (HPT, their Algorithm 1) mix an SFT and an RL loss per prompt with the weights
of `hpt_coefficients`.

Everything is per token of a completion, as in the released code: π is the probability of
one token given its prefix, and a sequence-level advantage is shared by all its tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from valorl.errors import ValorlError

MaskName = Literal["none", "clip", "sequence-clip"]
DenominatorName = Literal["current", "old", "one"]
AdvantageName = Literal["constant", "reward", "group", "group-std"]
AggregationName = Literal["token-mean", "sequence-sum"]

MASKS = ("none", "clip", "sequence-clip")
DENOMINATORS = ("current", "old", "one")
ADVANTAGES = ("constant", "reward", "group", "group-std")
AGGREGATIONS = ("token-mean", "sequence-sum")
HPT_MODES = ("switch", "soft")

GROUP_STD_EPS = 1e-6
"""Added to the group's standard deviation in "group-std", as in the released code (verl's
GRPO advantage); a group whose rewards are all equal gets advantages 0, not NaN."""


def _check(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValorlError(f"unknown {kind} {value!r}; choose one of {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class Estimator:
    """The four parts of the UPGE, plus how token losses are averaged. Hashable: pass it to
    `jax.jit` as a static argument."""

    mask: MaskName
    """Stabilisation mask 1_stable: "none"; "clip", PPO's per-token clip (a token whose ratio
    π_θ/π_old has left [1 − ε, 1 + ε] in the direction its advantage pushes gets no gradient);
    "sequence-clip", GSPO's (Zheng et al. 2025, arXiv:2507.18071) test on the sequence's
    geometric-mean ratio, which masks the whole sequence."""
    denominator: DenominatorName
    """π_ref: "current" (π_θ under stop-gradient, so the gradient is ∇log π_θ: SFT,
    REINFORCE), "old" (the rollout policy: the importance ratio of PPO and GRPO), "one" (no
    denominator, the gradient ∇π_θ of the off-policy LUFFY and SRFT)."""
    advantage: AdvantageName
    """Â from the rewards of a group of rollouts (`advantages`): "constant" (1, SFT),
    "reward" (REINFORCE), "group" (reward minus its group's mean, the released HPT's
    `grpo_use_std=False`), "group-std" (GRPO's, further divided by the group's std)."""
    clip_epsilon: float = 0.2
    """ε of both clips. PPO and GRPO use 0.2; GSPO's sequence ratios need about 3e-4."""
    aggregation: AggregationName = "token-mean"
    """"token-mean": sum over the batch's valid tokens / their number (verl's default).
    "sequence-sum": each sequence's sum over tokens / the padded length T, then the mean over
    sequences (the released HPT's `loss_remove_token_mean=True`, a constant normaliser in the
    spirit of Dr. GRPO, Liu et al. 2025, arXiv:2503.20783)."""

    def __post_init__(self) -> None:
        _check("stabilisation mask", self.mask, MASKS)
        _check("reference-policy denominator", self.denominator, DENOMINATORS)
        _check("advantage estimate", self.advantage, ADVANTAGES)
        _check("loss aggregation", self.aggregation, AGGREGATIONS)
        if not 0 < self.clip_epsilon < 1:
            raise ValorlError(f"clip_epsilon must be in (0, 1), got {self.clip_epsilon}")


SFT = Estimator(mask="none", denominator="current", advantage="constant")
"""Supervised fine-tuning on demonstrations: ∇log π_θ of every token (UPGE table: π_ref = π_θ,
Â = 1). Its surrogate has the gradient of the mean negative log-likelihood."""
REINFORCE = Estimator(mask="none", denominator="current", advantage="reward")
"""REINFORCE (Williams 1992; Ahmadian et al. 2024 in the UPGE table): r · ∇log π_θ on
on-policy samples, no baseline."""
PPO = Estimator(mask="clip", denominator="old", advantage="reward")
"""PPO's clipped surrogate (Schulman et al. 2017, Eq. 7) with the sequence reward as the
advantage. The paper's PPO uses GAE from a learned critic: pass those per-token advantages to
`surrogate_loss` directly."""
GRPO = Estimator(mask="clip", denominator="old", advantage="group-std")
"""GRPO (Shao et al. 2024, arXiv:2402.03300, outcome supervision): PPO's clip with the
group-normalised reward (r − mean) / std as every token's advantage; no KL term."""
HPT_RL = Estimator(mask="none", denominator="old", advantage="group", aggregation="sequence-sum")
"""The RL half of HPT as released (exp_scripts/train.sh of TsinghuaC3I/Unify-Post-Training):
`grpo_use_std=False` (r − group mean), `loss_remove_clip=True` (importance ratio, no clip)
and `loss_remove_token_mean=True` (sum over tokens / T)."""

ESTIMATORS: dict[str, Estimator] = {
    "sft": SFT,
    "reinforce": REINFORCE,
    "ppo": PPO,
    "grpo": GRPO,
    "hpt-rl": HPT_RL,
}
"""The named settings, for the command line."""


def advantages(estimator: Estimator, rewards: jax.Array) -> jax.Array:
    """Â per rollout from `rewards` (G, n): n rollouts of each of G prompts -> (G, n).

    "group-std" is GRPO's (r − mean) / (std + 1e-6) (Shao et al. 2024, Sec. 4.1.2) with the
    unbiased (n − 1) std, as the released code computes it with torch.std. A group of one
    rollout has no baseline: as in the released code, its mean is taken as 0 and its std as
    1, so "group" and "group-std" both return the reward itself.
    """
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 2:
        raise ValorlError(f"rewards must be (groups, n), got shape {rewards.shape}")
    rewards = rewards.astype(jnp.result_type(rewards.dtype, jnp.float32))
    if estimator.advantage == "constant":
        return jnp.ones_like(rewards)
    if estimator.advantage == "reward" or rewards.shape[1] == 1:
        return rewards
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    if estimator.advantage == "group":
        return centred
    return centred / (rewards.std(axis=1, ddof=1, keepdims=True) + GROUP_STD_EPS)


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _outside_clip(ratio: jax.Array, adv: jax.Array, epsilon: float) -> jax.Array:
    """Where PPO's min(ratio·Â, clip(ratio, 1 − ε, 1 + ε)·Â) takes the clipped, constant
    branch: the ratio has already moved past the clip in the direction Â pushes it."""
    return ((ratio > 1 + epsilon) & (adv > 0)) | ((ratio < 1 - epsilon) & (adv < 0))


def surrogate_loss(
    estimator: Estimator,
    logp: jax.Array,
    logp_old: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A loss whose gradient is −grad_uni of the UPGE (Lv et al. 2025): per token
    −1_stable · Â · π_θ / stopgrad(π_ref), computed as −1_stable · Â · exp(log π_θ −
    stopgrad(log π_ref)) with log π_ref = log π_θ ("current"), log π_old ("old") or 0 ("one").

    `logp` (B, T) are log π_θ of the completion tokens (differentiable), `logp_old` (B, T)
    those of the rollout policy (None: on-policy, π_old = π_θ), `advantages` (B,) one per
    sequence or (B, T) per token, `mask` (B, T) 1 on valid completion tokens. Returns
    (loss, metrics). The loss value of "current" is −Â per token whatever the policy; watch
    "pg/nll" (mean −log π_θ over valid tokens) instead.
    """
    if logp.ndim != 2 or mask.shape != logp.shape:
        raise ValorlError(f"logp and mask must both be (B, T), got {logp.shape} and {mask.shape}")
    if logp_old is None:
        logp_old = jax.lax.stop_gradient(logp)
    elif logp_old.shape != logp.shape:
        raise ValorlError(f"logp_old has shape {logp_old.shape}, logp has {logp.shape}")
    if advantages.shape == logp.shape[:1]:
        adv = advantages[:, None]
    elif advantages.shape == logp.shape and estimator.mask != "sequence-clip":
        adv = advantages
    else:
        raise ValorlError(
            f"advantages must be (B,) = {logp.shape[:1]}"
            + ("" if estimator.mask == "sequence-clip" else f" or (B, T) = {logp.shape}")
            + f", got {advantages.shape}"
        )
    # padding may hold any log-probability, −inf included: set it to 0 so that no NaN can leak
    valid = mask.astype(bool)
    mask = mask.astype(logp.dtype)
    logp = jnp.where(valid, logp, 0.0)
    logp_old = jax.lax.stop_gradient(jnp.where(valid, logp_old, 0.0))
    adv = jax.lax.stop_gradient(adv.astype(logp.dtype))

    log_ratio = jax.lax.stop_gradient(logp) - logp_old
    ratio = jnp.exp(log_ratio)
    if estimator.mask == "clip":
        stable = ~_outside_clip(ratio, adv, estimator.clip_epsilon)
    elif estimator.mask == "sequence-clip":
        # GSPO's ratio: the geometric mean of the token ratios over the sequence's valid tokens
        mean_log_ratio = jnp.sum(log_ratio * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1.0)
        stable = ~_outside_clip(jnp.exp(mean_log_ratio)[:, None], adv, estimator.clip_epsilon)
        stable = jnp.broadcast_to(stable, logp.shape)
    else:
        stable = jnp.ones(logp.shape, bool)
    stable = stable.astype(logp.dtype)

    if estimator.denominator == "current":
        log_ref = jax.lax.stop_gradient(logp)
    elif estimator.denominator == "old":
        log_ref = logp_old
    else:
        log_ref = jnp.zeros_like(logp)
    token_loss = -stable * adv * jnp.exp(logp - log_ref)

    if estimator.aggregation == "token-mean":
        loss = _masked_mean(token_loss, mask)
    else:
        loss = jnp.mean(jnp.sum(token_loss * mask, 1) / logp.shape[1])
    metrics = {
        "pg/clipped_fraction": _masked_mean(1.0 - stable, mask),
        "pg/ratio_mean": _masked_mean(ratio, mask),
        "pg/approx_kl": _masked_mean(-log_ratio, mask),
        "pg/nll": _masked_mean(-jax.lax.stop_gradient(logp), mask),
    }
    return loss, metrics


def sft_loss(logp: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of the valid demonstration tokens: the gradient of
    `surrogate_loss(SFT, ...)` with a meaningful value. Always a token mean, as the released
    code's SFT loss is, whatever the RL loss's aggregation."""
    if mask.shape != logp.shape:
        raise ValorlError(f"logp and mask shapes differ: {logp.shape} and {mask.shape}")
    return _masked_mean(-jnp.where(mask.astype(bool), logp, 0.0), mask.astype(logp.dtype))


# The released soft mode's default table (soft_type 0), hpt/verl/verl/mix_src/mix_trainer.py
# of TsinghuaC3I/Unify-Post-Training: (RL weight, SFT weight) by the number of correct answers
# in a group of 8 made of 7 rollouts and the demonstration (so at least 1). Its third column,
# the weight of off-policy RL on the demonstration, is left out.
_SOFT_TABLE = (
    (1.0, 1.0),  # 0 correct: cannot happen, the demonstration is correct
    (0.0, 1.0),
    (0.125, 0.5),
    (0.25, 0.25),
    (0.5, 0.125),
    (1.0, 0.0),
    (1.0, 0.0),
    (1.0, 0.0),
    (1.0, 0.0),
)
_SOFT_ROLLOUTS = 7


def hpt_coefficients(
    correct: jax.Array, n: int, gate: int, mode: str = "switch"
) -> tuple[jax.Array, jax.Array]:
    """HPT's per-prompt weights α = f(P), β = g(P) of L = α·L_RL + β·L_SFT (Lv et al. 2025,
    Algorithm 1), from `correct` (G,), the number of a prompt's n rollouts the verifier
    accepted. Returns (rl_weight, sft_weight), each (G,).

    "switch" (the paper's HPT and the released `unify_strategy=switch`): SFT on the
    demonstration alone when correct ≤ gate, RL on the rollouts alone otherwise. The released
    scripts use gate 0 (Qwen) and 2 (LLaMA); their `switch_gate_off` band, off-policy RL on
    the demonstration, is empty there and is left out.

    "soft": the released code's soft table (soft_type 0 in mix_trainer.py). As the success
    count rises the RL weight doubles and the SFT weight halves, from pure SFT when no
    rollout is correct to pure RL from 4 of 7 correct rollouts up: correct 0, 1, 2, 3, ≥ 4
    gives RL 0, 1/8, 1/4, 1/2, 1 and SFT 1, 1/2, 1/4, 1/8, 0. The table counts successes
    among 7 rollouts; other n are mapped by the success rate to ⌊7·correct/n + 1/2⌋ of 7.
    The released trainer writes these weights into the batch but its actor never reads them,
    so its soft runs train with constant weights; this is the table as written. `gate` is
    not used.
    """
    _check("HPT mode", mode, HPT_MODES)
    if n < 1:
        raise ValorlError(f"n (rollouts per prompt) must be at least 1, got {n}")
    correct = jnp.asarray(correct)
    if mode == "switch":
        sft = (correct <= gate).astype(jnp.float32)
        return 1.0 - sft, sft
    correct = correct.astype(jnp.int32)
    of_seven = (2 * _SOFT_ROLLOUTS * correct + n) // (2 * n)  # round half up, in integers
    row = jnp.asarray(_SOFT_TABLE)[jnp.clip(of_seven + 1, 0, len(_SOFT_TABLE) - 1)]
    return row[..., 0], row[..., 1]

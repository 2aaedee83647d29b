"""Critic heads: how a Q-network's outputs represent a value and how they are trained.

A head is a frozen dataclass that knows

- `out_dim`: how many outputs the network needs;
- `value(outputs)`: the expected value, shape `outputs.shape[:-1]`;
- `loss(outputs, target)`: per-sample loss against a scalar, stop-gradient TD target;

and, for the distributional heads (C51, quantile, Gaussian), the proper distributional
backup: `backup(next_outputs, rewards, discounts)` builds a target distribution and
`backup_loss(outputs, target)` trains towards it. With a zero-width target distribution the
backup loss equals `loss`, so both paths train the same thing.

Every agent calls only these methods, so `IQL(critic=HLGauss())` changes how Q is learned
without touching IQL's code.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import erf

from valorl.errors import ValorlError


def _support_check(head, vmin: float | None, vmax: float | None) -> None:
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ValorlError(f"{head.name}: vmin ({vmin}) must be below vmax ({vmax})")


@dataclasses.dataclass(frozen=True)
class Scalar:
    """One output regressed onto the target by squared error (q − y)², as the papers do."""

    name: ClassVar[str] = "mse"
    distributional: ClassVar[bool] = False

    @property
    def out_dim(self) -> int:
        return 1

    def value(self, outputs: jax.Array) -> jax.Array:
        return outputs[..., 0]

    def output(self, value: jax.Array) -> jax.Array:
        """The one output that stands for `value` (the inverse of `value`), shape (...)."""
        return value

    def loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        return (outputs[..., 0] - target) ** 2


@dataclasses.dataclass(frozen=True)
class Huber(Scalar):
    """One output regressed with the Huber loss: quadratic near the target, linear beyond
    `huber_delta`, so heavy-tailed targets (corrupted data, as in RIQL) pull less."""

    name: ClassVar[str] = "huber"
    huber_delta: float = 1.0
    """Where the Huber loss turns from quadratic to linear."""

    def loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        return optax.huber_loss(outputs[..., 0], target, delta=self.huber_delta)


@dataclasses.dataclass(frozen=True)
class Bernoulli(Scalar):
    """A value that is a probability, as in goal reaching with a success reward and no
    discounting beyond γ: one logit, value sigmoid(logit), trained by binary cross-entropy
    against the target clipped to [0, 1] (Decoupled Q-chunking's critics, Li, Park & Levine
    2025, Sec. 5; Eysenbach et al. 2021's classifier view of goal-reaching values). Rewards must
    be success indicators in [0, 1] for the target to be a probability."""

    name: ClassVar[str] = "bce"

    def value(self, outputs: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(outputs[..., 0])

    def output(self, value: jax.Array) -> jax.Array:
        """The logit of a probability, kept finite where float32 rounds it to 0 or 1."""
        p = jnp.clip(value, 1e-7, 1.0 - 1e-7)
        return jnp.log(p) - jnp.log1p(-p)

    def loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        return optax.sigmoid_binary_cross_entropy(outputs[..., 0], jnp.clip(target, 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class _Histogram:
    """Shared by classification heads: logits over fixed atoms or bins in [vmin, vmax]."""

    bins: int = 101
    """Number of bins (hl-gauss, two-hot), atoms (c51) or quantiles (quantile)."""
    vmin: float | None = None
    """Lower end of the value support; unset: fitted to the data's discounted returns."""
    vmax: float | None = None
    """Upper end of the value support; unset: fitted to the data's discounted returns."""

    @property
    def out_dim(self) -> int:
        return self.bins

    def _bounds(self) -> tuple[float, float]:
        if self.vmin is None or self.vmax is None:
            raise ValorlError(f"{self.name} needs vmin and vmax (resolve_support sets them)")
        return self.vmin, self.vmax

    def atoms(self) -> jax.Array:
        """The value each output stands for."""
        vmin, vmax = self._bounds()
        return jnp.linspace(vmin, vmax, self.bins)

    def value(self, outputs: jax.Array) -> jax.Array:
        return jnp.sum(jax.nn.softmax(outputs, axis=-1) * self.atoms(), axis=-1)

    def loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy(outputs, self.target_probs(target))

    def target_probs(self, target: jax.Array) -> jax.Array:
        """Two-hot: the mass of a scalar split between its two nearest atoms (clipped to the
        support), so that the expectation over atoms equals the clipped target exactly."""
        return _project(target[..., None], jnp.ones((*target.shape, 1)), self.atoms())


@dataclasses.dataclass(frozen=True)
class TwoHot(_Histogram):
    """Classification onto `bins` evenly spaced atoms with two-hot targets (as in MuZero and
    DreamerV3; compared in Farebrother et al. 2024, "Stop Regressing", Sec. 3)."""

    name: ClassVar[str] = "two-hot"
    distributional: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _support_check(self, self.vmin, self.vmax)


@dataclasses.dataclass(frozen=True)
class HLGauss(_Histogram):
    """Histogram loss with Gaussian smoothing (Imani & White 2018; Farebrother et al. 2024,
    "Stop Regressing", Sec. 3.1 and App. A).

    The target is the mass a Normal(y, σ²) puts in each of `bins` equal bins over [vmin, vmax],
    renormalised to the support, with σ = `sigma_ratio` × bin width (the paper recommends 0.75).
    Values are read at bin centres.
    """

    name: ClassVar[str] = "hl-gauss"
    distributional: ClassVar[bool] = False
    sigma_ratio: float = 0.75
    """σ of the Gaussian as a multiple of the bin width."""

    def __post_init__(self) -> None:
        _support_check(self, self.vmin, self.vmax)
        if self.sigma_ratio <= 0:
            raise ValorlError(f"hl-gauss: sigma_ratio must be positive, got {self.sigma_ratio}")

    def atoms(self) -> jax.Array:
        vmin, vmax = self._bounds()
        width = (vmax - vmin) / self.bins
        return jnp.linspace(vmin + width / 2, vmax - width / 2, self.bins)

    def target_probs(self, target: jax.Array) -> jax.Array:
        vmin, vmax = self._bounds()
        edges = jnp.linspace(vmin, vmax, self.bins + 1)
        sigma = self.sigma_ratio * (vmax - vmin) / self.bins
        y = jnp.clip(target, vmin, vmax)[..., None]
        cdf = 0.5 * (1.0 + erf((edges - y) / (jnp.sqrt(2.0) * sigma)))
        return (cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])


@dataclasses.dataclass(frozen=True)
class Categorical(_Histogram):
    """C51: a categorical return distribution on `bins` atoms (Bellemare, Dabney & Munos 2017).

    `backup` applies the distributional Bellman operator to the next-state distribution and
    projects it back onto the atoms (Eq. 7, vectorised as in Dopamine; Rowland et al. 2018):
    m_i = Σ_j p_j · [1 − |clip(r + γz_j) − z_i| / Δz]₊.
    """

    name: ClassVar[str] = "c51"
    distributional: ClassVar[bool] = True
    bins: int = 51

    def __post_init__(self) -> None:
        _support_check(self, self.vmin, self.vmax)

    def backup(
        self, next_outputs: jax.Array, rewards: jax.Array, discounts: jax.Array
    ) -> jax.Array:
        atoms = self.atoms()
        shifted = rewards[..., None] + discounts[..., None] * atoms
        return _project(shifted, jax.nn.softmax(next_outputs, axis=-1), atoms)

    def backup_loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy(outputs, jax.lax.stop_gradient(target))


@dataclasses.dataclass(frozen=True)
class Quantile:
    """Quantile regression of the return distribution (QR-DQN, Dabney et al. 2018).

    Output i estimates the τ̂_i = (2i + 1) / 2N quantile and is trained with the quantile Huber
    loss ρ^κ_τ(u) = |τ − 1(u < 0)| · L_κ(u) / κ, u = target − estimate (Eq. 10); the value is
    the mean of the quantiles. `backup` gives the N target samples r + γ·θ'_j.
    """

    name: ClassVar[str] = "quantile"
    distributional: ClassVar[bool] = True
    bins: int = 32
    """Number of bins (hl-gauss, two-hot), atoms (c51) or quantiles (quantile)."""
    huber_delta: float = 1.0
    """κ of the quantile Huber loss."""

    @property
    def out_dim(self) -> int:
        return self.bins

    def taus(self) -> jax.Array:
        return (jnp.arange(self.bins) + 0.5) / self.bins

    def value(self, outputs: jax.Array) -> jax.Array:
        return outputs.mean(axis=-1)

    def loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        return self.backup_loss(outputs, target[..., None])

    def backup(
        self, next_outputs: jax.Array, rewards: jax.Array, discounts: jax.Array
    ) -> jax.Array:
        return rewards[..., None] + discounts[..., None] * next_outputs

    def backup_loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        """Σ_i mean_j ρ^κ_{τ_i}(y_j − θ_i): every estimate against every target sample."""
        u = jax.lax.stop_gradient(target)[..., None, :] - outputs[..., :, None]  # (..., N, M)
        return quantile_huber(u, self.taus()[:, None], self.huber_delta).mean(-1).sum(-1)


def quantile_huber(u: jax.Array, tau: jax.Array, kappa: float) -> jax.Array:
    """ρ^κ_τ(u) = |τ − 1(u < 0)| · L_κ(u) / κ with L_κ the Huber loss (QR-DQN, Eq. 10)."""
    huber = optax.huber_loss(u, delta=kappa)
    return jnp.abs(tau - (u < 0)) * huber / kappa


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """A Gaussian return distribution N(μ, σ²): outputs (μ, log σ), trained by negative
    log-likelihood (the return model of DSAC, Duan et al. 2021).

    `backup` gives the target N(r + γμ', (γσ')²), and `backup_loss` is the cross-entropy of the
    prediction under it, which for σ' = 0 is the NLL of the scalar target.
    """

    name: ClassVar[str] = "gaussian"
    distributional: ClassVar[bool] = True
    log_std_min: float = -5.0
    """Lower clip of the predicted log standard deviation."""
    log_std_max: float = 10.0
    """Upper clip of the predicted log standard deviation."""

    @property
    def out_dim(self) -> int:
        return 2

    def mean_log_std(self, outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return outputs[..., 0], jnp.clip(outputs[..., 1], self.log_std_min, self.log_std_max)

    def value(self, outputs: jax.Array) -> jax.Array:
        return outputs[..., 0]

    def loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        return self.backup_loss(outputs, jnp.stack([target, jnp.zeros_like(target)], -1))

    def backup(
        self, next_outputs: jax.Array, rewards: jax.Array, discounts: jax.Array
    ) -> jax.Array:
        mean, log_std = self.mean_log_std(next_outputs)
        return jnp.stack([rewards + discounts * mean, discounts * jnp.exp(log_std)], -1)

    def backup_loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        """E_{y ~ N(μ_t, σ_t²)}[−log N(y; μ, σ²)] = log σ + (σ_t² + (μ_t − μ)²) / 2σ² + ½ log 2π."""
        mean, log_std = self.mean_log_std(outputs)
        target = jax.lax.stop_gradient(target)
        sq = target[..., 1] ** 2 + (target[..., 0] - mean) ** 2
        return log_std + 0.5 * sq * jnp.exp(-2.0 * log_std) + 0.5 * jnp.log(2.0 * jnp.pi)


def _project(values: jax.Array, probs: jax.Array, atoms: jax.Array) -> jax.Array:
    """Project the distribution Σ_j probs_j·δ(values_j) onto `atoms` (evenly spaced), splitting
    each point's mass between its two neighbours: shapes (..., M), (..., M) -> (..., N)."""
    delta = atoms[1] - atoms[0]
    clipped = jnp.clip(values, atoms[0], atoms[-1])
    weights = jnp.clip(1.0 - jnp.abs(clipped[..., None, :] - atoms[:, None]) / delta, 0.0, 1.0)
    return jnp.sum(weights * probs[..., None, :], axis=-1)


CriticHead = Scalar | Huber | Bernoulli | TwoHot | HLGauss | Categorical | Quantile | Gaussian
"""Any head an agent's `critic` field accepts."""

HEADS: dict[str, CriticHead] = {
    cls.name: cls()
    for cls in (Scalar, Huber, Bernoulli, HLGauss, TwoHot, Categorical, Quantile, Gaussian)
}
"""Every head with its defaults, by the name the command line and run configs use."""


def needs_support(head: CriticHead) -> bool:
    return isinstance(head, _Histogram) and (head.vmin is None or head.vmax is None)


def resolve_support(head: CriticHead, vmin: float, vmax: float) -> CriticHead:
    """Fill whichever ends of a head's support are unset; heads without one are returned as is."""
    if not needs_support(head):
        return head
    vmin = head.vmin if head.vmin is not None else vmin
    vmax = head.vmax if head.vmax is not None else vmax
    if vmax <= vmin:
        vmax = vmin + 1.0
    return dataclasses.replace(head, vmin=float(vmin), vmax=float(vmax))


def support_from_data(
    returns: np.ndarray, rewards: np.ndarray, discount: float, margin: float = 0.1
) -> tuple[float, float]:
    """A value support that fits the data: the range of the dataset's discounted returns-to-go
    widened by `margin` of its span on each side, and never beyond what the rewards allow,
    [min(r, 0), max(r, 0)] / (1 − γ).

    The reward bounds alone are far too loose when a large reward comes once (a goal bonus
    divided by 1 − γ), which would waste almost every bin; the data's returns are tight.
    """
    low, high = float(returns.min()), float(returns.max())
    pad = margin * max(high - low, 1e-6)
    horizon = 1.0 / (1.0 - discount)
    lowest = min(float(rewards.min()), 0.0) * horizon
    highest = max(float(rewards.max()), 0.0) * horizon
    return max(low - pad, lowest), min(high + pad, highest)


def resolve_agent_support(
    agent, dataset, reward_scale: float = 1.0, values: tuple[float, float] | None = None
) -> object:
    """The agent with its critic head's unset support fitted to `dataset` (rewards multiplied by
    `reward_scale`, as the agent will see them) and the agent's discount, or set to `values`
    when the range of values is known otherwise (relabelled goals). Agents without a critic
    (`has_critic` false) are returned unchanged."""
    if not agent.has_critic or not needs_support(agent.critic):
        return agent
    head = agent.critic
    if values is not None:
        return dataclasses.replace(agent, critic=resolve_support(head, *values))
    returns = dataset.returns_to_go(agent.discount) * reward_scale
    vmin, vmax = support_from_data(returns, dataset.rewards * reward_scale, agent.discount)
    return dataclasses.replace(agent, critic=resolve_support(head, vmin, vmax))

"""Learned dynamics models of continuous control: a probabilistic Gaussian ensemble and single
models, as one class.

MBPO (Janner et al. 2019, "When to Trust Your Model", App. C) and PETS (Chua et al. 2018,
Sec. 4.1) model p(s' − s, r | s, a) with N probabilistic networks, each predicting a diagonal
Gaussian: mean μ and log-variance, trained by the Gaussian negative log-likelihood

    L = mean_d[ (μ_d − y_d)² · exp(−log σ²_d) + log σ²_d ]  +  c · Σ_d (max log σ²_d − min log σ²_d)

with the log-variance softly clamped between learned bounds (PETS App. A.1; the last term, with
c = 0.01, keeps the bounds tight) and L2 weight decay per layer (MBPO's 2.5e-5 ... 1e-4).
Inputs (s, a) are standardised with the training data's statistics, as MBPO does, and so are the
targets (s' − s, r) (valorl's choice; `valorl.models.fit`). The E members with the lowest
held-out error are the elites; an imagined step draws one elite per
sample (`DynamicsModel.sample`).

`model_members=1` is a single probabilistic model; `model_kind="deterministic"` drops the
variance and trains the mean by squared error: the single deterministic model of Zheng et al.
("Is Model Ensemble Necessary? Model-based RL via a Single Model with Lipschitz Regularized
Value Function", ICLR 2023). Every member also predicts a termination logit, trained by binary
cross-entropy, for environments whose termination rule is not known
(`valorl.models.termination`).

Everything here is a pure function of a `ModelState` pytree, so seeds vmap over it as over agent
states; fitting with a held-out split and early stopping is `valorl.models.fit`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from valorl.config import require_at_least_one
from valorl.errors import ValorlError
from valorl.nets.mlp import default_init

MBPO_WEIGHT_DECAY = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
"""MBPO's L2 coefficients of its four hidden layers and output layer."""


class MemberNet(nn.Module):
    """One member: swish MLP (MBPO's activation) to the target mean, its log-variance between
    learned bounds (probabilistic members only) and a termination logit."""

    hidden_dims: tuple[int, ...]
    target_dim: int
    probabilistic: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        for i, width in enumerate(self.hidden_dims):
            x = nn.swish(nn.Dense(width, kernel_init=default_init(), name=f"layer_{i}")(x))
        outputs = self.target_dim * (2 if self.probabilistic else 1) + 1
        out = nn.Dense(outputs, kernel_init=default_init(), name=f"layer_{len(self.hidden_dims)}")(
            x
        )
        mean, terminal_logit = out[..., : self.target_dim], out[..., -1]
        if not self.probabilistic:
            return mean, jnp.zeros_like(mean), terminal_logit
        raw = out[..., self.target_dim : 2 * self.target_dim]
        max_logvar = self.param("max_logvar", nn.initializers.constant(0.5), (self.target_dim,))
        min_logvar = self.param("min_logvar", nn.initializers.constant(-10.0), (self.target_dim,))
        logvar = max_logvar - nn.softplus(max_logvar - raw)
        logvar = min_logvar + nn.softplus(logvar - min_logvar)
        return mean, logvar, terminal_logit


class ModelState(flax.struct.PyTreeNode):
    """A fitted (or freshly initialised) model: every member's parameters and optimiser, the
    standardisation of inputs and targets, and which members are the elites."""

    net: TrainState
    input_mean: jax.Array
    input_std: jax.Array
    target_mean: jax.Array
    target_std: jax.Array
    elites: jax.Array
    """(model_elites,) int32 indices of the members with the lowest held-out error."""
    holdout_error: jax.Array
    """(model_members,) held-out mean squared error (standardised targets) of the last fit."""


@flax.struct.dataclass
class Prediction:
    """Every member's predictive distribution at a batch of (s, a), in the data's units:
    leading axes (members, batch)."""

    next_obs_mean: jax.Array
    reward_mean: jax.Array
    next_obs_std: jax.Array
    """Zero for a deterministic model."""
    reward_std: jax.Array
    terminal_prob: jax.Array
    """The learned termination classifier's probability."""


@dataclasses.dataclass(frozen=True)
class DynamicsModel:
    """Hyperparameters of a dynamics model (MBPO's defaults, App. C and its configs)."""

    model_members: int = 7
    """Networks in the ensemble (1: a single model)."""
    model_elites: int = 5
    """Members with the lowest held-out error that imagined steps draw from."""
    model_kind: Literal["probabilistic", "deterministic"] = "probabilistic"
    """Gaussian outputs trained by negative log-likelihood, or means trained by squared error."""
    model_hidden_dims: tuple[int, ...] = (200, 200, 200, 200)
    """Hidden layers of each member (swish)."""
    model_weight_decay: tuple[float, ...] | None = None
    """L2 coefficient of each layer's weights, the output layer last, or one value for every
    layer; unset: MBPO's 2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4 for its five layers (other depths:
    2.5e-5 to 1e-4 spaced evenly)."""
    model_lr: float = 1e-3
    """Adam learning rate."""
    model_batch_size: int = 256
    """Transitions per member per gradient step."""
    model_holdout: float = 0.2
    """Fraction of the data held out for early stopping and elite selection."""
    model_max_holdout: int = 5000
    """At most this many held-out transitions (MBPO's)."""
    model_patience: int = 5
    """Epochs without a 1% held-out improvement of any member before fitting stops."""
    model_max_epochs: int = 200
    """Epochs of one fit at most (a cap on CPU cost; MBPO stops by patience only)."""
    model_logvar_bound_loss: float = 0.01
    """c of the log-variance bound term (PETS)."""
    model_loss: Literal["mle", "vagram"] = "mle"
    """Maximum likelihood (squared error for a deterministic model), or VaGraM's value-gradient
    weighted error (Voelcker et al. 2022; `valorl.models.fit`), which needs a critic: refitted
    models only (online)."""

    def __post_init__(self) -> None:
        if not 1 <= self.model_elites <= self.model_members:
            raise ValorlError(
                f"--model-elites must be between 1 and --model-members ({self.model_members}), "
                f"got {self.model_elites}"
            )
        layers = len(self.model_hidden_dims) + 1
        if self.model_weight_decay is not None and len(self.model_weight_decay) not in (1, layers):
            raise ValorlError(
                f"--model-weight-decay takes one value or one per layer ({layers}), got "
                f"{len(self.model_weight_decay)}"
            )
        if not 0.0 < self.model_holdout < 1.0:
            raise ValorlError(f"--model-holdout must be in (0, 1), got {self.model_holdout}")
        require_at_least_one(self, "model_batch_size", "model_max_holdout", "model_max_epochs")

    @property
    def probabilistic(self) -> bool:
        return self.model_kind == "probabilistic"

    def network(self, obs_dim: int) -> nn.Module:
        """Every member at once: parameters and outputs gain a leading member axis, and each
        member reads its own rows of inputs of shape (members, B, in)."""
        members = nn.vmap(
            MemberNet,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=0,
            out_axes=0,
            axis_size=self.model_members,
        )
        return members(self.model_hidden_dims, obs_dim + 1, self.probabilistic)

    def init(self, key: jax.Array, obs_dim: int, action_dim: int) -> ModelState:
        """An untrained model (identity standardisation, the first members as elites)."""
        net = self.network(obs_dim)
        inputs = jnp.zeros((self.model_members, 1, obs_dim + action_dim))
        params = net.init(key, inputs)["params"]
        targets = obs_dim + 1
        return ModelState(
            net=TrainState.create(apply_fn=net.apply, params=params, tx=optax.adam(self.model_lr)),
            input_mean=jnp.zeros(obs_dim + action_dim),
            input_std=jnp.ones(obs_dim + action_dim),
            target_mean=jnp.zeros(targets),
            target_std=jnp.ones(targets),
            elites=jnp.arange(self.model_elites, dtype=jnp.int32),
            holdout_error=jnp.zeros(self.model_members),
        )

    # ---- the networks in standardised units ---------------------------------------------------

    def outputs(
        self, state: ModelState, params: Any, inputs: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(mean, log-variance, termination logit) of standardised targets at standardised
        `inputs`: (members, B, in) -> (members, B, D), (members, B, D), (members, B); inputs of
        shape (B, in) go to every member."""
        if inputs.ndim == 2:
            inputs = jnp.broadcast_to(inputs, (self.model_members, *inputs.shape))
        return state.net.apply_fn({"params": params}, inputs)

    def loss(
        self,
        params: Any,
        state: ModelState,
        inputs: jax.Array,
        targets: jax.Array,
        terminals: jax.Array,
        weights: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training loss of every member on its own batch (standardised, (members, B, ...)):
        Gaussian NLL or squared error, the bound term, the termination cross-entropy and weight
        decay. `weights` (members, B, D) scale each target dimension's squared error (VaGraM);
        with weights, the mean is fitted by the weighted squared error and a probabilistic
        model's variance by the likelihood at that (stop-gradient) mean."""
        mean, logvar, terminal_logit = self.outputs(state, params, inputs)
        error = jnp.square(mean - targets)
        if weights is None:
            if self.probabilistic:
                fit = (error * jnp.exp(-logvar) + logvar).mean(axis=-1)
            else:
                fit = error.mean(axis=-1)
        else:
            fit = (weights * error).mean(axis=-1)
            if self.probabilistic:
                frozen = jnp.square(jax.lax.stop_gradient(mean) - targets)
                fit = fit + (frozen * jnp.exp(-logvar) + logvar).mean(axis=-1)
        terminal = optax.sigmoid_binary_cross_entropy(terminal_logit, terminals)
        loss = fit.mean(axis=-1).sum() + terminal.mean(axis=-1).sum()
        if self.probabilistic:
            bounds = params["max_logvar"].sum() - params["min_logvar"].sum()
            loss = loss + self.model_logvar_bound_loss * bounds
        loss = loss + self.weight_decay(params)
        return loss, {"mse": error.mean(), "terminal_bce": terminal.mean()}

    @property
    def weight_decays(self) -> tuple[float, ...]:
        """The L2 coefficient of every layer, the output layer last."""
        layers = len(self.model_hidden_dims) + 1
        if self.model_weight_decay is None:
            if layers == len(MBPO_WEIGHT_DECAY):
                return MBPO_WEIGHT_DECAY
            return tuple(float(c) for c in np.linspace(2.5e-5, 1e-4, layers))
        return self.model_weight_decay * (layers if len(self.model_weight_decay) == 1 else 1)

    def weight_decay(self, params: Any) -> jax.Array:
        """Σ_l c_l · ½‖W_l‖² over every member's layer weights (MBPO's per-layer L2)."""
        decays = self.weight_decays
        return sum(
            c * 0.5 * jnp.sum(jnp.square(params[f"layer_{i}"]["kernel"]))
            for i, c in enumerate(decays)
        )

    # ---- predictions in the data's units --------------------------------------------------------

    def standardised_inputs(self, state: ModelState, obs: jax.Array, actions: jax.Array):
        return (jnp.concatenate([obs, actions], axis=-1) - state.input_mean) / state.input_std

    def predict(self, state: ModelState, obs: jax.Array, actions: jax.Array) -> Prediction:
        """Every member's prediction at (obs (B, S), actions (B, A))."""
        mean, logvar, terminal_logit = self.outputs(
            state, state.net.params, self.standardised_inputs(state, obs, actions)
        )
        mean = mean * state.target_std + state.target_mean
        std = jnp.exp(0.5 * logvar) * state.target_std
        if not self.probabilistic:
            std = jnp.zeros_like(std)
        return Prediction(
            next_obs_mean=obs + mean[..., :-1],
            reward_mean=mean[..., -1],
            next_obs_std=std[..., :-1],
            reward_std=std[..., -1],
            terminal_prob=jax.nn.sigmoid(terminal_logit),
        )

    def sample(
        self, state: ModelState, obs: jax.Array, actions: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array, Prediction]:
        """One imagined step per row: a random elite per row, and a draw from its Gaussian (its
        mean for a deterministic model). Returns (next_obs, reward, terminal_prob, prediction
        of every member)."""
        key_member, key_noise = jax.random.split(key)
        p = self.predict(state, obs, actions)
        batch = obs.shape[0]
        member = state.elites[jax.random.randint(key_member, (batch,), 0, self.model_elites)]
        rows = jnp.arange(batch)
        pick = lambda x: x[member, rows]
        noise = jax.random.normal(key_noise, (batch, obs.shape[-1] + 1))
        next_obs = pick(p.next_obs_mean) + noise[:, :-1] * pick(p.next_obs_std)
        reward = pick(p.reward_mean) + noise[:, -1] * pick(p.reward_std)
        return next_obs, reward, pick(p.terminal_prob), p

"""The behaviour policy's log-probability of each logged action: stored, or fitted.

Datasets written by `valorl collect` store the exact log-probability of every action under the
behaviour that took it (Minari `infos`, key `behaviour_log_prob`), and those are used as they
are. Other data (D4RL files, other people's Minari datasets, in-memory datasets) get a fitted
behaviour model: a Gaussian policy, mean tanh(MLP(s)) and a state-independent std, trained by
maximum likelihood on the logged actions, then scored with the same clipped-Gaussian
probabilities as the evaluated policies. A fitted model is only as good as its fit: a mixture
of behaviours (random actions and a controller, say) is not a Gaussian, and the importance
weights inherit the error.

Discrete actions get a softmax policy instead (`CategoricalBehaviourModel`: logits = MLP(s),
fitted by cross-entropy, which is maximum likelihood for a categorical distribution), or, when
the behaviour is known to be ε-greedy around a given policy (a DQN collecting data), the exact
ε-greedy probabilities (`epsilon_greedy_behaviour`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from valorl.agents.base import Metrics, NetState, adam, apply, create_train_state, grad_step
from valorl.collection import LOG_PROB_KEY, clipped_gaussian_log_prob
from valorl.data.dataset import Batch, Dataset
from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.nets import MLP, GaussianPolicy, gaussian_log_prob
from valorl.ope.target import epsilon_greedy_log_prob
from valorl.training.fused import scan_updates
from valorl.training.sources import DATASET_ROWS
from valorl.ui import progress_bar

STORED = "stored at collection"
FITTED = "fitted: Gaussian policy by maximum likelihood"
FITTED_SOFTMAX = "fitted: softmax policy by cross-entropy"
EPSILON_GREEDY = "epsilon-greedy around a given policy"


def stored_log_probs(dataset: Dataset) -> np.ndarray | None:
    """The log-probabilities `valorl collect` stored with a Minari dataset, one per row, or
    None when the dataset's source holds none (or holds other actions than `dataset`)."""
    source = Path(dataset.info.source) if dataset.info.source else None
    if source is None or not source.is_dir():
        return None
    data_path = source / "data" if (source / "data").is_dir() else source
    if not (data_path / "metadata.json").is_file():
        return None
    import minari

    log_probs, actions = [], []
    for episode in minari.MinariDataset(data_path).iterate_episodes():
        infos = episode.infos or {}
        if LOG_PROB_KEY not in infos:
            return None
        log_probs.append(np.asarray(infos[LOG_PROB_KEY], np.float64)[1:])  # [0] is the reset
        actions.append(np.asarray(episode.actions))
    log_probs, actions = np.concatenate(log_probs), np.concatenate(actions)
    if actions.shape != dataset.actions.shape or not np.array_equal(actions, dataset.actions):
        return None
    return log_probs


@dataclasses.dataclass(frozen=True)
class BehaviourModel:
    """A Gaussian policy fitted to the logged actions by maximum likelihood."""

    batches_per_update: ClassVar[int] = 1

    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """Transitions per gradient step."""
    steps: int = 5000
    """Gradient steps."""

    def init(self, key: jax.Array, obs_shape: tuple[int, ...], action_dim: int) -> NetState:
        module = GaussianPolicy(self.hidden_dims, action_dim)
        return create_train_state(module, key, (jnp.zeros((1, *obs_shape)),), adam(self.lr))

    def update(self, state: NetState, batch: Batch, key: jax.Array) -> tuple[NetState, Metrics]:
        del key

        def loss(params):
            mean, log_std = apply(state, params, batch.observations)
            return -gaussian_log_prob(mean, log_std, batch.actions).mean(), {}

        return grad_step(state, loss)

    def fit(
        self, dataset: Dataset, normalizer: Normalizer, key: jax.Array, progress: bool = True
    ) -> np.ndarray:
        """Train on `dataset` and return the clipped-Gaussian log-probability of each logged
        action (environment units, like the stored ones)."""
        data = normalizer.batch(dataset.to_batch())
        init_key, train_key = jax.random.split(key)
        state = self.init(init_key, dataset.obs_shape, dataset.action_dim)
        state = _fit_rows(self, state, train_key, data, progress)
        mean, log_std = apply(state, state.params, data.observations)
        half = 0.5 * (np.asarray(normalizer.action_high) - np.asarray(normalizer.action_low))
        low = np.asarray(normalizer.action_low, np.float64)
        return clipped_gaussian_log_prob(
            dataset.actions,
            low + (np.asarray(mean, np.float64) + 1.0) * half,
            np.exp(np.asarray(log_std, np.float64)) * half,
            low,
            np.asarray(normalizer.action_high, np.float64),
        )


@dataclasses.dataclass(frozen=True)
class CategoricalBehaviourModel:
    """A softmax policy over discrete actions, logits = MLP(s), fitted by cross-entropy."""

    batches_per_update: ClassVar[int] = 1

    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """Transitions per gradient step."""
    steps: int = 5000
    """Gradient steps."""
    num_actions: int = 2
    """Size of the discrete action space."""

    def init(self, key: jax.Array, obs_shape: tuple[int, ...], action_dim: int = 0) -> NetState:
        del action_dim
        module = MLP(self.hidden_dims, self.num_actions)
        return create_train_state(module, key, (jnp.zeros((1, *obs_shape)),), adam(self.lr))

    def update(self, state: NetState, batch: Batch, key: jax.Array) -> tuple[NetState, Metrics]:
        del key

        def loss(params):
            logits = apply(state, params, batch.observations)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch.actions)
            return nll.mean(), {}

        return grad_step(state, loss)

    def fit(
        self, dataset: Dataset, normalizer: Normalizer, key: jax.Array, progress: bool = True
    ) -> np.ndarray:
        """Train on `dataset` and return log π_b(a_t|s_t) of each logged action."""
        data = normalizer.batch(dataset.to_batch())
        init_key, train_key = jax.random.split(key)
        state = self.init(init_key, dataset.obs_shape)
        state = _fit_rows(self, state, train_key, data, progress)
        log_probs = jax.nn.log_softmax(apply(state, state.params, data.observations))
        picked = jnp.take_along_axis(log_probs, data.actions[:, None], axis=-1)[:, 0]
        return np.asarray(picked, np.float64)


def epsilon_greedy_behaviour(dataset: Dataset, greedy: np.ndarray, epsilon: float) -> np.ndarray:
    """log π_b(a_t|s_t) of a behaviour that took `greedy[t]` with probability 1 − ε and a
    uniform action otherwise: (1 − ε)·1[a = g] + ε/n."""
    if not 0.0 < epsilon <= 1.0:
        raise ValorlError(
            f"an epsilon-greedy behaviour needs epsilon in (0, 1] to cover every action, got "
            f"{epsilon}"
        )
    return epsilon_greedy_log_prob(dataset.actions, greedy, epsilon, dataset.num_actions)


def _fit_rows(model, state: NetState, key: jax.Array, data: Batch, progress: bool) -> NetState:
    """`model.steps` gradient steps of a behaviour model on rows of `data`, in fused chunks."""
    chunk = min(1000, model.steps)
    with progress_bar(progress) as bar:
        task = bar.add_task("fit behaviour", total=model.steps, rate="", note="")
        for done in range(0, model.steps, chunk):
            n = min(chunk, model.steps - done)
            state, key, metrics = _train(model, n)(state, key, data)
            bar.update(task, advance=n, note=f"nll {float(metrics['loss']):.3f}")
    return state


@functools.cache
def _train(model: BehaviourModel | CategoricalBehaviourModel, num_updates: int):
    def chunk(state, key, data):
        return scan_updates(model, DATASET_ROWS, num_updates, state, key, None, data)

    return jax.jit(chunk)


def behaviour_log_probs(
    dataset: Dataset,
    normalizer: Normalizer,
    key: jax.Array,
    model: BehaviourModel | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, str]:
    """(log π_b(a_t|s_t) per row, how they were obtained: `STORED`, `FITTED` or
    `FITTED_SOFTMAX`). A discrete dataset gets a softmax model with `model`'s settings."""
    stored = stored_log_probs(dataset)
    if stored is not None:
        return stored, STORED
    model = model or BehaviourModel()
    if dataset.discrete:
        settings = dataclasses.asdict(model) | {"num_actions": dataset.num_actions}
        softmax = CategoricalBehaviourModel(**settings)
        return softmax.fit(dataset, normalizer, key, progress), FITTED_SOFTMAX
    return model.fit(dataset, normalizer, key, progress), FITTED

"""valorl: value functions and the policies they imply, learned from logged data.

Python API (the CLI calls the same functions):

    import valorl
    ds = valorl.load_dataset("valorl/pendulum-mixed-v0")       # Minari id, dir, .hdf5 or .npz
    result = valorl.train("iql", ds, steps=20_000, seeds=3, out="runs/iql")
    online = valorl.train_online("sac", env="Pendulum-v1", online_steps=15_000, seeds=2)
    policy = valorl.load_policy("runs/iql")                     # obs -> environment action
    steered = valorl.steer("runs/gbc", "runs/iql", samples=16)  # V-GPS: re-ranked by a critic
    model = valorl.load_model("runs/mopo")                      # a model-based run's dynamics
"""

from valorl import zoo  # noqa: F401  (registers its recipe names with load_dataset)
from valorl._version import __version__
from valorl.agents import (
    AGENTS,
    BC,
    CQL,
    DQN,
    DSACT,
    IQL,
    MBPO,
    MOBILE,
    MOPO,
    RIQL,
    SAC,
    TD3BC,
    CalQL,
    DiscreteBC,
    DiscreteCQL,
    DiscreteIQL,
    make_agent,
)
from valorl.data import Dataset, DatasetInfo, load_dataset, save_minari, save_npz
from valorl.errors import ValorlError
from valorl.eval.model import LearnedModel, load_model
from valorl.eval.policy import Policy, load_policy
from valorl.eval.steering import SteeredPolicy, steer
from valorl.training.offline import train
from valorl.training.online import train_online
from valorl.training.results import RunResult

__all__ = [
    "AGENTS",
    "BC",
    "CQL",
    "DQN",
    "DSACT",
    "IQL",
    "MBPO",
    "MOBILE",
    "MOPO",
    "RIQL",
    "SAC",
    "TD3BC",
    "CalQL",
    "Dataset",
    "DatasetInfo",
    "DiscreteBC",
    "DiscreteCQL",
    "DiscreteIQL",
    "LearnedModel",
    "Policy",
    "RunResult",
    "SteeredPolicy",
    "ValorlError",
    "__version__",
    "load_dataset",
    "load_model",
    "load_policy",
    "make_agent",
    "save_minari",
    "save_npz",
    "steer",
    "train",
    "train_online",
]

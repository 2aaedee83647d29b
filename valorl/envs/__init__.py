"""Environments: host-stepped Gymnasium environments (`rollouts`) and JAX environments that step
inside the compiled loop (`jax_env` protocol, `gymnax_envs` adapters, `host` for stepping them
from Python). Importing this package registers the JAX environments with Gymnasium."""

from valorl.envs.host import register_gymnasium_ids

register_gymnasium_ids()

"""Where a sweep's groups train: one after another in this process, or as Ray tasks.

Both backends run the same unit of work, `train_group`: one `valorl train` command line, all
its seeds vmapped in one process. Fault tolerance comes from the run directories, not from the
backend: a group that is started again (a re-run of the sweep, or Ray retrying a task whose
worker died) resumes from its last checkpoint, and a finished group is never trained twice.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from typing import Protocol

from valorl.errors import ValorlError
from valorl.sweep.spec import Group
from valorl.training.fused import free_compiled

BACKENDS = ("local", "ray")


def train_group(agent: str, argv: Sequence[str]) -> str:
    """Train one group from its `valorl train AGENT` arguments; returns its run directory."""
    from valorl.launch.train import train_from_args, train_parser

    return str(train_from_args(train_parser(agent).parse_args(list(argv))).path)


class Tracker(Protocol):
    """What a backend reports as groups start and end (valorl/sweep/run.py keeps the tally)."""

    def started(self, group: Group) -> None: ...
    def finished(self, group: Group) -> None: ...
    def failed(self, group: Group, message: str, details: str) -> None: ...


class LocalBackend:
    """Groups one after another in this process: no Ray needed, and Ctrl-C stops the group in
    training right after its next checkpoint. Compiled code is freed after each group (groups
    rarely share an agent), so memory stays that of one group however long the sweep."""

    def run(self, jobs: list[tuple[Group, list[str]]], tracker: Tracker) -> None:
        for group, argv in jobs:
            tracker.started(group)
            try:
                train_group(group.agent, argv)
            except Exception as exc:  # a bug in one group must not lose the others' work
                tracker.failed(group, describe(exc), traceback.format_exc())
            else:
                tracker.finished(group)
            finally:
                free_compiled()


class RayBackend:
    """Every group a Ray task asking for `cpus` CPUs and `gpus` GPUs, on the cluster at
    `address` ("auto", "HOST:PORT"), or on a new single-machine cluster that listens on
    127.0.0.1 only when no address is given. A task whose worker dies is retried up to
    `max_retries` times and resumes from its run's last checkpoint. The run directories must be
    on storage every node shares (the same path on each)."""

    def __init__(
        self, address: str | None, cpus: float = 1.0, gpus: float = 0.0, max_retries: int = 3
    ):
        if cpus <= 0 or gpus < 0 or max_retries < 0:
            raise ValorlError(
                "--cpus-per-group must be positive, --gpus-per-group and --max-retries 0 or more"
            )
        self.address, self.cpus, self.gpus, self.max_retries = address, cpus, gpus, max_retries

    def run(self, jobs: list[tuple[Group, list[str]]], tracker: Tracker) -> None:
        ray = import_ray(loopback=self.address is None)
        if self.address is None:  # a private cluster for this sweep, on this machine only
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=self.address, log_to_driver=False)
            except ConnectionError as exc:
                raise ValorlError(
                    f"cannot connect to the Ray cluster at {self.address}: {exc} (is it running, "
                    "and is this machine's token the cluster's? see README, 'Sweeps on Ray')"
                ) from None
        try:
            task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries)(
                train_group
            )
            pending = {}
            for group, argv in jobs:
                pending[task.remote(group.agent, argv)] = group
                tracker.started(group)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    group = pending.pop(ref)
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        tracker.failed(group, describe(exc.cause), str(exc))
                    except ray.exceptions.RayError as exc:  # worker or node lost, retries spent
                        message = (
                            f"{type(exc).__name__} after {self.max_retries} retries; "
                            "re-run the sweep to resume it"
                        )
                        tracker.failed(group, message, str(exc))
                    else:
                        tracker.finished(group)
        finally:
            ray.shutdown()


def describe(exc: BaseException) -> str:
    """A group's error in one line: a user error as valorl words it, anything else with its
    type (the traceback goes to the group's error log)."""
    return str(exc) if isinstance(exc, ValorlError) else f"{type(exc).__name__}: {exc}"


def import_ray(loopback: bool = False):
    """Ray, or a one-line error saying how to install it. With `loopback`, a cluster that
    `ray.init` starts listens on 127.0.0.1 only: Ray then takes the loopback address as the
    node's (its switch for single-machine clusters, read when Ray is first imported)."""
    if loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise ValorlError(
            "--backend ray needs Ray: pip install 'valorl[ray]' (or use --backend local)"
        ) from None
    return ray


def make_backend(
    name: str, address: str | None, cpus: float, gpus: float, max_retries: int
) -> LocalBackend | RayBackend:
    if name == "local":
        if address is not None:
            raise ValorlError("--address applies to --backend ray")
        return LocalBackend()
    if name == "ray":
        return RayBackend(address, cpus, gpus, max_retries)
    raise ValorlError(f"unknown --backend {name!r}; choose from {', '.join(BACKENDS)}")

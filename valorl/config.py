"""Frozen dataclasses as configuration: JSON round trip and attribute docstrings.

Agents and run settings are frozen dataclasses (hashable, so they can be static `jit`
arguments). This module turns them into plain JSON and back, reads the docstring written
under each field, which the CLI shows as help text, spells a field as its command-line flag,
and checks counts and rates in their `__post_init__` with errors that name the flag.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from typing import Any, Literal

from valorl.errors import ValorlError


def flag(name: str) -> str:
    """The command-line flag of a field or keyword argument: `log_every` -> `--log-every`."""
    return f"--{name.replace('_', '-')}"


def require_at_least_one(settings: Any, *names: str) -> None:
    """A one-line error naming the flag of the first of `settings`' fields `names` below 1."""
    for name in names:
        value = getattr(settings, name)
        if value < 1:
            raise ValorlError(f"{flag(name)} must be at least 1, got {value}")


def require_positive(settings: Any, *names: str) -> None:
    """A one-line error naming the flag of the first of `settings`' fields `names` not above 0."""
    for name in names:
        value = getattr(settings, name)
        if not value > 0:
            raise ValorlError(f"{flag(name)} must be positive, got {value}")


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass instance (tuples become lists)."""
    return {f.name: _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        # a nested dataclass with a `name` (a critic head) is one of several: tag which
        tag = {"type": value.name} if isinstance(getattr(value, "name", None), str) else {}
        return tag | to_dict(value)
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    return value


def added_later(default: Any, before: Any) -> Any:
    """A field whose default differs from how configs written before it existed behaved: new
    configs get `default` (the dataclass's, and `new_defaults` for dicts of overrides),
    `from_dict` gives saved ones that lack it `before`."""
    return dataclasses.field(default=default, metadata={"before": before})


def new_defaults(cls: type) -> dict[str, Any]:
    """The `added_later` fields of `cls` at their current defaults: what a new configuration
    (not one read from a saved run) that leaves them out means."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init and "before" in f.metadata}


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild `cls` from `to_dict` output, converting and checking each field against its type.
    A missing field takes its default, or its `added_later` value from before it existed."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValorlError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    earlier = {k: f.metadata["before"] for k, f in fields.items() if "before" in f.metadata}
    data = {k: v for k, v in earlier.items() if k not in data} | data
    return cls(**{k: coerce(hints[k], v, f"{cls.__name__}.{k}") for k, v in data.items()})


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a JSON or command-line value to type `tp`; raise ValorlError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1 and all(dataclasses.is_dataclass(a) for a in inner):
            return _tagged(inner, value, where)
        return coerce(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise ValorlError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            items = value.split(",")
        elif isinstance(value, tuple | list):
            items = list(value)
        else:
            raise ValorlError(f"{where}: expected a comma-separated list, got {value!r}")
        item_type = args[0]
        return tuple(
            coerce(item_type, v.strip() if isinstance(v, str) else v, where)
            for v in items
            if v != ""
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value)
        raise ValorlError(f"{where}: expected {tp.__name__} settings, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValorlError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ValorlError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def _tagged(choices: list[type], value: Any, where: str) -> Any:
    """One of several dataclasses: an instance as is, or a dict naming its class in "type"."""
    if isinstance(value, tuple(choices)):
        return value
    by_name = {c.name: c for c in choices}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in by_name:
        raise ValorlError(
            f'{where}: expected one of {", ".join(by_name)} (a dict with "type"), got {value!r}'
        )
    return from_dict(by_name[kind], {k: v for k, v in value.items() if k != "type"})


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (PEP 257 attribute docstrings)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs

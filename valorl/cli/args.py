"""argparse with one-line errors, and agent hyperparameters as flags.

Every field of an agent dataclass becomes a flag (`hidden_dims` -> `--hidden-dims 64,64`),
with the field's docstring and default as help text, so `valorl train iql --help` documents
every hyperparameter without a second source of truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Literal, NoReturn

from valorl.config import coerce, field_docs


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit status 2.

    Each parser records itself as the `parser` default, so after parsing, `args.parser` is the
    innermost (sub)command that was used.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.set_defaults(parser=self)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, group_title: str) -> None:
    """One flag per field of `cls`; parsed values are left as strings for `parse_overrides`."""
    group = parser.add_argument_group(group_title)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        default = field.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs: dict[str, Any] = dict(
            dest=f"hp_{field.name}",
            default=None,
            metavar=_metavar(tp),
            help=f"{docs.get(field.name, '')} (default: {shown})",
        )
        if typing.get_origin(tp) is Literal:
            kwargs["choices"] = typing.get_args(tp)
            kwargs.pop("metavar")
        group.add_argument(f"--{field.name.replace('_', '-')}", **kwargs)


def parse_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The hyperparameters given on the command line, converted to their field types."""
    hints = typing.get_type_hints(cls)
    overrides = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, f"hp_{field.name}", None)
        if value is not None:
            flag = f"--{field.name.replace('_', '-')}"
            overrides[field.name] = coerce(hints[field.name], value, flag)
    return overrides


def _metavar(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "N,N,..."
    if tp is bool:
        return "true|false"
    return getattr(tp, "__name__", "VALUE").upper()

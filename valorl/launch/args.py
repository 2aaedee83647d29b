"""argparse with one-line errors and documented exit statuses, old flag spellings that still
work for one release, and agent hyperparameters as flags.

Every field of an agent dataclass becomes a flag (`hidden_dims` -> `--hidden-dims 64,64`),
with the field's docstring and default as help text, so `valorl train iql --help` documents
every hyperparameter without a second source of truth. Two kinds of field are spelled out:

- a nested settings dataclass (the Q-ensemble) contributes its own fields as flags
  (`--num-qs 10 --q-reduce subset-min --layer-norm true`);
- the critic head is chosen by name (`--critic hl-gauss`) and its parameters are flags
  (`--bins 51 --vmin -100 --vmax 0 --sigma-ratio 0.75`), checked against the chosen head.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
import typing
from collections.abc import Mapping
from typing import Any, Literal, NoReturn

from valorl.config import coerce, field_docs, flag
from valorl.critics import HEADS, CriticHead
from valorl.errors import ValorlError


class ExitCode(enum.IntEnum):
    """The exit statuses of `valorl`, listed by `valorl --help`, so that scripts and schedulers
    can tell a bug (retry will not help) from a command to fix, and a sweep to inspect."""

    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitCode:
        code = int.__new__(cls, value)
        code._value_ = value
        code.meaning = meaning
        return code

    DONE = 0, "done"
    INTERNAL_ERROR = 1, "internal error: a bug in valorl, shown with its traceback"
    BAD_INPUT = 2, "bad input (a flag, a value, a dataset, a run directory), in one line"
    SWEEP_GROUPS_FAILED = 3, "`valorl sweep`: some groups failed (OUT/<group>.error.log)"
    INTERRUPTED = 130, "interrupted (Ctrl-C); the same command resumes a run or a sweep"


def exit_codes_help() -> str:
    """The exit statuses as a help epilog."""
    return "exit status:\n" + "".join(f"  {code.value:<4} {code.meaning}\n" for code in ExitCode)


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
        raise SystemExit(ExitCode.BAD_INPUT)


class StrictParser(Parser):
    """A Parser whose errors raise ValorlError instead of exiting: for command lines that
    valorl builds itself (a sweep's groups), where the caller reports the error."""

    def error(self, message: str) -> NoReturn:
        raise ValorlError(message)


def deprecated(old: str, new: str) -> None:
    """The one-line note for an old spelling that valorl still accepts, until the next release."""
    sys.stderr.write(f"valorl: {old} is deprecated; use {new}\n")


class _OldSpelling(argparse.Action):
    """Stores like the action it stands for, after the deprecation note."""

    def __init__(self, *args: Any, new: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        deprecated(str(option_string), self.new)
        setattr(namespace, self.dest, values)


def add_old_spelling(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    old: str,
    new: argparse.Action,
    dest: str | None = None,
) -> None:
    """Accept `old` (hidden from --help) for the option `new`, with a deprecation note.

    The value lands in `new`'s destination, or in `dest` where a command must tell the two
    apart (`corrupt --dir`, whose replacement `--out` had another meaning before)."""
    parser.add_argument(
        old,
        action=_OldSpelling,
        new=new.option_strings[0],
        dest=dest or new.dest,
        type=new.type,
        metavar=new.metavar,
        default=argparse.SUPPRESS if dest is None else None,
        help=argparse.SUPPRESS,
    )


def renamed_spec_options(spec: str, renamed: Mapping[str, str]) -> str:
    """`KIND:key=value,...` with old option keys renamed (a deprecation note for each):
    the behaviour specs of `valorl collect --policy`, whose `seed=` became `index=`."""
    kind, colon, options = spec.partition(":")
    items = []
    for item in options.split(",") if colon else []:
        key, sep, value = item.partition("=")
        if sep and key in renamed:
            deprecated(f"{key}= in {spec!r}", f"{renamed[key]}=")
            item = f"{renamed[key]}={value}"
        items.append(item)
    return kind + colon + ",".join(items)


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, group_title: str) -> None:
    """Flags for every field of `cls` (see the module docstring); values stay strings until
    `parse_overrides` converts them."""
    group = parser.add_argument_group(group_title)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if tp == CriticHead:
            _add_head_flags(parser, field, docs.get(field.name, ""))
        elif dataclasses.is_dataclass(tp):
            sub = parser.add_argument_group(field.name, docs.get(field.name, ""))
            for inner in dataclasses.fields(tp):
                _add_flag(
                    sub,
                    inner.name,
                    typing.get_type_hints(tp)[inner.name],
                    getattr(field.default, inner.name),  # this agent's default
                    field_docs(tp).get(inner.name, ""),
                    dest=f"hp_{field.name}.{inner.name}",
                )
        else:
            _add_flag(
                group,
                field.name,
                tp,
                field.default,
                docs.get(field.name, ""),
                dest=f"hp_{field.name}",
            )


def parse_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The hyperparameters given on the command line, converted to their field types."""
    hints = typing.get_type_hints(cls)
    overrides: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if tp == CriticHead:
            head = _parse_head(args, field.default)
            if head is not None:
                overrides[field.name] = head
        elif dataclasses.is_dataclass(tp):
            inner = _given(args, f"hp_{field.name}.", tp)
            if inner:
                overrides[field.name] = dataclasses.replace(field.default, **inner)
        else:
            value = getattr(args, f"hp_{field.name}", None)
            if value is not None:
                overrides[field.name] = coerce(tp, value, flag(field.name))
    return overrides


def _add_flag(group, name: str, tp: Any, default: Any, doc: str, dest: str) -> None:
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    text = f"{doc} (default: {shown})".replace("%", "%%")  # argparse formats help with %
    kwargs: dict[str, Any] = dict(dest=dest, default=None, help=text)
    if typing.get_origin(tp) is Literal:
        kwargs["choices"] = typing.get_args(tp)
    else:
        kwargs["metavar"] = _metavar(tp)
    group.add_argument(flag(name), **kwargs)


def _head_parameters() -> dict[str, tuple[Any, list[str]]]:
    """Every head parameter: its type and the heads (by CLI name) that have it."""
    params: dict[str, tuple[Any, list[str]]] = {}
    for name, head in HEADS.items():
        hints = typing.get_type_hints(type(head))
        for field in dataclasses.fields(head):
            params.setdefault(field.name, (hints[field.name], []))[1].append(name)
    return params


def _add_head_flags(parser: argparse.ArgumentParser, field: dataclasses.Field, doc: str) -> None:
    group = parser.add_argument_group("critic head", doc)
    group.add_argument(
        "--critic",
        dest="hp_critic_name",
        choices=list(HEADS),
        default=None,
        help=f"the critic head (default: {field.default.name})",
    )
    for name, (tp, users) in _head_parameters().items():
        defaults = {h: getattr(HEADS[h], name) for h in users}
        if len(set(defaults.values())) == 1:
            shown = f"{next(iter(defaults.values()))}; used by {', '.join(users)}"
        else:
            shown = ", ".join(f"{h} {v}" for h, v in defaults.items())
        doc = field_docs(type(HEADS[users[0]])).get(name, "")
        group.add_argument(
            flag(name),
            dest=f"head_{name}",
            default=None,
            metavar=_metavar(tp),
            help=f"{doc} (default: {shown})",
        )


def _parse_head(args: argparse.Namespace, default: Any) -> Any:
    name = getattr(args, "hp_critic_name", None)
    params = {
        p: getattr(args, f"head_{p}")
        for p in _head_parameters()
        if getattr(args, f"head_{p}", None) is not None
    }
    if name is None and not params:
        return None
    head = HEADS[name] if name is not None else default
    hints = typing.get_type_hints(type(head))
    fields = {f.name for f in dataclasses.fields(head)}
    for param in params:
        if param not in fields:
            raise ValorlError(f"{flag(param)} does not apply to --critic {head.name}")
    return dataclasses.replace(head, **{p: coerce(hints[p], v, flag(p)) for p, v in params.items()})


def _given(args: argparse.Namespace, prefix: str, cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: coerce(hints[f.name], getattr(args, prefix + f.name), flag(f.name))
        for f in dataclasses.fields(cls)
        if getattr(args, prefix + f.name, None) is not None
    }


def _metavar(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "N,N,..."
    if tp is bool:
        return "true|false"
    inner = [a for a in typing.get_args(tp) if a is not type(None)]
    return getattr(inner[0] if inner else tp, "__name__", "VALUE").upper()

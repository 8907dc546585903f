"""Command-line flags made from the operator's settings dataclasses, and settings made from parsed flags.

A settings attribute declared with `settings.setting(default, "--flag", ...)` becomes a flag: its
type comes from the annotation, its help from the attribute's docstring, its default from the
dataclass. So a new setting (a consumer's, say) is one attribute, and `credbridge run --help`
can never disagree with the defaults the operator uses.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping

from credbridge.operator import settings as settings_module

Flag = settings_module.Flag


@dataclasses.dataclass(frozen=True)
class Option:
    """One flag: where its value goes in the settings (a dotted path), and how it is parsed."""

    path: str
    flag: Flag
    type: type
    default: typing.Any
    help: str


@functools.cache
def attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a dataclass's attributes, by attribute name, on one line each."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _scalar(annotation: typing.Any) -> type:
    """int, float, bool or str for an annotation like `int`, `str | None` or `tuple[str, ...]`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is tuple:
        annotation = typing.get_args(annotation)[0]
    return annotation if annotation in (int, float, bool) else str


def options(
    cls: type = settings_module.OperatorSettings, prefix: str = "", named: Mapping[str, Flag] | None = None
) -> Iterator[Option]:
    """Every flag of a settings dataclass and of the dataclasses nested in it.

    `named`: flags of `cls`'s attributes named by the settings that nest it (`settings.nested`), for
    dataclasses of other layers that cannot declare flags themselves.
    """
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from options(typing.cast(type, hint), f"{prefix}{field.name}.", field.metadata.get("flags"))
            continue
        flag = field.metadata.get("flag") or (named or {}).get(field.name)
        if flag is None:
            continue
        yield Option(f"{prefix}{field.name}", flag, _scalar(hint), field.default, docs.get(field.name, ""))


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    selected: typing.Iterable[Option],
    *,
    defaults: Mapping[str, typing.Any] | None = None,
) -> None:
    """Adds the `selected` options as flags; `defaults` replaces some defaults (by path), e.g. one read
    from the environment."""
    for option in selected:
        flag, default = option.flag, (defaults or {}).get(option.path, option.default)
        shown = option.help.rstrip(".")
        metavar = flag.metavar or flag.name.rsplit("-", 1)[-1].upper()
        if flag.style == "off-switch":
            parser.add_argument(flag.name, dest=option.path, action="store_false", default=default, help=shown)
        elif flag.style == "on-off":
            parser.add_argument(
                flag.name,
                dest=option.path,
                choices=("on", "off"),
                default="on" if default else "off",
                help=f"{shown} (default: %(default)s)",
            )
        elif flag.style == "repeat":
            listed = ", ".join(map(str, default)) or "none"
            parser.add_argument(
                flag.name,
                dest=option.path,
                action="append",
                default=[],
                type=option.type,
                metavar=metavar,
                help=f"{shown} (repeatable; default: {listed})",
            )
        else:
            parser.add_argument(
                flag.name,
                dest=option.path,
                type=option.type,
                default=default,
                choices=flag.choices,
                metavar=None if flag.choices else metavar,
                help=f"{shown} (default: {'none' if default is None else '%(default)s'})",
            )


def values(args: argparse.Namespace, selected: typing.Iterable[Option]) -> dict[str, typing.Any]:
    """The parsed values of `selected`, by path, converted back to the settings' types (an empty
    repeatable flag keeps the setting's default)."""
    parsed = vars(args)
    found: dict[str, typing.Any] = {}
    for option in selected:
        value = parsed[option.path]
        if option.flag.style == "on-off":
            value = value == "on"
        elif option.flag.style == "repeat":
            value = tuple(value) or option.default
        found[option.path] = value
    return found


def build(cls: type, given: Mapping[str, typing.Any], prefix: str = "") -> typing.Any:
    """A settings dataclass from values by dotted path; what is not given keeps its default."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, typing.Any] = {}
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            kwargs[field.name] = build(typing.cast(type, hint), given, f"{path}.")
        elif path in given:
            kwargs[field.name] = given[path]
    return cls(**kwargs)


def chart_defaults() -> dict[str, tuple[str, typing.Any]]:
    """For every flag the Helm chart sets: its chart value path -> (settings path, the settings default)."""
    return {option.flag.chart: (option.path, option.default) for option in options() if option.flag.chart}

"""`credbridge types`: the credential types a Credential's `spec.type` can name, and their fields.

Writing a Credential means knowing the exact type name (`openAIApi`, not `openai`) and its field
names; this command answers both without a cluster, from the built-in registry that ships with
the package, and with `--cluster` adds the CredentialTypes an admin created. Machine output is
the CredentialType object itself, so it can be edited and applied as a custom type.
"""

from __future__ import annotations

import argparse
import collections.abc
import difflib
import json
import sys
import typing

import yaml

from credbridge.core import names, registry
from credbridge.kube import credentials

OUTPUT_FORMATS = ("table", "json", "yaml")
# Long defaults (OAuth scopes) would push the LABEL column off screen; -o yaml shows them whole.
_DEFAULT_COLUMN_WIDTH = 40


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "types",
        help="list credential types, or show one type's fields",
        description=(
            "List the credential types (NAME, LABEL, VERSION, FIELDS), or show the fields of one type. "
            "Works offline from the built-in types; --cluster adds the CredentialTypes in the cluster."
        ),
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="exact type name, e.g. openAIApi")
    parser.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table", help="output format")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also read custom CredentialTypes from the cluster ($KUBECONFIG)",
    )
    parser.add_argument("--as", dest="as_user", metavar="USER", help="impersonate USER for --cluster")
    parser.set_defaults(handler=handle)


def format_table(
    headers: collections.abc.Sequence[str], rows: collections.abc.Iterable[collections.abc.Sequence[str]]
) -> str:
    """Left-aligned columns, three spaces apart, as kubectl prints them; no trailing spaces."""
    materialized = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[column]) for row in materialized) for column in range(len(headers))]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in materialized
    ]
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    known = registry.Registry.builtin()
    if args.cluster:
        try:
            known = _with_cluster_types(known, args.as_user)
        except credentials.ApiError as error:
            print(f"credbridge types: {error}", file=sys.stderr)
            return 1
    if args.name is None:
        specs = [spec for name in known.names() if (spec := known.get(name)) is not None]
        _print_all(specs, args.output, show_source=args.cluster)
        return 0
    spec = known.get(args.name)
    if spec is None:
        print(f"credbridge types: {unknown_type_message(args.name, known.names())}", file=sys.stderr)
        return 1
    _print_one(spec, args.output)
    return 0


def unknown_type_message(name: str, known_names: collections.abc.Sequence[str]) -> str:
    """Says that `name` is not a type and suggests the closest names (type names are case-sensitive)."""
    by_folded = {known.casefold(): known for known in known_names}
    same_but_case = by_folded.get(name.casefold())
    if same_but_case is not None:
        suggestions = [same_but_case]
    else:
        close = difflib.get_close_matches(name.casefold(), list(by_folded), n=3, cutoff=0.6)
        suggestions = [by_folded[folded] for folded in close]
    message = f"unknown credential type {name!r}"
    if suggestions:
        message += f"; did you mean {' or '.join(repr(suggestion) for suggestion in suggestions)}?"
    return message + " (type names are case-sensitive; `credbridge types` lists them all)"


def _with_cluster_types(known: registry.Registry, as_user: str | None) -> registry.Registry:
    api = credentials.connect(as_user=as_user)
    for obj in credentials.list_credential_types(api):
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(names.BUILTIN_LABEL) == "true":
            # The operator applies these from the same package data: nothing new to show.
            continue
        try:
            spec = registry.type_from_object(obj)
        except registry.TypeDefinitionError as error:
            print(f"credbridge types: skipping a malformed CredentialType: {error}", file=sys.stderr)
            continue
        if spec.name in known.builtins:
            continue  # the operator reverts changes to built-ins: the package version is the truth
        known = known.with_custom(spec)
    return known


def _dump(obj: typing.Any, output: str) -> None:
    if output == "json":
        print(json.dumps(obj, indent=2))
    else:
        print(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True), end="")


def _print_all(specs: collections.abc.Sequence[registry.CredentialTypeSpec], output: str, *, show_source: bool) -> None:
    if output != "table":
        _dump({"apiVersion": "v1", "kind": "List", "items": [registry.type_to_object(spec) for spec in specs]}, output)
        return
    headers = ["NAME", "LABEL", "VERSION", "FIELDS"] + (["SOURCE"] if show_source else [])
    rows = []
    for spec in specs:
        row = [spec.name, spec.label, str(spec.version), str(len(spec.inputs))]
        if show_source:
            row.append("builtin" if spec.builtin else "cluster")
        rows.append(row)
    print(format_table(headers, rows))


def _required_column(input_field: registry.InputField) -> str:
    if input_field.required:
        return "yes"
    if input_field.default is not None:
        return "default"
    return "no"


def _shorten(text: str) -> str:
    return text if len(text) <= _DEFAULT_COLUMN_WIDTH else text[: _DEFAULT_COLUMN_WIDTH - 3] + "..."


def _print_one(spec: registry.CredentialTypeSpec, output: str) -> None:
    if output != "table":
        _dump(registry.type_to_object(spec), output)
        return
    print(f"{spec.name}: {spec.label} (version {spec.version}{', built-in' if spec.builtin else ''})")
    if spec.description:
        print(spec.description)
    print()
    rows = []
    for input_field in spec.inputs:
        field_type = input_field.type
        if input_field.options:
            field_type += f" ({'|'.join(input_field.options)})"
        rows.append(
            [
                input_field.name,
                field_type,
                _required_column(input_field),
                _shorten(input_field.default or ""),
                input_field.label + (" (hidden)" if input_field.hidden else ""),
            ]
        )
    print(format_table(["NAME", "TYPE", "REQUIRED", "DEFAULT", "LABEL"], rows))
    if spec.oauth2 is not None:
        print()
        print(
            f"OAuth2: grant {spec.oauth2.grant}, client authentication {spec.oauth2.client_authentication}; "
            f"token fields (Flowise's names): {', '.join(field.name for field in spec.token_inputs)}"
        )

"""`credbridge env`: read values from the workload endpoint, put them in the environment, exec the command.

For applications that read their settings from environment variables: the container's command
becomes `credbridge env --binding chat-api-openai -- python app.py`. The values are fetched with the
Pod's ServiceAccount token, set as variables, and the command replaces this process (`execvpe`),
so the application keeps PID 1, receives signals directly, and no credbridge process stays around
holding the values. Nothing is written to disk or to the cluster.
"""

from __future__ import annotations

import argparse
import os
import re

from credbridge.cli import workloadclient
from credbridge.core import names

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "env",
        help="run a command with a Credential's or binding's values as environment variables",
        description=(
            "Read a CredentialBinding's keys (or a Credential's fields) from the operator's workload endpoint with "
            "this Pod's ServiceAccount token, set them as environment variables, and exec COMMAND. Needs the "
            f"RBAC verb {names.USE_VERB} on the object."
        ),
        usage="credbridge env (--binding NAME | --credential NAME) [--env VAR=KEY ...] [options] -- COMMAND [ARG ...]",
        epilog=workloadclient.EXIT_CODES_HELP + "; otherwise COMMAND's own exit code (it replaces this process)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--binding", metavar="NAME", help="a CredentialBinding: one variable per output key")
    source.add_argument("--credential", metavar="NAME", help="a Credential: name the variables with --env")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        dest="mappings",
        metavar="VAR=KEY",
        help="set VAR to the value of KEY (a binding key or Credential field); repeatable. With --binding and no "
        "--env, every key becomes a variable of the same name",
    )
    workloadclient.add_connection_arguments(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]")
    parser.set_defaults(handler=handle)


def parse_mappings(mappings: list[str]) -> dict[str, str]:
    """`VAR=KEY` flags as {VAR: KEY}; raises ClientError naming a malformed one."""
    parsed: dict[str, str] = {}
    for mapping in mappings:
        variable, equals, key = mapping.partition("=")
        if not equals or not _VARIABLE.fullmatch(variable) or not key:
            raise workloadclient.ClientError(
                f"--env {mapping!r} is not VAR=KEY with VAR a variable name, e.g. --env OPENAI_API_KEY=openAIApiKey",
                workloadclient.EXIT_CONFIG,
            )
        parsed[variable] = key
    return parsed


def variables(values: workloadclient.Values, mappings: dict[str, str]) -> dict[str, str]:
    """The variables to set: the mapped keys, or every key when there is no mapping."""
    if not mappings:
        return {key: values.data[key] for key in values.data}
    missing = sorted({key for key in mappings.values() if key not in values.data})
    if missing:
        raise workloadclient.ClientError(
            f"{values.kind} {values.namespace}/{values.name} has no key {', '.join(missing)}; its keys are: "
            f"{', '.join(sorted(values.data)) or 'none'}: fix --env",
            workloadclient.EXIT_CONFIG,
        )
    return {variable: values.data[key] for variable, key in mappings.items()}


def handle(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    try:
        if not command:
            raise workloadclient.ClientError(
                "no command: put it after --, e.g. credbridge env --binding NAME -- python app.py",
                workloadclient.EXIT_CONFIG,
            )
        mappings = parse_mappings(args.mappings)
        if args.credential and not mappings:
            raise workloadclient.ClientError(
                "--credential needs --env VAR=FIELD for each variable, e.g. --env OPENAI_API_KEY=openAIApiKey",
                workloadclient.EXIT_CONFIG,
            )
        connection = workloadclient.connection_from(args, workloadclient.environ())
        reader = workloadclient.Reader(connection)
        try:
            if args.binding:
                values = reader.read(names.CREDENTIAL_BINDING_PLURAL, args.binding)
            else:
                values = reader.read(names.CREDENTIAL_PLURAL, args.credential)
        finally:
            reader.close()
        environment = {**os.environ, **variables(values, mappings)}
    except workloadclient.ClientError as error:
        return workloadclient.fail("env", error)
    try:
        os.execvpe(command[0], command, environment)  # noqa: S606 -- running the user's command is the point
    except FileNotFoundError:
        return workloadclient.fail("env", workloadclient.ClientError(f"command not found: {command[0]}", 127))
    except PermissionError:
        return workloadclient.fail("env", workloadclient.ClientError(f"command cannot be executed: {command[0]}", 126))
    return 0  # not reached: exec replaced this process

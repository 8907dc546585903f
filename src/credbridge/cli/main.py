"""The `credbridge` command: one entry point, one module per subcommand.

Each subcommand module has `add_parser(subparsers)` and a handler; this module only wires them up
and turns expected failures into a one-line message and exit code instead of a traceback.

`credbridge env` and `credbridge fetch` run inside application Pods, often as the first thing a
container does: for them only their own modules are imported (not the operator, kopf or the
kubernetes client), which keeps their start fast and small.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import credbridge

WORKLOAD_COMMANDS = ("env", "fetch")
"""Commands that run in application Pods: they import nothing but their own modules."""


def _command_modules(workload_only: bool) -> tuple[ModuleType, ...]:
    """The subcommand modules, in the order `credbridge --help` lists them."""
    from credbridge.cli import env, fetch

    if workload_only:
        return (env, fetch)
    from credbridge.cli import dev, importing, keys, oauth2, reveal, run, seal, types, validate, verify

    return (run, dev, types, validate, verify, seal, reveal, keys, oauth2, importing, env, fetch)


def build_parser(workload_only: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="credbridge",
        description="Typed, validated, encrypted credentials for third-party services, on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"credbridge {credbridge.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules(workload_only):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    workload_only = bool(arguments) and arguments[0] in WORKLOAD_COMMANDS
    args = build_parser(workload_only).parse_args(arguments)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `credbridge types | head`: the reader went away. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again (as the Python docs advise).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

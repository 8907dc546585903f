"""The `credbridge` command: one entry point, one module per subcommand.

Each subcommand module has `add_parser(subparsers)` and a handler; this module only wires them up
and turns expected failures into a one-line message and exit code instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import credbridge
from credbridge.cli import dev, keys, reveal, run, types, validate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="credbridge",
        description="Typed, validated, encrypted credentials for third-party services, on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"credbridge {credbridge.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, dev, types, validate, reveal, keys):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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

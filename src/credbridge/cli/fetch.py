"""`credbridge fetch`: read values from the workload endpoint into files, one per key.

For applications that read files, and for Pod injection: the injected init container runs
`credbridge fetch --binding NAME --dir /var/run/secrets/credbridge.io/values` into an in-memory
volume before the application starts. Each key becomes a file of that name, mode 0400, written
to a temporary file in the same directory and renamed over the old one — a reader sees the old
file or the new one, never half of one. A file is rewritten only when its content changed.

With `--watch` it keeps running (a sidecar), reads again every `--interval` seconds, and updates
the files that changed; a failed read is reported on stderr and the files stay as they were.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

from credbridge.cli import workloadclient
from credbridge.core import names, redaction

DEFAULT_INTERVAL = 60.0
"""Seconds between reads with --watch."""
_FILE_NAME = re.compile(r"[-._a-zA-Z0-9]+")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fetch",
        help="write a binding's or Credential's values into files, one per key (init container or sidecar)",
        description=(
            "Read CredentialBindings' keys (or Credentials' fields) from the operator's workload endpoint with this "
            "Pod's ServiceAccount token and write one file per key into DIR (mode 0400, atomic rename). Needs the "
            f"RBAC verb {names.USE_VERB} on each object."
        ),
        epilog=workloadclient.EXIT_CODES_HELP,
    )
    parser.add_argument(
        "--binding",
        action="append",
        default=[],
        dest="bindings",
        metavar="NAME",
        help="a CredentialBinding (repeatable)",
    )
    parser.add_argument(
        "--credential",
        action="append",
        default=[],
        dest="credentials",
        metavar="NAME",
        help="a Credential (repeatable)",
    )
    parser.add_argument("--dir", required=True, type=pathlib.Path, help="directory of the files (created if missing)")
    parser.add_argument(
        "--mode", default="0400", type=_mode, help="permission bits of the files, octal (default: %(default)s)"
    )
    parser.add_argument("--watch", action="store_true", help="keep running and keep the files current (a sidecar)")
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="with --watch: seconds between reads (default: %(default)s)",
    )
    workloadclient.add_connection_arguments(parser)
    parser.set_defaults(handler=handle)


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0400") from None
    if mode & ~0o777 or not mode & 0o400:
        raise argparse.ArgumentTypeError(f"{text!r}: give permission bits readable by the owner, like 0400 or 0440")
    return mode


def merged(values: list[workloadclient.Values]) -> redaction.SecretFields:
    """The keys of every read, as one mapping; raises ClientError when two objects write the same key."""
    owners: dict[str, str] = {}
    data: dict[str, str] = {}
    for value in values:
        for key in value.data:
            if not _FILE_NAME.fullmatch(key) or key in (".", ".."):
                raise workloadclient.ClientError(
                    f"{value.kind} {value.namespace}/{value.name}: key {key[:80]!r} cannot be a file name",
                    workloadclient.EXIT_CONFIG,
                )
            if key in owners:
                raise workloadclient.ClientError(
                    f"key {key} comes from both {owners[key]} and {value.kind} {value.name}: both would write "
                    f"the file {key}; rename it in one binding's spec.template, or fetch them into separate --dir",
                    workloadclient.EXIT_CONFIG,
                )
            owners[key] = f"{value.kind} {value.name}"
            data[key] = value.data[key]
    return redaction.SecretFields(data)


def write_files(directory: pathlib.Path, data: redaction.SecretFields, mode: int, previous: set[str]) -> list[str]:
    """Writes each key of `data` to `directory/KEY` (atomically, only when changed) and removes the keys of
    `previous` that are gone. Returns the names written or removed. Raises ClientError when it cannot write."""
    changed: list[str] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for key in sorted(data):
            content = data[key].encode("utf-8", "surrogatepass")
            target = directory / key
            if _same_content(target, content, mode):
                continue
            descriptor, temporary = tempfile.mkstemp(prefix=f".{key}.", dir=directory)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(content)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temporary, mode)
                os.replace(temporary, target)
            except BaseException:
                pathlib.Path(temporary).unlink(missing_ok=True)
                raise
            changed.append(key)
        for key in sorted(previous - set(data)):
            (directory / key).unlink(missing_ok=True)
            changed.append(key)
    except OSError as error:
        raise workloadclient.ClientError(
            f"cannot write {directory}: {error.strerror or type(error).__name__}: mount a writable volume there "
            "(an emptyDir with medium: Memory) or pass another --dir",
            workloadclient.EXIT_WRITE,
        ) from None
    return changed


def _same_content(path: pathlib.Path, content: bytes, mode: int) -> bool:
    try:
        if path.stat().st_mode & 0o777 != mode:
            return False
        return path.read_bytes() == content
    except OSError:
        return False


def read_all(reader: workloadclient.Reader, bindings: list[str], credentials: list[str]) -> redaction.SecretFields:
    values = [reader.read(names.CREDENTIAL_BINDING_PLURAL, name) for name in bindings]
    values += [reader.read(names.CREDENTIAL_PLURAL, name) for name in credentials]
    return merged(values)


def handle(args: argparse.Namespace) -> int:
    try:
        if not args.bindings and not args.credentials:
            raise workloadclient.ClientError(
                "nothing to fetch: name at least one --binding NAME (or --credential NAME)", workloadclient.EXIT_CONFIG
            )
        if args.interval <= 0:
            raise workloadclient.ClientError(
                "--interval must be a positive number of seconds", workloadclient.EXIT_CONFIG
            )
        reader = workloadclient.Reader(workloadclient.connection_from(args, workloadclient.environ()))
        data = read_all(reader, args.bindings, args.credentials)
        written = write_files(args.dir, data, args.mode, set())
    except workloadclient.ClientError as error:
        return workloadclient.fail("fetch", error)
    print(f"credbridge fetch: {len(data)} file(s) in {args.dir}, {len(written)} written", file=sys.stderr)
    if not args.watch:
        reader.close()
        return 0
    return watch(reader, args, set(data))


def watch(
    reader: workloadclient.Reader,
    args: argparse.Namespace,
    keys: set[str],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Read again every --interval seconds until SIGTERM; update changed files, keep them on failure."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        sleep(args.interval)
        try:
            data = read_all(reader, args.bindings, args.credentials)
            written = write_files(args.dir, data, args.mode, keys)
        except workloadclient.ClientError as error:
            print(f"credbridge fetch: {error} (keeping the current files)", file=sys.stderr)
            continue
        keys = set(data)
        if written:
            print(f"credbridge fetch: updated {', '.join(written)} in {args.dir}", file=sys.stderr)

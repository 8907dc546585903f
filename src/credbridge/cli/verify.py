"""`credbridge verify NAME -n NS`: check a Credential against its service now, and print what was found.

Verification runs on its own (on content change and periodically); a user who just rotated a
key, or is debugging "credential not working", wants the answer now. The command asks for it
the Kubernetes way — it sets the annotation `credbridge.io/verify-requested` to the current time,
which the operator's verification controller acts on once — then waits until
`status.lastVerifiedTime` moves past that moment and prints the `Verified` condition (and the
expiry, when one is known). Needs `patch` and `get` on the Credential. Exit 0 when the
credential is Valid, 1 for any other outcome, 2 when the check could not be asked for or did
not finish within `--timeout`.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import typing

from credbridge.core import conditions, verification
from credbridge.kube import credentials

EXIT_VALID = 0
EXIT_NOT_VALID = 1
EXIT_FAILED = 2


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check a Credential against its service now and print the outcome",
        description=(
            "Ask the operator to verify a Credential now (annotation credbridge.io/verify-requested), wait for "
            "the check and print its Verified condition. Exit 0 when Valid, 1 for another outcome, 2 when the "
            "request failed or timed out."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the Credential")
    parser.add_argument(
        "-n", "--namespace", default="default", metavar="NS", help="the Credential's namespace (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the check (default: %(default)s)",
    )
    parser.add_argument("--no-wait", action="store_true", help="only ask for the check; do not wait for it")
    parser.set_defaults(handler=handle)


def request_value(now: datetime.datetime) -> str:
    """The annotation value for a request made at `now` (RFC 3339 to the microsecond, so two requests differ)."""
    return now.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def answered(credential: typing.Mapping[str, typing.Any], request: str) -> bool:
    """Tells whether the Credential's status shows a check that answered `request`."""
    status = credential.get("status") or {}
    return status.get("lastVerifyRequest") == request and bool(status.get("lastVerifiedTime"))


def describe(credential: typing.Mapping[str, typing.Any]) -> tuple[str, bool]:
    """(text to print, whether the outcome is Valid) from a Credential's status."""
    status = credential.get("status") or {}
    found = conditions.find(status, verification.VERIFIED) or {}
    lines = [
        f"Verified: {found.get('status', 'Unknown')} ({found.get('reason', 'no check yet')})",
        f"  {found.get('message', '')}".rstrip(),
        f"  checked at {status.get('lastVerifiedTime', 'never')}",
    ]
    if status.get("expiresAt"):
        lines.append(f"  expires at {status['expiresAt']}")
    return "\n".join(line for line in lines if line.strip()), found.get("reason") == verification.Outcome.VALID.value


def handle(args: argparse.Namespace) -> int:
    where = f"Credential {args.namespace}/{args.name}"
    request = request_value(datetime.datetime.now(datetime.UTC))
    try:
        api = credentials.connect()
        credential = credentials.annotate_credential(
            api, args.namespace, args.name, verification.VERIFY_REQUESTED_ANNOTATION, request
        )
        if credential is None:
            print(f"credbridge verify: {where} not found: check the name and -n NAMESPACE", file=sys.stderr)
            return EXIT_FAILED
        if args.no_wait:
            print(f"asked for a check of {where}")
            return EXIT_VALID
        deadline = time.monotonic() + args.timeout
        while not answered(credential, request):
            if time.monotonic() > deadline:
                print(
                    f"credbridge verify: {where} was not checked within {args.timeout:g} seconds: is the operator "
                    "running with verification on? (kubectl describe credential shows the last check)",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            time.sleep(1.0)
            credential = credentials.read_credential(api, args.namespace, args.name) or {}
    except credentials.ApiError as error:
        print(f"credbridge verify: {error}", file=sys.stderr)
        return EXIT_FAILED
    text, valid = describe(credential)
    print(text)
    return EXIT_VALID if valid else EXIT_NOT_VALID

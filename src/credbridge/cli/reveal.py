"""`credbridge reveal`: decrypt one Credential's managed Secret, for an admin who needs the values.

Debugging ("is the key the operator sealed the one I expect?") and break-glass access need the
plaintext, and the only way to it is the same envelope the operator writes. Reading it takes
`get` on the Credential, on its Secret and on the keyring Secret in the operator's namespace, so
RBAC decides who may reveal; a refusal names the object that could not be read. Values go to
stdout only (JSON, or one raw value for piping), with a warning on stderr that they are shown.
"""

from __future__ import annotations

import argparse
import json
import sys

from credbridge.cli import keys
from credbridge.core import envelope, keyring, names, planning
from credbridge.kube import credentials


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reveal",
        help="decrypt and print a Credential's values (admin; needs get on secrets)",
        description=(
            "Decrypt a Credential's managed Secret with the keyring and print its fields as JSON, or one field's "
            "raw value with --field. Needs get on the Credential and its Secret in NS and on the keyring Secret "
            "in the operator's namespace."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the Credential")
    parser.add_argument(
        "-n", "--namespace", default="default", metavar="NS", help="the Credential's namespace (default: %(default)s)"
    )
    parser.add_argument("--field", metavar="F", help="print only this field's value, raw (no JSON, no newline)")
    keys.add_keyring_arguments(parser)
    parser.set_defaults(handler=handle)


class RevealError(Exception):
    """Reveal cannot go on; the message names the object and the fix, never a value."""


def _rbac_hint(error: credentials.ApiError, namespace: str, operator_namespace: str) -> str:
    if not error.forbidden:
        return str(error)
    return (
        f"{error} (reveal needs get on credentials and secrets in namespace {namespace} and get on secrets in "
        f"namespace {operator_namespace}, where the keyring is)"
    )


def _ready_condition(credential: planning.Json) -> dict[str, str] | None:
    for condition in (credential.get("status") or {}).get("conditions") or []:
        if condition.get("type") == names.READY_CONDITION:
            return {key: str(value) for key, value in condition.items()}
    return None


def reveal(api: credentials.ApiClient, args: argparse.Namespace) -> dict[str, str]:
    """The decrypted fields of the Credential `args` names; raises RevealError or ApiError."""
    namespace, name = args.namespace, args.name
    credential = credentials.read_credential(api, namespace, name)
    if credential is None:
        raise RevealError(f"Credential {namespace}/{name} not found: check the name and -n NAMESPACE")
    ready = _ready_condition(credential)
    if ready is None or ready.get("status") != "True":
        reason = f"{ready.get('reason', '')}: {ready.get('message', '')}" if ready else "no Ready condition yet"
        raise RevealError(
            f"Credential {namespace}/{name} is not Ready ({reason}): fix it (kubectl describe credential) and retry"
        )
    view = planning.CredentialView.from_object(credential)
    # The envelope is bound to the Secret name the spec gives (associated data), so read that one.
    secret_name = view.secret_name
    secret = credentials.read_secret(api, namespace, secret_name)
    if secret is None:
        raise RevealError(
            f"Secret {namespace}/{secret_name} of Credential {namespace}/{name} does not exist: the operator "
            "re-creates it on its next reconcile; check that it runs"
        )
    ring = credentials.load_keyring(api, args.operator_namespace, args.keyring_secret)
    try:
        fields = planning.open_managed_secret(view, planning.SecretView.from_object(secret), ring)
    except envelope.EnvelopeError as error:
        raise RevealError(
            f"Secret {namespace}/{secret_name}: {error} with keyring Secret "
            f"{args.operator_namespace}/{args.keyring_secret}: check --operator-namespace and --keyring-secret, or "
            "whether the key was retired or the Secret edited"
        ) from None
    return dict(fields)


def handle(args: argparse.Namespace) -> int:
    try:
        api = credentials.connect(as_user=args.as_user)
        fields = reveal(api, args)
    except credentials.ApiError as error:
        print(f"credbridge reveal: {_rbac_hint(error, args.namespace, args.operator_namespace)}", file=sys.stderr)
        return 1
    except (RevealError, keyring.KeyringError) as error:
        print(f"credbridge reveal: {error}", file=sys.stderr)
        return 1
    if args.field is not None and args.field not in fields:
        print(
            f"credbridge reveal: Credential {args.namespace}/{args.name} has no field {args.field!r} "
            f"(fields: {', '.join(sorted(fields)) or 'none'})",
            file=sys.stderr,
        )
        return 1
    shown = f"field {args.field!r}" if args.field is not None else "all fields"
    print(
        f"credbridge reveal: WARNING: showing the decrypted values ({shown}) of Credential "
        f"{args.namespace}/{args.name}; mind your terminal, scrollback and logs",
        file=sys.stderr,
    )
    if args.field is not None:
        sys.stdout.write(fields[args.field])
        if sys.stdout.isatty():
            sys.stdout.write("\n")
    else:
        print(json.dumps(fields, indent=2, sort_keys=True))
    sys.stdout.flush()
    return 0

"""`credbridge keys list|rotate|retire`: manage the keyring the operator encrypts with.

Rotation is routine and must never lose a credential: `rotate` only adds a key and makes it
active (the running operator notices and re-encrypts in the background), and `retire` removes a
key only when no Credential in the cluster still names it in `status.keyId`. Key material never
leaves the keyring Secret: this command prints key ids only.
"""

from __future__ import annotations

import argparse
import collections
import sys

from credbridge.cli import types as types_command
from credbridge.core import keyring, names
from credbridge.kube import credentials
from credbridge.operator import runner


def add_keyring_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that locate the keyring and the identity to act as (shared with `reveal`)."""
    parser.add_argument(
        "--keyring-secret",
        default=names.DEFAULT_KEYRING_SECRET,
        metavar="NAME",
        help="name of the keyring Secret (default: %(default)s)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=runner.default_operator_namespace(),
        metavar="NS",
        help="namespace of the keyring Secret (default: $POD_NAMESPACE or credbridge-system)",
    )
    parser.add_argument("--as", dest="as_user", metavar="USER", help="impersonate USER (to check what USER may do)")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="list, rotate and retire encryption keys",
        description="Manage the keyring Secret the operator encrypts Credentials with. Prints key ids, never keys.",
    )
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="key ids, which one is active, and how many Credentials use each")
    add_keyring_arguments(listing)
    rotate = commands.add_parser(
        "rotate", help="add a new key and make it active; the operator re-encrypts every Credential in the background"
    )
    add_keyring_arguments(rotate)
    retire = commands.add_parser("retire", help="remove a key that no Credential uses any more")
    retire.add_argument("key_id", metavar="ID", help="key id to remove (see `credbridge keys list`)")
    add_keyring_arguments(retire)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    command = f"credbridge keys {args.keys_command}"
    try:
        api = credentials.connect(as_user=args.as_user)
        if args.keys_command == "list":
            _list(api, args.operator_namespace, args.keyring_secret)
        elif args.keys_command == "rotate":
            _rotate(api, args.operator_namespace, args.keyring_secret)
        else:
            _retire(api, args.operator_namespace, args.keyring_secret, args.key_id)
    except (credentials.ApiError, keyring.KeyringError) as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 1
    return 0


def _list(api: credentials.ApiClient, namespace: str, name: str) -> None:
    ring = credentials.load_keyring(api, namespace, name)
    users = collections.Counter(credentials.list_key_ids_in_use(api))
    rows = [[key_id, "yes" if key_id == ring.active_id else "", str(users.get(key_id, 0))] for key_id in ring.ids()]
    print(types_command.format_table(["KEY ID", "ACTIVE", "CREDENTIALS"], rows))
    foreign = sum(count for key_id, count in users.items() if key_id not in ring.keys)
    if foreign:
        print(
            f"\n{foreign} Credential(s) name keys that are not in keyring Secret {namespace}/{name} "
            "(another operator's keyring, or keys removed by hand)",
            file=sys.stderr,
        )


def _rotate(api: credentials.ApiClient, namespace: str, name: str) -> None:
    before = credentials.load_keyring(api, namespace, name)
    rotated = credentials.rotate_keyring(api, namespace, name)
    print(f"new active key: {rotated.active_id} (previous: {before.active_id})")
    print(
        "The running operator re-encrypts every Credential with the new key in the background; watch the KEY "
        "column of `kubectl get credentials -A -o wide`, then retire the old key with "
        f"`credbridge keys retire {before.active_id}`.",
        file=sys.stderr,
    )


def _retire(api: credentials.ApiClient, namespace: str, name: str, key_id: str) -> None:
    in_use = credentials.list_key_ids_in_use(api)
    retired = credentials.retire_key(api, namespace, name, key_id, in_use)
    print(f"retired key {key_id}; keys left: {', '.join(retired.ids())} (active: {retired.active_id})")

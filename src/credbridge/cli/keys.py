"""`credbridge keys list|rotate|retire|export|import`: manage the keyring the operator encrypts and unseals with.

Rotation is routine and must never lose a credential: `rotate` only adds a key and makes it
active (the running operator notices and re-encrypts in the background), and `retire` removes a
key only when no Credential in the cluster still names it in `status.keyId`. With `--sealing` the
same commands manage the sealing key pairs `credbridge seal` seals to: `retire --sealing` refuses
while any Credential's spec.sealedData was sealed with the key, naming them.

Key material leaves the keyring Secret only through `export`, encrypted with a passphrase
(core.keybundle), for backup; `import` puts it back — after a reinstall, or into a new cluster that
must open the same sealed values. Passphrases are read from a prompt without echo or from a file,
never the command line. Everything else prints key ids only.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import getpass
import os
import pathlib
import secrets
import sys

from credbridge.cli import types as types_command
from credbridge.core import keybundle, keyring, names
from credbridge.kube import credentials
from credbridge.operator import runner


def add_keyring_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
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
    sealing_help = "the sealing key pairs (credbridge seal) instead of the encryption keys"
    listing = commands.add_parser("list", help="key ids, which one is active, and how many Credentials use each")
    listing.add_argument("--sealing", action="store_true", help=sealing_help)
    add_keyring_arguments(listing)
    rotate = commands.add_parser(
        "rotate", help="add a new key and make it active; the operator re-encrypts every Credential in the background"
    )
    rotate.add_argument(
        "--sealing",
        action="store_true",
        help="add a new sealing key pair instead; older pairs keep opening what was sealed with them",
    )
    add_keyring_arguments(rotate)
    retire = commands.add_parser("retire", help="remove a key that no Credential uses any more")
    retire.add_argument("key_id", metavar="ID", help="key id to remove (see `credbridge keys list`)")
    retire.add_argument("--sealing", action="store_true", help=sealing_help)
    add_keyring_arguments(retire)
    export = commands.add_parser(
        "export", help="write every key (encryption and sealing) into a passphrase-protected bundle, for backup"
    )
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="the bundle to write (not overwritten)")
    export.add_argument(
        "--passphrase-file", metavar="FILE", help="read the passphrase from the first line of FILE (default: prompt)"
    )
    add_keyring_arguments(export)
    restore = commands.add_parser(
        "import",
        help="put the keys of a bundle into the keyring (created when absent); the bundle's keys become active",
    )
    restore.add_argument("bundle", metavar="FILE", help="a bundle written by `credbridge keys export`")
    restore.add_argument(
        "--passphrase-file", metavar="FILE", help="read the passphrase from the first line of FILE (default: prompt)"
    )
    add_keyring_arguments(restore)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    command = f"credbridge keys {args.keys_command}"
    namespace, name = args.operator_namespace, args.keyring_secret
    try:
        api = credentials.connect(as_user=args.as_user)
        sealing_keys = getattr(args, "sealing", False)
        if args.keys_command == "list":
            (_list_sealing if sealing_keys else _list)(api, namespace, name)
        elif args.keys_command == "rotate":
            (_rotate_sealing if sealing_keys else _rotate)(api, namespace, name)
        elif args.keys_command == "retire":
            (_retire_sealing if sealing_keys else _retire)(api, namespace, name, args.key_id)
        elif args.keys_command == "export":
            _export(api, namespace, name, pathlib.Path(args.output), args.passphrase_file)
        else:
            _import(api, namespace, name, pathlib.Path(args.bundle), args.passphrase_file)
    except (credentials.ApiError, keyring.KeyringError, keybundle.BundleError, PassphraseError) as error:
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


def _list_sealing(api: credentials.ApiClient, namespace: str, name: str) -> None:
    ring = credentials.load_keyring(api, namespace, name)
    users = credentials.sealing_key_users(api)
    rows = [
        [key_id, "yes" if key_id == ring.active_sealing_id else "", str(len(users.get(key_id, [])))]
        for key_id in ring.sealing_ids()
    ]
    print(types_command.format_table(["SEALING KEY ID", "ACTIVE", "CREDENTIALS"], rows))
    foreign = sorted(key_id for key_id in users if key_id not in ring.sealing_keys)
    if foreign:
        print(
            f"\nCredentials hold values sealed with key(s) {', '.join(foreign)}, which keyring Secret "
            f"{namespace}/{name} does not have (retired, or sealed for another cluster): they report SealKeyUnknown",
            file=sys.stderr,
        )


def _rotate_sealing(api: credentials.ApiClient, namespace: str, name: str) -> None:
    before = credentials.load_keyring(api, namespace, name)
    rotated = credentials.rotate_sealing_key(api, namespace, name)
    print(f"new active sealing key: {rotated.active_sealing_id} (previous: {before.active_sealing_id})")
    print(
        "The operator publishes the new public key and keeps opening values sealed with the previous one. Seal new "
        "values with a fresh certificate (credbridge seal --fetch-cert); move existing manifests to the new key with "
        "`credbridge seal --reseal -f DIR` once their Credentials show SealedWithOldKey, then retire "
        f"the old key with `credbridge keys retire --sealing {before.active_sealing_id}`.",
        file=sys.stderr,
    )


def _retire_sealing(api: credentials.ApiClient, namespace: str, name: str, key_id: str) -> None:
    users = credentials.sealing_key_users(api).get(key_id, [])
    retired = credentials.retire_sealing_key(api, namespace, name, key_id, users)
    print(
        f"retired sealing key {key_id}; sealing keys left: {', '.join(retired.sealing_ids())} "
        f"(active: {retired.active_sealing_id})"
    )


class PassphraseError(Exception):
    """No usable passphrase; the message says how to give one."""


def _passphrase(path: str | None, *, confirm: bool) -> str:
    """The passphrase from the first line of `path`, or typed twice (`confirm`) at a prompt without echo."""
    if path:
        try:
            lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise PassphraseError(
                f"cannot read --passphrase-file {path}: {getattr(error, 'strerror', error)}"
            ) from None
        if not lines or not lines[0]:
            raise PassphraseError(f"--passphrase-file {path} is empty: put the passphrase on its first line")
        return lines[0]
    if not sys.stdin.isatty():
        raise PassphraseError("no terminal to ask for the passphrase: give --passphrase-file FILE")
    passphrase = getpass.getpass("bundle passphrase (not shown): ")
    if confirm and getpass.getpass("again: ") != passphrase:
        raise PassphraseError("the two passphrases differ: nothing was written")
    return passphrase


def _export(
    api: credentials.ApiClient, namespace: str, name: str, output: pathlib.Path, passphrase_file: str | None
) -> None:
    if output.exists():
        raise PassphraseError(f"{output} exists: choose another file (a bundle is never overwritten)")
    ring = credentials.load_keyring(api, namespace, name)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = keybundle.export_bundle(ring, _passphrase(passphrase_file, confirm=True), secrets.token_bytes, now)
    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    print(
        f"exported keyring Secret {namespace}/{name} to {output}: keys {', '.join(ring.ids())} (active "
        f"{ring.active_id}), sealing keys {', '.join(ring.sealing_ids()) or 'none'} (active {ring.active_sealing_id})"
    )
    print(
        "Keep the bundle and its passphrase apart: together they open every Credential and sealed value. Restore "
        "with `credbridge keys import FILE` (docs/operations.md, restore drill).",
        file=sys.stderr,
    )


def _import(
    api: credentials.ApiClient, namespace: str, name: str, bundle: pathlib.Path, passphrase_file: str | None
) -> None:
    try:
        text = bundle.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PassphraseError(f"cannot read bundle {bundle}: {getattr(error, 'strerror', error)}") from None
    imported = keybundle.import_bundle(text, _passphrase(passphrase_file, confirm=False))
    ring, created = credentials.restore_keyring(api, namespace, name, imported)
    verb = "created" if created else "updated"
    print(
        f"{verb} keyring Secret {namespace}/{name} from {bundle}: keys {', '.join(ring.ids())} "
        f"(active {ring.active_id}), sealing keys {', '.join(ring.sealing_ids())} (active {ring.active_sealing_id})"
    )
    if not created:
        print(
            "The running operator takes the keys without a restart: Credentials that reported SealKeyUnknown are "
            "opened again, and every Credential moves to the active key in the background.",
            file=sys.stderr,
        )

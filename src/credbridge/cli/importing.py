"""`credbridge import flowise`: move an existing Flowise's credentials into credbridge, same ids.

Two sources:
- its database (`--database postgresql://USER@HOST:PORT/DB`) with its encryption key (the value
  of `FLOWISE_SECRETKEY_OVERWRITE`, read from an environment variable, or Flowise's key file):
  every credential with its values, decrypted from Flowise's stored format;
- its API (`--url` and an API key): names, types and ids only, because Flowise's API never
  returns password fields.

Output goes to a directory (`--output-dir`: one Credential manifest per credential, which holds
no value, and its values Secret under `secrets/`; every file mode 0600) or to the cluster
(`--apply`). Values never go to the terminal or a log: the report names credentials, ids, types
and fields only. Everything is read and checked before anything is written, so a wrong key
writes nothing; a row that cannot be imported is skipped and reported, and the rest are imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys

import yaml

from credbridge.core import redaction, registry
from credbridge.core.flowise import migration, stored
from credbridge.flowise import client as flowise_client
from credbridge.flowise import database
from credbridge.kube import credentials as kube_credentials

EXIT_NOTHING_IMPORTED = 1
EXIT_USAGE = 2


@dataclasses.dataclass(frozen=True)
class ImportDefaults:
    """Defaults of `credbridge import flowise`."""

    key_env: str = "FLOWISE_SECRETKEY_OVERWRITE"
    """Environment variable holding Flowise's encryption key (never a command-line argument: `ps` shows those)."""
    namespace: str = "default"
    """Namespace the manifests are written for."""
    api_key_env: str = "FLOWISE_API_KEY"
    """Environment variable holding a Flowise API key for `--url`."""


class ImportError_(Exception):
    """The import cannot go on; the message says why and how to fix it, never a value."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = ImportDefaults()
    parser = subparsers.add_parser(
        "import",
        help="import credentials from another system (flowise)",
        description="Import credentials from another system into credbridge manifests.",
    )
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    flowise = sources.add_parser(
        "flowise",
        help="import a Flowise server's credentials, keeping their ids",
        description=(
            "Read a Flowise's credentials and write Credential manifests with the same ids, names and types, plus "
            "the Secrets holding their values. From the database (--database, with the encryption key) values are "
            "imported; from the API (--url, with an API key) only names, types and ids."
        ),
    )
    source = flowise.add_mutually_exclusive_group(required=True)
    source.add_argument("--database", metavar="URL", help="postgresql://USER@HOST:PORT/DATABASE of the Flowise")
    source.add_argument("--url", metavar="URL", help="base URL of the Flowise (API-only mode: no values)")
    flowise.add_argument(
        "--database-password-file",
        type=pathlib.Path,
        metavar="FILE",
        help="file holding the database password (default: $PGPASSWORD)",
    )
    key = flowise.add_mutually_exclusive_group()
    key.add_argument(
        "--key-env",
        default=defaults.key_env,
        metavar="VAR",
        help="environment variable holding Flowise's encryption key, exactly as Flowise had it (default: %(default)s)",
    )
    key.add_argument(
        "--key-file",
        type=pathlib.Path,
        metavar="FILE",
        help="Flowise's key file (its exact bytes: a trailing newline is part of the key, as it is for Flowise)",
    )
    flowise.add_argument(
        "--api-key-env",
        default=defaults.api_key_env,
        metavar="VAR",
        help="environment variable holding the Flowise API key for --url (default: %(default)s)",
    )
    flowise.add_argument(
        "--ca-file", type=pathlib.Path, metavar="FILE", help="CA bundle that signs Flowise's certificate (--url)"
    )
    flowise.add_argument(
        "-n", "--namespace", default=defaults.namespace, help="namespace of the Credentials (default: %(default)s)"
    )
    output = flowise.add_mutually_exclusive_group(required=True)
    output.add_argument(
        "--output-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="write <name>.yaml (Credential) and secrets/<name>-values.yaml (its values) here, mode 0600",
    )
    output.add_argument("--apply", action="store_true", help="create the Secrets and Credentials in the cluster")
    flowise.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except (ImportError_, database.DatabaseError, flowise_client.FlowiseError, kube_credentials.ApiError) as error:
        print(f"credbridge import flowise: {error}", file=sys.stderr)
        return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    if args.database:
        rows, skipped, source = _from_database(args)
    else:
        rows, skipped, source = _from_api(args)
    types = registry.Registry.builtin()
    if args.output_dir:
        imported, invalid = migration.import_all(rows, namespace=args.namespace, types=types, source=source)
        skipped.extend(invalid)
        written = _write_directory(args.output_dir, imported)
    else:
        api = kube_credentials.connect()
        types = _with_cluster_types(api, types)
        imported, invalid = migration.import_all(rows, namespace=args.namespace, types=types, source=source)
        skipped.extend(invalid)
        written = _apply(api, imported, skipped)
    _report(written, skipped, values=args.database is not None)
    return 0 if written or not (rows or skipped) else EXIT_NOTHING_IMPORTED


def _key(args: argparse.Namespace) -> bytes:
    if args.key_file is not None:
        try:
            return bytes(args.key_file.read_bytes())
        except OSError as error:
            raise ImportError_(f"cannot read the key file {args.key_file}: {error.strerror}") from None
    value = os.environ.get(args.key_env)
    if not value:
        raise ImportError_(
            f"the environment variable {args.key_env} is not set: set it to Flowise's encryption key (the value of "
            "its FLOWISE_SECRETKEY_OVERWRITE), or pass --key-file with Flowise's key file"
        )
    return value.encode("utf-8")


def _from_database(
    args: argparse.Namespace,
) -> tuple[list[migration.StoredCredential], list[migration.Skipped], str]:
    key = _key(args)
    password = None
    if args.database_password_file is not None:
        password = redaction.Redacted(args.database_password_file.read_text().rstrip("\n"))
    elif os.environ.get("PGPASSWORD"):
        password = redaction.Redacted(os.environ["PGPASSWORD"])
    address = database.DatabaseAddress.from_url(args.database, password)
    rows = database.read_credentials(address)
    decrypted: list[migration.StoredCredential] = []
    skipped: list[migration.Skipped] = []
    for row in rows:
        try:
            fields = stored.decrypt_fields(row.encrypted_data, key)
        except stored.StoredDataError:
            skipped.append(
                migration.Skipped(
                    row.id, row.name, "its encryptedData could not be decrypted (damaged row, or another key)"
                )
            )
            continue
        decrypted.append(migration.StoredCredential(row.id, row.name, row.credential_name, fields))
    if rows and not decrypted:
        raise ImportError_(
            f"none of the {len(rows)} credential(s) in {address} could be decrypted with this key: nothing was "
            "written. Use the exact key Flowise used (FLOWISE_SECRETKEY_OVERWRITE, or the content of its key file)"
            + _newline_hint(key)
        )
    return decrypted, skipped, f"flowise database {address}"


def _newline_hint(key: bytes) -> str:
    if key.endswith(b"\n"):
        return (
            "; the key ends with a newline, which makes it a different key: if Flowise had the key in "
            "FLOWISE_SECRETKEY_OVERWRITE, pass it without the newline (e.g. --key-env)"
        )
    return (
        "; if Flowise read its key from a file that ends with a newline, that newline is part of the key: "
        "pass the file itself with --key-file"
    )


def _from_api(args: argparse.Namespace) -> tuple[list[migration.StoredCredential], list[migration.Skipped], str]:
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        raise ImportError_(f"the environment variable {args.api_key_env} is not set: set it to a Flowise API key")
    ca_pem = args.ca_file.read_text() if args.ca_file else None
    try:
        flowise = flowise_client.FlowiseClient(args.url, redaction.Redacted(api_key.strip()), ca_pem=ca_pem)
    except ValueError as error:
        raise ImportError_(str(error)) from None
    found: list[migration.StoredCredential] = []
    for item in flowise.list_credentials():
        try:
            field_names = tuple(flowise.credential_field_names(item.id))
        except flowise_client.Forbidden:
            field_names = ()  # a key with credentials:view only: the type's required fields are used
        found.append(migration.StoredCredential(item.id, item.name, item.credential_name, None, field_names))
    flowise.close()
    return found, [], f"flowise api {flowise.url}"


def _with_cluster_types(api: kube_credentials.ApiClient, types: registry.Registry) -> registry.Registry:
    for obj in kube_credentials.list_credential_types(api):
        try:
            spec = registry.type_from_object(obj)
        except registry.TypeDefinitionError:
            continue
        if spec.name not in types.builtins:
            types = types.with_custom(spec)
    return types


def _dump(obj: dict[str, object]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def _write_private(path: pathlib.Path, text: str) -> None:
    """Creates `path` with mode 0600 (never wider, not even for a moment); refuses to replace a file."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _write_directory(directory: pathlib.Path, imported: list[migration.Imported]) -> list[migration.Imported]:
    secrets_dir = directory / "secrets"
    clashes = [
        str(path)
        for item in imported
        for path in (
            directory / f"{item.credential['metadata']['name']}.yaml",
            secrets_dir / f"{item.credential['metadata']['name']}{migration.VALUES_SUFFIX}.yaml",
        )
        if path.exists()
    ]
    if clashes:
        raise ImportError_(f"refusing to overwrite existing files ({', '.join(clashes[:5])}): use an empty directory")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(item.secret is not None for item in imported):
        secrets_dir.mkdir(mode=0o700, exist_ok=True)
    for item in imported:
        name = item.credential["metadata"]["name"]
        _write_private(directory / f"{name}.yaml", _dump(item.credential))
        if item.secret is not None:
            _write_private(secrets_dir / f"{name}{migration.VALUES_SUFFIX}.yaml", _dump(item.secret))
    return imported


def _apply(
    api: kube_credentials.ApiClient, imported: list[migration.Imported], skipped: list[migration.Skipped]
) -> list[migration.Imported]:
    written = []
    for item in imported:
        metadata = item.credential["metadata"]
        where = f"{metadata['namespace']}/{metadata['name']}"
        if item.secret is not None and not kube_credentials.create_secret(api, item.secret):
            skipped.append(
                migration.Skipped(
                    item.credential["spec"]["id"],
                    item.credential["spec"]["displayName"],
                    f"Secret {where}-values exists",
                )
            )
            continue
        if not kube_credentials.create_credential(api, item.credential):
            skipped.append(
                migration.Skipped(
                    item.credential["spec"]["id"], item.credential["spec"]["displayName"], f"Credential {where} exists"
                )
            )
            continue
        written.append(item)
    return written


def _report(written: list[migration.Imported], skipped: list[migration.Skipped], *, values: bool) -> None:
    """What was imported and skipped: names, ids, types and field names, never a value."""
    for item in written:
        spec, metadata = item.credential["spec"], item.credential["metadata"]
        fields = ", ".join(sorted(spec.get("valueFrom") or {})) or "-"
        print(f"imported  {metadata['name']:<32} id {spec['id']}  type {spec['type']}  fields {fields}")
        for warning in item.warnings:
            print(f"  note: {warning}")
    for dropped in skipped:
        print(f"skipped   {dropped.name!r} (id {dropped.id}): {dropped.reason}")
    summary = f"{len(written)} imported, {len(skipped)} skipped"
    if written and not values:
        summary += "; no values (API-only): create the Secrets named in each Credential's spec.valueFrom"
    print(summary)

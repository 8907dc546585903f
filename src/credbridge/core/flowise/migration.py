"""From Flowise credentials to credbridge manifests: what `credbridge import flowise` writes.

Each Flowise credential becomes a Credential with the same id (so flows that reference it keep
working), its name as `spec.displayName` and its `credentialName` as `spec.type`, and every field
taken from a Secret (`spec.valueFrom`) that is written next to it: the Credential manifest holds
no value and can go to Git, the Secret goes only where the user sends it.

Rows are validated against the type registry the way the operator would; a row that cannot
become a valid Credential is skipped with the reason (field names, never values), and the rest
are imported.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import re
import typing

from credbridge.core import names, redaction, registry, validation
from credbridge.core.oauth2 import store, tokens

Json = dict[str, typing.Any]

IMPORTED_FROM_ANNOTATION = f"{names.GROUP}/imported-from"
"""On imported Credentials: `flowise` plus where from, for people reading the manifests later."""
VALUES_SUFFIX = "-values"
"""The Secret holding a Credential's values is named `<credential name><suffix>`."""
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


@dataclasses.dataclass(frozen=True)
class StoredCredential:
    """One credential read from Flowise: its row, and its fields when they could be decrypted."""

    id: str
    name: str
    credential_name: str
    fields: redaction.SecretFields | None = dataclasses.field(default=None, repr=False)
    """The decrypted fields; None in API-only mode (names, types and ids only)."""
    field_names: tuple[str, ...] = ()
    """In API-only mode: the fields Flowise reported (names only), when it did."""


@dataclasses.dataclass(frozen=True)
class Imported:
    """A Credential manifest and, when values were imported, the Secret it reads them from."""

    credential: Json
    secret: Json | None = dataclasses.field(repr=False)
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A Flowise credential that was not imported, and why (names, never values)."""

    id: str
    name: str
    reason: str


def object_name(display_name: str, credential_id: str, taken: collections.abc.Container[str]) -> str:
    """A DNS-1123 name for a Credential made from a Flowise credential name, unique among `taken`."""
    slug = re.sub(r"[^a-z0-9]+", "-", display_name.lower()).strip("-")[:50].strip("-") or "flowise-credential"
    if not slug[0].isalpha():
        slug = "cred-" + slug
    if slug not in taken:
        return slug
    return f"{slug}-{re.sub(r'[^a-z0-9]', '', credential_id.lower())[:8] or 'x'}"


def import_credential(
    stored: StoredCredential,
    *,
    namespace: str,
    name: str,
    types: registry.Registry,
    source: str,
) -> Imported | Skipped:
    """Builds the manifests for one stored credential, or says why it cannot be imported."""
    cred_type = types.get(stored.credential_name)
    if cred_type is None:
        return Skipped(
            stored.id,
            stored.name,
            f"type {stored.credential_name!r} is not a known CredentialType: create it, then import again",
        )
    warnings: list[str] = []
    if stored.fields is None:
        wanted = [field for field in cred_type.field_names() if field in stored.field_names]
        required = [spec.name for spec in cred_type.inputs if spec.required]
        field_names = sorted(set(wanted) | set(required), key=cred_type.field_names().index)
        values: dict[str, str] = {}
    else:
        unknown = sorted(field for field in stored.fields if cred_type.field(field) is None)
        if unknown:
            warnings.append(
                f"dropped field(s) {', '.join(unknown)}, which type {cred_type.name} does not define "
                "(left over from an older Flowise?)"
            )
        values = {field: stored.fields[field] for field in stored.fields if cred_type.field(field) is not None}
        bad_keys = sorted(field for field in values if not _SECRET_KEY.fullmatch(field))
        if bad_keys:
            return Skipped(stored.id, stored.name, f"field name(s) {', '.join(bad_keys)} cannot be Secret keys")
        _, problems = validation.finalize(cred_type, values)
        if problems:
            return Skipped(stored.id, stored.name, validation.summarize(problems))
        field_names = list(values)
    secret_name = name + VALUES_SUFFIX
    spec: Json = {"type": cred_type.name, "displayName": stored.name, "id": stored.id}
    value_from: Json = {field: {"secretKeyRef": {"name": secret_name, "key": field}} for field in field_names}
    value_from.update(_token_references(cred_type, secret_name, value_from))
    if value_from:
        spec["valueFrom"] = value_from
    credential = {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {IMPORTED_FROM_ANNOTATION: source},
        },
        "spec": spec,
    }
    if stored.fields is None:
        return Imported(credential, None, tuple(warnings))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name,
            "namespace": namespace,
            "annotations": {IMPORTED_FROM_ANNOTATION: source},
        },
        "data": {field: base64.b64encode(value.encode("utf-8")).decode("ascii") for field, value in values.items()},
    }
    return Imported(credential, secret, tuple(warnings))


def _token_references(
    cred_type: registry.CredentialTypeSpec, secret_name: str, present: collections.abc.Container[str]
) -> Json:
    """For an OAuth2 type, optional references to the token fields the row did not have, in the same Secret.

    The tokens Flowise stored (refresh token, access token, expiry) are imported like any field; with
    these references the token Secret is also where `credbridge oauth2 authorize` and the operator's
    refresh write, so a credential never authorized in Flowise can be authorized right after the import.
    """
    if cred_type.oauth2 is None:
        return {}
    wanted = (*store.required_fields(cred_type.oauth2.grant), tokens.TOKEN_RECEIVED_AT)
    return {
        field: {"secretKeyRef": {"name": secret_name, "key": field, "optional": True}}
        for field in wanted
        if field not in present
    }


def import_all(
    stored: collections.abc.Sequence[StoredCredential],
    *,
    namespace: str,
    types: registry.Registry,
    source: str,
) -> tuple[list[Imported], list[Skipped]]:
    """Imports every credential; names stay unique within the batch."""
    imported: list[Imported] = []
    skipped: list[Skipped] = []
    taken: set[str] = set()
    for item in sorted(stored, key=lambda s: (s.name, s.id)):
        name = object_name(item.name, item.id, taken)
        result = import_credential(item, namespace=namespace, name=name, types=types, source=source)
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            taken.add(name)
            imported.append(result)
    return imported, skipped

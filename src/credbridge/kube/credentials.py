"""Cluster reads and writes for the command line, with API failures turned into one printable error.

The CLI must not import the client library (an import-linter contract), yet it has to tell a
missing object from a refused request and an unreachable server, and name what it tried to do.
Every function here runs its requests through `_requests_for`, which raises `ApiError`: the
action, the HTTP status when there is one, and the API server's own explanation — never a
request or response body, which for Secrets holds their data.
"""

from __future__ import annotations

import base64
import collections
import collections.abc
import json
import secrets
import typing
from typing import Any, TypeAlias

from kubernetes import client

from credbridge.core import keyring, names, redaction, sealing
from credbridge.kube import connecting, errors, fetching, keyrings, sealingkeys

Json = dict[str, Any]
ApiClient: TypeAlias = connecting.ApiClient
"""The connection type, named here so the CLI can annotate it without importing the client library."""

ApiError = errors.ApiError
"""Re-exported for the CLI: every function here raises it."""
_requests_for = errors.translated


def connect(*, as_user: str | None = None) -> client.ApiClient:
    """An ApiClient from $KUBECONFIG (or ~/.kube/config, or the Pod), optionally impersonating `as_user`."""
    with _requests_for("load the cluster configuration"):
        return connecting.api_client(as_user=as_user)


def read_credential(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The Credential, or None when it does not exist."""
    with _requests_for(f"read Credential {namespace}/{name}"):
        return fetching.read_credential(api, namespace, name)


def read_secret(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The Secret, or None when it does not exist."""
    with _requests_for(f"read Secret {namespace}/{name}"):
        return fetching.read_secret(api, namespace, name)


def list_credentials(api: client.ApiClient) -> list[Json]:
    """Every Credential in the cluster."""
    with _requests_for("list Credentials in all namespaces"):
        return fetching.list_credentials(api)


def create_secret(api: client.ApiClient, secret: Json) -> bool:
    """Creates a Secret; False when one of that name exists already (it is left alone)."""
    namespace, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
    try:
        with _requests_for(f"create Secret {namespace}/{name}"):
            client.CoreV1Api(api).create_namespaced_secret(namespace, secret)
    except ApiError as error:
        if error.status == 409:
            return False
        raise
    return True


def create_credential(api: client.ApiClient, credential: Json) -> bool:
    """Creates a Credential; False when one of that name exists already (it is left alone)."""
    namespace, name = credential["metadata"]["namespace"], credential["metadata"]["name"]
    try:
        with _requests_for(f"create Credential {namespace}/{name}"):
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, credential
            )
    except ApiError as error:
        if error.status == 409:
            return False
        raise
    return True


def list_key_ids_in_use(api: client.ApiClient) -> list[str]:
    """`status.keyId` of every Credential in the cluster, one entry per Credential that has one."""
    key_ids = [str((credential.get("status") or {}).get("keyId") or "") for credential in list_credentials(api)]
    return [key_id for key_id in key_ids if key_id]


def list_credential_types(api: client.ApiClient) -> list[Json]:
    """Every CredentialType object in the cluster."""
    with _requests_for("list CredentialTypes"):
        return fetching.list_credential_types(api)


def load_keyring(api: client.ApiClient, namespace: str, name: str) -> keyring.Keyring:
    """The keyring; raises ApiError when the Secret is missing or unreadable, KeyringError when malformed."""
    action = f"read keyring Secret {namespace}/{name}"
    with _requests_for(action):
        loaded = keyrings.load(api, namespace, name)
    if loaded is None:
        raise ApiError(
            action,
            404,
            "it does not exist: check --operator-namespace and --keyring-secret "
            "(the operator creates it on first start)",
        )
    return loaded[0]


def rotate_keyring(api: client.ApiClient, namespace: str, name: str) -> keyring.Keyring:
    """Add a new random key to the keyring Secret and make it active; returns the new keyring."""
    with _requests_for(f"rotate keyring Secret {namespace}/{name}"):
        return keyrings.rotate(api, namespace, name, secrets.token_bytes)


def retire_key(
    api: client.ApiClient, namespace: str, name: str, key_id: str, in_use: collections.abc.Collection[str]
) -> keyring.Keyring:
    """Remove `key_id` from the keyring Secret; raises KeyringError while it is active or in `in_use`."""
    with _requests_for(f"retire key {key_id} from keyring Secret {namespace}/{name}"):
        return keyrings.retire(api, namespace, name, key_id, in_use)


def sealing_key_users(api: client.ApiClient) -> dict[str, list[str]]:
    """Sealing key id → `namespace/name` of every Credential with a spec.sealedData value sealed with it."""
    users: dict[str, list[str]] = collections.defaultdict(list)
    for credential in list_credentials(api):
        metadata = credential.get("metadata") or {}
        where = f"{metadata.get('namespace')}/{metadata.get('name')}"
        key_ids = {
            header.key_id
            for token in ((credential.get("spec") or {}).get("sealedData") or {}).values()
            if (header := sealing.read_header(str(token))) is not None
        }
        for key_id in key_ids:
            users[key_id].append(where)
    return dict(users)


def rotate_sealing_key(api: client.ApiClient, namespace: str, name: str) -> keyring.Keyring:
    """Add a new sealing key pair to the keyring Secret and make it active; returns the new keyring."""
    with _requests_for(f"rotate the sealing key in keyring Secret {namespace}/{name}"):
        rotated = keyrings.rotate_sealing(api, namespace, name, secrets.token_bytes)
    assert rotated is not None
    return rotated


def retire_sealing_key(
    api: client.ApiClient, namespace: str, name: str, key_id: str, users: collections.abc.Sequence[str]
) -> keyring.Keyring:
    """Remove sealing key `key_id`; raises KeyringError while it is active or `users` (Credentials) use it."""
    with _requests_for(f"retire sealing key {key_id} from keyring Secret {namespace}/{name}"):
        return keyrings.retire_sealing(api, namespace, name, key_id, users)


def restore_keyring(
    api: client.ApiClient, namespace: str, name: str, imported: keyring.Keyring
) -> tuple[keyring.Keyring, bool]:
    """Put a bundle's keys into the keyring Secret (created when absent); returns it and whether it was created."""
    with _requests_for(f"import keys into keyring Secret {namespace}/{name}"):
        return keyrings.restore(api, namespace, name, imported)


def read_sealing_certificate(api: client.ApiClient, namespace: str, name: str) -> tuple[str, str]:
    """(active sealing key id, PEM) as the operator publishes them in its ConfigMap."""
    return sealingkeys.read_certificate(api, namespace, name)


def annotate_credential(api: client.ApiClient, namespace: str, name: str, key: str, value: str) -> Json | None:
    """Sets one annotation on a Credential (merge patch); returns the Credential, or None when it does not exist."""
    try:
        with _requests_for(f"annotate Credential {namespace}/{name}"):
            result = client.CustomObjectsApi(api).patch_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                namespace,
                names.CREDENTIAL_PLURAL,
                name,
                {"metadata": {"annotations": {key: value}}},
            )
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    return typing.cast(Json, result)


def read_credential_type(api: client.ApiClient, object_name: str) -> Json | None:
    """The CredentialType object `object_name` (the lowercased type name), or None when it does not exist."""
    with _requests_for(f"read CredentialType {object_name}"):
        return fetching.read_credential_type(api, object_name)


def may_i(api: client.ApiClient, verb: str, namespace: str, resource: str, name: str = "") -> bool:
    """SelfSubjectAccessReview: may the caller `verb` the core `resource` (`name`, or any) in `namespace`?

    What `kubectl auth can-i` asks; lets a command refuse before it starts work it could not finish.
    """
    attributes = {"verb": verb, "resource": resource, "namespace": namespace}
    if name:
        attributes["name"] = name
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    with _requests_for(f"check whether you may {verb} {resource} in namespace {namespace} (SelfSubjectAccessReview)"):
        response = client.AuthorizationV1Api(api).create_self_subject_access_review(body, _preload_content=False)
    status: Json = json.loads(response.data).get("status") or {}
    return bool(status.get("allowed")) and not status.get("denied")


def write_secret_keys(
    api: client.ApiClient,
    namespace: str,
    name: str,
    values: collections.abc.Mapping[str, redaction.Redacted],
    *,
    annotations: collections.abc.Mapping[str, str] | None = None,
) -> bool:
    """Sets `values` (key → value) in the Secret `namespace/name`, creating it when it does not exist;
    other keys are left as they are. Returns True when the Secret was created.

    The values are never part of an error: a refusal names the Secret and the action only.
    """
    data = {key: base64.b64encode(value.reveal().encode("utf-8")).decode("ascii") for key, value in values.items()}
    core = client.CoreV1Api(api)
    with _requests_for(f"read Secret {namespace}/{name}"):
        exists = fetching.read_secret(api, namespace, name) is not None
    if not exists:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
            "data": data,
        }
        try:
            with _requests_for(f"create Secret {namespace}/{name}"):
                core.create_namespaced_secret(namespace, body, _preload_content=False)
            return True
        except ApiError as error:
            if not error.conflict:
                raise
    patch: Json = {"data": data}
    if annotations:
        patch["metadata"] = {"annotations": dict(annotations)}
    with _requests_for(f"update keys {', '.join(sorted(values))} of Secret {namespace}/{name}"):
        core.patch_namespaced_secret(name, namespace, patch, _preload_content=False)
    return False

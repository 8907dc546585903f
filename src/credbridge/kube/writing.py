"""Writes to the API server: the only module that creates, changes or deletes objects.

Functions are named by what they do to the cluster. Replacements carry the resourceVersion they
were planned against, so a concurrent change makes them fail with 409 instead of silently losing
it; the operator then re-plans from the fresh object.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from kubernetes import client

from credbridge.core import names

Json = dict[str, Any]

REPORTING_COMPONENT = "credbridge"


def create_secret(api: client.ApiClient, secret: Json) -> None:
    """Create a Secret from its JSON form."""
    client.CoreV1Api(api).create_namespaced_secret(secret["metadata"]["namespace"], secret)


def replace_secret(api: client.ApiClient, secret: Json, resource_version: str) -> None:
    """Replace a Secret, failing with 409 if it changed since `resource_version` was read."""
    body = {**secret, "metadata": {**secret["metadata"], "resourceVersion": resource_version}}
    client.CoreV1Api(api).replace_namespaced_secret(secret["metadata"]["name"], secret["metadata"]["namespace"], body)


def delete_secret(api: client.ApiClient, namespace: str, name: str, *, uid: str | None = None) -> bool:
    """Delete a Secret (only the one with `uid`, when given); False when it was already gone."""
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid) if uid else None)
    try:
        client.CoreV1Api(api).delete_namespaced_secret(name, namespace, body=options)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def patch_credential_status(api: client.ApiClient, namespace: str, name: str, patch: Json) -> None:
    """Merge-patch a Credential's status subresource."""
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name, {"status": patch}
    )


def patch_credential_share_status(api: client.ApiClient, namespace: str, name: str, patch: Json) -> None:
    """Merge-patch a CredentialShare's status subresource."""
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_SHARE_PLURAL, name, {"status": patch}
    )


def create_credential(api: client.ApiClient, credential: Json) -> Json:
    """Create a Credential (the operator does this for mirrors)."""
    created: Json = client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, credential["metadata"]["namespace"], names.CREDENTIAL_PLURAL, credential
    )
    return created


def patch_credential(api: client.ApiClient, namespace: str, name: str, patch: Json) -> None:
    """Merge-patch a Credential's main resource (metadata or spec)."""
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name, patch
    )


def delete_credential(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Delete a Credential; False when it was already gone."""
    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name
        )
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def create_credential_type(api: client.ApiClient, obj: Json) -> None:
    """Create a cluster-scoped CredentialType."""
    client.CustomObjectsApi(api).create_cluster_custom_object(
        names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, obj
    )


def replace_credential_type(api: client.ApiClient, obj: Json, resource_version: str) -> None:
    """Replace a CredentialType (reverting drift of a built-in one)."""
    body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": resource_version}}
    client.CustomObjectsApi(api).replace_cluster_custom_object(
        names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, obj["metadata"]["name"], body
    )


def post_event(
    api: client.ApiClient,
    involved: Json,
    *,
    type: str,
    reason: str,
    message: str,
    instance: str = "credbridge",
) -> None:
    """Post a core/v1 Event about `involved` (an object in JSON form), as `kubectl describe` shows them."""
    metadata = involved.get("metadata") or {}
    namespace = metadata.get("namespace") or "default"
    now = datetime.datetime.now(datetime.UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(
            name=f"{metadata.get('name', 'object')}.{uuid.uuid4().hex[:12]}", namespace=namespace
        ),
        involved_object=client.V1ObjectReference(
            api_version=involved.get("apiVersion"),
            kind=involved.get("kind"),
            name=metadata.get("name"),
            namespace=metadata.get("namespace"),
            uid=metadata.get("uid"),
            resource_version=metadata.get("resourceVersion"),
        ),
        type=type,
        reason=reason,
        message=message[:1024],
        source=client.V1EventSource(component=REPORTING_COMPONENT),
        reporting_component=REPORTING_COMPONENT,
        reporting_instance=instance,
        first_timestamp=now,
        last_timestamp=now,
        count=1,
        action="Reconcile",
    )
    client.CoreV1Api(api).create_namespaced_event(namespace, event)

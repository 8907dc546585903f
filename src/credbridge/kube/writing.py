"""Writes to the API server: the only module that creates, changes or deletes objects.

Functions are named by what they do to the cluster and return the object as the API server
stored it (plain JSON, without the client library's slow model classes), so the operator can put
what it wrote straight into its watch cache. Replacements and status patches carry the
resourceVersion they were planned against, so a concurrent change makes them fail with 409
instead of silently losing it; the operator then re-plans from the fresh object. Every failure
leaves as `errors.ApiError`.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from kubernetes import client

from credbridge.core import names
from credbridge.kube import errors

Json = dict[str, Any]

REPORTING_COMPONENT = "credbridge"


def _json(response: Any) -> Json:
    data: Json = json.loads(response.data)
    return data


def _where(obj: Json) -> str:
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def create_secret(api: client.ApiClient, secret: Json) -> Json:
    """Create a Secret from its JSON form."""
    with errors.translated(f"create Secret {_where(secret)}"):
        return _json(
            client.CoreV1Api(api).create_namespaced_secret(
                secret["metadata"]["namespace"], secret, _preload_content=False
            )
        )


def replace_secret(api: client.ApiClient, secret: Json, resource_version: str) -> Json:
    """Replace a Secret, failing with 409 if it changed since `resource_version` was read."""
    body = {**secret, "metadata": {**secret["metadata"], "resourceVersion": resource_version}}
    with errors.translated(f"update Secret {_where(secret)}"):
        return _json(
            client.CoreV1Api(api).replace_namespaced_secret(
                secret["metadata"]["name"], secret["metadata"]["namespace"], body, _preload_content=False
            )
        )


def patch_secret_data(api: client.ApiClient, namespace: str, name: str, data: Json, *, resource_version: str) -> Json:
    """Set some `data` keys (base64 values) of a Secret, leaving its other keys, failing with 409 if it changed
    since `resource_version` was read (an OAuth2 token Secret: the refresh writes only its token keys)."""
    body = {"metadata": {"resourceVersion": resource_version}, "data": data}
    with errors.translated(f"update keys {', '.join(sorted(data))} of Secret {namespace}/{name}"):
        return _json(client.CoreV1Api(api).patch_namespaced_secret(name, namespace, body, _preload_content=False))


def delete_secret(api: client.ApiClient, namespace: str, name: str, *, uid: str | None = None) -> bool:
    """Delete a Secret (only the one with `uid`, when given); False when it was already gone."""
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid) if uid else None)
    with errors.translated(f"delete Secret {namespace}/{name}"):
        try:
            client.CoreV1Api(api).delete_namespaced_secret(name, namespace, body=options, _preload_content=False)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
    return True


def _status_patch_body(patch: Json, resource_version: str | None) -> Json:
    body: Json = {"status": patch}
    if resource_version:
        # A merge patch that names a resourceVersion is refused (409) when the object moved on.
        body["metadata"] = {"resourceVersion": resource_version}
    return body


def patch_status(
    api: client.ApiClient,
    plural: str,
    kind: str,
    namespace: str,
    name: str,
    patch: Json,
    *,
    resource_version: str | None,
) -> Json:
    """Merge-patch the status subresource of one of credbridge's namespaced kinds (only if it is still at
    `resource_version`, when given) and return the object as stored."""
    with errors.translated(f"update the status of {kind} {namespace}/{name}"):
        return _json(
            client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
                names.GROUP,
                names.VERSION,
                namespace,
                plural,
                name,
                _status_patch_body(patch, resource_version),
                _preload_content=False,
            )
        )


def set_finalizers(
    api: client.ApiClient,
    plural: str,
    kind: str,
    namespace: str,
    name: str,
    finalizers: list[str],
    *,
    resource_version: str,
) -> Json | None:
    """Replace the finalizer list of one of credbridge's namespaced kinds, only if the object is still at
    `resource_version` (else 409: another controller's finalizer is never lost). Returns the object as
    stored, or None when it is gone."""
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
    with errors.translated(f"update the finalizers of {kind} {namespace}/{name}"):
        try:
            return _json(
                client.CustomObjectsApi(api).patch_namespaced_custom_object(
                    names.GROUP, names.VERSION, namespace, plural, name, patch, _preload_content=False
                )
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise


def patch_credential_status(
    api: client.ApiClient, namespace: str, name: str, patch: Json, *, resource_version: str | None = None
) -> Json:
    """Merge-patch a Credential's status subresource (only if still at `resource_version`, when given)."""
    return patch_status(
        api, names.CREDENTIAL_PLURAL, names.CREDENTIAL_KIND, namespace, name, patch, resource_version=resource_version
    )


def patch_credential_share_status(
    api: client.ApiClient, namespace: str, name: str, patch: Json, *, resource_version: str | None = None
) -> Json:
    """Merge-patch a CredentialShare's status subresource (only if still at `resource_version`, when given)."""
    return patch_status(
        api,
        names.CREDENTIAL_SHARE_PLURAL,
        names.CREDENTIAL_SHARE_KIND,
        namespace,
        name,
        patch,
        resource_version=resource_version,
    )


_WORKLOAD_PATCHERS = {
    "Deployment": "patch_namespaced_deployment",
    "StatefulSet": "patch_namespaced_stateful_set",
    "DaemonSet": "patch_namespaced_daemon_set",
}


def restart_workload(api: client.ApiClient, kind: str, namespace: str, name: str, annotations: dict[str, str]) -> bool:
    """Merge `annotations` into a workload's pod template, which rolls its Pods out (as
    `kubectl rollout restart` does); False when the workload does not exist."""
    patcher = getattr(client.AppsV1Api(api), _WORKLOAD_PATCHERS[kind])
    body = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
    with errors.translated(f"roll out {kind} {namespace}/{name}"):
        try:
            patcher(name, namespace, body, _preload_content=False)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
    return True


def create_credential(api: client.ApiClient, credential: Json) -> Json:
    """Create a Credential (the operator does this for mirrors)."""
    with errors.translated(f"create Credential {_where(credential)}"):
        return _json(
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                credential["metadata"]["namespace"],
                names.CREDENTIAL_PLURAL,
                credential,
                _preload_content=False,
            )
        )


def patch_credential(api: client.ApiClient, namespace: str, name: str, patch: Json) -> Json:
    """Merge-patch a Credential's main resource (metadata or spec)."""
    with errors.translated(f"update Credential {namespace}/{name}"):
        return _json(
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name, patch, _preload_content=False
            )
        )


def delete_credential(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Delete a Credential; False when it was already gone."""
    with errors.translated(f"delete Credential {namespace}/{name}"):
        try:
            client.CustomObjectsApi(api).delete_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name, _preload_content=False
            )
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
    return True


def create_credential_type(api: client.ApiClient, obj: Json) -> None:
    """Create a cluster-scoped CredentialType."""
    with errors.translated(f"create CredentialType {obj['metadata']['name']}"):
        client.CustomObjectsApi(api).create_cluster_custom_object(
            names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, obj, _preload_content=False
        )


def replace_credential_type(api: client.ApiClient, obj: Json, resource_version: str) -> None:
    """Replace a CredentialType (reverting drift of a built-in one)."""
    body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": resource_version}}
    with errors.translated(f"update CredentialType {obj['metadata']['name']}"):
        client.CustomObjectsApi(api).replace_cluster_custom_object(
            names.GROUP,
            names.VERSION,
            names.CREDENTIAL_TYPE_PLURAL,
            obj["metadata"]["name"],
            body,
            _preload_content=False,
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
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event: Json = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{metadata.get('name', 'object')}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
        "involvedObject": {
            key: value
            for key, value in {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            }.items()
            if value
        },
        "type": type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "action": "Reconcile",
    }
    with errors.translated(f"post an Event about {namespace}/{metadata.get('name')}"):
        client.CoreV1Api(api).create_namespaced_event(namespace, event, _preload_content=False)
